//! Where each projection stands: its position, how far behind the event
//! store it is (in events and in seconds), and its dead letters. Served by
//! `eshop projections status` and, as gauges, on `/metrics`.
//!
//! Lag is measured against the event store, not just the broker: events
//! the relay has not published yet count too, so a stopped relay shows up
//! as growing lag in every projection. On RabbitMQ, lanes stand for
//! partitions (their ends read by [`crate::rabbit::lane_ends`]). With no broker, lag is what the
//! projection's own feed has not passed yet: the events after its
//! checkpoint, and the age of the oldest of them. The Kafka part is, per partition,
//! the partition's end (the offset after its last message) minus the next
//! offset the projection recorded (in the same transaction as its view
//! change); its age is the time of the oldest message not yet taken (the
//! relay stamps each record with its event's time).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use event_store::feed::GlobalPosition;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{PgPool, Row};

use crate::bus::EventBus;
use crate::projector::{STORE_TOPIC, StoreSource};
use crate::rabbit::RabbitConfig;
use crate::relay::{KafkaConfig, checkpoint};

pub use read_models::status::{CollectStatus, PartitionStatus, ProjectionStatus};

/// What the status needs to know: the bus, and the relay.
#[derive(Debug, Clone)]
pub struct StatusSource {
    pub bus: EventBus,
    pub relay_name: String,
}

/// Every projection and the aggregate types it reads.
fn projections() -> Vec<(&'static str, &'static [&'static str])> {
    read_models::catalog()
}

struct Unpublished {
    count: i64,
    oldest: Option<DateTime<Utc>>,
}

/// Events past the relay's checkpoint, per aggregate type.
async fn unpublished(
    pool: &PgPool,
    relay_name: &str,
) -> Result<HashMap<String, Unpublished>, sqlx::Error> {
    let GlobalPosition {
        transaction_id,
        position,
    } = checkpoint::load(pool, relay_name).await?;
    let rows = sqlx::query(
        "SELECT aggregate_type, count(*) AS count, min(recorded_at) AS oldest FROM events \
         WHERE (transaction_id, global_position) > ($1::text::xid8, $2) GROUP BY aggregate_type",
    )
    .bind(transaction_id.to_string())
    .bind(position)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("aggregate_type")?,
                Unpublished {
                    count: row.try_get("count")?,
                    oldest: row.try_get("oldest")?,
                },
            ))
        })
        .collect()
}

/// Per partition: its low watermark and its end (the offset after its last
/// message).
type Watermarks = HashMap<(String, i32), (i64, i64)>;
/// Per partition: the time of the oldest message not yet taken.
type PendingTimes = HashMap<(String, i32), DateTime<Utc>>;
/// Per partition: the offsets and times of the messages read.
type Read = HashMap<(String, i32), Vec<(i64, Option<DateTime<Utc>>)>>;

fn status_consumer(kafka: &KafkaConfig) -> anyhow::Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", "eshop.status")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .context("failed to create the status consumer")
}

/// Reads, from the given offsets, the messages the broker answers for each
/// partition: waits for a first one from every partition, then takes what
/// else arrives until a short quiet, or until `timeout`.
fn read_from(
    kafka: &KafkaConfig,
    offsets: &HashMap<(String, i32), i64>,
    timeout: Duration,
) -> anyhow::Result<Read> {
    let mut read = Read::new();
    if offsets.is_empty() {
        return Ok(read);
    }
    let consumer = status_consumer(kafka)?;
    let mut wanted = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        wanted
            .add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .context("invalid offset")?;
    }
    consumer.assign(&wanted).context("failed to assign")?;
    let mut answered = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        // Until every partition answered, wait for it; then take what the
        // same fetches brought, until a short quiet.
        let wait = if answered.len() < offsets.len() {
            Duration::from_millis(200)
        } else {
            Duration::from_millis(50)
        };
        match consumer.poll(wait) {
            Some(Ok(message)) => {
                let key = (message.topic().to_owned(), message.partition());
                let at = message
                    .timestamp()
                    .to_millis()
                    .and_then(DateTime::from_timestamp_millis);
                read.entry(key.clone())
                    .or_default()
                    .push((message.offset(), at));
                answered.insert(key);
            }
            Some(Err(_)) => {}
            None if answered.len() == offsets.len() => break,
            None => {}
        }
    }
    Ok(read)
}

/// A partition's low and high watermarks. A partition can be without a
/// leader for a moment (just created, or its leader moved to another
/// broker): asked again until `timeout`.
fn watermarks_of(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> KafkaResult<(i64, i64)> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match consumer.fetch_watermarks(topic, partition, timeout) {
            Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition,
            )) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            answer => return answer,
        }
    }
}

/// The broker's view: for every partition of `topics`, its low watermark
/// and its end (the high watermark: the offset after its last message), and
/// for the partitions `peek` names (given the low watermark and the end),
/// the time of the message at the offset it returns. Blocking: run it off
/// the async runtime.
fn broker_view(
    kafka: &KafkaConfig,
    topics: &[String],
    peek: &dyn Fn(&str, i32, i64, i64) -> Option<i64>,
) -> anyhow::Result<(Watermarks, PendingTimes)> {
    let timeout = Duration::from_secs(5);
    let consumer = status_consumer(kafka)?;
    let mut watermarks = HashMap::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .with_context(|| format!("failed to read the metadata of {topic}"))?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = watermarks_of(&consumer, topic, partition.id(), timeout)
                .with_context(|| format!("failed to read the watermarks of {topic}"))?;
            watermarks.insert((topic.clone(), partition.id()), (low, high));
        }
    }
    drop(consumer);

    // The oldest message each lagging partition still holds back.
    let wanted: HashMap<_, _> = watermarks
        .iter()
        .filter_map(|(key, (low, end))| Some((key.clone(), peek(&key.0, key.1, *low, *end)?)))
        .collect();
    let mut times = HashMap::new();
    for (key, messages) in read_from(kafka, &wanted, timeout)? {
        // The first answer: the message at the offset, or the first one
        // after it that the broker still holds.
        if let Some(at) = messages.first().and_then(|(_, at)| *at) {
            times.insert(key, at);
        }
    }
    Ok((watermarks, times))
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Collects the status of every projection.
pub async fn collect(
    pool: &PgPool,
    source: &StatusSource,
) -> anyhow::Result<Vec<ProjectionStatus>> {
    match &source.bus {
        EventBus::Kafka(kafka) => collect_kafka(pool, kafka, &source.relay_name).await,
        EventBus::RabbitMq(rabbit) => collect_rabbit(pool, rabbit, &source.relay_name).await,
        EventBus::None => collect_store(pool).await,
    }
}

/// A lane on RabbitMQ: its topic and number.
type Lane = (String, u16);

/// Every lane the projections read, and per lane the lowest next offset
/// any of them recorded (what the oldest pending message is).
fn lanes_needed(
    rabbit: &RabbitConfig,
    recorded: &HashMap<(String, String, i32), i64>,
) -> (Vec<Lane>, HashMap<Lane, i64>) {
    let mut needed: HashMap<Lane, i64> = HashMap::new();
    for (name, types) in projections() {
        for (_, topic, lane) in rabbit.lanes_of(types) {
            let next = recorded
                .get(&(name.to_owned(), topic.to_owned(), i32::from(lane)))
                .copied()
                .unwrap_or(0);
            let slot = needed.entry((topic.to_owned(), lane)).or_insert(next);
            *slot = (*slot).min(next);
        }
    }
    let mut lanes: Vec<Lane> = needed.keys().cloned().collect();
    lanes.sort();
    (lanes, needed)
}

/// The status on RabbitMQ: the relay's backlog, then each lane, as on
/// Kafka with lanes for partitions.
async fn collect_rabbit(
    pool: &PgPool,
    rabbit: &RabbitConfig,
    relay_name: &str,
) -> anyhow::Result<Vec<ProjectionStatus>> {
    let (positions, recorded) = recorded_offsets(pool).await?;
    let dead = dead_letters(pool).await?;
    let unpublished = unpublished(pool, relay_name)
        .await
        .context("failed to count unpublished events")?;
    let (lanes, needed) = lanes_needed(rabbit, &recorded);
    let ends = crate::rabbit::lane_ends(rabbit, &lanes, &|topic, lane| {
        needed.get(&(topic.to_owned(), lane)).copied()
    })
    .await?;
    let now = Utc::now();
    let mut statuses = Vec::new();
    for (name, types) in projections() {
        let mut events_behind = 0;
        let mut oldest_pending: Option<DateTime<Utc>> = None;
        let mut partitions = Vec::new();
        for aggregate_type in types {
            if let Some(pending) = unpublished.get(*aggregate_type) {
                events_behind += pending.count;
                oldest_pending = earliest(oldest_pending, pending.oldest);
            }
        }
        for (_, topic, lane) in rabbit.lanes_of(types) {
            let end = *ends
                .get(&(topic.to_owned(), lane))
                .with_context(|| format!("lane {topic}/{lane} was not probed"))?;
            let next = recorded
                .get(&(name.to_owned(), topic.to_owned(), i32::from(lane)))
                .copied()
                .unwrap_or(0);
            let lag = (end.end - next).max(0);
            events_behind += lag;
            if lag > 0 {
                oldest_pending = earliest(oldest_pending, end.peeked);
            }
            partitions.push(PartitionStatus {
                topic: topic.to_owned(),
                partition: i32::from(lane),
                next_offset: next,
                high_watermark: end.end,
                lag,
            });
        }
        statuses.push(
            Behind {
                events: events_behind,
                oldest: oldest_pending,
                partitions,
            }
            .status(name, &positions, &dead, now),
        );
    }
    Ok(statuses)
}

/// Per projection: the position and time of the last event it applied.
type Applied = HashMap<String, (Option<i64>, Option<DateTime<Utc>>)>;

/// How far one projection is behind: what its status reports besides where
/// it stands.
struct Behind {
    events: i64,
    oldest: Option<DateTime<Utc>>,
    partitions: Vec<PartitionStatus>,
}

impl Behind {
    fn status(
        self,
        name: &str,
        applied: &Applied,
        dead: &HashMap<String, i64>,
        now: DateTime<Utc>,
    ) -> ProjectionStatus {
        let (position, last_event_at) = applied.get(name).copied().unwrap_or_default();
        ProjectionStatus {
            projection: name.to_owned(),
            position,
            last_event_at,
            events_behind: self.events,
            seconds_behind: self.oldest.map_or(0.0, |at| {
                ((now - at).num_milliseconds().max(0) as f64) / 1000.0
            }),
            dead_letters: dead.get(name).copied().unwrap_or(0),
            partitions: self.partitions,
        }
    }
}

/// Dead letters counted per projection.
async fn dead_letters(pool: &PgPool) -> anyhow::Result<HashMap<String, i64>> {
    Ok(
        sqlx::query_as("SELECT projection, dead_letters FROM projection_status")
            .fetch_all(pool)
            .await
            .context("failed to read projection_status")?
            .into_iter()
            .collect(),
    )
}

/// Where each projection reading the event store stands: its checkpoint,
/// and how many events of its aggregate types lie after it (and the time
/// the oldest of them was recorded).
struct StoreBehind {
    checkpoint: GlobalPosition,
    count: i64,
    oldest: Option<DateTime<Utc>>,
    last: Option<i64>,
}

async fn store_behind(
    pool: &PgPool,
    projection: &str,
    aggregate_types: &[&str],
) -> Result<StoreBehind, sqlx::Error> {
    let checkpoint = checkpoint::load(pool, &StoreSource::checkpoint_name(projection)).await?;
    let types: Vec<&str> = aggregate_types.to_vec();
    let row = sqlx::query(
        "SELECT count(*) AS count, min(recorded_at) AS oldest, max(global_position) AS last FROM events \
         WHERE (transaction_id, global_position) > ($1::text::xid8, $2) AND aggregate_type = ANY($3)",
    )
    .bind(checkpoint.transaction_id.to_string())
    .bind(checkpoint.position)
    .bind(&types)
    .fetch_one(pool)
    .await?;
    Ok(StoreBehind {
        checkpoint,
        count: row.try_get("count")?,
        oldest: row.try_get("oldest")?,
        last: row.try_get("last")?,
    })
}

/// The status with no broker: each projection against its own feed.
async fn collect_store(pool: &PgPool) -> anyhow::Result<Vec<ProjectionStatus>> {
    let (applied, _) = recorded_offsets(pool).await?;
    let dead = dead_letters(pool).await?;
    let now = Utc::now();
    let mut statuses = Vec::new();
    for (name, types) in projections() {
        let behind = store_behind(pool, name, types)
            .await
            .with_context(|| format!("failed to read where {name} stands in the event store"))?;
        let next = behind.checkpoint.position.saturating_add(1);
        statuses.push(
            Behind {
                events: behind.count,
                oldest: behind.oldest,
                partitions: vec![PartitionStatus {
                    topic: STORE_TOPIC.to_owned(),
                    partition: 0,
                    next_offset: next,
                    high_watermark: behind.last.map_or(next, |last| last + 1).max(next),
                    lag: behind.count,
                }],
            }
            .status(name, &applied, &dead, now),
        );
    }
    Ok(statuses)
}

/// What `projection_offsets` records: per projection, topic and partition,
/// the next offset; and per projection, where it has got.
async fn recorded_offsets(
    pool: &PgPool,
) -> anyhow::Result<(Applied, HashMap<(String, String, i32), i64>)> {
    let offsets = sqlx::query(
        "SELECT projection, topic, partition, next_offset, global_position, event_time FROM projection_offsets",
    )
    .fetch_all(pool)
    .await
    .context("failed to read projection_offsets")?;
    let mut recorded: HashMap<(String, String, i32), i64> = HashMap::new();
    let mut positions: HashMap<String, (Option<i64>, Option<DateTime<Utc>>)> = HashMap::new();
    for row in &offsets {
        let projection: String = row.try_get("projection")?;
        recorded.insert(
            (
                projection.clone(),
                row.try_get("topic")?,
                row.try_get("partition")?,
            ),
            row.try_get("next_offset")?,
        );
        let entry = positions.entry(projection).or_default();
        entry.0 = entry.0.max(row.try_get("global_position")?);
        entry.1 = entry.1.max(row.try_get("event_time")?);
    }
    Ok((positions, recorded))
}

/// The status on Kafka: the relay's backlog, then each partition.
async fn collect_kafka(
    pool: &PgPool,
    kafka: &KafkaConfig,
    relay_name: &str,
) -> anyhow::Result<Vec<ProjectionStatus>> {
    let (positions, recorded) = recorded_offsets(pool).await?;
    let dead = dead_letters(pool).await?;
    let unpublished = unpublished(pool, relay_name)
        .await
        .context("failed to count unpublished events")?;

    let projections = projections();
    let topics: Vec<String> = projections
        .iter()
        .flat_map(|(_, types)| types.iter())
        .filter_map(|t| kafka.topics.topic(t))
        .map(str::to_owned)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // The oldest offset any projection still needs, per partition.
    let mut oldest_needed: HashMap<(String, i32), Option<i64>> = HashMap::new();
    for (name, types) in &projections {
        for topic in types.iter().filter_map(|t| kafka.topics.topic(t)) {
            for ((p, t, partition), next) in &recorded {
                if p == name && t == topic {
                    let slot = oldest_needed
                        .entry((t.clone(), *partition))
                        .or_insert(Some(*next));
                    *slot = slot.map(|o| o.min(*next));
                }
            }
        }
    }
    let broker = kafka.clone();
    let needed = oldest_needed.clone();
    let (watermarks, times) = tokio::task::spawn_blocking(move || {
        broker_view(&broker, &topics, &|topic, partition, low, high| {
            let next = needed
                .get(&(topic.to_owned(), partition))
                .copied()
                .flatten()
                .unwrap_or(low)
                .max(low);
            (next < high).then_some(next)
        })
    })
    .await
    .context("status task panicked")??;

    let now = Utc::now();
    let mut statuses = Vec::new();
    for (name, types) in projections {
        let mut events_behind = 0;
        let mut oldest_pending: Option<DateTime<Utc>> = None;
        let mut partitions = Vec::new();
        for aggregate_type in types {
            if let Some(pending) = unpublished.get(*aggregate_type) {
                events_behind += pending.count;
                oldest_pending = earliest(oldest_pending, pending.oldest);
            }
            let Some(topic) = kafka.topics.topic(aggregate_type) else {
                continue;
            };
            let mut keys: Vec<_> = watermarks.keys().filter(|(t, _)| t == topic).collect();
            keys.sort();
            for key in keys {
                let (low, high) = watermarks[key];
                let next = recorded
                    .get(&(name.to_owned(), key.0.clone(), key.1))
                    .copied()
                    .unwrap_or(low)
                    .max(low);
                let lag = (high - next).max(0);
                events_behind += lag;
                // The peeked message is the oldest any projection needs on
                // this partition: exact for the laggard, an upper bound for
                // the others.
                if lag > 0
                    && let Some(at) = times.get(key)
                {
                    oldest_pending = earliest(oldest_pending, Some(*at));
                }
                partitions.push(PartitionStatus {
                    topic: key.0.clone(),
                    partition: key.1,
                    next_offset: next,
                    high_watermark: high,
                    lag,
                });
            }
        }
        statuses.push(
            Behind {
                events: events_behind,
                oldest: oldest_pending,
                partitions,
            }
            .status(name, &positions, &dead, now),
        );
    }
    Ok(statuses)
}

/// How far one projection has got in its partitions, and how many of
/// their messages it has not taken yet: what the stall watch needs, read
/// without peeking at messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub projection: String,
    /// Messages in its partitions past its recorded next offsets.
    pub pending: i64,
    /// The sum of its recorded next offsets: it grows whenever the
    /// projection takes a message.
    pub taken: i64,
}

/// The progress of each of `projections` (names and the aggregate types
/// they read) on the bus: on Kafka, [`kafka_progress`]; with no broker,
/// the events after each projection's checkpoint, and the checkpoint.
pub async fn progress(
    pool: &PgPool,
    bus: &EventBus,
    projections: &[(&'static str, &'static [&'static str])],
) -> anyhow::Result<Vec<Progress>> {
    match bus {
        EventBus::Kafka(kafka) => kafka_progress(pool, kafka, projections).await,
        EventBus::RabbitMq(rabbit) => {
            let (_, recorded) = recorded_offsets(pool).await?;
            let (lanes, _) = lanes_needed(rabbit, &recorded);
            let ends = crate::rabbit::lane_ends(rabbit, &lanes, &|_, _| None).await?;
            Ok(projections
                .iter()
                .map(|(name, types)| {
                    let (mut pending, mut taken) = (0, 0);
                    for (_, topic, lane) in rabbit.lanes_of(types) {
                        let end = ends.get(&(topic.to_owned(), lane)).map_or(0, |e| e.end);
                        let next = recorded
                            .get(&((*name).to_owned(), topic.to_owned(), i32::from(lane)))
                            .copied()
                            .unwrap_or(0);
                        pending += (end - next).max(0);
                        taken += next;
                    }
                    Progress {
                        projection: (*name).to_owned(),
                        pending,
                        taken,
                    }
                })
                .collect())
        }
        EventBus::None => {
            let mut all = Vec::with_capacity(projections.len());
            for (name, types) in projections {
                let behind = store_behind(pool, name, types).await?;
                all.push(Progress {
                    projection: (*name).to_owned(),
                    pending: behind.count,
                    taken: behind.checkpoint.position,
                });
            }
            Ok(all)
        }
    }
}

/// The Kafka progress of each of `projections` (names and the aggregate
/// types they read): recorded next offsets against the partitions' ends.
pub async fn kafka_progress(
    pool: &PgPool,
    kafka: &KafkaConfig,
    projections: &[(&'static str, &'static [&'static str])],
) -> anyhow::Result<Vec<Progress>> {
    let names: Vec<&str> = projections.iter().map(|(name, _)| *name).collect();
    let rows = sqlx::query(
        "SELECT projection, topic, partition, next_offset FROM projection_offsets WHERE projection = ANY($1)",
    )
    .bind(&names)
    .fetch_all(pool)
    .await
    .context("failed to read projection_offsets")?;
    let mut recorded: HashMap<(String, String, i32), i64> = HashMap::new();
    for row in &rows {
        recorded.insert(
            (
                row.try_get("projection")?,
                row.try_get("topic")?,
                row.try_get("partition")?,
            ),
            row.try_get("next_offset")?,
        );
    }
    let topics: Vec<String> = projections
        .iter()
        .flat_map(|(_, types)| types.iter())
        .filter_map(|t| kafka.topics.topic(t))
        .map(str::to_owned)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let source = kafka.clone();
    let (watermarks, _) =
        tokio::task::spawn_blocking(move || broker_view(&source, &topics, &|_, _, _, _| None))
            .await
            .context("status task panicked")??;
    Ok(projections
        .iter()
        .map(|(name, types)| {
            let (mut pending, mut taken) = (0, 0);
            for topic in types.iter().filter_map(|t| kafka.topics.topic(t)) {
                for ((t, partition), (low, high)) in &watermarks {
                    if t != topic {
                        continue;
                    }
                    let next = recorded
                        .get(&((*name).to_owned(), t.clone(), *partition))
                        .copied()
                        .unwrap_or(*low)
                        .max(*low);
                    pending += (high - next).max(0);
                    taken += next;
                }
            }
            Progress {
                projection: (*name).to_owned(),
                pending,
                taken,
            }
        })
        .collect())
}

/// Tells, from successive [`Progress`] readings, how long each projection
/// has had events pending without taking any.
#[derive(Debug, Default)]
pub struct StallDetector {
    /// Per projection: what it had taken, and since when it has had events
    /// pending without taking more.
    since: HashMap<String, (i64, std::time::Instant)>,
}

impl StallDetector {
    /// How long `progress.projection` has had events pending without
    /// progress, as of `now`: zero while it takes events or has none
    /// pending.
    pub fn observe(&mut self, progress: &Progress, now: std::time::Instant) -> Duration {
        let entry = self
            .since
            .entry(progress.projection.clone())
            .or_insert((progress.taken, now));
        if progress.pending == 0 || progress.taken != entry.0 {
            *entry = (progress.taken, now);
        }
        now.duration_since(entry.1)
    }
}

/// The projections of this process that are stalled: events pending and no
/// progress for longer than the stall time. Shared by the stall watch,
/// which writes it, and the readiness check, which reads it.
#[derive(Debug, Clone, Default)]
pub struct Stalls {
    stalled: std::sync::Arc<std::sync::RwLock<std::collections::BTreeMap<String, Stall>>>,
}

/// One stalled projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    pub pending: i64,
    pub stuck_for: Duration,
}

impl Stalls {
    /// Records where `projection` stands, stalled or not, and sets its
    /// gauges: `eshop_projection_stalled` (1 or 0) and
    /// `eshop_projection_stalled_seconds` (how long it has had events
    /// pending without progress).
    pub fn record(&self, projection: &str, stall: Option<Stall>, stuck_for: Duration) {
        let labels = [("projection", projection.to_owned())];
        metrics::gauge!("eshop_projection_stalled", &labels)
            .set(f64::from(u8::from(stall.is_some())));
        metrics::gauge!("eshop_projection_stalled_seconds", &labels).set(stuck_for.as_secs_f64());
        let mut stalled = self
            .stalled
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match stall {
            Some(stall) => stalled.insert(projection.to_owned(), stall),
            None => stalled.remove(projection),
        };
    }

    /// Whether `projection` was last recorded stalled.
    #[must_use]
    pub fn is_stalled(&self, projection: &str) -> bool {
        self.stalled
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(projection)
    }

    /// The readiness check: an error naming every stalled projection.
    pub fn check(&self) -> Result<(), String> {
        let stalled = self
            .stalled
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if stalled.is_empty() {
            return Ok(());
        }
        Err(stalled
            .iter()
            .map(|(name, stall)| {
                format!(
                    "{name} stalled: {} events pending, no progress for {} s",
                    stall.pending,
                    stall.stuck_for.as_secs()
                )
            })
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// The status as [`collect`] finds it, for the query side's board.
pub struct BusStatus {
    pool: PgPool,
    source: StatusSource,
}

impl BusStatus {
    #[must_use]
    pub fn new(pool: PgPool, source: StatusSource) -> Self {
        Self { pool, source }
    }
}

#[async_trait::async_trait]
impl CollectStatus for BusStatus {
    async fn collect(&self) -> anyhow::Result<Vec<ProjectionStatus>> {
        collect(&self.pool, &self.source).await
    }
}

/// The human table of `eshop projections status`.
#[must_use]
pub fn table(statuses: &[ProjectionStatus]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<16} {:>10} {:>14} {:>15} {:>12}  {}\n",
        "PROJECTION", "POSITION", "EVENTS BEHIND", "SECONDS BEHIND", "DEAD LETTERS", "LAST EVENT"
    );
    for s in statuses {
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>14} {:>15.1} {:>12}  {}",
            s.projection,
            s.position.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            s.events_behind,
            s.seconds_behind,
            s.dead_letters,
            s.last_event_at.map_or_else(
                || "-".to_owned(),
                |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn progress(pending: i64, taken: i64) -> Progress {
        Progress {
            projection: "order_view".to_owned(),
            pending,
            taken,
        }
    }

    #[test]
    fn a_projection_with_messages_pending_and_none_taken_is_stuck_since_it_last_took_one() {
        let mut detector = StallDetector::default();
        let start = Instant::now();
        assert_eq!(detector.observe(&progress(5, 10), start), Duration::ZERO);
        let later = start + Duration::from_secs(40);
        assert_eq!(
            detector.observe(&progress(7, 10), later),
            Duration::from_secs(40)
        );
        // It takes one: not stuck any more.
        let then = later + Duration::from_secs(1);
        assert_eq!(detector.observe(&progress(6, 11), then), Duration::ZERO);
    }

    #[test]
    fn a_caught_up_projection_is_never_stuck_however_long_it_waits() {
        let mut detector = StallDetector::default();
        let start = Instant::now();
        detector.observe(&progress(0, 10), start);
        assert_eq!(
            detector.observe(&progress(0, 10), start + Duration::from_secs(600)),
            Duration::ZERO
        );
    }

    #[test]
    fn readiness_names_every_stalled_projection_until_it_moves_again() {
        let stalls = Stalls::default();
        assert_eq!(stalls.check(), Ok(()));
        let stall = Stall {
            pending: 3,
            stuck_for: Duration::from_secs(45),
        };
        stalls.record("order_view", Some(stall), stall.stuck_for);
        stalls.record("search", None, Duration::ZERO);
        assert_eq!(
            stalls.check(),
            Err("order_view stalled: 3 events pending, no progress for 45 s".to_owned())
        );
        assert!(stalls.is_stalled("order_view") && !stalls.is_stalled("search"));
        stalls.record("order_view", None, Duration::ZERO);
        assert_eq!(stalls.check(), Ok(()));
    }
}
