use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use uuid::Uuid;

/// The event bus the streaming suites run on: `TEST_EVENT_BUS` (`kafka`,
/// the default, `rabbitmq` or `none`). `scripts/test` runs the suites that
/// exercise the bus once on each, with the same assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBus {
    Kafka,
    RabbitMq,
    None,
}

/// Lanes per aggregate type on RabbitMQ in the tests (as Kafka topics have
/// three partitions).
pub const TEST_LANES: u16 = 3;

impl TestBus {
    /// The bus `TEST_EVENT_BUS` names; an unknown one fails the test.
    #[must_use]
    pub fn from_env() -> Self {
        match std::env::var("TEST_EVENT_BUS").as_deref() {
            Err(_) | Ok("" | "kafka") => Self::Kafka,
            Ok("rabbitmq") => Self::RabbitMq,
            Ok("none") => Self::None,
            Ok(other) => panic!("TEST_EVENT_BUS={other}: expected kafka, rabbitmq or none"),
        }
    }
}

/// The bus the tests use (on Kafka, the cluster and topic names of their
/// own; on RabbitMQ, the node at `TEST_RABBITMQ_URL`, and an exchange and
/// lanes of their own).
pub struct TestBroker {
    pub brokers: String,
    pub rabbitmq: String,
    /// A prefix no other test uses.
    pub prefix: String,
    pub bus: TestBus,
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
    /// The bus `TEST_EVENT_BUS` names; on Kafka, the broker at
    /// `TEST_KAFKA_BROKERS`, failing the test when none answers.
    pub fn new() -> Self {
        let brokers =
            std::env::var("TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
        let rabbitmq = rabbitmq_url();
        match TestBus::from_env() {
            TestBus::Kafka => Self::on(&brokers),
            TestBus::RabbitMq => {
                let reachable = std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], 5672)),
                    Duration::from_secs(2),
                )
                .is_ok()
                    || !rabbitmq.contains("127.0.0.1");
                assert!(
                    reachable,
                    "streaming tests on RabbitMQ need it at {rabbitmq}; run scripts/setup (it starts it)"
                );
                Self {
                    brokers,
                    rabbitmq,
                    prefix: format!("test-{}", Uuid::now_v7().simple()),
                    bus: TestBus::RabbitMq,
                }
            }
            TestBus::None => Self {
                brokers,
                rabbitmq,
                prefix: format!("test-{}", Uuid::now_v7().simple()),
                bus: TestBus::None,
            },
        }
    }

    /// RabbitMQ at `url` (a node of the test's own).
    pub fn on_rabbitmq(url: &str) -> Self {
        Self {
            brokers: String::new(),
            rabbitmq: url.to_owned(),
            prefix: format!("test-{}", Uuid::now_v7().simple()),
            bus: TestBus::RabbitMq,
        }
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
            rabbitmq: rabbitmq_url(),
            prefix: format!("test-{}", Uuid::now_v7().simple()),
            bus: TestBus::Kafka,
        }
    }

    /// This test's RabbitMQ settings: its own exchange, and lanes named
    /// after its topics.
    pub fn rabbit(&self) -> projections::rabbit::RabbitConfig {
        projections::rabbit::RabbitConfig {
            url: self.rabbitmq.clone(),
            exchange: format!("{}.events", self.prefix),
            lanes: TEST_LANES,
            topics: self.topics().parse().expect("topics"),
        }
    }

    /// Every lane stream of this test: (topic, lane, stream).
    fn lane_streams(&self) -> Vec<(String, i32, String)> {
        self.topic_names()
            .into_iter()
            .flat_map(|topic| {
                (0..TEST_LANES).map(move |lane| {
                    let stream = projections::rabbit::RabbitConfig::stream(&topic, lane);
                    (topic.clone(), i32::from(lane), stream)
                })
            })
            .collect()
    }

    /// The bus, as the relay and the projectors take it.
    pub fn event_bus(&self) -> projections::bus::EventBus {
        match self.bus {
            TestBus::Kafka => projections::bus::EventBus::Kafka(self.kafka()),
            TestBus::RabbitMq => projections::bus::EventBus::RabbitMq(self.rabbit()),
            TestBus::None => projections::bus::EventBus::None,
        }
    }

    /// The bus as `EVENT_BUS_URL` names it.
    pub fn url(&self) -> String {
        match self.bus {
            TestBus::Kafka => format!("kafka://{}", self.brokers),
            TestBus::RabbitMq => self.rabbitmq.clone(),
            TestBus::None => "none".to_owned(),
        }
    }

    /// The topic that messages of `aggregate_type`'s events carry (in
    /// `projection_offsets` and dead letters): this test's topic on Kafka,
    /// the event store's feed with no broker.
    pub fn topic_of(&self, aggregate_type: &str) -> String {
        match self.bus {
            TestBus::Kafka | TestBus::RabbitMq => {
                let suffix = match aggregate_type {
                    "Product" => "products",
                    "Basket" => "baskets",
                    "Order" => "orders",
                    other => panic!("no topic for {other}"),
                };
                format!("{}.{suffix}", self.prefix)
            }
            TestBus::None => projections::projector::STORE_TOPIC.to_owned(),
        }
    }

    /// Every event of the store, once each, as the projectors receive it:
    /// from this test's topics (a republished copy counts once), or read
    /// from the event store's feed with no broker.
    pub async fn published(&self, pool: &sqlx::PgPool) -> Vec<Consumed> {
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(pool)
            .await
            .expect("count events");
        match self.bus {
            TestBus::Kafka => {
                let consumed = self
                    .consume_until(Duration::from_secs(60), |seen| {
                        Consumed::distinct(seen) as i64 >= total
                    })
                    .await;
                Consumed::first_copies(consumed)
            }
            TestBus::RabbitMq => {
                let consumed = crate::rabbit::read_streams(
                    &self.rabbitmq,
                    &self.lane_streams(),
                    Duration::from_secs(60),
                    |seen| Consumed::distinct(seen) as i64 >= total,
                )
                .await;
                Consumed::first_copies(consumed)
            }
            TestBus::None => {
                // The horizon is the server's: a transaction open anywhere on
                // it (another test's) holds the feed back for a moment.
                let events = crate::eventually(
                    Duration::from_secs(60),
                    "every event below the horizon",
                    || async {
                        let events = event_store::feed::read_after(
                            pool,
                            event_store::feed::GlobalPosition::default(),
                            &event_store::feed::FeedFilter::default(),
                            total.max(1),
                        )
                        .await
                        .expect("read the feed");
                        (events.len() as i64 == total).then_some(events)
                    },
                )
                .await;
                let upcasters = event_schemas::upcasters();
                events
                    .into_iter()
                    .map(|event| {
                        let (offset, key) = (event.global.position, event.aggregate_id.clone());
                        let envelope = read_models::event::envelope_from(event, &upcasters);
                        let headers = read_models::event::message_headers(&envelope)
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect();
                        Consumed {
                            topic: projections::projector::STORE_TOPIC.to_owned(),
                            partition: 0,
                            offset,
                            key,
                            envelope: serde_json::to_value(&envelope).expect("json"),
                            headers,
                        }
                    })
                    .collect()
            }
        }
    }

    /// Makes `projection` receive `message` again once its projectors are
    /// (re)started, as after a crash before their position was written
    /// down: on Kafka, a copy published to its partition; with no broker,
    /// the projection's checkpoint moved back to just before it (taking its
    /// reader lock to do so: stop its projectors first).
    pub async fn deliver_again(&self, db: &crate::TestDb, projection: &str, message: &Consumed) {
        match self.bus {
            TestBus::Kafka => {
                use rdkafka::producer::{FutureProducer, FutureRecord};
                let producer: FutureProducer = ClientConfig::new()
                    .set("bootstrap.servers", &self.brokers)
                    .create()
                    .expect("producer");
                let payload = serde_json::to_vec(&message.envelope).expect("json");
                producer
                    .send(
                        FutureRecord::to(&message.topic)
                            .key(&message.key)
                            .partition(message.partition)
                            .payload(&payload),
                        Duration::from_secs(10),
                    )
                    .await
                    .expect("duplicate published");
            }
            TestBus::RabbitMq => {
                let stream = projections::rabbit::RabbitConfig::stream(
                    &message.topic,
                    u16::try_from(message.partition).expect("a lane"),
                );
                crate::rabbit::publish_again(&self.rabbitmq, &stream, message).await;
            }
            TestBus::None => {
                use projections::projector::StoreSource;
                let lock = tokio::time::timeout(
                    Duration::from_secs(30),
                    projections::leader::hold(&db.url, &StoreSource::reader_lock(projection)),
                )
                .await
                .expect("the stopped projectors release the reader lock")
                .expect("the reader lock");
                let moved = sqlx::query(
                    "UPDATE relay_checkpoints c SET transaction_id = e.transaction_id, \
                     global_position = e.global_position - 1 \
                     FROM events e WHERE c.name = $1 AND e.global_position = $2",
                )
                .bind(StoreSource::checkpoint_name(projection))
                .bind(message.offset)
                .execute(&db.pool)
                .await
                .expect("rewind the checkpoint");
                assert_eq!(moved.rows_affected(), 1, "{projection} has a checkpoint");
                drop(lock);
            }
        }
    }

    /// The dead letters, at least `count` of them, as consumers of the
    /// dead-letter outlet see them: the original key, payload and headers,
    /// and `dlq_projection`, `dlq_error`, `dlq_topic`, `dlq_partition` and
    /// `dlq_offset` headers (with no broker, read from the `dead_letters`
    /// table).
    pub async fn dead_letters(&self, pool: &sqlx::PgPool, count: usize) -> Vec<Consumed> {
        match self.bus {
            TestBus::Kafka => {
                self.consume_topics_until(
                    &[self.dead_letter_topic()],
                    Duration::from_secs(60),
                    |seen| seen.len() >= count,
                )
                .await
            }
            TestBus::RabbitMq => {
                let stream = self.dead_letter_topic();
                crate::rabbit::read_streams(
                    &self.rabbitmq,
                    &[(stream.clone(), 0, stream)],
                    Duration::from_secs(60),
                    |seen| seen.len() >= count,
                )
                .await
            }
            TestBus::None => {
                crate::eventually(Duration::from_secs(60), "the dead letters", || async {
                    let rows: Vec<DeadLetterRow> = sqlx::query_as(
                        "SELECT projection, error, topic, partition, \"offset\", key, payload, headers \
                         FROM dead_letters ORDER BY id",
                    )
                    .fetch_all(pool)
                    .await
                    .expect("dead letters");
                    (rows.len() >= count).then(|| rows.into_iter().map(DeadLetterRow::consumed).collect())
                })
                .await
            }
        }
    }

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

/// The RabbitMQ node the tests use: `TEST_RABBITMQ_URL`, default the one
/// `scripts/setup` starts.
fn rabbitmq_url() -> String {
    std::env::var("TEST_RABBITMQ_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672/%2f".into())
}

/// A row of the `dead_letters` table.
#[derive(sqlx::FromRow)]
struct DeadLetterRow {
    projection: String,
    error: String,
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: sqlx::types::Json<HashMap<String, String>>,
}

impl DeadLetterRow {
    fn consumed(self) -> Consumed {
        let mut headers = self.headers.0;
        headers.insert("dlq_projection".into(), self.projection);
        headers.insert("dlq_error".into(), self.error);
        headers.insert("dlq_topic".into(), self.topic.clone());
        headers.insert("dlq_partition".into(), self.partition.to_string());
        headers.insert("dlq_offset".into(), self.offset.to_string());
        Consumed {
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
            key: String::from_utf8(self.key.expect("a key")).expect("a UTF-8 key"),
            envelope: serde_json::from_slice(&self.payload.expect("a payload")).expect("JSON"),
            headers,
        }
    }
}

impl Drop for TestBroker {
    /// On RabbitMQ, the test's lanes, dead-letter stream and exchange go:
    /// streams keep a process and files each on the shared node.
    fn drop(&mut self) {
        if self.bus == TestBus::RabbitMq && !std::thread::panicking() {
            let mut streams: Vec<String> = self
                .lane_streams()
                .into_iter()
                .map(|(_, _, stream)| stream)
                .collect();
            streams.push(self.dead_letter_topic());
            crate::rabbit::delete(&self.rabbitmq, &format!("{}.events", self.prefix), streams);
        }
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
