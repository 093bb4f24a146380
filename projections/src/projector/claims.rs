//! Claims: each event taken once per projection, by its aggregate
//! sequence, in the transaction that applies it; the events a stream
//! skipped read from the event store; each partition's offset recorded.

use sqlx::{PgConnection, PgPool};
use tracing::Instrument;

use super::{Failure, Projection, Unavailable};
use crate::event::Event;

/// Where an event stands against what a projection holds of its aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// The next event of the aggregate: apply it.
    Next,
    /// Already applied (a redelivery or a duplicate): skip it.
    Taken,
    /// Newer than the next one: the events after `held` and before this
    /// one have not arrived (yet). They are read from the event store.
    Gap { held: i64 },
}

/// Records that `projection` takes event `sequence` of `aggregate_id`, and
/// says how that event relates to the one it held. The row stays locked
/// until the transaction ends, so concurrent consumers of the same
/// partition (around a rebalance) take each event once.
async fn claim(
    db: &mut PgConnection,
    projection: &str,
    aggregate_id: &str,
    sequence: i64,
) -> Result<Claim, sqlx::Error> {
    // The common case, one statement: the event right after the held one.
    let next = if sequence == 1 {
        "INSERT INTO projection_progress (projection, aggregate_id, sequence) VALUES ($1, $2, $3) \
         ON CONFLICT (projection, aggregate_id) DO NOTHING"
    } else {
        "UPDATE projection_progress SET sequence = $3 \
         WHERE projection = $1 AND aggregate_id = $2 AND sequence = $3 - 1"
    };
    let done = sqlx::query(next)
        .bind(projection)
        .bind(aggregate_id)
        .bind(sequence)
        .execute(&mut *db)
        .await?;
    if done.rows_affected() == 1 {
        return Ok(Claim::Next);
    }
    // Taken already, or a gap: lock the row (creating it at 0 when the
    // aggregate is new to the projection) and compare.
    sqlx::query(
        "INSERT INTO projection_progress (projection, aggregate_id, sequence) VALUES ($1, $2, 0) \
         ON CONFLICT (projection, aggregate_id) DO NOTHING",
    )
    .bind(projection)
    .bind(aggregate_id)
    .execute(&mut *db)
    .await?;
    let held: i64 = sqlx::query_scalar(
        "SELECT sequence FROM projection_progress WHERE projection = $1 AND aggregate_id = $2 FOR UPDATE",
    )
    .bind(projection)
    .bind(aggregate_id)
    .fetch_one(&mut *db)
    .await?;
    let claim = Claim::judge(held, sequence);
    if claim != Claim::Taken {
        sqlx::query(
            "UPDATE projection_progress SET sequence = $3 WHERE projection = $1 AND aggregate_id = $2",
        )
        .bind(projection)
        .bind(aggregate_id)
        .bind(sequence)
        .execute(&mut *db)
        .await?;
    }
    Ok(claim)
}

impl Claim {
    /// How event `sequence` of an aggregate relates to `held`, the last
    /// one the projection took of it (0: none).
    fn judge(held: i64, sequence: i64) -> Self {
        if held >= sequence {
            Self::Taken
        } else if held == sequence - 1 {
            Self::Next
        } else {
            Self::Gap { held }
        }
    }
}

/// The events of `event`'s aggregate after `held` and before `event`, read
/// from the event store: the stream skipped them or will deliver them late
/// (a broker that reordered a retried batch, a zombie producer's stray
/// request). Taking them now keeps the view exact; their late copies are
/// then skipped as taken.
pub async fn missing_events(
    db: &mut PgConnection,
    projection: &str,
    event: &Event,
    held: i64,
    upcasters: &[Box<dyn cqrs_es::persist::EventUpcaster>],
) -> Result<Vec<Event>, Failure> {
    let envelope = &event.envelope;
    let recorded = event_store::feed::read_aggregate(
        &mut *db,
        &envelope.aggregatetype,
        &envelope.aggregateid,
        held,
        envelope.aggregatesequence,
    )
    .await
    .map_err(|error| Failure::Transient(Unavailable::EventStore(error)))?;
    let expected = envelope.aggregatesequence - held - 1;
    if recorded.len() as i64 != expected {
        return Err(Failure::Poison(format!(
            "events {}..{} of {} {} are neither in the stream nor in the event store",
            held + 1,
            envelope.aggregatesequence - 1,
            envelope.aggregatetype,
            envelope.aggregateid
        )));
    }
    tracing::warn!(
        projection,
        aggregate.id = %envelope.aggregateid,
        held,
        arrived = envelope.aggregatesequence,
        "events missing from the stream were read from the event store"
    );
    metrics::counter!("eshop_projection_gap_events_total", "projection" => projection.to_owned())
        .increment(recorded.len() as u64);
    recorded
        .iter()
        .map(|r| {
            Event::from_recorded(r, upcasters).map_err(|error| {
                Failure::Poison(format!(
                    "event {} of the aggregate, read from the event store: {error}",
                    r.sequence
                ))
            })
        })
        .collect()
}

/// The advisory lock a projection's live transactions hold shared, and a
/// rebuild's swap takes exclusively.
#[must_use]
pub fn swap_lock(projection: &str) -> String {
    format!("eshop.projection.{projection}")
}

/// Where a message came from: its partition and offset.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// Records how far `projection` got in a partition: the next offset to
/// read and the event it last took, for `eshop projections status`.
pub async fn record_offset(
    db: &mut PgConnection,
    projection: &str,
    source: Origin<'_>,
    event: Option<&Event>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_offsets AS p (projection, topic, partition, next_offset, global_position, event_time) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (projection, topic, partition) DO UPDATE \
           SET next_offset = GREATEST(p.next_offset, EXCLUDED.next_offset), \
               global_position = GREATEST(p.global_position, EXCLUDED.global_position), \
               event_time = GREATEST(p.event_time, EXCLUDED.event_time), updated_at = now()",
    )
    .bind(projection)
    .bind(source.topic)
    .bind(source.partition)
    .bind(source.offset + 1)
    .bind(event.map(|e| e.envelope.globalposition))
    .bind(event.map(|e| e.envelope.time))
    .execute(db)
    .await?;
    Ok(())
}

/// Applies one message with effectively-once semantics, and records the
/// partition's offset in the same transaction. Returns false when the
/// event had already been applied. Events of the aggregate that should
/// have come before it and did not are read from the event store and
/// applied first.
pub async fn apply_message(
    pool: &PgPool,
    projection: &dyn Projection,
    source: Origin<'_>,
    event: &Event,
) -> Result<bool, Failure> {
    let mut tx = pool.begin().await?;
    // A rebuild swapping the projection's tables waits for this
    // transaction, and holds the next one back until it is done.
    sqlx::query("SELECT pg_advisory_xact_lock_shared(hashtext($1))")
        .bind(swap_lock(projection.name()))
        .execute(&mut *tx)
        .await?;
    record_offset(&mut tx, projection.name(), source, Some(event)).await?;
    let applied = take(&mut tx, projection, event).await?;
    tx.commit().await?;
    Ok(applied)
}

/// Applies several admitted messages in one transaction, with the same
/// claims as [`apply_message`], and records each partition's offset once,
/// for its last message. Returns how many events were applied rather than
/// skipped as already applied. Any failure rolls the whole batch back.
pub async fn apply_batch(
    pool: &PgPool,
    projection: &dyn Projection,
    messages: &[(Origin<'_>, Event)],
) -> Result<usize, Failure> {
    let span = telemetry::span!(
        "db.transaction",
        projection = projection.name(),
        events = messages.len()
    );
    apply_batch_once(pool, projection, messages)
        .instrument(span)
        .await
}

async fn apply_batch_once(
    pool: &PgPool,
    projection: &dyn Projection,
    messages: &[(Origin<'_>, Event)],
) -> Result<usize, Failure> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock_shared(hashtext($1))")
        .bind(swap_lock(projection.name()))
        .execute(&mut *tx)
        .await?;
    let events: Vec<&Event> = messages.iter().map(|(_, event)| event).collect();
    let applied = take_all(&mut tx, projection, &events).await?;
    // Each partition's furthest message.
    let mut furthest: std::collections::HashMap<(&str, i32), (Origin<'_>, &Event)> =
        std::collections::HashMap::new();
    for (source, event) in messages {
        let entry = furthest
            .entry((source.topic, source.partition))
            .or_insert((*source, event));
        if source.offset > entry.0.offset {
            *entry = (*source, event);
        }
    }
    for (source, event) in furthest.into_values() {
        record_offset(&mut tx, projection.name(), source, Some(event)).await?;
    }
    tx.commit().await?;
    Ok(applied)
}

/// The span of one event's projection: a child of the command that wrote
/// the event (its W3C `traceparent`), so that the command's trace shows
/// where its events were projected, or of the batch when the event names
/// no command. Only in a sampled trace (`Span::none()` otherwise).
pub(super) fn event_span(projection: &dyn Projection, event: &Event) -> tracing::Span {
    let traceparent = event.envelope.traceparent.as_deref();
    let sampled = match traceparent.and_then(telemetry::well_formed) {
        Some(traceparent) => telemetry::enabled() && telemetry::is_sampled_parent(traceparent),
        None => telemetry::sampling(),
    };
    if !sampled {
        return tracing::Span::none();
    }
    let span = tracing::debug_span!(
        target: "eshop::trace",
        "project",
        otel.name = %format_args!("project {}", projection.name()),
        otel.kind = "consumer",
        projection = projection.name(),
        event.id = %event.envelope.id,
        event.r#type = %event.envelope.event_type,
        aggregate.id = %event.envelope.aggregateid,
    );
    telemetry::follow(&span, traceparent);
    span
}

/// Claims `event` for the projection and applies it, after the events of
/// its aggregate that should have come before it and did not. Returns
/// false when it had been applied already.
pub(crate) async fn take(
    db: &mut PgConnection,
    projection: &dyn Projection,
    event: &Event,
) -> Result<bool, Failure> {
    Ok(take_all(db, projection, &[event]).await? == 1)
}

/// Claims each event (in order) for the projection, then applies in one
/// go those claimed, each after the events of its aggregate that should
/// have come before it and did not. Returns how many were claimed rather
/// than skipped as taken already.
async fn take_all(
    db: &mut PgConnection,
    projection: &dyn Projection,
    events: &[&Event],
) -> Result<usize, Failure> {
    let mut claimed = Vec::with_capacity(events.len());
    for event in events {
        let missing = claim_event(&mut *db, projection, event)
            .instrument(event_span(projection, event))
            .await?;
        claimed.push(missing);
    }
    let mut folded: Vec<&Event> = Vec::with_capacity(events.len());
    for (event, missing) in events.iter().zip(&claimed) {
        if let Some(missing) = missing {
            folded.extend(missing);
            folded.push(event);
        }
    }
    projection.apply(&mut *db, &folded).await?;
    Ok(claimed.iter().filter(|c| c.is_some()).count())
}

/// Claims `event` for the projection. None when it was taken already;
/// otherwise the events of its aggregate to apply before it (read from the
/// event store when the stream skipped them).
async fn claim_event(
    db: &mut PgConnection,
    projection: &dyn Projection,
    event: &Event,
) -> Result<Option<Vec<Event>>, Failure> {
    let envelope = &event.envelope;
    let claim = claim(
        &mut *db,
        projection.name(),
        &envelope.aggregateid,
        envelope.aggregatesequence,
    )
    .await?;
    Ok(match claim {
        Claim::Taken => None,
        Claim::Next => Some(Vec::new()),
        Claim::Gap { held } => {
            let upcasters = event_schemas::upcasters();
            Some(missing_events(&mut *db, projection.name(), event, held, &upcasters).await?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_next_taken_or_after_a_gap() {
        assert_eq!(
            Claim::judge(0, 1),
            Claim::Next,
            "the first of a new aggregate"
        );
        assert_eq!(Claim::judge(4, 5), Claim::Next);
        assert_eq!(Claim::judge(5, 5), Claim::Taken, "a redelivery");
        assert_eq!(Claim::judge(7, 5), Claim::Taken, "a late duplicate");
        assert_eq!(
            Claim::judge(2, 5),
            Claim::Gap { held: 2 },
            "3 and 4 missing"
        );
        assert_eq!(
            Claim::judge(0, 3),
            Claim::Gap { held: 0 },
            "1 and 2 missing"
        );
    }
}
