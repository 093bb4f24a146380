use cqrs_es::Aggregate;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use serde_json::Value;
use sqlx::{PgPool, Row};

use crate::error::violated_constraint;
use crate::feed::{FeedFilter, GlobalPosition, read_after};

/// cqrs-es's `PersistedEventRepository` over eshop's tables.
///
/// It differs from postgres-es 0.5's repository where that one falls short:
/// all events of a `persist` go in one multi-row INSERT; `stream_all_events`
/// follows the global order instead of per-aggregate sequence; and database
/// errors travel down the replay stream as `Err` items instead of panicking
/// the streaming task.
#[derive(Debug, Clone)]
pub struct PgEventRepository {
    pool: PgPool,
    page_size: i64,
}

impl PgEventRepository {
    #[must_use]
    pub const fn new(pool: PgPool) -> Self {
        Self {
            pool,
            page_size: 1000,
        }
    }
}

fn persistence_error(error: sqlx::Error) -> PersistenceError {
    if violated_constraint(&error) == Some("events_pkey") {
        return PersistenceError::OptimisticLockError;
    }
    if crate::error::is_unavailable(&error) {
        PersistenceError::ConnectionError(Box::new(error))
    } else {
        PersistenceError::UnknownError(Box::new(error))
    }
}

fn to_usize(value: i64) -> usize {
    usize::try_from(value).unwrap_or(0)
}

fn to_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl PgEventRepository {
    async fn select_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        after_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let rows = sqlx::query(
            "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata \
             FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 ORDER BY sequence",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(to_i64(after_sequence))
        .fetch_all(&self.pool)
        .await
        .map_err(persistence_error)?;
        rows.iter()
            .map(serialized_event)
            .collect::<Result<_, _>>()
            .map_err(persistence_error)
    }
}

fn serialized_event(row: &sqlx::postgres::PgRow) -> Result<SerializedEvent, sqlx::Error> {
    Ok(SerializedEvent::new(
        row.try_get("aggregate_id")?,
        to_usize(row.try_get("sequence")?),
        row.try_get("aggregate_type")?,
        row.try_get("event_type")?,
        row.try_get("event_version")?,
        row.try_get("payload")?,
        row.try_get("metadata")?,
    ))
}

impl PersistedEventRepository for PgEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.select_events::<A>(aggregate_id, 0).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.select_events::<A>(aggregate_id, last_sequence).await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let row = sqlx::query(
            "SELECT last_sequence, current_snapshot, payload FROM snapshots \
             WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(persistence_error)?;
        row.map(|row| {
            Ok(SerializedSnapshot {
                aggregate_id: aggregate_id.to_owned(),
                aggregate: row.try_get("payload")?,
                current_sequence: to_usize(row.try_get("last_sequence")?),
                current_snapshot: to_usize(row.try_get("current_snapshot")?),
            })
        })
        .transpose()
        .map_err(persistence_error)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let mut tx = self.pool.begin().await.map_err(persistence_error)?;
        if !events.is_empty() {
            let mut query = sqlx::QueryBuilder::new(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) ",
            );
            query.push_values(events, |mut row, event| {
                row.push_bind(&event.aggregate_type)
                    .push_bind(&event.aggregate_id)
                    .push_bind(to_i64(event.sequence))
                    .push_bind(&event.event_type)
                    .push_bind(&event.event_version)
                    .push_bind(&event.payload)
                    .push_bind(&event.metadata);
            });
            query
                .build()
                .execute(&mut *tx)
                .await
                .map_err(persistence_error)?;
        }
        if let Some((aggregate_id, payload, current_snapshot)) = snapshot_update {
            let last_sequence = events.last().map_or(0, |e| e.sequence);
            sqlx::query(
                "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
                   SET last_sequence = EXCLUDED.last_sequence, current_snapshot = EXCLUDED.current_snapshot, \
                       payload = EXCLUDED.payload, timestamp = now() \
                   WHERE snapshots.current_snapshot < EXCLUDED.current_snapshot",
            )
            .bind(A::TYPE)
            .bind(&aggregate_id)
            .bind(to_i64(last_sequence))
            .bind(to_i64(current_snapshot))
            .bind(&payload)
            .execute(&mut *tx)
            .await
            .map_err(persistence_error)?;
        }
        tx.commit().await.map_err(persistence_error)
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let events = self.select_events::<A>(aggregate_id, 0).await;
        let (mut feed, stream) = ReplayStream::new(self.page_size.try_into().unwrap_or(1000));
        tokio::spawn(async move {
            match events {
                Ok(events) => {
                    for event in events {
                        if feed.push(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(error) => {
                    let _ = feed.push(Err(error)).await;
                }
            }
        });
        Ok(stream)
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let (mut feed, stream) = ReplayStream::new(self.page_size.try_into().unwrap_or(1000));
        let pool = self.pool.clone();
        let page_size = self.page_size;
        // A one-shot replay of everything committed and visible now.
        let filter = FeedFilter {
            aggregate_types: Some(vec![A::TYPE.to_owned()]),
            beyond_horizon: true,
        };
        tokio::spawn(async move {
            let mut after = GlobalPosition::default();
            loop {
                let page = match read_after(&pool, after, &filter, page_size).await {
                    Ok(page) => page,
                    Err(error) => {
                        // The consumer sees the error; the stream ends.
                        let _ = feed
                            .push(Err(PersistenceError::UnknownError(Box::new(error))))
                            .await;
                        return;
                    }
                };
                let done = page.len() < usize::try_from(page_size).unwrap_or(usize::MAX);
                for event in page {
                    after = event.global;
                    let serialized = SerializedEvent::new(
                        event.aggregate_id,
                        to_usize(event.sequence),
                        event.aggregate_type,
                        event.event_type,
                        event.event_version,
                        event.payload,
                        event.metadata,
                    );
                    if feed.push(Ok(serialized)).await.is_err() {
                        return;
                    }
                }
                if done {
                    return;
                }
            }
        });
        Ok(stream)
    }
}
