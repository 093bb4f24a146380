//! The cache of the tests: the Redis and Memcached that `scripts/setup`
//! starts (`TEST_REDIS_URL`, `TEST_MEMCACHED_URL` to use others), and
//! which one the command API of [`crate::TestApp`] uses: `TEST_CACHE` =
//! `redis`, `memcached`, or unset or `none` for no cache.

use cache::{CacheConfig, CacheUrl};

/// The Redis of the tests.
#[must_use]
pub fn redis_url() -> CacheUrl {
    url("TEST_REDIS_URL", "redis://127.0.0.1:6379")
}

/// The Memcached of the tests.
#[must_use]
pub fn memcached_url() -> CacheUrl {
    url("TEST_MEMCACHED_URL", "memcached://127.0.0.1:11211")
}

fn url(variable: &str, default: &str) -> CacheUrl {
    let text = std::env::var(variable).unwrap_or_else(|_| default.to_owned());
    text.parse()
        .unwrap_or_else(|error| panic!("{variable}={text}: {error}"))
}

/// The cache `TEST_CACHE` names.
///
/// # Panics
/// On a value that names no cache: a typo must not silently test without one.
#[must_use]
pub fn test_cache() -> CacheConfig {
    match std::env::var("TEST_CACHE").as_deref() {
        Err(_) | Ok("" | "none") => CacheConfig::none(),
        Ok("redis") => CacheConfig::at(redis_url()),
        Ok("memcached") => CacheConfig::at(memcached_url()),
        Ok(other) => panic!("TEST_CACHE={other}: use redis, memcached or none"),
    }
}
