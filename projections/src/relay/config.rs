use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

/// Topic per aggregate type, parsed from `Product=eshop.products.v1,…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMap(BTreeMap<String, String>);

impl TopicMap {
    /// The topic of an aggregate type's events.
    #[must_use]
    pub fn topic(&self, aggregate_type: &str) -> Option<&str> {
        self.0.get(aggregate_type).map(String::as_str)
    }

    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.0.values().map(String::as_str)
    }

    /// The aggregate types that have a topic.
    pub fn aggregate_types(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

impl FromStr for TopicMap {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut map = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (aggregate_type, topic) = part
                .split_once('=')
                .ok_or_else(|| format!("expected AggregateType=topic, got '{part}'"))?;
            map.insert(aggregate_type.trim().to_owned(), topic.trim().to_owned());
        }
        if map.is_empty() {
            return Err("at least one AggregateType=topic is needed".into());
        }
        Ok(Self(map))
    }
}

/// Where events are published: the broker and the topic of each
/// aggregate type. Shared by the relay and the projectors.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaConfig {
    /// Kafka bootstrap servers (any Kafka-protocol broker).
    #[arg(
        long = "kafka-brokers",
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,

    /// Topic per aggregate type.
    #[arg(
        long = "event-topics",
        env = "EVENT_TOPICS",
        default_value = "Product=eshop.products.v1,Basket=eshop.baskets.v1,Order=eshop.orders.v1"
    )]
    pub topics: TopicMap,

    /// Partitions of each topic eshop creates (the relay and the projectors
    /// both create missing topics before use).
    #[arg(
        long = "topic-partitions",
        env = "KAFKA_TOPIC_PARTITIONS",
        default_value_t = 6
    )]
    pub partitions: i32,

    /// Replication factor of each topic eshop creates.
    #[arg(
        long = "topic-replication",
        env = "KAFKA_TOPIC_REPLICATION",
        default_value_t = 1
    )]
    pub replication: i32,
}

/// The relay's own options (the bus comes from [`crate::bus::BusArgs`],
/// shared with the projectors).
#[derive(Debug, Clone, clap::Args)]
pub struct RelayOptions {
    /// Events read and published per batch.
    #[arg(
        long = "relay-batch-size",
        env = "RELAY_BATCH_SIZE",
        default_value_t = 500
    )]
    pub batch_size: i64,

    /// Batches sent to the broker and not yet acknowledged, at most. The
    /// relay reads and sends the next batch while earlier ones are in
    /// flight; its checkpoint only moves over acknowledged batches.
    #[arg(
        long = "relay-max-in-flight",
        env = "RELAY_MAX_IN_FLIGHT",
        default_value_t = 4,
        value_parser = clap::value_parser!(u16).range(1..=64)
    )]
    pub max_in_flight: u16,

    /// How long the producer waits to fill a request to the broker, in ms
    /// (librdkafka's `linger.ms`).
    #[arg(long = "relay-linger-ms", env = "RELAY_LINGER_MS", default_value_t = 2)]
    pub linger_ms: u64,

    /// How long an idle relay waits before looking for new events, in ms.
    #[arg(long = "relay-poll-ms", env = "RELAY_POLL_MS", default_value_t = 25)]
    pub poll_ms: u64,

    /// Name of this relay's checkpoint and leader lock; relays with the same
    /// name share one position and only one of them publishes at a time.
    #[arg(long = "relay-name", env = "RELAY_NAME", default_value = "eshop")]
    pub name: String,
}

/// Configuration of the relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The bus it publishes to: Kafka or RabbitMQ (with no broker, there
    /// is no relay).
    pub bus: crate::bus::EventBus,
    pub batch_size: i64,
    pub max_in_flight: usize,
    pub linger_ms: u64,
    pub poll_ms: u64,
    pub name: String,
}

impl RelayConfig {
    #[must_use]
    pub fn new(bus: crate::bus::EventBus, options: RelayOptions) -> Self {
        Self {
            bus,
            batch_size: options.batch_size,
            max_in_flight: usize::from(options.max_in_flight),
            linger_ms: options.linger_ms,
            poll_ms: options.poll_ms,
            name: options.name,
        }
    }

    #[must_use]
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_parsed_per_aggregate_type() {
        let topics: TopicMap = "Product=p.v1, Order = o.v1".parse().expect("valid");
        assert_eq!(topics.topic("Product"), Some("p.v1"));
        assert_eq!(topics.topic("Order"), Some("o.v1"));
        assert_eq!(topics.topic("Basket"), None);
        assert!("".parse::<TopicMap>().is_err());
        assert!("Product".parse::<TopicMap>().is_err());
    }
}
