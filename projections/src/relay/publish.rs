use std::time::Duration;

use cqrs_es::persist::EventUpcaster;
use event_store::feed::RecordedEvent;
use read_models::event::{envelope_of, message_headers};

use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::{KafkaConfig, RelayConfig};

/// Why a batch was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("no topic is configured for aggregate type {0}")]
    NoTopic(String),
    #[error("the broker did not acknowledge: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the envelope could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(
        "a message to partition {partition} was reported delivered without an offset: \
         not confirmed by the broker"
    )]
    Unconfirmed { partition: i32 },
    #[error("RabbitMQ failed: {0}")]
    Rabbit(#[from] lapin::Error),
    #[error("RabbitMQ refused a message (nack)")]
    Nacked,
    #[error("RabbitMQ returned a message with routing key {0}: no lane is bound for it")]
    Unroutable(String),
    #[error("RabbitMQ did not confirm a message: confirms are off on the channel")]
    RabbitUnconfirmed,
}

/// Whether a delivery report confirms its message: only with the offset
/// the broker wrote it at.
///
/// librdkafka's idempotent producer also reports as delivered, with no
/// offset, the messages of a request whose outcome it never learnt (a
/// timeout, a lost connection) once the broker acknowledges a later
/// request ("implicitly acked by subsequent batch success"). It assumes
/// the earlier ones were written; a broker that took the later request as
/// the first of the producer had not written them. CI saw exactly that on
/// a partition created a moment before: its log began at sequence 2, and
/// the first two events were reported delivered. Such a report does not
/// confirm: the relay publishes the batch again from its checkpoint, and
/// consumers pass over what they already have.
pub(crate) fn confirmed(
    report: Result<rdkafka::producer::future_producer::Delivery, (KafkaError, OwnedMessage)>,
) -> Result<(), PublishError> {
    match report {
        Ok(delivery) if delivery.offset >= 0 => Ok(()),
        Ok(delivery) => {
            metrics::counter!("eshop_kafka_unconfirmed_deliveries_total").increment(1);
            Err(PublishError::Unconfirmed {
                partition: delivery.partition,
            })
        }
        Err((error, _)) => Err(error.into()),
    }
}

/// Creates the topics that do not exist yet.
pub async fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    names: &[&str],
    partitions: i32,
    replication: i32,
) -> Result<(), KafkaError> {
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                tracing::warn!(%topic, ?code, "topic could not be created");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}

/// An idempotent Kafka producer.
pub struct KafkaPublisher {
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    upcasters: Vec<Box<dyn EventUpcaster>>,
    kafka: KafkaConfig,
}

fn producer_config(kafka: &KafkaConfig, config: &RelayConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &kafka.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", config.linger_ms.to_string())
        .set("message.timeout.ms", "10000");
    client
}

impl KafkaPublisher {
    pub fn new(kafka: &KafkaConfig, config: &RelayConfig) -> Result<Self, KafkaError> {
        let client = producer_config(kafka, config);
        Ok(Self {
            producer: client.create()?,
            admin: client.create()?,
            upcasters: event_schemas::upcasters(),
            kafka: kafka.clone(),
        })
    }

    /// Replaces the producer when `error` says that its idempotence state is
    /// lost: a fatal error, or the broker refusing its producer id, epoch or
    /// sequence numbers. That happens after an outage: messages time out in
    /// flight, the producer bumps its epoch, and the broker may then refuse
    /// its sequence numbers or fence it for good.
    /// The new producer has a new producer id, and the batch is published
    /// again from the checkpoint; consumers skip what arrives twice. Returns
    /// whether it did.
    pub fn renew_if_broken(
        &mut self,
        config: &RelayConfig,
        error: &PublishError,
    ) -> Result<bool, KafkaError> {
        let refused = matches!(
            error,
            PublishError::Kafka(KafkaError::MessageProduction(
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::UnknownProducerId
                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    | RDKafkaErrorCode::InvalidProducerIdMapping
                    | RDKafkaErrorCode::Fatal
            ))
        );
        let fatal = self.producer.client().fatal_error();
        if !refused && fatal.is_none() {
            return Ok(false);
        }
        tracing::warn!(%error, fatal = ?fatal, "the Kafka producer lost its idempotence state; replacing it");
        let old = std::mem::replace(
            &mut self.producer,
            producer_config(&self.kafka, config).create()?,
        );
        // Dropping purges what it still holds and waits up to 500 ms.
        tokio::task::spawn_blocking(move || drop(old));
        Ok(true)
    }

    /// Creates the topics that do not exist yet.
    pub async fn ensure_topics(&self) -> Result<(), KafkaError> {
        let names: Vec<&str> = self.kafka.topics.topics().collect();
        create_topics(
            &self.admin,
            &names,
            self.kafka.partitions,
            self.kafka.replication,
        )
        .await
    }

    /// Hands a batch to the producer, in order, and returns at once with
    /// its acknowledgement: a future that resolves when the broker has
    /// acknowledged every event of it, or with the first refusal. Batches
    /// sent one after another keep their order within each partition.
    pub fn send(&self, batch: &[RecordedEvent]) -> Result<Acknowledgement, PublishError> {
        let mut deliveries = Vec::with_capacity(batch.len());
        for event in batch {
            let topic = self
                .kafka
                .topics
                .topic(&event.aggregate_type)
                .ok_or_else(|| PublishError::NoTopic(event.aggregate_type.clone()))?;
            let envelope = envelope_of(event, &self.upcasters);
            let payload = serde_json::to_vec(&envelope)?;
            let mut headers = OwnedHeaders::new();
            for (key, value) in message_headers(&envelope) {
                headers = headers.insert(Header {
                    key,
                    value: Some(&value),
                });
            }
            let record = FutureRecord::to(topic)
                .key(&event.aggregate_id)
                .payload(&payload)
                .headers(headers)
                // The record's time is the event's: consumers measure how
                // far behind the source they are from it.
                .timestamp(envelope.time.timestamp_millis());
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((error, _)) => return Err(error.into()),
            }
        }
        let events = batch.len() as u64;
        Ok(Box::pin(async move {
            for delivery in join_all(deliveries).await {
                match delivery {
                    Ok(report) => confirmed(report)?,
                    Err(_) => return Err(KafkaError::Canceled.into()),
                }
            }
            metrics::counter!("eshop_relay_events_published_total").increment(events);
            Ok(())
        }))
    }
}

/// A sent batch's acknowledgement by the broker (see [`Publisher::send`]).
pub type Acknowledgement =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PublishError>> + Send>>;

/// Whether the broker answers a metadata request: the readiness check.
pub async fn broker_reachable(kafka: &super::KafkaConfig) -> Result<(), String> {
    let brokers = kafka.brokers.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .map_err(|error| error.to_string())?;
        rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(2))
            .map(drop)
            .map_err(|error| error.to_string())
    })
    .await
    .map_err(|error| error.to_string())?
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::producer::future_producer::Delivery;

    use super::*;

    // rdkafka's own report type.
    #[allow(clippy::result_large_err)]
    fn delivered(offset: i64) -> Result<Delivery, (KafkaError, OwnedMessage)> {
        Ok(Delivery {
            partition: 2,
            offset,
            timestamp: Timestamp::NotAvailable,
        })
    }

    #[test]
    fn only_a_delivery_with_the_offset_the_broker_wrote_it_at_confirms() {
        assert!(confirmed(delivered(0)).is_ok());
        assert!(confirmed(delivered(41)).is_ok());
        // librdkafka's implicit acknowledgement: no offset
        // (RD_KAFKA_OFFSET_INVALID), and nothing says the broker has it.
        assert!(matches!(
            confirmed(delivered(-1001)),
            Err(PublishError::Unconfirmed { partition: 2 })
        ));
        assert!(matches!(
            confirmed(delivered(-1)),
            Err(PublishError::Unconfirmed { .. })
        ));
        let refused = Err((
            KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas),
            OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 0, None),
        ));
        assert!(matches!(
            confirmed(refused),
            Err(PublishError::Kafka(KafkaError::MessageProduction(
                RDKafkaErrorCode::NotEnoughReplicas
            )))
        ));
    }
}
