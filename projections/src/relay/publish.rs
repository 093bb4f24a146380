use std::time::Duration;

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use event_schemas::envelope::Position;
use event_schemas::{Envelope, EventMetadata};
use event_store::feed::RecordedEvent;
use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::RelayConfig;

/// Why a batch was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("no topic is configured for aggregate type {0}")]
    NoTopic(String),
    #[error("the broker did not acknowledge: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the envelope could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The envelope of a stored event: payload upcast to its current schema,
/// metadata turned into CloudEvents attributes. A payload that is not of
/// the `{"EventType": data}` shape is published as it is, so that a
/// consumer can dead-letter it rather than the relay stopping on it.
#[must_use]
pub fn envelope_of(event: &RecordedEvent, upcasters: &[Box<dyn EventUpcaster>]) -> Envelope {
    let current = event_store::upcast(
        SerializedEvent::new(
            event.aggregate_id.clone(),
            usize::try_from(event.sequence).unwrap_or(0),
            event.aggregate_type.clone(),
            event.event_type.clone(),
            event.event_version.clone(),
            event.payload.clone(),
            event.metadata.clone(),
        ),
        upcasters,
    );
    let data = event_schemas::split_payload(&current.payload)
        .map_or_else(|| current.payload.clone(), |(_, data)| data.clone());
    let at = Position {
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        sequence: event.sequence,
        global_position: event.global.position,
    };
    Envelope::new(
        at,
        &current.event_type,
        &current.event_version,
        data,
        &EventMetadata::from_json(&event.metadata),
    )
}

/// An idempotent Kafka producer.
pub struct Publisher {
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    upcasters: Vec<Box<dyn EventUpcaster>>,
}

impl Publisher {
    pub fn new(config: &RelayConfig) -> Result<Self, KafkaError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.kafka.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "10000");
        Ok(Self {
            producer: client.create()?,
            admin: client.create()?,
            upcasters: event_schemas::upcasters(),
        })
    }

    /// Creates the topics that do not exist yet.
    pub async fn ensure_topics(&self, config: &RelayConfig) -> Result<(), KafkaError> {
        let topics: Vec<NewTopic<'_>> = config
            .kafka
            .topics
            .topics()
            .map(|topic| {
                NewTopic::new(
                    topic,
                    config.partitions,
                    TopicReplication::Fixed(config.replication),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in self.admin.create_topics(&topics, &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                        tracing::warn!(%topic, ?code, "topic could not be created");
                    });
                }
            }
        }
        Ok(())
    }

    /// Publishes a batch and waits until the broker acknowledged every event.
    pub async fn publish(
        &self,
        config: &RelayConfig,
        batch: &[RecordedEvent],
    ) -> Result<(), PublishError> {
        let mut deliveries = Vec::with_capacity(batch.len());
        for event in batch {
            let topic = config
                .kafka
                .topics
                .topic(&event.aggregate_type)
                .ok_or_else(|| PublishError::NoTopic(event.aggregate_type.clone()))?;
            let envelope = envelope_of(event, &self.upcasters);
            let payload = serde_json::to_vec(&envelope)?;
            let id = envelope.id.to_string();
            let mut headers = OwnedHeaders::new()
                .insert(Header {
                    key: "content-type",
                    value: Some("application/cloudevents+json"),
                })
                .insert(Header {
                    key: "ce_id",
                    value: Some(&id),
                })
                .insert(Header {
                    key: "ce_type",
                    value: Some(&envelope.event_type),
                })
                .insert(Header {
                    key: "ce_schemaversion",
                    value: Some(&envelope.schemaversion),
                });
            if let Some(traceparent) = &envelope.traceparent {
                headers = headers.insert(Header {
                    key: "traceparent",
                    value: Some(traceparent),
                });
            }
            let record = FutureRecord::to(topic)
                .key(&event.aggregate_id)
                .payload(&payload)
                .headers(headers);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((error, _)) => return Err(error.into()),
            }
        }
        for delivery in join_all(deliveries).await {
            match delivery {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(error.into()),
                Err(_) => return Err(KafkaError::Canceled.into()),
            }
        }
        Ok(())
    }
}
