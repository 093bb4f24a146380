//! The relay's side of RabbitMQ: every event published to the exchange,
//! routed into its lane, with publisher confirms. The relay's checkpoint
//! moves only over batches RabbitMQ has confirmed (a confirm from a stream
//! means the message is written to a quorum of its replicas).

use cqrs_es::persist::EventUpcaster;
use event_store::feed::RecordedEvent;
use futures::future;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use read_models::event::{envelope_of, message_headers};

use super::{RabbitConfig, connect, declare, lane_of};
use crate::relay::{Acknowledgement, PublishError};

/// Publishes batches of events to RabbitMQ, reconnecting when the
/// connection is gone.
pub struct RabbitPublisher {
    config: RabbitConfig,
    upcasters: Vec<Box<dyn EventUpcaster>>,
    link: Option<(Connection, Channel)>,
}

impl RabbitPublisher {
    #[must_use]
    pub fn new(config: RabbitConfig) -> Self {
        Self {
            config,
            upcasters: event_schemas::upcasters(),
            link: None,
        }
    }

    /// The channel to publish on, with confirms on and the topology
    /// declared; a new connection when there is none or it broke.
    async fn channel(&mut self) -> Result<Channel, lapin::Error> {
        if let Some((connection, channel)) = &self.link
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        self.link = None;
        let connection = connect(&self.config, "eshop relay").await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let types: Vec<&str> = self.config.topics.aggregate_types().collect();
        declare(&channel, &self.config, &types).await?;
        tracing::info!(exchange = %self.config.exchange, lanes = self.config.lanes, "connected to RabbitMQ");
        self.link = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// Connects and declares the exchange and every lane.
    pub async fn ensure_topology(&mut self) -> Result<(), PublishError> {
        self.channel().await?;
        Ok(())
    }

    /// Forgets the connection after a failure: the next batch opens a new
    /// one.
    pub fn reset(&mut self) {
        self.link = None;
    }

    /// Publishes a batch, in order, and returns its acknowledgement: a
    /// future that resolves when RabbitMQ has confirmed every message of it
    /// (and routed each to its lane: a message returned unroutable is a
    /// refusal), or with the first refusal.
    ///
    /// Every message of the batch is handed to the connection before any
    /// socket write is waited for. A lapin publish queues its frames (and
    /// takes its confirm's delivery tag) when first polled, then waits until
    /// they are written; awaiting each publish in turn cost one hand-over to
    /// lapin's I/O thread per message, which on a busy machine held a batch
    /// of 20 events for up to 300 ms (docs/benchmarks.md). Polled once each,
    /// in order, the frames go out in the batch's order and in as few
    /// writes as the I/O thread likes.
    pub async fn send(&mut self, batch: &[RecordedEvent]) -> Result<Acknowledgement, PublishError> {
        let channel = self.channel().await?;
        let mut messages = Vec::with_capacity(batch.len());
        for event in batch {
            if self.config.topics.topic(&event.aggregate_type).is_none() {
                return Err(PublishError::NoTopic(event.aggregate_type.clone()));
            }
            messages.push(self.message(event)?);
        }
        let mut publishes = Vec::with_capacity(messages.len());
        for message in &messages {
            let mut publish = Box::pin(future::maybe_done(channel.basic_publish(
                self.config.exchange.as_str().into(),
                message.key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.payload,
                message.properties.clone(),
            )));
            // The first poll queues the message; what is left is the write.
            let _ = futures::poll!(publish.as_mut());
            publishes.push(publish);
        }
        let mut confirms = Vec::with_capacity(messages.len());
        for (mut publish, message) in publishes.into_iter().zip(&messages) {
            publish.as_mut().await;
            let confirm = publish
                .as_mut()
                .take_output()
                .expect("a publish awaited to its end has its output")?;
            confirms.push((confirm, message.key.clone()));
        }
        let events = batch.len() as u64;
        Ok(Box::pin(async move {
            for (confirm, key) in confirms {
                match confirm.await? {
                    Confirmation::Ack(None) => {}
                    Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
                        return Err(PublishError::Unroutable(key));
                    }
                    Confirmation::Nack(None) => return Err(PublishError::Nacked),
                    Confirmation::NotRequested => return Err(PublishError::RabbitUnconfirmed),
                }
            }
            metrics::counter!("eshop_relay_events_published_total").increment(events);
            Ok(())
        }))
    }

    /// The message of `event`: its CloudEvents envelope as the payload, the
    /// envelope's headers and the aggregate id as headers.
    fn message(&self, event: &RecordedEvent) -> Result<Message, PublishError> {
        let lane = lane_of(&event.aggregate_id, self.config.lanes);
        let envelope = envelope_of(event, &self.upcasters);
        let payload = serde_json::to_vec(&envelope)?;
        let mut headers = FieldTable::default();
        for (key, value) in message_headers(&envelope) {
            headers.insert(key.into(), AMQPValue::LongString(value.into()));
        }
        headers.insert(
            "aggregate_id".into(),
            AMQPValue::LongString(event.aggregate_id.as_str().into()),
        );
        let time = u64::try_from(envelope.time.timestamp()).unwrap_or(0);
        let properties = BasicProperties::default()
            .with_content_type("application/cloudevents+json".into())
            .with_message_id(envelope.id.to_string().into())
            .with_type(envelope.event_type.as_str().into())
            .with_timestamp(time)
            .with_delivery_mode(2)
            .with_headers(headers);
        Ok(Message {
            key: RabbitConfig::routing_key(&envelope.event_type, lane),
            payload,
            properties,
        })
    }
}

/// An event as the relay publishes it.
struct Message {
    /// The routing key, `{ce type}.{lane}`.
    key: String,
    payload: Vec<u8>,
    properties: BasicProperties,
}

/// The dead-letter stream on RabbitMQ: what a projection can never take,
/// with the error and where it came from in headers (`dlq_projection`,
/// `dlq_error`, `dlq_topic`, `dlq_partition`, `dlq_offset`), the original
/// headers, the aggregate id and the original payload. Published with a
/// confirm, on a connection opened when first needed and again after a
/// failure.
pub struct DeadLetterStream {
    config: RabbitConfig,
    stream: String,
    channel: tokio::sync::Mutex<Option<(Connection, Channel)>>,
}

impl DeadLetterStream {
    #[must_use]
    pub fn new(config: RabbitConfig, stream: String) -> Self {
        Self {
            config,
            stream,
            channel: tokio::sync::Mutex::new(None),
        }
    }

    /// Publishes one dead letter and waits for RabbitMQ's confirm.
    pub async fn publish(
        &self,
        projection: &str,
        message: &crate::projector::Delivered,
        error: &str,
    ) -> Result<(), PublishError> {
        let mut held = self.channel.lock().await;
        let channel = match held.as_ref() {
            Some((connection, channel))
                if connection.status().connected() && channel.status().connected() =>
            {
                channel.clone()
            }
            _ => {
                *held = None;
                let connection =
                    connect(&self.config, &format!("eshop dead letters {projection}")).await?;
                let channel = connection.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                super::declare_stream(&channel, &self.stream).await?;
                *held = Some((connection, channel.clone()));
                channel
            }
        };
        let mut headers = FieldTable::default();
        for (key, value) in crate::projector::dead_letter_headers(projection, message, error) {
            headers.insert(key.into(), AMQPValue::LongString(value.into()));
        }
        for (key, value) in &message.headers {
            if let Some(value) = value {
                headers.insert(
                    key.as_str().into(),
                    AMQPValue::LongString(value.as_slice().into()),
                );
            }
        }
        if let Some(key) = &message.key {
            headers.insert(
                "aggregate_id".into(),
                AMQPValue::LongString(key.as_slice().into()),
            );
        }
        let properties = BasicProperties::default()
            .with_content_type("application/cloudevents+json".into())
            .with_delivery_mode(2)
            .with_headers(headers);
        let result = async {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    self.stream.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    message.payload.as_deref().unwrap_or_default(),
                    properties,
                )
                .await?;
            match confirm.await? {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
                    Err(PublishError::Unroutable(self.stream.clone()))
                }
                Confirmation::Nack(None) => Err(PublishError::Nacked),
                Confirmation::NotRequested => Err(PublishError::RabbitUnconfirmed),
            }
        }
        .await;
        if result.is_err() {
            *held = None;
        }
        result
    }
}
