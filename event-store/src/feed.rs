//! Reading every event in the global order.
//!
//! The order is `(transaction_id, global_position)`. Positions come from an
//! identity column, so they are unique but have gaps, and a transaction that
//! took a lower position may commit after one that took a higher one. A
//! reader that simply followed `global_position` could pass a position
//! whose transaction had not committed yet and never come back for it.
//!
//! Instead a reader only takes events whose transaction id is below the
//! `xmin` of the current snapshot: every transaction below it has finished,
//! and any transaction still to commit has an id at or above it, so nothing
//! can ever appear behind a position once it has been read. The price is
//! that events of a committed transaction wait until every older
//! transaction still running has finished (commands are short, so this is
//! milliseconds). Transaction ids are shared by every database of a
//! PostgreSQL cluster, so a long transaction in ANY database of the cluster
//! holds the horizon back: keep the event store's cluster free of
//! long-running transactions.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Row};

use crate::error::StoreError;

/// A point in the global order. The default is before the first event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GlobalPosition {
    /// The writing transaction's id (`xid8`).
    pub transaction_id: u64,
    /// The event's `global_position`.
    pub position: i64,
}

/// A stored event with its place in the global order.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub global: GlobalPosition,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

/// Filters for [`read_after`].
#[derive(Debug, Clone, Default)]
pub struct FeedFilter {
    /// Only events of this aggregate type.
    pub aggregate_type: Option<String>,
    /// Also read committed events above the stable horizon. Right for a
    /// one-shot replay of what is visible now; wrong for a reader that
    /// follows the feed and keeps its position, which could then pass an
    /// event still to be committed below it.
    pub beyond_horizon: bool,
}

/// Reads at most `limit` events after `after`, in global order, from
/// transactions that can no longer be overtaken (see the module docs).
pub async fn read_after(
    pool: &PgPool,
    after: GlobalPosition,
    filter: &FeedFilter,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT transaction_id::text AS transaction_id, global_position, aggregate_type, aggregate_id, \
                sequence, event_type, event_version, payload, metadata, recorded_at \
         FROM events \
         WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
           AND ($5 OR transaction_id < pg_snapshot_xmin(pg_current_snapshot())) \
           AND ($3::text IS NULL OR aggregate_type = $3) \
         ORDER BY transaction_id, global_position \
         LIMIT $4",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.position)
    .bind(filter.aggregate_type.as_deref())
    .bind(limit)
    .bind(filter.beyond_horizon)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(|row| decode(&row)).collect()
}

fn decode(row: &sqlx::postgres::PgRow) -> Result<RecordedEvent, StoreError> {
    let transaction_id: String = row.try_get("transaction_id")?;
    Ok(RecordedEvent {
        global: GlobalPosition {
            transaction_id: transaction_id.parse().unwrap_or_default(),
            position: row.try_get("global_position")?,
        },
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}
