//! Redis: an entry is a hash `{v: version, d: bytes}`; storing compares
//! versions in a Lua script, atomically on the server.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use crate::{CacheError, Entry, Stored};

/// Stores `ARGV[2]` at version `ARGV[1]` unless the entry holds that
/// version or a newer one; the entry lives `ARGV[3]` ms. Returns 1 when it
/// stored. An entry whose version is not a number is replaced.
const PUT_IF_NEWER: &str = r"
local held = tonumber(redis.call('HGET', KEYS[1], 'v'))
if held and held >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// A multiplexed connection that reconnects by itself.
#[derive(Clone)]
pub struct Redis {
    connection: ConnectionManager,
    put_if_newer: Script,
}

impl Redis {
    /// Connects lazily: the first operation connects, so a cache that is
    /// down at start-up delays nothing.
    pub fn new(url: &url::Url, timeout: Duration) -> Result<Self, CacheError> {
        let client = redis::Client::open(url.as_str())?;
        // Few retries with short delays: a caller never waits on them (every
        // operation is bounded by the caller's timeout), and a short cycle
        // means the next operation after an outage finds a fresh attempt.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        Ok(Self {
            connection: ConnectionManager::new_lazy_with_config(client, config)?,
            put_if_newer: Script::new(PUT_IF_NEWER),
        })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Entry>, CacheError> {
        let mut connection = self.connection.clone();
        let (version, bytes): (Option<String>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(key)
            .arg("v")
            .arg("d")
            .query_async(&mut connection)
            .await?;
        match (version, bytes) {
            (None, None) => Ok(None),
            (Some(version), Some(bytes)) => {
                let version = version.parse().map_err(|_| {
                    CacheError::Malformed(format!("{key}: the version '{version}' is not a number"))
                })?;
                Ok(Some(Entry { version, bytes }))
            }
            _ => Err(CacheError::Malformed(format!(
                "{key}: a hash with a version or bytes but not both"
            ))),
        }
    }

    pub async fn put_if_newer(
        &self,
        key: &str,
        entry: &Entry,
        ttl: Duration,
    ) -> Result<Stored, CacheError> {
        let mut connection = self.connection.clone();
        let stored: i64 = self
            .put_if_newer
            .key(key)
            .arg(entry.version)
            .arg(entry.bytes.as_slice())
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke_async(&mut connection)
            .await?;
        Ok(if stored == 1 {
            Stored::Stored
        } else {
            Stored::NotNewer
        })
    }

    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        let _: i64 = connection.del(key).await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        Ok(())
    }
}
