//! eshop's event store on PostgreSQL.
//!
//! - [`EventStore`] loads aggregates (snapshot plus later events, upcast) and
//!   commits a [`UnitOfWork`]: events of one or more aggregates, unique
//!   claims, snapshots and an idempotency record, all in one transaction.
//! - [`PgEventRepository`] implements cqrs-es's `PersistedEventRepository` over
//!   the same tables, for code that uses the cqrs-es framework directly.
//! - [`feed`] reads every event in the global order that the relay follows.
//!
//! See `docs/event-store.md` for the schema and the global order.

mod config;
mod error;
pub mod feed;
mod repository;
mod snapshot;
pub mod state_cache;
mod store;
mod unit_of_work;

pub use config::{
    APPLICATION_NAME, DatabaseConfig, MIGRATOR, READ_MODEL_WRITER, connect, connect_with,
    migrate_with,
};
pub use error::{CommitError, StoreError};
pub use repository::PgEventRepository;
pub use snapshot::SnapshotPolicy;
pub use state_cache::StateCache;
pub use store::{EventStore, Loaded, upcast};
pub use unit_of_work::{AppendResult, Commit, IdempotencyRecord, StoredOutcome, UnitOfWork};
