//! Aggregate states in the distributed cache, so that a command on a hot
//! aggregate (a basket) need not read its snapshot and events.
//!
//! Why a stale entry can never cause a wrong decision: a command decides on
//! the cached state at version N and appends at N + 1. If the store holds
//! more events than the entry, the append conflicts on the primary key;
//! the store then forgets the entry, and the command reloads from
//! PostgreSQL and decides again, as it does for a concurrent writer.
//!
//! An entry is the state as JSON at the aggregate's version, under a key
//! that names the aggregate type and the format of its state: a deploy
//! that changes the state's shape bumps the format and reads no old entry.
//! After a commit the new state is stored only over an older one. A cache
//! that is down, slow or holds what does not decode is a miss: the store
//! reads PostgreSQL, and no command fails because of the cache.

use std::collections::BTreeMap;

use cache::{Cache, Entry, Key};

/// What the fallback metric calls a command's aggregate state.
const STATE: &str = "aggregate_state";
use cqrs_es::Aggregate;

/// The cache, and the aggregate types whose states it holds, each with the
/// format version of its serialized state.
#[derive(Clone)]
pub struct StateCache {
    cache: Cache,
    formats: BTreeMap<String, u32>,
}

impl StateCache {
    /// A state cache that caches nothing yet: see [`StateCache::with`].
    #[must_use]
    pub const fn new(cache: Cache) -> Self {
        Self {
            cache,
            formats: BTreeMap::new(),
        }
    }

    /// Caches the states of `aggregate_type`, serialized in `format`.
    #[must_use]
    pub fn with(mut self, aggregate_type: &str, format: u32) -> Self {
        self.formats.insert(aggregate_type.to_owned(), format);
        self
    }

    /// The engine (`redis` or `memcached`).
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        self.cache.kind()
    }

    pub(crate) fn caches(&self, aggregate_type: &str) -> bool {
        self.formats.contains_key(aggregate_type)
    }

    fn key(&self, aggregate_type: &str, aggregate_id: &str) -> Option<Key> {
        let format = *self.formats.get(aggregate_type)?;
        Key::new(&format!("state.{aggregate_type}"), format, aggregate_id)
    }

    /// The cached state of an aggregate and its version, if the cache holds
    /// one that decodes.
    pub(crate) async fn get<A: Aggregate>(&self, aggregate_id: &str) -> Option<(A, usize)> {
        let key = self.key(A::TYPE, aggregate_id)?;
        let entry = self.cache.get_or_fall_back(&key, STATE).await?;
        let version = usize::try_from(entry.version).ok().filter(|v| *v > 0);
        match (serde_json::from_slice::<A>(&entry.bytes), version) {
            (Ok(state), Some(version)) => Some((state, version)),
            (Ok(_), None) => {
                cache::count_fallback(STATE, "malformed");
                None
            }
            (Err(error), _) => {
                cache::count_fallback(STATE, "malformed");
                // Written by another format under the same key: a bug in
                // the format's bump. Logged, dropped, read from PostgreSQL.
                tracing::warn!(aggregate.type = A::TYPE, aggregate.id = aggregate_id, %error,
                    "a cached state that does not decode; forgetting it");
                let _ = self.cache.delete(&key).await;
                None
            }
        }
    }

    /// Stores a state at `version`, over an older entry only.
    pub(crate) async fn put(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        version: usize,
        bytes: Vec<u8>,
    ) {
        let (Some(key), Ok(version)) = (
            self.key(aggregate_type, aggregate_id),
            u64::try_from(version),
        ) else {
            return;
        };
        // A failure is counted by the cache; the entry is simply not there.
        let _ = self
            .cache
            .put_if_newer(&key, &Entry { version, bytes })
            .await;
    }

    /// Forgets an aggregate's entry (the store holds more than it did).
    pub(crate) async fn forget(&self, aggregate_type: &str, aggregate_id: &str) {
        if let Some(key) = self.key(aggregate_type, aggregate_id) {
            let _ = self.cache.delete(&key).await;
        }
    }
}
