//! Dead letters: where a message goes that a projection can never take,
//! with the error and the original payload, counted in
//! `projection_status`. On Kafka, the dead-letter topic; on RabbitMQ, the
//! dead-letter stream (of the same name); without a broker, the
//! `dead_letters` table.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgPool;

use super::{Delivered, Failure, Unavailable, record_offset};

/// Puts away what projections cannot take.
pub struct DeadLetters {
    pool: PgPool,
    outlet: Outlet,
}

/// Where dead letters go.
enum Outlet {
    Topic {
        producer: FutureProducer,
        topic: String,
    },
    Stream(Box<crate::rabbit::DeadLetterStream>),
    Table,
}

impl DeadLetters {
    /// Dead letters published to `topic` on the broker.
    #[must_use]
    pub fn new(pool: PgPool, producer: FutureProducer, topic: String) -> Self {
        Self {
            pool,
            outlet: Outlet::Topic { producer, topic },
        }
    }

    /// Dead letters published to a stream on RabbitMQ.
    #[must_use]
    pub fn on_rabbit(pool: PgPool, stream: crate::rabbit::DeadLetterStream) -> Self {
        Self {
            pool,
            outlet: Outlet::Stream(Box::new(stream)),
        }
    }

    /// Dead letters kept in the `dead_letters` table, when no broker runs.
    #[must_use]
    pub fn in_store(pool: PgPool) -> Self {
        Self {
            pool,
            outlet: Outlet::Table,
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
        let store = |error| Failure::Transient(Unavailable::Store(error));
        match &self.outlet {
            Outlet::Topic { producer, topic } => {
                publish(producer, topic, projection, message, error).await?;
            }
            Outlet::Stream(stream) => {
                stream
                    .publish(projection, message, error)
                    .await
                    .map_err(|error| Failure::Transient(Unavailable::DeadLetterTopic(error)))?;
            }
            Outlet::Table => {
                // Header values are text on every bus eshop publishes to.
                let headers: serde_json::Map<String, serde_json::Value> = message
                    .headers
                    .iter()
                    .map(|(key, value)| {
                        let value = value
                            .as_deref()
                            .map(|v| String::from_utf8_lossy(v).into_owned());
                        (
                            key.clone(),
                            value.map_or(serde_json::Value::Null, Into::into),
                        )
                    })
                    .collect();
                sqlx::query(
                    "INSERT INTO dead_letters (projection, error, topic, partition, \"offset\", key, payload, headers) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(projection)
                .bind(error)
                .bind(&message.topic)
                .bind(message.partition)
                .bind(message.offset)
                .bind(message.key.as_deref())
                .bind(message.payload.as_deref())
                .bind(sqlx::types::Json(headers))
                .execute(&self.pool)
                .await
                .map_err(store)?;
            }
        }
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

/// The headers a dead letter carries besides the message's own: who could
/// not take it, why, and where it came from.
pub(crate) fn headers_of(
    projection: &str,
    message: &Delivered,
    error: &str,
) -> [(&'static str, String); 5] {
    [
        ("dlq_projection", projection.to_owned()),
        ("dlq_error", error.to_owned()),
        ("dlq_topic", message.topic.clone()),
        ("dlq_partition", message.partition.to_string()),
        ("dlq_offset", message.offset.to_string()),
    ]
}

/// Publishes `message` to the dead-letter `topic`, with the error and where
/// it came from in headers.
async fn publish(
    producer: &FutureProducer,
    topic: &str,
    projection: &str,
    message: &Delivered,
    error: &str,
) -> Result<(), Failure> {
    let mut headers = OwnedHeaders::new();
    for (key, value) in headers_of(projection, message, error) {
        headers = headers.insert(Header {
            key,
            value: Some(&value),
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
    let mut record = FutureRecord::to(topic).headers(headers);
    if let Some(key) = &message.key {
        record = record.key(key);
    }
    if let Some(payload) = &message.payload {
        record = record.payload(payload);
    }
    crate::relay::confirmed(producer.send(record, Duration::from_secs(10)).await)
        .map_err(|error| Failure::Transient(Unavailable::DeadLetterTopic(error)))?;
    Ok(())
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
