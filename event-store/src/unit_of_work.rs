use std::collections::HashMap;
use std::fmt;

use cqrs_es::persist::SerializedEvent;
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::Value;
use sqlx::types::Uuid;

use crate::error::StoreError;
use crate::store::Loaded;

/// Everything one command changes, committed atomically by
/// [`EventStore::commit`](crate::EventStore::commit): new events for one or
/// more aggregates, each appended at the version it was loaded at
/// (optimistic concurrency), the unique values they claim, the snapshots
/// that fall due and the request's idempotency record.
#[derive(Default)]
pub struct UnitOfWork {
    pub(crate) events: Vec<SerializedEvent>,
    pub(crate) appends: Vec<PendingAppend>,
    pub(crate) snapshots: Vec<PendingSnapshot>,
    pub(crate) claims: Vec<Claim>,
    pub(crate) idempotency: Option<IdempotencyRecord>,
    /// The new states of aggregates whose type is cached, for the cache
    /// once the commit succeeded.
    pub(crate) states: Vec<PendingState>,
}

pub(crate) struct PendingState {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub version: usize,
    pub bytes: Vec<u8>,
}

pub(crate) struct PendingAppend {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: usize,
    pub event_count: usize,
}

pub(crate) struct PendingSnapshot {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub last_sequence: usize,
    pub payload: Value,
}

pub(crate) struct Claim {
    pub scope: String,
    pub value: String,
    pub aggregate_id: String,
}

/// Builds the outcome stored with an idempotency key, once the positions of
/// the committed events are known.
pub type OutcomeFn = Box<dyn FnOnce(&Commit) -> Value + Send>;

/// The idempotency key of the request that produced a unit of work. The
/// request claimed the key before it ran
/// ([`EventStore::claim_idempotency_key`](crate::EventStore::claim_idempotency_key));
/// the commit stores the outcome with the events, and only while that claim
/// is still held.
pub struct IdempotencyRecord {
    pub key: String,
    /// The claim the request holds on the key.
    pub claim: Uuid,
    pub outcome: OutcomeFn,
}

impl fmt::Debug for IdempotencyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyRecord")
            .field("key", &self.key)
            .field("claim", &self.claim)
            .finish_non_exhaustive()
    }
}

/// What another request holding the same idempotency key stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutcome {
    /// The digest of that request, to tell a retry from a different request
    /// that reuses the key.
    pub fingerprint: Vec<u8>,
    /// Its outcome, or `None` while it is still in progress.
    pub outcome: Option<Value>,
}

/// Where one aggregate stands after a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The aggregate's version: the sequence of its last event.
    pub version: usize,
    /// The global position of the last event appended to it, if any.
    pub last_global_position: Option<i64>,
}

/// What a commit wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub appends: Vec<AppendResult>,
    /// The highest global position written, if any event was.
    pub last_global_position: Option<i64>,
}

impl Commit {
    #[must_use]
    pub fn of(&self, aggregate_type: &str, aggregate_id: &str) -> Option<&AppendResult> {
        self.appends
            .iter()
            .find(|a| a.aggregate_type == aggregate_type && a.aggregate_id == aggregate_id)
    }
}

impl UnitOfWork {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the events a command produced on a loaded aggregate. `loaded`
    /// holds the state after the command (cqrs-es applies events as the
    /// handler writes them) and the version it was loaded at.
    pub fn append<A: Aggregate>(
        &mut self,
        aggregate_id: &str,
        loaded: &Loaded<A>,
        events: Vec<A::Event>,
        mut metadata: impl FnMut(&A::Event) -> HashMap<String, String>,
    ) -> Result<(), StoreError> {
        let event_count = events.len();
        for (offset, event) in events.into_iter().enumerate() {
            let metadata = serde_json::to_value(metadata(&event)).map_err(StoreError::Encode)?;
            self.events.push(SerializedEvent::new(
                aggregate_id.to_owned(),
                loaded.version + offset + 1,
                A::TYPE.to_owned(),
                event.event_type(),
                event.event_version(),
                serde_json::to_value(&event).map_err(StoreError::Encode)?,
                metadata,
            ));
        }
        let new_version = loaded.version + event_count;
        if event_count > 0 && loaded.snapshot_due(new_version) {
            self.snapshots.push(PendingSnapshot {
                aggregate_type: A::TYPE,
                aggregate_id: aggregate_id.to_owned(),
                last_sequence: new_version,
                payload: serde_json::to_value(&loaded.aggregate).map_err(StoreError::Encode)?,
            });
        }
        if event_count > 0 && loaded.cached {
            self.states.push(PendingState {
                aggregate_type: A::TYPE,
                aggregate_id: aggregate_id.to_owned(),
                version: new_version,
                bytes: serde_json::to_vec(&loaded.aggregate).map_err(StoreError::Encode)?,
            });
        }
        self.appends.push(PendingAppend {
            aggregate_type: A::TYPE.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            version: new_version,
            event_count,
        });
        Ok(())
    }

    /// Claims a value that no other aggregate may hold in `scope` (a SKU).
    pub fn claim_unique(&mut self, scope: &str, value: &str, aggregate_id: &str) {
        self.claims.push(Claim {
            scope: scope.to_owned(),
            value: value.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
        });
    }

    /// Records the request's idempotency key with the events.
    pub fn record_idempotency(&mut self, record: IdempotencyRecord) {
        self.idempotency = Some(record);
    }

    #[must_use]
    pub fn event_count(&self) -> usize {
        self.events.len()
    }
}
