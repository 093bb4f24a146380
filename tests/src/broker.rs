use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use uuid::Uuid;

/// The Kafka cluster the tests use, and topic names of their own.
pub struct TestBroker {
    pub brokers: String,
    /// A prefix no other test uses.
    pub prefix: String,
}

/// One consumed message, owned.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub envelope: serde_json::Value,
    pub headers: HashMap<String, String>,
}

impl Consumed {
    /// How many different events `seen` holds: the relay may publish an
    /// event again (docs/streaming.md, "Delivery").
    #[must_use]
    pub fn distinct(seen: &[Self]) -> usize {
        seen.iter()
            .map(|message| &message.envelope["id"])
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// The first copy of each event, in the order they came.
    #[must_use]
    pub fn first_copies(consumed: Vec<Self>) -> Vec<Self> {
        let mut seen = std::collections::HashSet::new();
        consumed
            .into_iter()
            .filter(|message| seen.insert(message.envelope["id"].clone()))
            .collect()
    }
}

impl TestBroker {
    /// The broker at `TEST_KAFKA_BROKERS`; fails the test when none answers.
    pub fn new() -> Self {
        Self::on(&std::env::var("TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()))
    }

    /// The brokers at `brokers` (`host:port,…`); fails the test when none
    /// answers.
    pub fn on(brokers: &str) -> Self {
        let brokers = brokers.to_owned();
        let reachable = brokers.split(',').any(|b| {
            std::net::TcpStream::connect_timeout(
                &b.parse()
                    .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 9092))),
                Duration::from_secs(2),
            )
            .is_ok()
        });
        assert!(
            reachable,
            "streaming tests need Apache Kafka at {brokers}; run scripts/setup (it starts it)"
        );
        Self {
            brokers,
            prefix: format!("test-{}", Uuid::now_v7().simple()),
        }
    }

    /// The broker and this test's topics.
    pub fn kafka(&self) -> projections::relay::KafkaConfig {
        projections::relay::KafkaConfig {
            brokers: self.brokers.clone(),
            topics: self.topics().parse().expect("topics"),
            partitions: 3,
            replication: 1,
        }
    }

    /// This test's dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}.deadletters", self.prefix)
    }

    /// `Product=…,Basket=…,Order=…` topics of this test.
    pub fn topics(&self) -> String {
        format!(
            "Product={p}.products,Basket={p}.baskets,Order={p}.orders",
            p = self.prefix
        )
    }

    pub fn topic_names(&self) -> Vec<String> {
        ["products", "baskets", "orders"]
            .iter()
            .map(|t| format!("{}.{t}", self.prefix))
            .collect()
    }

    /// Consumes this test's event topics from the start until `done` says
    /// so or the deadline passes.
    pub async fn consume_until(
        &self,
        deadline: Duration,
        done: impl Fn(&[Consumed]) -> bool,
    ) -> Vec<Consumed> {
        self.consume_topics_until(&self.topic_names(), deadline, done)
            .await
    }

    /// Consumes the given topics from the start until `done` says so or the
    /// deadline passes.
    pub async fn consume_topics_until(
        &self,
        names: &[String],
        deadline: Duration,
        done: impl Fn(&[Consumed]) -> bool,
    ) -> Vec<Consumed> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set(
                "group.id",
                format!("{}-reader-{}", self.prefix, Uuid::now_v7().simple()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let topics: Vec<&str> = names.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).expect("subscribe");
        let started = Instant::now();
        let mut seen = Vec::new();
        while !done(&seen) {
            let left = deadline.saturating_sub(started.elapsed());
            assert!(
                !left.is_zero(),
                "consumed {} messages before the deadline: {:?}",
                seen.len(),
                seen.last()
            );
            if let Ok(Ok(message)) =
                tokio::time::timeout(left.min(Duration::from_secs(1)), consumer.recv()).await
            {
                seen.push(owned(&message));
            }
        }
        seen
    }
}

impl Default for TestBroker {
    fn default() -> Self {
        Self::new()
    }
}

fn owned(message: &BorrowedMessage<'_>) -> Consumed {
    let mut headers = HashMap::new();
    if let Some(list) = message.headers() {
        for header in list.iter() {
            headers.insert(
                header.key.to_owned(),
                header
                    .value
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default(),
            );
        }
    }
    Consumed {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default(),
        envelope: message
            .payload()
            .and_then(|p| serde_json::from_slice(p).ok())
            .unwrap_or_default(),
        headers,
    }
}
