//! Which cache, named by a URL, and how long to trust it.

use std::fmt;
use std::time::Duration;

use url::Url;

/// The cache a URL names: `redis://…` (or `rediss://…`, with TLS) or
/// `memcached://host:port`. Unset means no cache.
#[derive(Clone, PartialEq, Eq)]
pub enum CacheUrl {
    Redis(Url),
    Memcached { host: String, port: u16 },
}

/// Memcached's port when the URL names none.
const MEMCACHED_PORT: u16 = 11211;

impl CacheUrl {
    /// The engine's name, as health and metrics show it.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::Memcached { .. } => "memcached",
        }
    }
}

/// Parses a cache URL; the error names what is wrong, never the password.
impl std::str::FromStr for CacheUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let url = Url::parse(text.trim()).map_err(|error| {
            format!("not a cache URL (redis://host:6379 or memcached://host:11211): {error}")
        })?;
        match url.scheme() {
            "redis" | "rediss" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err("a Redis URL names a host: redis://host:6379".to_owned());
                }
                Ok(Self::Redis(url))
            }
            "memcached" => {
                let host = url
                    .host_str()
                    .filter(|host| !host.is_empty())
                    .ok_or("a Memcached URL names a host: memcached://host:11211")?;
                if !url.path().trim_matches('/').is_empty() || url.query().is_some() {
                    return Err(
                        "a Memcached URL is memcached://host:port, with no path or query"
                            .to_owned(),
                    );
                }
                if !url.username().is_empty() || url.password().is_some() {
                    return Err(
                        "Memcached's text protocol has no login: remove the user".to_owned()
                    );
                }
                Ok(Self::Memcached {
                    host: host.trim_matches(['[', ']']).to_owned(),
                    port: url.port().unwrap_or(MEMCACHED_PORT),
                })
            }
            other => Err(format!(
                "unknown cache scheme '{other}': use redis://, rediss:// or memcached://"
            )),
        }
    }
}

/// Shows the URL with its password, if any, replaced.
impl fmt::Display for CacheUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis(url) => {
                let mut shown = url.clone();
                if shown.password().is_some() {
                    // A URL with a host always takes a password.
                    let _ = shown.set_password(Some("***"));
                }
                write!(f, "{shown}")
            }
            Self::Memcached { host, port } => write!(f, "memcached://{host}:{port}"),
        }
    }
}

impl fmt::Debug for CacheUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheUrl({self})")
    }
}

/// The cache's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheConfig {
    /// The distributed cache: `redis://host:6379`, `rediss://…` or
    /// `memcached://host:11211`. Unset: no cache, every read goes to
    /// PostgreSQL.
    #[arg(
        id = "cache_url",
        long = "cache-url",
        env = "CACHE_URL",
        value_name = "URL"
    )]
    pub url: Option<CacheUrl>,

    /// How long an entry lives in the cache, in seconds.
    #[arg(
        id = "cache_ttl_secs",
        value_name = "SECS",
        long = "cache-ttl-secs",
        env = "CACHE_TTL_SECS",
        default_value_t = 3600
    )]
    pub ttl_secs: u32,

    /// The longest one cache operation may take, in ms, connecting
    /// included; past it the caller goes to PostgreSQL as if the entry were
    /// missing.
    #[arg(
        id = "cache_timeout_ms",
        value_name = "MS",
        long = "cache-timeout-ms",
        env = "CACHE_TIMEOUT_MS",
        default_value_t = 50
    )]
    pub timeout_ms: u64,

    /// Connections to Memcached kept open per process (Redis multiplexes
    /// one).
    #[arg(
        id = "cache_pool_size",
        value_name = "N",
        long = "cache-pool-size",
        env = "CACHE_POOL_SIZE",
        default_value_t = 16
    )]
    pub pool_size: usize,
}

impl CacheConfig {
    /// No cache.
    #[must_use]
    pub const fn none() -> Self {
        Self {
            url: None,
            ttl_secs: 3600,
            timeout_ms: 50,
            pool_size: 16,
        }
    }

    /// The cache at `url`, with the default settings.
    #[must_use]
    pub fn at(url: CacheUrl) -> Self {
        Self {
            url: Some(url),
            ..Self::none()
        }
    }

    #[must_use]
    pub const fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs as u64)
    }

    #[must_use]
    pub const fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CacheUrl, String> {
        text.parse()
    }

    #[test]
    fn redis_and_memcached_urls_are_read() {
        assert_eq!(
            parse("redis://127.0.0.1:6379").map(|u| u.kind()),
            Ok("redis")
        );
        assert_eq!(
            parse("rediss://cache.example:6380/2").map(|u| u.kind()),
            Ok("redis")
        );
        assert_eq!(
            parse("memcached://127.0.0.1:11211"),
            Ok(CacheUrl::Memcached {
                host: "127.0.0.1".to_owned(),
                port: 11211
            })
        );
        assert_eq!(
            parse("memcached://cache.example"),
            Ok(CacheUrl::Memcached {
                host: "cache.example".to_owned(),
                port: 11211
            })
        );
    }

    #[test]
    fn other_urls_are_refused_with_the_reason() {
        for (text, says) in [
            ("http://127.0.0.1:6379", "unknown cache scheme 'http'"),
            ("memcached://127.0.0.1:11211/eshop", "no path or query"),
            ("memcached://user:pw@127.0.0.1", "no login"),
            ("redis://", "names a host"),
            ("127.0.0.1:6379", "not a cache URL"),
            ("not a url", "not a cache URL"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn a_password_is_never_shown() {
        let url = parse("redis://eshop:s3cret@cache.example:6379/0").expect("a Redis URL");
        for shown in [url.to_string(), format!("{url:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("cache.example"), "{shown}");
        }
    }
}
