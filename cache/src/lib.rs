//! The distributed cache, an attached resource named by `CACHE_URL`:
//! Redis or Memcached behind one small interface, or none.
//!
//! What the callers rely on:
//! - **Versioned entries.** An [`Entry`] is bytes at a version (an
//!   aggregate's sequence, a view row's version). [`Cache::put_if_newer`]
//!   stores only over an older entry or none, atomically on the server (a
//!   Lua script on Redis; on Memcached a compare-and-set loop on the item's
//!   CAS token), so two writers racing can never leave the older state
//!   behind.
//! - **Keys carry a format.** A [`Key`] names what is cached, the format of
//!   its bytes and the id: a deploy that changes the format reads none of
//!   the old entries.
//! - **Bounded and never fatal.** Every operation, connecting included,
//!   gives up after `CACHE_TIMEOUT_MS` with an error; the caller goes to
//!   PostgreSQL. Connections are made on first use and again after an
//!   outage, by themselves. Operations are counted in
//!   `eshop_cache_operations_total{cache, operation, outcome}`.

mod config;
mod memcached;
mod redis;

use std::future::Future;
use std::time::Duration;

pub use config::{CacheConfig, CacheUrl};

/// Bytes at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub version: u64,
    pub bytes: Vec<u8>,
}

/// What [`Cache::put_if_newer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The entry now holds the new version.
    Stored,
    /// The entry held this version or a newer one (or, on Memcached, other
    /// writers kept changing it for 32 tries, and it was deleted): nothing
    /// older was written.
    NotNewer,
}

/// Why a cache operation failed. The caller treats each as a miss.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("the cache did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("memcached: {0}")]
    Memcached(String),
    #[error("a cache entry that does not decode: {0}")]
    Malformed(String),
}

impl From<async_memcached::Error> for CacheError {
    fn from(error: async_memcached::Error) -> Self {
        Self::Memcached(error.to_string())
    }
}

/// A cache key: `eshop:{what}:{format}:{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(String);

impl Key {
    /// The key of `id`'s entry of kind `what` in format `format`; `None`
    /// when a part holds anything but ASCII letters, digits, `-`, `_` and
    /// `.`, or the key would be longer than Memcached's 250 bytes (such an
    /// id is simply not cached).
    #[must_use]
    pub fn new(what: &str, format: u32, id: &str) -> Option<Self> {
        let fits = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        let key = format!("eshop:{what}:v{format}:{id}");
        (fits(what) && fits(id) && key.len() <= 250).then_some(Self(key))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a caller went to PostgreSQL for `what` (`aggregate_state`,
/// `basket_row`) instead of the cache: `miss` (nothing there, or a marker),
/// `unavailable` (the cache failed or timed out) or `malformed` (an entry
/// that does not decode). Counted in
/// `eshop_cache_fallbacks_total{what, reason}`.
pub fn count_fallback(what: &'static str, reason: &'static str) {
    metrics::counter!("eshop_cache_fallbacks_total", "what" => what, "reason" => reason)
        .increment(1);
}

#[derive(Clone)]
enum Backend {
    Redis(redis::Redis),
    Memcached(memcached::Memcached),
}

/// The cache. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct Cache {
    backend: Backend,
    kind: &'static str,
    ttl: Duration,
    timeout: Duration,
}

impl Cache {
    /// The cache `config` names, or `None` when it names none. Connects on
    /// first use: a cache that is down at start-up fails nothing.
    ///
    /// # Errors
    /// The settings cannot make a client (Redis refuses the URL).
    pub fn new(config: &CacheConfig) -> Result<Option<Self>, CacheError> {
        let Some(url) = &config.url else {
            return Ok(None);
        };
        let backend = match url {
            CacheUrl::Redis(url) => Backend::Redis(redis::Redis::new(url, config.timeout())?),
            CacheUrl::Memcached { host, port } => {
                Backend::Memcached(memcached::Memcached::new(host, *port, config.pool_size)?)
            }
        };
        Ok(Some(Self {
            backend,
            kind: url.kind(),
            ttl: config.ttl(),
            timeout: config.timeout(),
        }))
    }

    /// `redis` or `memcached`.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        self.kind
    }

    /// The entry at `key`, if any.
    ///
    /// # Errors
    /// The cache is down, slow or holds bytes that do not decode.
    pub async fn get(&self, key: &Key) -> Result<Option<Entry>, CacheError> {
        let found = self
            .bounded("get", async {
                match &self.backend {
                    Backend::Redis(redis) => redis.get(key.as_str()).await,
                    Backend::Memcached(memcached) => memcached.get(key.as_str()).await,
                }
            })
            .await;
        if let Ok(found) = &found {
            self.count("get", if found.is_some() { "hit" } else { "miss" });
        }
        found
    }

    /// The entry at `key`, for a reader that goes to PostgreSQL without
    /// one: nothing there, or a cache that fails, is `None`, counted as a
    /// fallback of `what` ([`count_fallback`]).
    pub async fn get_or_fall_back(&self, key: &Key, what: &'static str) -> Option<Entry> {
        match self.get(key).await {
            Ok(Some(entry)) => Some(entry),
            Ok(None) => {
                count_fallback(what, "miss");
                None
            }
            Err(CacheError::Malformed(_)) => {
                count_fallback(what, "malformed");
                None
            }
            Err(_) => {
                count_fallback(what, "unavailable");
                None
            }
        }
    }

    /// Stores `entry` at `key` unless the cache holds its version or a
    /// newer one there; the entry expires after `CACHE_TTL_SECS`.
    ///
    /// # Errors
    /// The cache is down or slow.
    pub async fn put_if_newer(&self, key: &Key, entry: &Entry) -> Result<Stored, CacheError> {
        let stored = self
            .bounded("put", async {
                match &self.backend {
                    Backend::Redis(redis) => {
                        redis.put_if_newer(key.as_str(), entry, self.ttl).await
                    }
                    Backend::Memcached(memcached) => {
                        memcached.put_if_newer(key.as_str(), entry, self.ttl).await
                    }
                }
            })
            .await;
        if let Ok(stored) = &stored {
            self.count(
                "put",
                match stored {
                    Stored::Stored => "stored",
                    Stored::NotNewer => "not_newer",
                },
            );
        }
        stored
    }

    /// Removes the entry at `key`, if any.
    ///
    /// # Errors
    /// The cache is down or slow.
    pub async fn delete(&self, key: &Key) -> Result<(), CacheError> {
        let deleted = self
            .bounded("delete", async {
                match &self.backend {
                    Backend::Redis(redis) => redis.delete(key.as_str()).await,
                    Backend::Memcached(memcached) => memcached.delete(key.as_str()).await,
                }
            })
            .await;
        if deleted.is_ok() {
            self.count("delete", "done");
        }
        deleted
    }

    /// Whether the cache answers, for health checks.
    ///
    /// # Errors
    /// The cache is down or slow.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.bounded("ping", async {
            match &self.backend {
                Backend::Redis(redis) => redis.ping().await,
                Backend::Memcached(memcached) => memcached.ping().await,
            }
        })
        .await
    }

    /// Runs `operation` within the timeout, counting and logging a failure
    /// once, here.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        run: impl Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        let result = match tokio::time::timeout(self.timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(CacheError::Timeout(self.timeout)),
        };
        if let Err(error) = &result {
            let outcome = match error {
                CacheError::Timeout(_) => "timeout",
                CacheError::Malformed(_) => "malformed",
                _ => "error",
            };
            self.count(operation, outcome);
            tracing::debug!(cache = self.kind, operation, %error, "cache operation failed");
        }
        result
    }

    fn count(&self, operation: &'static str, outcome: &'static str) {
        metrics::counter!(
            "eshop_cache_operations_total",
            "cache" => self.kind,
            "operation" => operation,
            "outcome" => outcome
        )
        .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_what_its_format_and_its_id() {
        assert_eq!(
            Key::new("basket", 3, "0193a6c4-1f2e-7c3d-9e8f-0a1b2c3d4e5f").map(|k| k.0),
            Some("eshop:basket:v3:0193a6c4-1f2e-7c3d-9e8f-0a1b2c3d4e5f".to_owned())
        );
    }

    #[test]
    fn an_id_a_key_cannot_hold_is_not_cached() {
        assert_eq!(Key::new("basket", 1, "an id with spaces"), None);
        assert_eq!(Key::new("basket", 1, ""), None);
        assert_eq!(Key::new("basket", 1, &"a".repeat(250)), None);
    }
}
