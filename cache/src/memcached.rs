//! Memcached, over its meta text protocol (1.6+): an entry is the
//! version, 8 bytes big-endian, then the bytes; storing compares versions
//! and writes with the item's CAS token (or adds when it is missing), so a
//! write that raced another fails and is looked at again.

use std::time::Duration;

use async_memcached::{Client, Error as McError, MetaProtocol, Status};
use deadpool::managed::{self, Metrics, Pool, RecycleResult};

use crate::{CacheError, Entry, Stored};

/// How many times a store that raced another writer is tried again. Each
/// race lost means another writer stored in between, so the loop ends
/// quickly unless one key is written without pause; past this bound the
/// entry is deleted instead (a missing entry is never wrong).
const RACES: usize = 32;

/// Memcached reads an expiry over 30 days as a point in Unix time.
const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

/// Opens connections to one server, and throws away one that failed: the
/// client closes itself after an error or a cancelled operation, so that
/// no reply is ever read as the answer to another request.
struct Connections {
    dsn: String,
}

impl managed::Manager for Connections {
    type Type = Client;
    type Error = McError;

    async fn create(&self) -> Result<Client, McError> {
        Client::new(&self.dsn).await
    }

    async fn recycle(&self, client: &mut Client, _: &Metrics) -> RecycleResult<McError> {
        if client.is_closed() {
            return Err(managed::RecycleError::message("the connection was closed"));
        }
        Ok(())
    }
}

/// A pool of connections to one Memcached server.
#[derive(Clone)]
pub struct Memcached {
    pool: Pool<Connections>,
}

impl Memcached {
    /// Connections open on first use, so a cache that is down at start-up
    /// delays nothing.
    pub fn new(host: &str, port: u16, size: usize) -> Result<Self, CacheError> {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let connections = Connections {
            dsn: format!("tcp://{host}:{port}"),
        };
        let pool = Pool::builder(connections)
            .max_size(size.max(1))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|error| CacheError::Memcached(format!("the connection pool: {error}")))?;
        Ok(Self { pool })
    }

    async fn client(&self) -> Result<managed::Object<Connections>, CacheError> {
        self.pool.get().await.map_err(|error| match error {
            managed::PoolError::Backend(error) => CacheError::from(error),
            other => CacheError::Memcached(other.to_string()),
        })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Entry>, CacheError> {
        let mut client = self.client().await?;
        let found = client.meta_get(key, false, None, Some(&["v"])).await?;
        found.map(|value| decode(key, value.data)).transpose()
    }

    pub async fn put_if_newer(
        &self,
        key: &str,
        entry: &Entry,
        ttl: Duration,
    ) -> Result<Stored, CacheError> {
        let ttl = format!("T{}", ttl.as_secs().clamp(1, MAX_TTL_SECS));
        let value = encode(entry);
        let mut client = self.client().await?;
        for _ in 0..RACES {
            let held = client.meta_get(key, false, None, Some(&["v", "c"])).await?;
            let compare = match held {
                Some(held) => {
                    let cas = held.cas;
                    // An entry that does not decode is replaced, not kept.
                    if decode(key, held.data).is_ok_and(|held| held.version >= entry.version) {
                        return Ok(Stored::NotNewer);
                    }
                    let cas = cas.ok_or_else(|| {
                        CacheError::Memcached(format!("{key}: no CAS token in the reply"))
                    })?;
                    format!("C{cas}")
                }
                // Add: only if still missing.
                None => "ME".to_owned(),
            };
            match client
                .meta_set(key, value.as_slice(), false, None, Some(&[&compare, &ttl]))
                .await
            {
                Ok(_) => return Ok(Stored::Stored),
                // Another writer came in between: look again.
                Err(McError::Protocol(Status::Exists | Status::NotStored | Status::NotFound)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        tracing::debug!(
            key,
            "the cache entry kept changing under the store; deleting it"
        );
        self.delete_with(&mut client, key).await?;
        Ok(Stored::NotNewer)
    }

    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let mut client = self.client().await?;
        self.delete_with(&mut client, key).await
    }

    async fn delete_with(&self, client: &mut Client, key: &str) -> Result<(), CacheError> {
        match client.meta_delete(key, false, None, None).await {
            Ok(_) | Err(McError::Protocol(Status::NotFound)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    pub async fn ping(&self) -> Result<(), CacheError> {
        let mut client = self.client().await?;
        client.version().await?;
        Ok(())
    }
}

/// The version, 8 bytes big-endian, then the bytes.
fn encode(entry: &Entry) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + entry.bytes.len());
    value.extend_from_slice(&entry.version.to_be_bytes());
    value.extend_from_slice(&entry.bytes);
    value
}

fn decode(key: &str, data: Option<Vec<u8>>) -> Result<Entry, CacheError> {
    let data = data.ok_or_else(|| CacheError::Malformed(format!("{key}: a hit with no value")))?;
    let (version, bytes) = data.split_at_checked(8).ok_or_else(|| {
        CacheError::Malformed(format!(
            "{key}: {} bytes, shorter than a version",
            data.len()
        ))
    })?;
    let version = u64::from_be_bytes(version.try_into().expect("split at 8 bytes"));
    Ok(Entry {
        version,
        bytes: bytes.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_as_written() {
        let entry = Entry {
            version: 0x0102_0304_0506_0708,
            bytes: b"{\"lines\":[]}".to_vec(),
        };
        let value = encode(&entry);
        assert_eq!(&value[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(decode("k", Some(value)).expect("decodes"), entry);
    }

    #[test]
    fn a_value_too_short_for_a_version_is_malformed_not_version_zero() {
        for data in [Some(vec![1, 2, 3]), Some(Vec::new()), None] {
            assert!(matches!(decode("k", data), Err(CacheError::Malformed(_))));
        }
    }
}
