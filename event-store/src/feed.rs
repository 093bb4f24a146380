//! Reading every event in the global order.
//!
//! The order is `(transaction_id, global_position)`. Positions come from an
//! identity column, so they are unique but have gaps, and a transaction that
//! took a lower position may commit after one that took a higher one. A
//! reader that simply followed `global_position` could pass a position
//! whose transaction had not committed yet and never come back for it.
//!
//! Instead a reader only takes events below a *horizon*: a transaction id
//! such that every transaction below it that could append events has
//! finished. Any transaction still to commit events then has an id at or
//! above it, so nothing can ever appear behind a position once it has been
//! read.
//!
//! The horizon is the oldest transaction still running in the current
//! snapshot, not counting transactions of connections named
//! [`READ_MODEL_WRITER`] (the projectors): those write read models only,
//! and the event store refuses their appends (a trigger on `events`).
//! Without that exception every event would wait for the slowest view
//! transaction in the cluster. The identification is positive and safe in
//! any race: a running transaction is passed over only while a projector's
//! connection is seen holding exactly its id; one that has just finished
//! and is no longer seen holds the horizon for one more read.
//!
//! The price is that events of a committed transaction wait until every
//! older transaction that could still append has finished (commands are
//! short, so this is milliseconds). Transaction ids are shared by every
//! database of a PostgreSQL cluster, so a long writing transaction in ANY
//! database of the cluster holds the horizon back: keep the event store's
//! cluster free of long-running transactions. A relay whose role cannot
//! see other roles' `pg_stat_activity.backend_xid` (grant it
//! `pg_read_all_stats`) waits for the projectors' transactions too: slower,
//! never wrong.
//!
//! [`READ_MODEL_WRITER`]: crate::READ_MODEL_WRITER

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
    /// Only events of these aggregate types (all when `None`).
    pub aggregate_types: Option<Vec<String>>,
    /// Also read committed events above the stable horizon. Right for a
    /// one-shot replay of what is visible now; wrong for a reader that
    /// follows the feed and keeps its position, which could then pass an
    /// event still to be committed below it.
    pub beyond_horizon: bool,
}

/// The horizon as a common table expression `horizon(below)`, with the
/// projectors' application name as the query's parameter `$app` (see the
/// module docs).
fn horizon(app: usize) -> String {
    format!(
        "horizon AS ( \
           SELECT coalesce( \
             (SELECT min(running) FROM pg_snapshot_xip(pg_current_snapshot()) AS running \
              WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity AS a \
                                WHERE a.backend_xid = running::xid AND a.application_name = ${app})), \
             pg_snapshot_xmax(pg_current_snapshot())) AS below \
         )"
    )
}

/// The end of the feed as [`read_after`] would read it now: the position
/// of the last event below the horizon, of any aggregate type (the default
/// position when there is none), found by a short walk back along
/// `events_global_order`. Whatever a reader of the feed could take later
/// lies beyond it: an event still to become readable belongs to a
/// transaction at or above the horizon, so above this end. A reader that
/// found nothing new when the end was `E` need not read again before the
/// end moves past `E`.
pub async fn readable_end(pool: &PgPool) -> Result<GlobalPosition, StoreError> {
    let row = sqlx::query(&format!(
        "WITH {} \
         SELECT events.transaction_id::text AS transaction_id, events.global_position \
         FROM events, horizon \
         WHERE events.transaction_id < horizon.below \
         ORDER BY events.transaction_id DESC, events.global_position DESC \
         LIMIT 1",
        horizon(1)
    ))
    .bind(crate::READ_MODEL_WRITER)
    .fetch_optional(pool)
    .await?;
    row.map_or(Ok(GlobalPosition::default()), |row| global_position(&row))
}

/// Reads at most `limit` events after `after`, in global order, from
/// transactions that can no longer be overtaken (see the module docs).
///
/// The order names the table's columns: a bare `transaction_id` would be
/// the text output column of the same name, ordering `"10" < "9"` (wrong
/// across a change in digit count, and a sort of every pending row instead
/// of a walk along `events_global_order`).
pub async fn read_after(
    pool: &PgPool,
    after: GlobalPosition,
    filter: &FeedFilter,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "WITH {} \
         SELECT transaction_id::text AS transaction_id, global_position, aggregate_type, aggregate_id, \
                sequence, event_type, event_version, payload, metadata, recorded_at \
         FROM events, horizon \
         WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
           AND ($5 OR transaction_id < horizon.below) \
           AND ($3::text[] IS NULL OR aggregate_type = ANY($3)) \
         ORDER BY events.transaction_id, events.global_position \
         LIMIT $4",
        horizon(6)
    ))
    .bind(after.transaction_id.to_string())
    .bind(after.position)
    .bind(filter.aggregate_types.as_deref())
    .bind(limit)
    .bind(filter.beyond_horizon)
    .bind(crate::READ_MODEL_WRITER)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(|row| decode(&row)).collect()
}

/// Reads at most `limit` events in `after < position <= until`, in global
/// order, where `until` is an end [`readable_end`] returned: everything up
/// to it is final (its transactions finished, and any transaction still to
/// append has a higher id), so the read needs no horizon of its own. One
/// lookup of the end can then serve many readers, each reading a plain
/// range of `events_global_order`.
pub async fn read_until(
    pool: &PgPool,
    after: GlobalPosition,
    until: GlobalPosition,
    filter: &FeedFilter,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    if until <= after {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT transaction_id::text AS transaction_id, global_position, aggregate_type, aggregate_id, \
                sequence, event_type, event_version, payload, metadata, recorded_at \
         FROM events \
         WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
           AND (transaction_id, global_position) <= ($3::text::xid8, $4) \
           AND ($5::text[] IS NULL OR aggregate_type = ANY($5)) \
         ORDER BY events.transaction_id, events.global_position \
         LIMIT $6",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.position)
    .bind(until.transaction_id.to_string())
    .bind(until.position)
    .bind(filter.aggregate_types.as_deref())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(|row| decode(&row)).collect()
}

/// Reads the events of one aggregate with a sequence in `after < sequence <
/// before`, in sequence order. Projectors use it to take, from the source of
/// truth, events the stream delivered late or not at all (a gap between the
/// sequence they hold and the one that arrived).
pub async fn read_aggregate<'e>(
    db: impl sqlx::PgExecutor<'e>,
    aggregate_type: &str,
    aggregate_id: &str,
    after: i64,
    before: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT transaction_id::text AS transaction_id, global_position, aggregate_type, aggregate_id, \
                sequence, event_type, event_version, payload, metadata, recorded_at \
         FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 AND sequence < $4 \
         ORDER BY sequence",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(after)
    .bind(before)
    .fetch_all(db)
    .await?;
    rows.into_iter().map(|row| decode(&row)).collect()
}

/// The columns [`decode`] reads, for a query of `events`.
pub const COLUMNS: &str = "events.transaction_id::text AS transaction_id, events.global_position, \
    events.aggregate_type, events.aggregate_id, events.sequence, events.event_type, events.event_version, \
    events.payload, events.metadata, events.recorded_at";

/// A transaction id as PostgreSQL spells an `xid8`: anything else is an
/// error, never transaction 0 (which would put the event first in the
/// global order).
fn transaction_id(text: String) -> Result<u64, StoreError> {
    text.parse().map_err(|_| StoreError::Invalid {
        what: "transaction id",
        value: text,
    })
}

/// Decodes a row of `events` selected with [`COLUMNS`].
pub fn decode(row: &sqlx::postgres::PgRow) -> Result<RecordedEvent, StoreError> {
    Ok(RecordedEvent {
        global: global_position(row)?,
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

/// A row's `transaction_id` (as text) and `global_position`.
fn global_position(row: &sqlx::postgres::PgRow) -> Result<GlobalPosition, StoreError> {
    Ok(GlobalPosition {
        transaction_id: transaction_id(row.try_get("transaction_id")?)?,
        position: row.try_get("global_position")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_id_that_is_not_a_number_is_an_error_not_zero() {
        assert_eq!(transaction_id("748213".to_owned()).ok(), Some(748_213));
        let error = transaction_id("12a".to_owned()).expect_err("not a number");
        assert!(error.to_string().contains("\"12a\""), "{error}");
    }
}
