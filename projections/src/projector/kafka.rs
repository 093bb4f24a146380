//! The Kafka source: one consumer group per projection, its rebalances,
//! fences and renewals, and the admission of each message against the
//! projection's record of where it stands.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use sqlx::PgPool;

use super::{Delivered, Origin, ProjectorConfig, Source};
use crate::position::{Admission, Positions};

/// Logs each projection's partitions as the group assigns them, so an
/// operator sees how processes share the work, and notes when the
/// consumer's own session ran out (see [`Fences`]).
pub struct Rebalances {
    projection: String,
    session_lost: std::sync::atomic::AtomicBool,
}

impl Rebalances {
    /// Whether this consumer's session with the group ran out on its own
    /// side: the coordinator did not answer for the session timeout
    /// (librdkafka's `SESSTMOUT`), or the runner did not poll for
    /// `max.poll.interval.ms` (`MAXPOLL`). librdkafka then rejoins the
    /// group, and a static member fences its own old member id.
    pub fn session_lost(&self) -> bool {
        self.session_lost.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl rdkafka::ClientContext for Rebalances {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        if matches!(fac, "SESSTMOUT" | "MAXPOLL") {
            self.session_lost
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        rdkafka::client::DefaultClientContext.log(level, fac, log_message);
    }
}

impl rdkafka::consumer::ConsumerContext for Rebalances {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Assign(list) = rebalance {
            let partitions: Vec<String> = list
                .elements()
                .iter()
                .map(|e| format!("{}/{}", e.topic(), e.partition()))
                .collect();
            tracing::info!(projection = %self.projection, partitions = %partitions.join(","), "partitions assigned");
        }
    }
}

/// The Kafka settings of a projector on Kafka.
fn kafka_of(config: &ProjectorConfig) -> anyhow::Result<&crate::relay::KafkaConfig> {
    config
        .bus
        .kafka()
        .with_context(|| format!("the event bus is {}, not Kafka", config.bus.name()))
}

/// The consumer every projection runner uses.
pub type ProjectionConsumer = StreamConsumer<Rebalances>;

/// A consumer in the projection's group, subscribed to its topics.
fn consumer(
    config: &ProjectorConfig,
    name: &str,
    aggregate_types: &[&str],
) -> anyhow::Result<ProjectionConsumer> {
    let kafka = kafka_of(config)?;
    let mut client = ClientConfig::new();
    if let Some(instance) = &config.instance_id {
        client.set("group.instance.id", instance);
    }
    let consumer: ProjectionConsumer = client
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", format!("{}.{name}", config.group_prefix))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("topic.metadata.refresh.interval.ms", "10000")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set(
            "max.poll.interval.ms",
            config.max_poll_interval_ms.to_string(),
        )
        .create_with_context(Rebalances {
            projection: name.to_owned(),
            session_lost: std::sync::atomic::AtomicBool::new(false),
        })
        .context("failed to create the consumer")?;
    let topics: Vec<&str> = aggregate_types
        .iter()
        .filter_map(|t| kafka.topics.topic(t))
        .collect();
    consumer.subscribe(&topics).context("failed to subscribe")?;
    Ok(consumer)
}

/// Replaces a projection's consumer: the old one is closed on the blocking
/// pool (closing a consumer that lost its group can wait on the broker
/// for long, or for ever), for at most the session timeout; then a new one
/// joins the group.
async fn renew_consumer(
    old: ProjectionConsumer,
    config: &ProjectorConfig,
    name: &str,
    aggregate_types: &[&str],
) -> anyhow::Result<ProjectionConsumer> {
    let closing = tokio::task::spawn_blocking(move || drop(old));
    let patience = Duration::from_millis(u64::from(config.session_timeout_ms));
    if tokio::time::timeout(patience, closing).await.is_err() {
        tracing::warn!(
            projection = name,
            "the old consumer has not closed yet; joining with a new one meanwhile"
        );
    }
    consumer(config, name, aggregate_types)
}

/// Notes whether a rebalance has handed the consumer its partitions.
struct Joined(std::sync::atomic::AtomicBool);

impl rdkafka::ClientContext for Joined {}

impl rdkafka::consumer::ConsumerContext for Joined {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Assign(_) = rebalance {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Makes the consumer group of projection `name` rebalance: a consumer of
/// its own, without an instance id, joins the group and leaves it again.
/// Each join makes every member rejoin, and the group's leader assigns all
/// the partitions afresh from the topics' current metadata. The consumer
/// takes no message and commits nothing; whatever partitions it holds for
/// a moment go back to the projection's members when it leaves.
pub async fn rebalance_group(
    config: &ProjectorConfig,
    name: &str,
    aggregate_types: &[&str],
) -> anyhow::Result<()> {
    let kafka = kafka_of(config)?;
    let topics: Vec<String> = aggregate_types
        .iter()
        .filter_map(|t| kafka.topics.topic(t))
        .map(str::to_owned)
        .collect();
    let consumer: rdkafka::consumer::BaseConsumer<Joined> = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", format!("{}.{name}", config.group_prefix))
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set(
            "max.poll.interval.ms",
            config.max_poll_interval_ms.to_string(),
        )
        .create_with_context(Joined(std::sync::atomic::AtomicBool::new(false)))
        .context("failed to create the rebalancing consumer")?;
    // The join waits for every member to rejoin: at most a session timeout
    // for a member that is gone.
    let deadline =
        Duration::from_millis(u64::from(config.session_timeout_ms) * 2) + Duration::from_secs(10);
    tokio::task::spawn_blocking(move || {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).context("failed to subscribe")?;
        let started = std::time::Instant::now();
        while !consumer
            .context()
            .0
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            anyhow::ensure!(
                started.elapsed() < deadline,
                "the group did not take the rebalancing consumer in within {deadline:?}"
            );
            // Messages are dropped unread: they stay the projection's.
            let _ = consumer.poll(Duration::from_millis(100));
        }
        // Dropping the consumer closes it: it leaves the group.
        drop(consumer);
        Ok(())
    })
    .await
    .context("rebalancing task panicked")?
}

/// What every projection runner needs from Kafka: its topics (and the
/// dead-letter topic) created, a producer for dead letters, and a consumer
/// in its group. Topics are created before subscribing: a subscription to a
/// topic that does not exist yet would leave the consumer without
/// partitions until its next metadata refresh.
pub(crate) async fn connect(
    config: &ProjectorConfig,
    name: &str,
    aggregate_types: &[&str],
) -> anyhow::Result<(FutureProducer, ProjectionConsumer)> {
    let kafka = kafka_of(config)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .context("failed to create the dead-letter producer")?;
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .create()
            .context("failed to create the admin client")?;
    let topics: Vec<&str> = aggregate_types
        .iter()
        .filter_map(|t| kafka.topics.topic(t))
        .collect();
    crate::relay::create_topics(&admin, &topics, kafka.partitions, kafka.replication)
        .await
        .context("failed to create the projection's topics")?;
    crate::relay::create_topics(
        &admin,
        &[config.dead_letter_topic.as_str()],
        1,
        kafka.replication,
    )
    .await
    .context("failed to create the dead-letter topic")?;
    let consumer = consumer(config, name, aggregate_types)?;
    Ok((producer, consumer))
}

/// What a projection runner does next.
enum Next {
    /// Take this message.
    Message(rdkafka::message::OwnedMessage),
    /// Ask the consumer again (it failed for a moment).
    Again,
    /// Replace the consumer ([`renew_consumer`]) and start over from the
    /// recorded positions.
    Renew,
}

/// The next message of `consumer`, or a renewal: asked for by the stall
/// watch on `renew`, or needed after the consumer failed for good and
/// `fences` allows another (see [`Fences`]).
async fn receive(
    consumer: &ProjectionConsumer,
    renew: &tokio::sync::Notify,
    fences: &mut Fences,
    config: &ProjectorConfig,
    name: &str,
) -> anyhow::Result<Next> {
    let message = tokio::select! {
        () = renew.notified() => return Ok(Next::Renew),
        message = consumer.recv() => message,
    };
    match message {
        Ok(message) => Ok(Next::Message(message.detach())),
        Err(error @ KafkaError::MessageConsumptionFatal(_)) => {
            let own_doing = consumer.context().session_lost();
            fences.rejoin(config.instance_id.as_deref(), name, error, own_doing)?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(Next::Renew)
        }
        Err(error) => {
            tracing::warn!(projection = name, %error, "consuming failed");
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(Next::Again)
        }
    }
}

/// What a projection runner does when its consumer fails for good.
///
/// A static member (`--instance-id`) can fence itself: when its session
/// runs out on the client's side (the coordinator did not answer for the
/// whole session timeout, as in a broker outage), librdkafka rejoins under
/// the same instance id, the coordinator gives that id a new member id, and
/// the old member's next request is answered `FENCED_INSTANCE_ID`, a fatal
/// error (librdkafka issue 3437). The runner then makes a new consumer,
/// which rejoins with the same id. Such a fence, after the consumer's own
/// session ran out ([`Rebalances::session_lost`]), is the consumer's own
/// doing however often brokers go away. Fences without it that keep coming
/// back mean another running process has this instance id: then the
/// runner stops with an error that says so.
struct Fences {
    recent: std::collections::VecDeque<std::time::Instant>,
}

/// This many fences within [`FENCE_WINDOW`] mean another process.
const FENCES_TOLERATED: usize = 3;
const FENCE_WINDOW: Duration = Duration::from_secs(120);

impl Fences {
    fn new() -> Self {
        Self {
            recent: std::collections::VecDeque::new(),
        }
    }

    /// Whether to make a new consumer after `error` (the consumer's fatal
    /// error), or the error to stop with. `own_doing`: the consumer's own
    /// session had run out before.
    fn rejoin(
        &mut self,
        instance_id: Option<&str>,
        projection: &str,
        error: KafkaError,
        own_doing: bool,
    ) -> Result<(), anyhow::Error> {
        let fenced = matches!(
            error,
            KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::FencedInstanceId)
        );
        let now = std::time::Instant::now();
        self.recent
            .retain(|at| now.duration_since(*at) < FENCE_WINDOW);
        let self_fenced = fenced && own_doing;
        if !self_fenced {
            self.recent.push_back(now);
        }
        match instance_id {
            Some(instance) if self_fenced => {
                tracing::warn!(projection, instance = %instance, "consumer fenced itself after its session ran out; rejoining with a new consumer");
                Ok(())
            }
            Some(instance) if fenced && self.recent.len() >= FENCES_TOLERATED => {
                Err(anyhow::Error::new(error).context(format!(
                    "projection {projection}: fenced {FENCES_TOLERATED} times in {FENCE_WINDOW:?}: \
                     another running projector has instance id {instance}; give each process its own --instance-id"
                )))
            }
            Some(instance) if fenced => {
                tracing::warn!(projection, instance = %instance, "consumer fenced under its own instance id; rejoining with a new consumer");
                Ok(())
            }
            _ => Err(anyhow::Error::new(error)
                .context(format!("projection {projection}: its consumer failed for good"))),
        }
    }
}

/// Admits the gathered messages in order (see [`Positions::admit`]) and
/// returns those to take. After a partition is sought back, the rest of
/// what was gathered from it is stale and dropped: it comes again.
async fn admit_all(
    pool: &PgPool,
    consumer: &ProjectionConsumer,
    positions: &mut Positions,
    name: &'static str,
    gathered: Vec<rdkafka::message::OwnedMessage>,
) -> Vec<rdkafka::message::OwnedMessage> {
    let mut batch = Vec::with_capacity(gathered.len());
    let mut sought = std::collections::HashSet::new();
    for message in gathered {
        let key = (message.topic().to_owned(), message.partition());
        if sought.contains(&key) {
            continue;
        }
        match positions.admit(pool, consumer, &message).await {
            Ok(Admission::Take) => {
                // Taken from here on: the batch is applied, or each of its
                // messages applied or dead-lettered, before the next.
                positions.advance(&message);
                batch.push(message);
            }
            Ok(Admission::Taken) => {
                metrics::counter!("eshop_projection_events_total", "projection" => name, "outcome" => "skipped")
                    .increment(1);
            }
            Ok(Admission::Rewound { .. }) => {
                sought.insert(key);
            }
            Err(error) => {
                tracing::warn!(projection = name, %error, "reading the recorded offset failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = consumer.seek(
                    message.topic(),
                    message.partition(),
                    rdkafka::Offset::Offset(message.offset()),
                    Duration::from_secs(5),
                );
                sought.insert(key);
            }
        }
    }
    batch
}

/// A projection's messages from its Kafka consumer group.
pub struct KafkaSource {
    pool: PgPool,
    config: ProjectorConfig,
    name: &'static str,
    aggregate_types: &'static [&'static str],
    /// None only while being renewed.
    consumer: Option<ProjectionConsumer>,
    renew: Arc<tokio::sync::Notify>,
    fences: Fences,
    positions: Positions,
}

impl KafkaSource {
    /// The source of projection `name` reading through `consumer`; a
    /// wake-up on `renew` (from the stall watch) replaces the consumer.
    #[must_use]
    pub fn new(
        pool: PgPool,
        config: ProjectorConfig,
        name: &'static str,
        aggregate_types: &'static [&'static str],
        consumer: ProjectionConsumer,
        renew: Arc<tokio::sync::Notify>,
    ) -> Self {
        Self {
            pool,
            config,
            name,
            aggregate_types,
            consumer: Some(consumer),
            renew,
            fences: Fences::new(),
            positions: Positions::new(name),
        }
    }
}

/// The consumer of a source, unless its renewal failed.
fn live<'a>(
    consumer: &'a Option<ProjectionConsumer>,
    name: &str,
) -> anyhow::Result<&'a ProjectionConsumer> {
    consumer
        .as_ref()
        .with_context(|| format!("projection {name}: its consumer failed to renew"))
}

#[async_trait]
impl Source for KafkaSource {
    async fn next(&mut self, max: usize) -> anyhow::Result<Vec<Delivered>> {
        let next = receive(
            live(&self.consumer, self.name)?,
            &self.renew,
            &mut self.fences,
            &self.config,
            self.name,
        )
        .await?;
        let mut gathered = match next {
            Next::Message(message) => vec![message],
            Next::Again => return Ok(Vec::new()),
            Next::Renew => {
                if let Some(old) = self.consumer.take() {
                    self.consumer = Some(
                        renew_consumer(old, &self.config, self.name, self.aggregate_types).await?,
                    );
                }
                self.positions = Positions::new(self.name);
                return Ok(Vec::new());
            }
        };
        let consumer = live(&self.consumer, self.name)?;
        // Whatever else has already arrived joins the batch.
        while gathered.len() < max {
            match tokio::time::timeout(Duration::from_millis(1), consumer.recv()).await {
                Ok(Ok(message)) => gathered.push(message.detach()),
                _ => break,
            }
        }
        let admitted = admit_all(
            &self.pool,
            consumer,
            &mut self.positions,
            self.name,
            gathered,
        )
        .await;
        Ok(admitted.into_iter().map(delivered).collect())
    }

    fn acknowledge(&mut self, batch: &[Delivered]) {
        // Kafka's committed offsets trail the recorded ones (which are the
        // authority): commit each partition's furthest message.
        let mut offsets = rdkafka::TopicPartitionList::new();
        for message in batch {
            let _ = offsets.add_partition_offset(
                &message.topic,
                message.partition,
                rdkafka::Offset::Offset(message.offset + 1),
            );
        }
        if let Some(consumer) = &self.consumer
            && let Err(error) = consumer.commit(&offsets, CommitMode::Async)
        {
            tracing::warn!(projection = self.name, %error, "offset commit failed; the events may be redelivered and skipped");
        }
    }
}

/// A Kafka message as the projector takes it.
fn delivered(message: OwnedMessage) -> Delivered {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    let origin = Origin {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
    };
    Delivered::new(
        origin,
        message.key().map(<[u8]>::to_vec),
        message.payload().map(<[u8]>::to_vec),
        headers,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fenced() -> KafkaError {
        KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::FencedInstanceId)
    }

    /// Whether the runner rejoins after a fence of static member host:8080.
    fn rejoins(fences: &mut Fences, own_doing: bool) -> bool {
        fences
            .rejoin(Some("host:8080"), "order_view", fenced(), own_doing)
            .is_ok()
    }

    #[test]
    fn a_static_member_fenced_under_its_own_id_rejoins_until_the_fences_keep_coming() {
        let mut fences = Fences::new();
        assert!(rejoins(&mut fences, false));
        assert!(rejoins(&mut fences, false));
        let error = fences
            .rejoin(Some("host:8080"), "order_view", fenced(), false)
            .expect_err("a third fence within the window");
        assert!(
            format!("{error:#}").contains("instance id host:8080"),
            "{error:#}"
        );
    }

    #[test]
    fn fences_after_the_consumers_own_session_ran_out_never_stop_the_projection() {
        // A broker away for longer than the session timeout, again and
        // again: each time the static member fences itself.
        let mut fences = Fences::new();
        for _ in 0..10 {
            assert!(rejoins(&mut fences, true));
        }
        // They do not count towards a duplicate instance id either.
        assert!(rejoins(&mut fences, false));
        assert!(rejoins(&mut fences, false));
        assert!(!rejoins(&mut fences, false));
    }

    #[test]
    fn any_other_fatal_consumer_error_stops_the_projection() {
        let mut fences = Fences::new();
        let other = KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::Fatal);
        assert!(
            fences
                .rejoin(Some("host:8080"), "order_view", other, false)
                .is_err()
        );
        assert!(fences.rejoin(None, "order_view", fenced(), false).is_err());
    }
}
