//! RabbitMQ as the event bus (`EVENT_BUS_URL=amqp://…`): the relay
//! publishes every event to one topic exchange, which routes it into a
//! stream of its aggregate type's lane; projectors read the lanes.
//!
//! - **Lanes.** Each aggregate type has `RABBITMQ_LANES` streams, named
//!   `{topic}.{lane}` after the type's topic in `EVENT_TOPICS` (for
//!   example `eshop.orders.v1.3`). An aggregate's lane is a hash of its id
//!   ([`lane_of`]), so all its events go through one stream, in order. A
//!   stream is RabbitMQ's replicated, append-only log: it keeps every
//!   message for every reader, each at an offset of its own.
//! - **Routing.** The relay publishes to the topic exchange
//!   `RABBITMQ_EXCHANGE` (`eshop.events.v1`) with the routing key
//!   `{ce type}.{lane}`, for example `eshop.Order.OrderPlaced.3`. Each lane
//!   stream is bound with `eshop.{AggregateType}.*.{lane}`; other services
//!   bind queues of their own (`eshop.Order.#`, `#`) without eshop's code.
//! - **Offsets in PostgreSQL.** A projection records each lane's next
//!   offset in the same transaction as its view change
//!   (`projection_offsets`, topic and lane as topic and partition), exactly
//!   as on Kafka; it subscribes to a lane from there.
//! - **Scale-out.** RabbitMQ 3.10 has no single active consumer for
//!   streams (3.11+), so which process reads which lane is decided in
//!   PostgreSQL, next to the offsets: see [`source`].

mod probe;
mod publish;
mod source;

use std::fmt;
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use sha2::{Digest, Sha256};

pub use probe::lane_ends;
pub use publish::{DeadLetterStream, RabbitPublisher};
pub use source::RabbitSource;

use crate::relay::TopicMap;

/// RabbitMQ's own settings (the URL comes from `EVENT_BUS_URL`).
#[derive(Debug, Clone, clap::Args)]
pub struct RabbitOptions {
    /// With RabbitMQ: the topic exchange the relay publishes every event
    /// to (routing key `{ce type}.{lane}`).
    #[arg(
        long = "rabbitmq-exchange",
        env = "RABBITMQ_EXCHANGE",
        default_value = "eshop.events.v1"
    )]
    pub exchange: String,

    /// With RabbitMQ: lanes (streams) per aggregate type; an aggregate's
    /// events all go through one. Change it only with the relay stopped and
    /// every lane drained: aggregates move between lanes.
    #[arg(
        long = "rabbitmq-lanes",
        env = "RABBITMQ_LANES",
        default_value_t = DEFAULT_LANES,
        value_parser = clap::value_parser!(u16).range(1..=256)
    )]
    pub lanes: u16,
}

impl RabbitOptions {
    /// The lanes per aggregate type when `RABBITMQ_LANES` is unset.
    #[must_use]
    pub fn default_lanes() -> u16 {
        DEFAULT_LANES
    }
}

const DEFAULT_LANES: u16 = 8;

/// Where RabbitMQ is and how eshop's events lie on it.
#[derive(Clone)]
pub struct RabbitConfig {
    /// The AMQP URL (`amqp://user:password@host:port/vhost`).
    pub url: String,
    pub exchange: String,
    pub lanes: u16,
    /// The stream name prefix per aggregate type (`EVENT_TOPICS`).
    pub topics: TopicMap,
}

impl fmt::Debug for RabbitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitConfig")
            .field("url", &crate::bus::redacted(&self.url))
            .field("exchange", &self.exchange)
            .field("lanes", &self.lanes)
            .field("topics", &self.topics)
            .finish()
    }
}

/// The lane of an aggregate among `lanes`: the first eight bytes of the
/// SHA-256 of its id, big-endian, modulo `lanes`. Any service can compute
/// it.
#[must_use]
pub fn lane_of(aggregate_id: &str, lanes: u16) -> u16 {
    let digest = Sha256::digest(aggregate_id.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    let lane = u64::from_be_bytes(head) % u64::from(lanes.max(1));
    u16::try_from(lane).expect("a lane is below the u16 lane count")
}

impl RabbitConfig {
    /// The stream of `lane` of the events of `topic`.
    #[must_use]
    pub fn stream(topic: &str, lane: u16) -> String {
        format!("{topic}.{lane}")
    }

    /// The routing key of an event of type `ce_type` in `lane`.
    #[must_use]
    pub fn routing_key(ce_type: &str, lane: u16) -> String {
        format!("{ce_type}.{lane}")
    }

    /// The binding of `lane` of `aggregate_type`'s stream.
    #[must_use]
    pub fn binding(aggregate_type: &str, lane: u16) -> String {
        format!("eshop.{aggregate_type}.*.{lane}")
    }

    /// Every lane of the given aggregate types: (type, topic, lane).
    pub fn lanes_of<'a>(
        &'a self,
        aggregate_types: &'a [&'a str],
    ) -> impl Iterator<Item = (&'a str, &'a str, u16)> + 'a {
        aggregate_types.iter().flat_map(move |aggregate_type| {
            self.topics
                .topic(aggregate_type)
                .into_iter()
                .flat_map(move |topic| {
                    (0..self.lanes).map(move |lane| (*aggregate_type, topic, lane))
                })
        })
    }
}

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to RabbitMQ, named after what uses it (shown in the
/// management UI).
pub(crate) async fn connect(config: &RabbitConfig, name: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect(&config.url, properties),
    )
    .await
    {
        Ok(connection) => connection,
        Err(_) => Err(lapin::Error::from(lapin::ErrorKind::IOError(
            std::sync::Arc::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection to RabbitMQ within {CONNECT_TIMEOUT:?}"),
            )),
        ))),
    }
}

fn stream_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    arguments
}

/// Declares the exchange and the lane streams of `aggregate_types`, bound
/// to it (idempotent: what exists is left as it is).
pub(crate) async fn declare(
    channel: &Channel,
    config: &RabbitConfig,
    aggregate_types: &[&str],
) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            config.exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    for (aggregate_type, topic, lane) in config.lanes_of(aggregate_types) {
        let stream = RabbitConfig::stream(topic, lane);
        declare_stream(channel, &stream).await?;
        channel
            .queue_bind(
                stream.as_str().into(),
                config.exchange.as_str().into(),
                RabbitConfig::binding(aggregate_type, lane).as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Declares a durable stream (the dead-letter stream, a lane).
pub(crate) async fn declare_stream(channel: &Channel, name: &str) -> Result<(), lapin::Error> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            stream_arguments(),
        )
        .await?;
    Ok(())
}

/// A header's value as bytes, when it is a string.
pub(crate) fn header_bytes(value: &AMQPValue) -> Option<Vec<u8>> {
    match value {
        AMQPValue::LongString(s) => Some(s.as_bytes().to_vec()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes().to_vec()),
        AMQPValue::ByteArray(b) => Some(b.as_slice().to_vec()),
        _ => None,
    }
}

/// A header's value as a number, when it is one.
pub(crate) fn header_number(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

/// Whether RabbitMQ answers: a connection opens: the readiness check.
pub async fn reachable(config: &RabbitConfig) -> Result<(), String> {
    let connection = connect(config, "eshop readiness")
        .await
        .map_err(|error| error.to_string())?;
    let _ = connection.close(200, "ok".into()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aggregates_lane_is_fixed_by_its_id_and_spreads_aggregates() {
        let id = "0191f0b8-7d1c-7a3e-9a56-2f0e4c1d2b3a";
        assert_eq!(lane_of(id, 8), lane_of(id, 8));
        assert!(lane_of(id, 8) < 8);
        assert_eq!(lane_of(id, 1), 0);
        let mut counts = [0u32; 8];
        for n in 0..8000 {
            counts[usize::from(lane_of(&format!("aggregate-{n}"), 8))] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn each_lane_is_bound_to_its_aggregate_types_events_of_that_lane_only() {
        let key = RabbitConfig::routing_key("eshop.Order.OrderPlaced", 3);
        assert_eq!(key, "eshop.Order.OrderPlaced.3");
        assert_eq!(RabbitConfig::binding("Order", 3), "eshop.Order.*.3");
        assert_eq!(
            RabbitConfig::stream("eshop.orders.v1", 3),
            "eshop.orders.v1.3"
        );
    }
}
