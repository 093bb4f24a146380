//! Runs projections: one Kafka consumer group per projection, each event
//! applied with effectively-once semantics.
//!
//! For every message, one PostgreSQL transaction records the projection's
//! progress for the event's aggregate and applies the view change. An event
//! whose aggregate sequence is not newer than the recorded one (a
//! redelivery, or a duplicate from a relay that crashed after publishing)
//! changes nothing. The Kafka offset is committed only after the database
//! commit: a crash in between redelivers the message, which is then skipped.
//!
//! A message that cannot be decoded, or whose change the database refuses
//! for a reason that would repeat (a data or integrity error), goes to the
//! dead-letter topic with the error and the original payload; the
//! projection goes on and `projection_status` counts it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;

use crate::event::Event;
use crate::position::{Admission, Positions};
use crate::relay::KafkaConfig;
use crate::status::{Stall, StallDetector, Stalls};

pub use read_models::Projection;

/// The projectors' own options (the broker and topics come from
/// [`KafkaConfig`], shared with the relay).
#[derive(Debug, Clone, clap::Args)]
pub struct ProjectorOptions {
    /// Consumer groups are named `{prefix}.{projection}`; processes with the
    /// same prefix share each projection's partitions.
    #[arg(
        long = "projector-group-prefix",
        env = "PROJECTOR_GROUP_PREFIX",
        default_value = "eshop.projection"
    )]
    pub group_prefix: String,

    /// Where events a projection cannot decode or apply go, with the error
    /// and the original payload.
    #[arg(
        long = "dead-letter-topic",
        env = "DEAD_LETTER_TOPIC",
        default_value = "eshop.deadletters.v1"
    )]
    pub dead_letter_topic: String,

    /// The projections this process runs (comma-separated names; default:
    /// all of them, the PostgreSQL views and `search`).
    #[arg(
        long = "projections",
        env = "PROJECTIONS",
        value_delimiter = ',',
        num_args = 1..
    )]
    pub only: Vec<String>,

    /// A stable name for this projector process, unique among the running
    /// ones. With it, each of the process's consumers joins its group as a
    /// static member (`group.instance.id`): after a restart under the same
    /// name it gets its partitions back at once, instead of waiting until
    /// the group gives up on the member that died. Two running processes
    /// with the same name fence each other: the older one stops with an
    /// error. `eshop serve` defaults it to `{host}:{port}` of its listener.
    #[arg(long = "instance-id", env = "PROJECTOR_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// How long the group waits for a silent consumer before giving its
    /// partitions to the others, in ms: how long the partitions of a
    /// projector that died stay unread, unless it comes back under the same
    /// `--instance-id` first (Kafka's default: 45000).
    #[arg(
        long = "consumer-session-timeout-ms",
        env = "KAFKA_SESSION_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub session_timeout_ms: u32,

    /// How long the group waits for its members to rejoin during a
    /// rebalance, and the longest a projector may take between two reads
    /// before it is taken out of the group, in ms (Kafka's default: 300000).
    #[arg(
        long = "consumer-max-poll-interval-ms",
        env = "KAFKA_MAX_POLL_INTERVAL_MS",
        default_value_t = 300_000
    )]
    pub max_poll_interval_ms: u32,

    /// How long a projection may have messages pending in its partitions
    /// without taking any before it counts as stalled, in ms: `/health/ready`
    /// of `eshop serve` then names it and `eshop_projection_stalled` is 1.
    /// Still stalled after twice this long, the projector makes its consumer
    /// group rebalance, so that every partition is assigned afresh.
    #[arg(
        long = "projection-stall-ms",
        env = "PROJECTION_STALL_MS",
        default_value_t = 30_000
    )]
    pub stall_ms: u64,

    #[command(flatten)]
    pub search: crate::search::SearchConfig,
}

impl ProjectorOptions {
    /// The stall watch these options ask for.
    #[must_use]
    pub fn stall_watch(&self) -> StallWatch {
        StallWatch::new(Duration::from_millis(self.stall_ms))
    }
}

/// Configuration of the projectors.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    pub kafka: KafkaConfig,
    pub group_prefix: String,
    pub dead_letter_topic: String,
    pub only: Vec<String>,
    pub instance_id: Option<String>,
    pub session_timeout_ms: u32,
    pub max_poll_interval_ms: u32,
    pub search: crate::search::SearchConfig,
}

impl ProjectorConfig {
    #[must_use]
    pub fn new(kafka: KafkaConfig, options: ProjectorOptions) -> Self {
        Self {
            kafka,
            group_prefix: options.group_prefix,
            dead_letter_topic: options.dead_letter_topic,
            only: options.only,
            instance_id: options.instance_id,
            session_timeout_ms: options.session_timeout_ms,
            max_poll_interval_ms: options.max_poll_interval_ms,
            search: options.search,
        }
    }
}

impl ProjectorConfig {
    /// Whether this process runs the projection named `name`.
    #[must_use]
    pub fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|n| n == name)
    }
}

/// The names of every projection: the PostgreSQL views, then `search`.
#[must_use]
pub fn names() -> Vec<&'static str> {
    read_models::names()
}

/// The consumer group of a projection.
#[must_use]
pub fn group_id(config: &ProjectorConfig, projection: &dyn Projection) -> String {
    format!("{}.{}", config.group_prefix, projection.name())
}

/// Where an event stands against what a projection holds of its aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// The next event of the aggregate: apply it.
    Next,
    /// Already applied (a redelivery or a duplicate): skip it.
    Taken,
    /// Newer than the next one: the events after `held` and before this
    /// one have not arrived (yet). They are read from the event store.
    Gap { held: i64 },
}

/// Records that `projection` takes event `sequence` of `aggregate_id`, and
/// says how that event relates to the one it held. The row stays locked
/// until the transaction ends, so concurrent consumers of the same
/// partition (around a rebalance) take each event once.
async fn claim(
    db: &mut PgConnection,
    projection: &str,
    aggregate_id: &str,
    sequence: i64,
) -> Result<Claim, sqlx::Error> {
    // The common case, one statement: the event right after the held one.
    let next = if sequence == 1 {
        "INSERT INTO projection_progress (projection, aggregate_id, sequence) VALUES ($1, $2, $3) \
         ON CONFLICT (projection, aggregate_id) DO NOTHING"
    } else {
        "UPDATE projection_progress SET sequence = $3 \
         WHERE projection = $1 AND aggregate_id = $2 AND sequence = $3 - 1"
    };
    let done = sqlx::query(next)
        .bind(projection)
        .bind(aggregate_id)
        .bind(sequence)
        .execute(&mut *db)
        .await?;
    if done.rows_affected() == 1 {
        return Ok(Claim::Next);
    }
    // Taken already, or a gap: lock the row (creating it at 0 when the
    // aggregate is new to the projection) and compare.
    sqlx::query(
        "INSERT INTO projection_progress (projection, aggregate_id, sequence) VALUES ($1, $2, 0) \
         ON CONFLICT (projection, aggregate_id) DO NOTHING",
    )
    .bind(projection)
    .bind(aggregate_id)
    .execute(&mut *db)
    .await?;
    let held: i64 = sqlx::query_scalar(
        "SELECT sequence FROM projection_progress WHERE projection = $1 AND aggregate_id = $2 FOR UPDATE",
    )
    .bind(projection)
    .bind(aggregate_id)
    .fetch_one(&mut *db)
    .await?;
    let claim = Claim::judge(held, sequence);
    if claim != Claim::Taken {
        sqlx::query(
            "UPDATE projection_progress SET sequence = $3 WHERE projection = $1 AND aggregate_id = $2",
        )
        .bind(projection)
        .bind(aggregate_id)
        .bind(sequence)
        .execute(&mut *db)
        .await?;
    }
    Ok(claim)
}

impl Claim {
    /// How event `sequence` of an aggregate relates to `held`, the last
    /// one the projection took of it (0: none).
    fn judge(held: i64, sequence: i64) -> Self {
        if held >= sequence {
            Self::Taken
        } else if held == sequence - 1 {
            Self::Next
        } else {
            Self::Gap { held }
        }
    }
}

/// The events of `event`'s aggregate after `held` and before `event`, read
/// from the event store: the stream skipped them or will deliver them late
/// (a broker that reordered a retried batch, a zombie producer's stray
/// request). Taking them now keeps the view exact; their late copies are
/// then skipped as taken.
pub async fn missing_events(
    db: &mut PgConnection,
    projection: &str,
    event: &Event,
    held: i64,
    upcasters: &[Box<dyn cqrs_es::persist::EventUpcaster>],
) -> Result<Vec<Event>, Failure> {
    let envelope = &event.envelope;
    let recorded = event_store::feed::read_aggregate(
        &mut *db,
        &envelope.aggregatetype,
        &envelope.aggregateid,
        held,
        envelope.aggregatesequence,
    )
    .await
    .map_err(|error| Failure::Transient(sqlx::Error::Protocol(error.to_string())))?;
    let expected = envelope.aggregatesequence - held - 1;
    if recorded.len() as i64 != expected {
        return Err(Failure::Poison(format!(
            "events {}..{} of {} {} are neither in the stream nor in the event store",
            held + 1,
            envelope.aggregatesequence - 1,
            envelope.aggregatetype,
            envelope.aggregateid
        )));
    }
    tracing::warn!(
        projection,
        aggregate.id = %envelope.aggregateid,
        held,
        arrived = envelope.aggregatesequence,
        "events missing from the stream were read from the event store"
    );
    metrics::counter!("eshop_projection_gap_events_total", "projection" => projection.to_owned())
        .increment(recorded.len() as u64);
    recorded
        .iter()
        .map(|r| {
            Event::from_recorded(r, upcasters).map_err(|error| {
                Failure::Poison(format!(
                    "event {} of the aggregate, read from the event store: {error}",
                    r.sequence
                ))
            })
        })
        .collect()
}

/// Where a message came from: its partition and offset.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl<'a> Source<'a> {
    #[must_use]
    pub fn of(message: &'a impl Message) -> Self {
        Self {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
        }
    }
}

/// Records how far `projection` got in a partition: the next offset to
/// read and the event it last took, for `eshop projections status`.
pub async fn record_offset(
    db: &mut PgConnection,
    projection: &str,
    source: Source<'_>,
    event: Option<&Event>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_offsets AS p (projection, topic, partition, next_offset, global_position, event_time) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (projection, topic, partition) DO UPDATE \
           SET next_offset = GREATEST(p.next_offset, EXCLUDED.next_offset), \
               global_position = GREATEST(p.global_position, EXCLUDED.global_position), \
               event_time = GREATEST(p.event_time, EXCLUDED.event_time), updated_at = now()",
    )
    .bind(projection)
    .bind(source.topic)
    .bind(source.partition)
    .bind(source.offset + 1)
    .bind(event.map(|e| e.envelope.globalposition))
    .bind(event.map(|e| e.envelope.time))
    .execute(db)
    .await?;
    Ok(())
}

/// Applies one message with effectively-once semantics, and records the
/// partition's offset in the same transaction. Returns false when the
/// event had already been applied. Events of the aggregate that should
/// have come before it and did not are read from the event store and
/// applied first.
pub async fn apply_message(
    pool: &PgPool,
    projection: &dyn Projection,
    source: Source<'_>,
    event: &Event,
) -> Result<bool, Failure> {
    let mut tx = pool.begin().await?;
    // A rebuild swapping the projection's tables waits for this
    // transaction, and holds the next one back until it is done.
    sqlx::query("SELECT pg_advisory_xact_lock_shared(hashtext($1))")
        .bind(crate::replay::swap_lock(projection.name()))
        .execute(&mut *tx)
        .await?;
    record_offset(&mut tx, projection.name(), source, Some(event)).await?;
    let applied = take(&mut tx, projection, event).await?;
    tx.commit().await?;
    Ok(applied)
}

/// Applies several admitted messages in one transaction, with the same
/// claims as [`apply_message`], and records each partition's offset once,
/// for its last message. Returns how many events were applied rather than
/// skipped as already applied. Any failure rolls the whole batch back.
pub async fn apply_batch(
    pool: &PgPool,
    projection: &dyn Projection,
    messages: &[(Source<'_>, Event)],
) -> Result<usize, Failure> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock_shared(hashtext($1))")
        .bind(crate::replay::swap_lock(projection.name()))
        .execute(&mut *tx)
        .await?;
    let events: Vec<&Event> = messages.iter().map(|(_, event)| event).collect();
    let applied = take_all(&mut tx, projection, &events).await?;
    // Each partition's furthest message.
    let mut furthest: std::collections::HashMap<(&str, i32), (Source<'_>, &Event)> =
        std::collections::HashMap::new();
    for (source, event) in messages {
        let entry = furthest
            .entry((source.topic, source.partition))
            .or_insert((*source, event));
        if source.offset > entry.0.offset {
            *entry = (*source, event);
        }
    }
    for (source, event) in furthest.into_values() {
        record_offset(&mut tx, projection.name(), source, Some(event)).await?;
    }
    tx.commit().await?;
    Ok(applied)
}

/// The span of one event's projection: it joins the command's trace
/// through the envelope's W3C `traceparent`.
fn event_span(projection: &dyn Projection, event: &Event) -> tracing::Span {
    tracing::info_span!(
        "project",
        projection = projection.name(),
        event.id = %event.envelope.id,
        event.r#type = %event.envelope.event_type,
        aggregate.id = %event.envelope.aggregateid,
        traceparent = event.envelope.traceparent.as_deref(),
    )
}

/// Claims `event` for the projection and applies it, after the events of
/// its aggregate that should have come before it and did not. Returns
/// false when it had been applied already.
pub(crate) async fn take(
    db: &mut PgConnection,
    projection: &dyn Projection,
    event: &Event,
) -> Result<bool, Failure> {
    Ok(take_all(db, projection, &[event]).await? == 1)
}

/// Claims each event (in order) for the projection, then applies in one
/// go those claimed, each after the events of its aggregate that should
/// have come before it and did not. Returns how many were claimed rather
/// than skipped as taken already.
pub(crate) async fn take_all(
    db: &mut PgConnection,
    projection: &dyn Projection,
    events: &[&Event],
) -> Result<usize, Failure> {
    let mut claimed = Vec::with_capacity(events.len());
    for event in events {
        let missing = claim_event(&mut *db, projection, event)
            .instrument(event_span(projection, event))
            .await?;
        claimed.push(missing);
    }
    let mut folded: Vec<&Event> = Vec::with_capacity(events.len());
    for (event, missing) in events.iter().zip(&claimed) {
        if let Some(missing) = missing {
            folded.extend(missing);
            folded.push(event);
        }
    }
    projection.apply(&mut *db, &folded).await?;
    Ok(claimed.iter().filter(|c| c.is_some()).count())
}

/// Claims `event` for the projection. None when it was taken already;
/// otherwise the events of its aggregate to apply before it (read from the
/// event store when the stream skipped them).
async fn claim_event(
    db: &mut PgConnection,
    projection: &dyn Projection,
    event: &Event,
) -> Result<Option<Vec<Event>>, Failure> {
    let envelope = &event.envelope;
    let claim = claim(
        &mut *db,
        projection.name(),
        &envelope.aggregateid,
        envelope.aggregatesequence,
    )
    .await?;
    Ok(match claim {
        Claim::Taken => None,
        Claim::Next => Some(Vec::new()),
        Claim::Gap { held } => {
            let upcasters = event_schemas::upcasters();
            Some(missing_events(&mut *db, projection.name(), event, held, &upcasters).await?)
        }
    })
}

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

/// The consumer every projection runner uses.
pub type ProjectionConsumer = StreamConsumer<Rebalances>;

/// A consumer in the projection's group, subscribed to its topics.
pub(crate) fn consumer(
    config: &ProjectorConfig,
    name: &str,
    aggregate_types: &[&str],
) -> anyhow::Result<ProjectionConsumer> {
    let kafka = &config.kafka;
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

/// Why a message was not applied.
#[derive(Debug)]
pub enum Failure {
    /// Worth retrying: the database was unreachable, a deadlock, …
    Transient(sqlx::Error),
    /// Will fail the same way every time: dead-letter it.
    Poison(String),
}

impl From<read_models::ApplyError> for Failure {
    fn from(error: read_models::ApplyError) -> Self {
        match error {
            read_models::ApplyError::Store(error) => error.into(),
            read_models::ApplyError::Data(error) => Self::Poison(error.to_string()),
        }
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        let deterministic = match &error {
            // Data exceptions (22) and integrity violations (23) repeat.
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
            sqlx::Error::RowNotFound
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_) => true,
            _ => false,
        };
        if deterministic {
            Self::Poison(error.to_string())
        } else {
            Self::Transient(error)
        }
    }
}

async fn handle(
    pool: &PgPool,
    projection: &dyn Projection,
    message: &impl Message,
) -> Result<(), Failure> {
    let Some(value) = message.payload() else {
        return Ok(());
    };
    let event = Event::decode(value).map_err(|error| Failure::Poison(error.to_string()))?;
    // The command's W3C trace context travels in the envelope (and the
    // record's `traceparent` header): the projection's work joins its trace.
    let span = event_span(projection, &event);
    let applied = apply_message(pool, projection, Source::of(message), &event)
        .instrument(span)
        .await?;
    let outcome = if applied { "applied" } else { "skipped" };
    metrics::counter!("eshop_projection_events_total", "projection" => projection.name(), "outcome" => outcome)
        .increment(1);
    Ok(())
}

/// Publishes a message that cannot be applied to the dead-letter topic,
/// with the error, and counts it in `projection_status`.
pub(crate) async fn dead_letter(
    pool: &PgPool,
    producer: &FutureProducer,
    config: &ProjectorConfig,
    projection: &str,
    message: &impl Message,
    error: &str,
) -> Result<(), Failure> {
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "dlq_projection",
            value: Some(projection),
        })
        .insert(Header {
            key: "dlq_error",
            value: Some(error),
        })
        .insert(Header {
            key: "dlq_topic",
            value: Some(message.topic()),
        })
        .insert(Header {
            key: "dlq_partition",
            value: Some(&partition),
        })
        .insert(Header {
            key: "dlq_offset",
            value: Some(&offset),
        });
    // The original headers follow (`ce_*`, `traceparent`), so the dead
    // letter stays in the command's trace and can be routed like the event.
    let mut headers = headers;
    if let Some(original) = message.headers() {
        for header in original.iter() {
            headers = headers.insert(header);
        }
    }
    let mut record = FutureRecord::to(&config.dead_letter_topic).headers(headers);
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    if let Some(payload) = message.payload() {
        record = record.payload(payload);
    }
    crate::relay::confirmed(producer.send(record, Duration::from_secs(10)).await).map_err(
        |error| {
            Failure::Transient(sqlx::Error::Protocol(format!(
                "dead-letter topic unavailable: {error}"
            )))
        },
    )?;
    sqlx::query(
        "INSERT INTO projection_status (projection, dead_letters, last_dead_letter_at) VALUES ($1, 1, now()) \
         ON CONFLICT (projection) DO UPDATE \
           SET dead_letters = projection_status.dead_letters + 1, last_dead_letter_at = now()",
    )
    .bind(projection)
    .execute(pool)
    .await
    .map_err(Failure::Transient)?;
    metrics::counter!("eshop_projection_events_total", "projection" => projection.to_owned(), "outcome" => "dead_lettered")
        .increment(1);
    let mut db = pool.acquire().await.map_err(Failure::Transient)?;
    record_offset(&mut db, projection, Source::of(message), None)
        .await
        .map_err(Failure::Transient)?;
    Ok(())
}

/// Marks a dead-lettered event's sequence as taken, when its envelope says
/// which it is: the aggregate's later events then follow on from it rather
/// than fetching it again from the event store as a gap.
async fn pass_over(
    pool: &PgPool,
    projection: &str,
    message: &impl Message,
) -> Result<(), sqlx::Error> {
    let Some(envelope) = message
        .payload()
        .and_then(|value| serde_json::from_slice::<event_schemas::Envelope>(value).ok())
    else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO projection_progress AS p (projection, aggregate_id, sequence) VALUES ($1, $2, $3) \
         ON CONFLICT (projection, aggregate_id) DO UPDATE SET sequence = GREATEST(p.sequence, EXCLUDED.sequence)",
    )
    .bind(projection)
    .bind(&envelope.aggregateid)
    .bind(envelope.aggregatesequence)
    .execute(pool)
    .await?;
    Ok(())
}

/// The projectors' pool. Their commits need not wait for the WAL flush
/// (`synchronous_commit = off`): a view change, the projection's progress
/// and its recorded offset commit together, so a database crash can only
/// lose the last few of them together, and the recorded offset, which
/// leads (see [`crate::position`]), makes the projector read those
/// messages again. Events themselves are never written through this pool.
pub fn pool(database: &event_store::DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    event_store::connect_with(
        database,
        event_store::READ_MODEL_WRITER,
        // The views spell times in JSON in the session's time zone: UTC,
        // whatever the server's default, as rebuilds do.
        &[("synchronous_commit", "off"), ("TimeZone", "UTC")],
    )
}

/// Runs every projection the configuration selects (the given PostgreSQL
/// views, and the search index) until `shutdown` completes, watched for
/// stalls with the default stall time ([`DEFAULT_STALL`]).
pub async fn run_all(
    pool: PgPool,
    config: ProjectorConfig,
    projections: Vec<Arc<dyn Projection>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    run_all_watched(
        pool,
        config,
        projections,
        StallWatch::new(DEFAULT_STALL),
        shutdown,
    )
    .await
}

/// Like [`run_all`], with the stall watch `watch` (see [`watch_stalls`]).
pub async fn run_all_watched(
    pool: PgPool,
    config: ProjectorConfig,
    projections: Vec<Arc<dyn Projection>>,
    watch: StallWatch,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let known = names();
    if let Some(unknown) = config.only.iter().find(|n| !known.contains(&n.as_str())) {
        anyhow::bail!(
            "unknown projection '{unknown}' in PROJECTIONS; known: {}",
            known.join(", ")
        );
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopping = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let watched: Vec<(&'static str, &'static [&'static str])> = projections
        .iter()
        .map(|p| (p.name(), p.aggregate_types()))
        .chain([(crate::search::NAME, crate::search::AGGREGATE_TYPES)])
        .filter(|(name, _)| config.runs(name))
        .collect();
    let renewals = Renewals::default();
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (pool, config, stopped) = (pool.clone(), config.clone(), stopping());
        let renewals = renewals.clone();
        tasks.spawn(async move {
            watch_stalls(pool, config, watched, watch, renewals, stopped).await;
            Ok(())
        });
    }
    for projection in projections.into_iter().filter(|p| config.runs(p.name())) {
        let (pool, config, stopped) = (pool.clone(), config.clone(), stopping());
        let renew = renewals.of(projection.name());
        tasks.spawn(async move { run(pool, &config, projection, renew, stopped).await });
    }
    if config.runs(crate::search::NAME) {
        let (pool, config, stopped) = (pool.clone(), config.clone(), stopping());
        let renew = renewals.of(crate::search::NAME);
        tasks.spawn(async move {
            let search = config.search.clone();
            crate::search::run(pool, &config, &search, renew, stopped).await
        });
    }
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // A projection that stops on its own (it cannot start: an
            // unreachable broker, a refused mapping) stops the process.
            Some(result) = tasks.join_next() => {
                result.context("projection task panicked")??;
            }
        }
    }
    let _ = stop.send(true);
    while let Some(result) = tasks.join_next().await {
        result.context("projection task panicked")??;
    }
    Ok(())
}

/// The stall time when none is configured.
pub const DEFAULT_STALL: Duration = Duration::from_secs(30);

/// The longest wait between two rebalances of a group that stays stalled
/// (unless twice the stall time is longer).
const MAX_REBALANCE_WAIT: Duration = Duration::from_secs(300);

/// How a process watches its projections for stalls: after how long
/// without progress, with messages pending, a projection counts as
/// stalled, and where the stalled ones are reported (readiness, metrics).
#[derive(Debug, Clone)]
pub struct StallWatch {
    pub after: Duration,
    pub stalls: Stalls,
}

impl StallWatch {
    #[must_use]
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            stalls: Stalls::default(),
        }
    }
}

/// Watches `watched` (names and aggregate types) until `shutdown`: every
/// quarter of the stall time it compares each projection's recorded
/// offsets with its partitions' ends ([`crate::status::kafka_progress`]).
///
/// A projection with messages pending that has taken none for the stall
/// time is reported stalled ([`Stalls`]). Still stalled after twice the
/// stall time, its group is made to rebalance ([`rebalance_group`]), and
/// again while it stays stalled, waiting twice as long each time (up to
/// [`MAX_REBALANCE_WAIT`]); from the second time on, the projection's
/// runner in this process first replaces its consumer ([`Renewals`]),
/// which a rebalance cannot reach when it has dropped out of the group
/// (see [`Escalation`]). A rebalance is what gets a
/// stale assignment fixed: a static member (`--instance-id`) that comes
/// back within its session timeout is handed its old assignment without a
/// rebalance, and librdkafka, which does not implement KIP-814, then takes
/// itself for a follower, so no member checks the assignment against the
/// topics' partitions (KAFKA-13435). Partitions added meanwhile, or missing
/// from an assignment made before the topics' metadata was known, stay
/// unread until the group rebalances for another reason.
async fn watch_stalls(
    pool: PgPool,
    config: ProjectorConfig,
    watched: Vec<(&'static str, &'static [&'static str])>,
    watch: StallWatch,
    renewals: Renewals,
    shutdown: impl Future<Output = ()>,
) {
    let every = (watch.after / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
    let mut detector = StallDetector::default();
    let mut escalations: std::collections::HashMap<&str, Escalation> =
        std::collections::HashMap::new();
    // Rebalances under way; dropped (aborted) with the watch.
    let mut rebalances = tokio::task::JoinSet::new();
    let mut rebalancing: std::collections::HashMap<&str, tokio::task::AbortHandle> =
        std::collections::HashMap::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(every) => {}
        }
        while rebalances.try_join_next().is_some() {}
        let progress = match crate::status::kafka_progress(&pool, &config.kafka, &watched).await {
            Ok(progress) => progress,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "projection progress unavailable"
                );
                continue;
            }
        };
        let now = std::time::Instant::now();
        for (progress, &(name, aggregate_types)) in progress.iter().zip(&watched) {
            let stuck_for = detector.observe(progress, now);
            let stalled = stuck_for >= watch.after;
            let was_stalled = watch.stalls.is_stalled(name);
            watch.stalls.record(
                name,
                stalled.then_some(Stall {
                    pending: progress.pending,
                    stuck_for,
                }),
                stuck_for,
            );
            if !stalled {
                if was_stalled {
                    tracing::info!(projection = name, "projection progressing again");
                }
                escalations.remove(name);
                continue;
            }
            if !was_stalled {
                tracing::warn!(
                    projection = name,
                    pending = progress.pending,
                    stuck_ms = stuck_for.as_millis() as u64,
                    "projection stalled: messages pending and none taken"
                );
            }
            let remedy = escalations
                .entry(name)
                .or_insert_with(|| Escalation::new(watch.after))
                .step(stuck_for);
            match remedy {
                None => continue,
                Some(Remedy::Rebalance) => tracing::warn!(
                    projection = name,
                    pending = progress.pending,
                    stuck_ms = stuck_for.as_millis() as u64,
                    "projection still stalled; making its consumer group rebalance"
                ),
                Some(Remedy::RenewAndRebalance) => {
                    tracing::warn!(
                        projection = name,
                        pending = progress.pending,
                        stuck_ms = stuck_for.as_millis() as u64,
                        "projection still stalled after a rebalance; replacing its consumer and making its group rebalance"
                    );
                    renewals.request(name);
                }
            }
            // Each group's rebalance runs on its own (a join waits up to a
            // session timeout for every member), so the watch goes on
            // watching the others; one at a time per group.
            if rebalancing.get(name).is_some_and(|r| !r.is_finished()) {
                continue;
            }
            let config = config.clone();
            let started = rebalances.spawn(async move {
                if let Err(error) = rebalance_group(&config, name, aggregate_types).await {
                    tracing::warn!(
                        projection = name,
                        error = format!("{error:#}"),
                        "rebalancing the consumer group failed"
                    );
                }
            });
            rebalancing.insert(name, started);
        }
    }
}

/// What the stall watch does about a projection that stays stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Remedy {
    /// Make its consumer group rebalance.
    Rebalance,
    /// Replace this process's consumer of the projection, then make the
    /// group rebalance.
    RenewAndRebalance,
}

/// When the stall watch steps in for one stalled projection: first once
/// it has been seen stalled for another stall time (at twice the stall
/// time, unless it was first seen later: right after a broker outage, say,
/// when every group is rejoining by itself), with a group rebalance; then,
/// while it stays stalled, after twice as long a wait each time (up to
/// [`MAX_REBALANCE_WAIT`]) with a new consumer as well.
///
/// A rebalance reaches every member of the group, but not a consumer that
/// has dropped out of it and does not come back: after a broker outage
/// longer than the session timeout, librdkafka now and then leaves a
/// consumer waiting for an unassignment that never completes (its offset
/// commits answered "unknown member" in join state
/// `wait-unassign-to-complete`); it takes no message again. Only a new
/// consumer gets such a projection going.
#[derive(Debug, Clone)]
struct Escalation {
    stall: Duration,
    /// How long stuck the projection must be for the next step; unknown
    /// until it is first seen stalled.
    due: Option<Duration>,
    wait: Duration,
    longest_wait: Duration,
    steps: u32,
}

impl Escalation {
    fn new(stall: Duration) -> Self {
        Self {
            stall,
            due: None,
            wait: stall * 2,
            longest_wait: MAX_REBALANCE_WAIT.max(stall * 2),
            steps: 0,
        }
    }

    /// What to do now that the stalled projection has been stuck for
    /// `stuck_for` (at least the stall time).
    fn step(&mut self, stuck_for: Duration) -> Option<Remedy> {
        let due = *self
            .due
            .get_or_insert_with(|| stuck_for.max(self.stall) + self.stall);
        if stuck_for < due {
            return None;
        }
        self.due = Some(stuck_for + self.wait);
        self.wait = (self.wait * 2).min(self.longest_wait);
        self.steps += 1;
        Some(if self.steps == 1 {
            Remedy::Rebalance
        } else {
            Remedy::RenewAndRebalance
        })
    }
}

/// How the stall watch asks a projection's runner in this process for a
/// new consumer: one wake-up per projection, kept until the runner takes
/// it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Renewals {
    by_projection: std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Notify>>>,
    >,
}

impl Renewals {
    /// The wake-up of `projection`'s runner.
    pub(crate) fn of(&self, projection: &str) -> Arc<tokio::sync::Notify> {
        self.by_projection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(projection.to_owned())
            .or_default()
            .clone()
    }

    fn request(&self, projection: &str) {
        self.of(projection).notify_one();
    }
}

/// Replaces a projection's consumer: the old one is closed on the blocking
/// pool (closing a consumer that lost its group can wait on the broker
/// for long, or for ever), for at most the session timeout; then a new one
/// joins the group.
pub(crate) async fn renew_consumer(
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
    let topics: Vec<String> = aggregate_types
        .iter()
        .filter_map(|t| config.kafka.topics.topic(t))
        .map(str::to_owned)
        .collect();
    let consumer: rdkafka::consumer::BaseConsumer<Joined> = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
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
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .context("failed to create the dead-letter producer")?;
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", &config.kafka.brokers)
            .create()
            .context("failed to create the admin client")?;
    let topics: Vec<&str> = aggregate_types
        .iter()
        .filter_map(|t| config.kafka.topics.topic(t))
        .collect();
    crate::relay::create_topics(
        &admin,
        &topics,
        config.kafka.partitions,
        config.kafka.replication,
    )
    .await
    .context("failed to create the projection's topics")?;
    crate::relay::create_topics(
        &admin,
        &[config.dead_letter_topic.as_str()],
        1,
        config.kafka.replication,
    )
    .await
    .context("failed to create the dead-letter topic")?;
    let consumer = consumer(config, name, aggregate_types)?;
    Ok((producer, consumer))
}

/// Most messages applied in one transaction.
const MAX_BATCH: usize = 250;

/// Runs one projection until `shutdown` completes.
///
/// Messages that have already arrived are taken together, up to
/// [`MAX_BATCH`], and applied in one transaction ([`apply_batch`]): one
/// commit for a burst instead of one per event. A batch that fails with a
/// poison message is applied again one message at a time, so that only
/// that message goes to the dead-letter topic.
///
/// A wake-up on `renew` (from the stall watch) replaces the consumer
/// ([`renew_consumer`]).
pub(crate) async fn run(
    pool: PgPool,
    config: &ProjectorConfig,
    projection: Arc<dyn Projection>,
    renew: Arc<tokio::sync::Notify>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (producer, mut consumer) =
        connect(config, projection.name(), projection.aggregate_types()).await?;
    let mut fences = Fences::new();
    tracing::info!(projection = projection.name(), group = %group_id(config, projection.as_ref()), "projection started");
    let mut positions = Positions::new(projection.name());
    tokio::pin!(shutdown);
    loop {
        let next = tokio::select! {
            () = &mut shutdown => return Ok(()),
            next = receive(&consumer, &renew, &mut fences, config, projection.name()) => next?,
        };
        let mut gathered = match next {
            Next::Message(message) => vec![message],
            Next::Again => continue,
            Next::Renew => {
                consumer = renew_consumer(
                    consumer,
                    config,
                    projection.name(),
                    projection.aggregate_types(),
                )
                .await?;
                positions = Positions::new(projection.name());
                continue;
            }
        };
        // Whatever else has already arrived joins the batch.
        while gathered.len() < MAX_BATCH {
            match tokio::time::timeout(Duration::from_millis(1), consumer.recv()).await {
                Ok(Ok(message)) => gathered.push(message.detach()),
                _ => break,
            }
        }
        let batch = admit_all(
            &pool,
            &consumer,
            &mut positions,
            projection.name(),
            gathered,
        )
        .await;
        if batch.is_empty() {
            continue;
        }
        take_batch(&pool, &producer, config, projection.as_ref(), &batch).await;
        // Kafka's committed offsets trail the recorded ones (which are the
        // authority): commit each partition's furthest message.
        let mut offsets = rdkafka::TopicPartitionList::new();
        for message in &batch {
            let _ = offsets.add_partition_offset(
                message.topic(),
                message.partition(),
                rdkafka::Offset::Offset(message.offset() + 1),
            );
        }
        if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::warn!(projection = projection.name(), %error, "offset commit failed; the events may be redelivered and skipped");
        }
    }
}

/// What a projection runner does next.
pub(crate) enum Next {
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
pub(crate) async fn receive(
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
pub(crate) struct Fences {
    recent: std::collections::VecDeque<std::time::Instant>,
}

/// This many fences within [`FENCE_WINDOW`] mean another process.
const FENCES_TOLERATED: usize = 3;
const FENCE_WINDOW: Duration = Duration::from_secs(120);

impl Fences {
    pub(crate) fn new() -> Self {
        Self {
            recent: std::collections::VecDeque::new(),
        }
    }

    /// Whether to make a new consumer after `error` (the consumer's fatal
    /// error), or the error to stop with. `own_doing`: the consumer's own
    /// session had run out before.
    pub(crate) fn rejoin(
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

/// Applies an admitted batch in one transaction, retrying while the
/// failure is transient; on a poison message, applies the batch again one
/// message at a time.
async fn take_batch(
    pool: &PgPool,
    producer: &FutureProducer,
    config: &ProjectorConfig,
    projection: &dyn Projection,
    batch: &[rdkafka::message::OwnedMessage],
) {
    let decoded: Option<Vec<(Source<'_>, Event)>> = batch
        .iter()
        .map(|message| {
            let event = Event::decode(message.payload()?).ok()?;
            Some((Source::of(message), event))
        })
        .collect();
    if let Some(events) = decoded {
        loop {
            match apply_batch(pool, projection, &events).await {
                Ok(applied) => {
                    let name = projection.name();
                    metrics::counter!("eshop_projection_events_total", "projection" => name, "outcome" => "applied")
                        .increment(applied as u64);
                    metrics::counter!("eshop_projection_events_total", "projection" => name, "outcome" => "skipped")
                        .increment((events.len() - applied) as u64);
                    return;
                }
                Err(Failure::Poison(_)) => break,
                Err(Failure::Transient(error)) => {
                    tracing::warn!(projection = projection.name(), %error, "applying failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
    for message in batch {
        take_one(pool, producer, config, projection, message).await;
    }
}

/// Applies one message, retrying while the failure is transient; a poison
/// message goes to the dead-letter topic and the projection moves on.
async fn take_one(
    pool: &PgPool,
    producer: &FutureProducer,
    config: &ProjectorConfig,
    projection: &dyn Projection,
    message: &rdkafka::message::OwnedMessage,
) {
    loop {
        let failure = match handle(pool, projection, message).await {
            Ok(()) => return,
            Err(Failure::Poison(error)) => {
                tracing::error!(projection = projection.name(), topic = message.topic(), offset = message.offset(), %error, "event dead-lettered");
                match dead_letter(pool, producer, config, projection.name(), message, &error).await
                {
                    Ok(()) => match pass_over(pool, projection.name(), message).await {
                        Ok(()) => return,
                        Err(error) => Failure::Transient(error),
                    },
                    Err(failure) => failure,
                }
            }
            Err(failure) => failure,
        };
        if let Failure::Transient(error) = failure {
            tracing::warn!(projection = projection.name(), %error, "applying failed; retrying");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_next_taken_or_after_a_gap() {
        assert_eq!(
            Claim::judge(0, 1),
            Claim::Next,
            "the first of a new aggregate"
        );
        assert_eq!(Claim::judge(4, 5), Claim::Next);
        assert_eq!(Claim::judge(5, 5), Claim::Taken, "a redelivery");
        assert_eq!(Claim::judge(7, 5), Claim::Taken, "a late duplicate");
        assert_eq!(
            Claim::judge(2, 5),
            Claim::Gap { held: 2 },
            "3 and 4 missing"
        );
        assert_eq!(
            Claim::judge(0, 3),
            Claim::Gap { held: 0 },
            "1 and 2 missing"
        );
    }

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
    fn a_projection_that_stays_stalled_gets_a_rebalance_then_new_consumers() {
        let secs = Duration::from_secs;
        let mut escalation = Escalation::new(secs(3));
        assert_eq!(escalation.step(secs(3)), None);
        assert_eq!(escalation.step(secs(5)), None);
        assert_eq!(escalation.step(secs(6)), Some(Remedy::Rebalance));
        assert_eq!(escalation.step(secs(11)), None);
        assert_eq!(escalation.step(secs(12)), Some(Remedy::RenewAndRebalance));
        assert_eq!(escalation.step(secs(23)), None);
        assert_eq!(escalation.step(secs(24)), Some(Remedy::RenewAndRebalance));
        // The waits double up to the longest one.
        let mut stuck = secs(24);
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            let before = stuck;
            stuck += secs(1);
            while escalation.step(stuck).is_none() {
                stuck += secs(1);
            }
            last = stuck - before;
        }
        assert_eq!(last, MAX_REBALANCE_WAIT);
    }

    #[test]
    fn a_projection_first_seen_stalled_late_gets_a_stall_time_to_recover_by_itself() {
        // Seen stalled only once the broker is back after a 15 s outage:
        // its group is rejoining by itself.
        let secs = Duration::from_secs;
        let mut escalation = Escalation::new(secs(3));
        assert_eq!(escalation.step(secs(15)), None);
        assert_eq!(escalation.step(secs(17)), None);
        assert_eq!(escalation.step(secs(18)), Some(Remedy::Rebalance));
        assert_eq!(escalation.step(secs(23)), None);
        assert_eq!(escalation.step(secs(24)), Some(Remedy::RenewAndRebalance));
    }

    #[test]
    fn a_renewal_asked_for_while_the_runner_is_busy_waits_for_it() {
        use futures::FutureExt;
        let renewals = Renewals::default();
        let order_view = renewals.of("order_view");
        let search = renewals.of("search");
        renewals.request("order_view");
        assert!(
            order_view.notified().now_or_never().is_some(),
            "the runner takes the renewal asked for before it waited"
        );
        assert!(
            order_view.notified().now_or_never().is_none(),
            "one request, one renewal"
        );
        assert!(
            search.notified().now_or_never().is_none(),
            "another projection's runner is not woken"
        );
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
