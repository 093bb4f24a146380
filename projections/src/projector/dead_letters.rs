//! The dead-letter topic: where a message goes that a projection can never
//! take, with the error and the original payload, counted in
//! `projection_status`.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgPool;

use super::{Delivered, Failure, Unavailable, record_offset};

/// Publishes what projections cannot take to the dead-letter topic.
pub struct DeadLetters {
    pool: PgPool,
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    #[must_use]
    pub fn new(pool: PgPool, producer: FutureProducer, topic: String) -> Self {
        Self {
            pool,
            producer,
            topic,
        }
    }

    /// Publishes `message`, which `projection` cannot take, with the error;
    /// counts it in `projection_status` and records the partition's offset
    /// as passed.
    pub async fn send(
        &self,
        projection: &str,
        message: &Delivered,
        error: &str,
    ) -> Result<(), Failure> {
        tracing::error!(projection, topic = %message.topic, offset = message.offset, %error, "event dead-lettered");
        let partition = message.partition.to_string();
        let offset = message.offset.to_string();
        let mut headers = OwnedHeaders::new();
        for (key, value) in [
            ("dlq_projection", projection),
            ("dlq_error", error),
            ("dlq_topic", message.topic.as_str()),
            ("dlq_partition", &partition),
            ("dlq_offset", &offset),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        // The original headers follow (`ce_*`, `traceparent`), so the dead
        // letter stays in the command's trace and can be routed like the
        // event.
        for (key, value) in &message.headers {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        let mut record = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = &message.key {
            record = record.key(key);
        }
        if let Some(payload) = &message.payload {
            record = record.payload(payload);
        }
        crate::relay::confirmed(self.producer.send(record, Duration::from_secs(10)).await)
            .map_err(|error| Failure::Transient(Unavailable::DeadLetterTopic(error)))?;
        let store = |error| Failure::Transient(Unavailable::Store(error));
        sqlx::query(
            "INSERT INTO projection_status (projection, dead_letters, last_dead_letter_at) VALUES ($1, 1, now()) \
             ON CONFLICT (projection) DO UPDATE \
               SET dead_letters = projection_status.dead_letters + 1, last_dead_letter_at = now()",
        )
        .bind(projection)
        .execute(&self.pool)
        .await
        .map_err(store)?;
        metrics::counter!("eshop_projection_events_total", "projection" => projection.to_owned(), "outcome" => "dead_lettered")
            .increment(1);
        let mut db = self.pool.acquire().await.map_err(store)?;
        record_offset(&mut db, projection, message.origin(), None)
            .await
            .map_err(store)?;
        Ok(())
    }
}

/// Marks a dead-lettered event's sequence as taken, when its envelope says
/// which it is: the aggregate's later events then follow on from it rather
/// than fetching it again from the event store as a gap.
pub(super) async fn pass_over(
    pool: &PgPool,
    projection: &str,
    message: &Delivered,
) -> Result<(), sqlx::Error> {
    let Some(envelope) = message
        .payload
        .as_deref()
        .and_then(|value| serde_json::from_slice::<event_schemas::Envelope>(value).ok())
    else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO projection_progress AS p (projection, aggregate_id, sequence) VALUES ($1, $2, $3) \
         ON CONFLICT (projection, aggregate_id) DO UPDATE SET sequence = GREATEST(p.sequence, EXCLUDED.sequence)",
    )
    .bind(projection)
    .bind(&envelope.aggregateid)
    .bind(envelope.aggregatesequence)
    .execute(pool)
    .await?;
    Ok(())
}
