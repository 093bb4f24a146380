//! Which event bus carries events from the event store to the projectors:
//! one setting, `EVENT_BUS_URL` (flag `--event-bus`), picks it.
//!
//! - `kafka://host:port,…`: Apache Kafka (or any Kafka-protocol broker).
//!   Without `EVENT_BUS_URL`, Kafka at `KAFKA_BROKERS` is the bus, as it
//!   always was.
//! - `amqp://user:password@host:port/vhost` (or `amqps://`): RabbitMQ
//!   ([`crate::rabbit`]): lanes of streams per aggregate type.
//! - `none`: no broker. The relay does not run; each projection reads the
//!   event store's global feed itself ([`crate::projector::StoreSource`]),
//!   below the relay's horizon, with a checkpoint of its own and one active
//!   reader. The smallest deployment: PostgreSQL and the search engine.
//!
//! Domain, read models and the GraphQL API do not know which bus runs:
//! only the relay, the projectors' source, their dead letters and the
//! status (lag) differ.

use std::fmt;
use std::str::FromStr;

use crate::rabbit::{RabbitConfig, RabbitOptions};
use crate::relay::KafkaConfig;

/// The bus as `EVENT_BUS_URL` names it.
#[derive(Clone, PartialEq, Eq)]
pub enum BusUrl {
    /// `kafka://host:port,…`: the bootstrap brokers.
    Kafka(String),
    /// `amqp://…` or `amqps://…`: RabbitMQ.
    RabbitMq(String),
    /// `none`.
    None,
}

impl FromStr for BusUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") {
            return Ok(Self::None);
        }
        if s.starts_with("amqp://") || s.starts_with("amqps://") {
            let host = s.split_once("://").map_or("", |(_, rest)| rest);
            let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
            if host.is_empty() || host.starts_with('/') {
                return Err(format!(
                    "expected amqp://[user:password@]host[:port][/vhost], got '{}'",
                    redacted(s)
                ));
            }
            return Ok(Self::RabbitMq(s.to_owned()));
        }
        if let Some(brokers) = s.strip_prefix("kafka://") {
            let brokers = brokers.trim_end_matches('/');
            let valid = !brokers.is_empty()
                && brokers.split(',').all(|broker| {
                    broker.rsplit_once(':').is_some_and(|(host, port)| {
                        !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                    })
                });
            if !valid {
                return Err(format!(
                    "expected kafka://host:port[,host:port…], got '{s}'"
                ));
            }
            return Ok(Self::Kafka(brokers.to_owned()));
        }
        Err(format!(
            "unknown event bus '{}': expected kafka://host:port[,…], amqp://… or none",
            redacted(s)
        ))
    }
}

impl fmt::Debug for BusUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kafka(brokers) => write!(f, "kafka://{brokers}"),
            Self::RabbitMq(url) => f.write_str(&redacted(url)),
            Self::None => f.write_str("none"),
        }
    }
}

/// A URL with any password replaced, for messages and logs.
pub(crate) fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((credentials, host)) => {
                let user = credentials.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The command-line and environment settings of the bus.
#[derive(Debug, Clone, clap::Args)]
pub struct BusArgs {
    /// The event bus: `kafka://host:port,…`, a RabbitMQ URL
    /// (`amqp://user:password@host:port/vhost`), or `none` (the projectors
    /// read the event store themselves; the relay does not run). Default:
    /// Kafka at `KAFKA_BROKERS`.
    #[arg(long = "event-bus", env = "EVENT_BUS_URL")]
    pub event_bus: Option<BusUrl>,

    #[command(flatten)]
    pub kafka: KafkaConfig,

    #[command(flatten)]
    pub rabbit: RabbitOptions,
}

impl BusArgs {
    /// The bus these settings name: `EVENT_BUS_URL` first, else Kafka at
    /// `KAFKA_BROKERS`.
    #[must_use]
    pub fn bus(&self) -> EventBus {
        match &self.event_bus {
            None => EventBus::Kafka(self.kafka.clone()),
            Some(BusUrl::Kafka(brokers)) => EventBus::Kafka(KafkaConfig {
                brokers: brokers.clone(),
                ..self.kafka.clone()
            }),
            Some(BusUrl::RabbitMq(url)) => EventBus::RabbitMq(RabbitConfig {
                url: url.clone(),
                exchange: self.rabbit.exchange.clone(),
                lanes: self.rabbit.lanes,
                topics: self.kafka.topics.clone(),
            }),
            Some(BusUrl::None) => EventBus::None,
        }
    }
}

/// The event bus in use.
#[derive(Debug, Clone)]
pub enum EventBus {
    Kafka(KafkaConfig),
    RabbitMq(RabbitConfig),
    /// No broker: the projectors read the event store's feed.
    None,
}

impl EventBus {
    /// Its short name, as `/health/ready` and the logs give it.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Kafka(_) => "kafka",
            Self::RabbitMq(_) => "rabbitmq",
            Self::None => "none",
        }
    }

    /// The name of its check on `/health/ready`: the broker's (`kafka`),
    /// or `event_store_feed` with no broker.
    #[must_use]
    pub fn check_name(&self) -> &'static str {
        match self {
            Self::Kafka(_) => "kafka",
            Self::RabbitMq(_) => "rabbitmq",
            Self::None => "event_store_feed",
        }
    }

    /// Whether events go through a broker (and a relay publishes them).
    #[must_use]
    pub fn has_broker(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// Its Kafka settings, when Kafka is the bus.
    #[must_use]
    pub fn kafka(&self) -> Option<&KafkaConfig> {
        match self {
            Self::Kafka(kafka) => Some(kafka),
            Self::RabbitMq(_) | Self::None => None,
        }
    }

    /// Whether the bus answers: the readiness check of `/health/ready`.
    /// With `none`, the event store is the bus, and the database's own
    /// check covers it.
    pub async fn reachable(&self) -> Result<(), String> {
        match self {
            Self::Kafka(kafka) => crate::relay::broker_reachable(kafka).await,
            Self::RabbitMq(rabbit) => crate::rabbit::reachable(rabbit).await,
            Self::None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bus_url_names_kafka_brokers_or_none() {
        assert_eq!(
            "kafka://a:9092,b:9093".parse::<BusUrl>(),
            Ok(BusUrl::Kafka("a:9092,b:9093".to_owned()))
        );
        assert_eq!(
            "kafka://127.0.0.1:9092/".parse::<BusUrl>(),
            Ok(BusUrl::Kafka("127.0.0.1:9092".to_owned()))
        );
        assert_eq!("none".parse::<BusUrl>(), Ok(BusUrl::None));
        assert_eq!(
            "amqp://eshop:secret@rabbit:5672/%2f".parse::<BusUrl>(),
            Ok(BusUrl::RabbitMq(
                "amqp://eshop:secret@rabbit:5672/%2f".to_owned()
            ))
        );
        assert!("amqps://rabbit.example".parse::<BusUrl>().is_ok());
        assert!("amqp://".parse::<BusUrl>().is_err());
        assert!("amqp://user:pw@/vhost".parse::<BusUrl>().is_err());
        let shown = format!(
            "{:?}",
            "amqp://eshop:secret@rabbit/"
                .parse::<BusUrl>()
                .expect("valid")
        );
        assert!(!shown.contains("secret"), "{shown}");
        assert_eq!(" NONE ".parse::<BusUrl>(), Ok(BusUrl::None));
        for wrong in [
            "kafka://",
            "kafka://host",
            "kafka://host:0",
            "kafka://:9092",
            "kafka://a:1,",
        ] {
            assert!(wrong.parse::<BusUrl>().is_err(), "{wrong}");
        }
    }

    #[test]
    fn an_unknown_bus_is_refused_without_showing_its_password() {
        let error = "nats://user:secret@host:4222"
            .parse::<BusUrl>()
            .expect_err("unknown");
        assert!(error.contains("nats://user:***@host:4222"), "{error}");
        assert!(!error.contains("secret"), "{error}");
    }
}
