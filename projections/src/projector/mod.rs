//! Runs projections: one loop ([`run`]) that takes batches of messages
//! from a [`Source`] (today a Kafka consumer group per projection) and
//! hands them to a [`Sink`] (a read model's PostgreSQL tables, or the
//! search index), with effectively-once semantics.
//!
//! - The source admits messages in partition order against the
//!   projection's own record of where it stands ([`crate::position`]) and
//!   acknowledges a batch only once the sink has taken all of it.
//! - The sink claims each event by its aggregate sequence, so that a
//!   redelivery or a duplicate from a relay that crashed after publishing
//!   changes nothing, and reads from the event store the events of an
//!   aggregate that the stream skipped ([`claims`]).
//! - A message that cannot be decoded, or whose change would fail the same
//!   way on every try (a data or integrity error), goes to the dead-letter
//!   topic with the error and the original payload ([`DeadLetters`]); the
//!   projection goes on and `projection_status` counts it.
//! - A transient failure (the database, the event store, the search engine
//!   or the broker unavailable) leaves the batch to be taken again.

mod claims;
mod dead_letters;
mod kafka;
mod stall;
mod store;
mod views;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::PgPool;
use tracing::Instrument;

pub(crate) use claims::take;
pub use claims::{Origin, apply_batch, apply_message, missing_events, record_offset, swap_lock};
pub use dead_letters::DeadLetters;
pub(crate) use dead_letters::headers_of as dead_letter_headers;
pub use kafka::{KafkaSource, ProjectionConsumer, Rebalances, rebalance_group};
pub use read_models::Projection;
pub use read_models::event::Event;
pub use stall::{DEFAULT_STALL, StallWatch};
pub use store::{STORE_TOPIC, StoreSource, StoreTail};
pub use views::ViewSink;

use crate::bus::EventBus;

/// The projectors' own options (the bus comes from
/// [`crate::bus::BusArgs`], shared with the relay).
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
    /// and the original payload: a topic on Kafka. With no broker, dead
    /// letters go to the `dead_letters` table.
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

    /// With no broker (`EVENT_BUS_URL=none`): how often the process looks
    /// up the end of the event store's feed (one short query for all its
    /// projections; a projection that has read everything reads again when
    /// the end moves), in ms.
    #[arg(
        long = "store-poll-ms",
        env = "PROJECTOR_STORE_POLL_MS",
        default_value_t = 10
    )]
    pub store_poll_ms: u64,

    #[command(flatten)]
    pub search: search_index::SearchConfig,
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
    /// The database the projections read and write (and, with no broker,
    /// whose event feed they read).
    pub database: event_store::DatabaseConfig,
    pub bus: EventBus,
    pub group_prefix: String,
    pub dead_letter_topic: String,
    pub only: Vec<String>,
    pub instance_id: Option<String>,
    pub session_timeout_ms: u32,
    pub max_poll_interval_ms: u32,
    /// How long a store reader waits before reading the feed again, when
    /// it has read everything below the horizon.
    pub store_poll: Duration,
    pub search: search_index::SearchConfig,
    /// The cache whose `basket_view` rows the projector invalidates before
    /// it commits their changes (none: nothing to invalidate).
    pub cache: cache::CacheConfig,
}

impl ProjectorConfig {
    #[must_use]
    pub fn new(
        database: event_store::DatabaseConfig,
        bus: EventBus,
        options: ProjectorOptions,
    ) -> Self {
        Self {
            database,
            bus,
            group_prefix: options.group_prefix,
            dead_letter_topic: options.dead_letter_topic,
            only: options.only,
            instance_id: options.instance_id,
            session_timeout_ms: options.session_timeout_ms,
            max_poll_interval_ms: options.max_poll_interval_ms,
            store_poll: Duration::from_millis(options.store_poll_ms),
            search: options.search,
            cache: cache::CacheConfig::none(),
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
pub fn group_id(config: &ProjectorConfig, name: &str) -> String {
    format!("{}.{name}", config.group_prefix)
}

/// Why a batch, or a message, was not taken.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Worth retrying: what the projection writes to or reads from is
    /// unavailable for now.
    #[error(transparent)]
    Transient(#[from] Unavailable),
    /// Will fail the same way every time: dead-letter it.
    #[error("{0}")]
    Poison(String),
}

/// What was unavailable.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The database failed: unreachable, a deadlock, a serialization failure.
    #[error("the database failed: {0}")]
    Store(#[source] sqlx::Error),
    /// The event store could not be read (to fill a gap).
    #[error("the event store failed: {0}")]
    EventStore(#[source] event_store::StoreError),
    /// The search engine is unreachable, overloaded or failing.
    #[error("the search engine is unavailable: {0}")]
    Search(String),
    /// The broker did not take a dead letter.
    #[error("the dead-letter topic is unavailable: {0}")]
    DeadLetterTopic(#[source] crate::relay::PublishError),
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
            Self::Transient(Unavailable::Store(error))
        }
    }
}

impl From<search_index::SearchError> for Failure {
    fn from(error: search_index::SearchError) -> Self {
        match error {
            search_index::SearchError::Unavailable(reason) => {
                Self::Transient(Unavailable::Search(reason))
            }
            search_index::SearchError::Refused(reason) => Self::Poison(reason),
            // A reply that does not read says nothing against the events:
            // they wait (and the stall watch reports it) rather than be
            // dead-lettered for the engine's fault.
            search_index::SearchError::Malformed(reason) => {
                Self::Transient(Unavailable::Search(reason))
            }
        }
    }
}

/// A message as a source delivered it: where it came from, its bytes (for
/// a dead letter), and its event.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The payload decoded, or why it does not decode.
    pub event: Result<Event, String>,
}

impl Delivered {
    /// A message, decoding its payload.
    #[must_use]
    pub fn new(
        origin: Origin<'_>,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
        headers: Vec<(String, Option<Vec<u8>>)>,
    ) -> Self {
        let event = match &payload {
            Some(value) => Event::decode(value).map_err(|error| error.to_string()),
            None => Err("the message has no value".to_owned()),
        };
        Self {
            topic: origin.topic.to_owned(),
            partition: origin.partition,
            offset: origin.offset,
            key,
            payload,
            headers,
            event,
        }
    }

    /// The W3C trace context of the command that wrote it: the message's
    /// `traceparent` header, or the envelope's (the same value, also there
    /// when the source is the event store).
    #[must_use]
    pub fn traceparent(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == event_schemas::metadata::TRACEPARENT)
            .and_then(|(_, value)| std::str::from_utf8(value.as_deref()?).ok())
            .or_else(|| self.event.as_ref().ok()?.envelope.traceparent.as_deref())
    }

    /// Where it came from.
    #[must_use]
    pub fn origin(&self) -> Origin<'_> {
        Origin {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// Where a projection's messages come from.
#[async_trait]
pub trait Source: Send {
    /// The next messages to take, in order, at most `max`: what has
    /// arrived, admitted against the projection's record of where it
    /// stands. Empty when there was nothing to take this time (a
    /// redelivery passed over, a renewed consumer).
    async fn next(&mut self, max: usize) -> anyhow::Result<Vec<Delivered>>;

    /// Every message of `batch` has been taken (applied, skipped or
    /// dead-lettered).
    fn acknowledge(&mut self, batch: &[Delivered]);

    /// The loop stops (shutdown), between batches: a source that keeps its
    /// own position writes down what was taken. Kafka's and RabbitMQ's
    /// positions are recorded with each view change, so they have nothing
    /// to do.
    async fn close(&mut self) {}
}

/// Where a projection puts what it makes of events.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// The projection's name.
    fn name(&self) -> &'static str;

    /// The aggregate types whose events it takes.
    fn aggregate_types(&self) -> &'static [&'static str];

    /// The most messages it takes in one batch.
    fn max_batch(&self) -> usize;

    /// Gets ready to take events (the search index's mappings). Retried
    /// while the failure is transient.
    async fn prepare(&self) -> Result<(), Failure> {
        Ok(())
    }

    /// Takes a batch of messages, in order. What can never be taken goes
    /// to `dead`; a transient failure leaves the whole batch to be taken
    /// again, which the claims make harmless.
    async fn take(&self, batch: &[Delivered], dead: &DeadLetters) -> Result<(), Failure>;
}

/// How long to wait before trying again after a transient failure.
const RETRY: Duration = Duration::from_millis(500);

/// The projector loop: takes batches from `source` into `sink` until
/// `shutdown` completes.
pub async fn run(
    sink: &dyn Sink,
    source: &mut dyn Source,
    dead: &DeadLetters,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let mut wait = Duration::from_millis(200);
    loop {
        let prepared = tokio::select! {
            () = &mut shutdown => return Ok(()),
            prepared = sink.prepare() => prepared,
        };
        match prepared {
            Ok(()) => break,
            Err(Failure::Transient(error)) => {
                tracing::warn!(projection = sink.name(), %error, "not ready; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(Failure::Poison(error)) => {
                anyhow::bail!("projection {}: cannot start: {error}", sink.name())
            }
        }
    }
    loop {
        let batch = tokio::select! {
            () = &mut shutdown => {
                source.close().await;
                return Ok(());
            }
            batch = source.next(sink.max_batch()) => batch?,
        };
        if batch.is_empty() {
            continue;
        }
        // The batch's span is linked to the commands of its events; each
        // event's own span (see `claims::event_span`) joins its command's
        // trace.
        let span = tracing::debug_span!(
            target: telemetry::SPANS,
            "project.batch",
            otel.kind = "consumer",
            projection = sink.name(),
            messaging.batch.message_count = batch.len(),
        );
        telemetry::link_all(&span, batch.iter().map(Delivered::traceparent));
        let started = std::time::Instant::now();
        loop {
            match sink.take(&batch, dead).instrument(span.clone()).await {
                Ok(()) => break,
                Err(Failure::Transient(error)) => {
                    tracing::warn!(projection = sink.name(), %error, "taking the batch failed; retrying");
                }
                Err(Failure::Poison(error)) => {
                    tracing::error!(projection = sink.name(), %error, "the batch was refused; retrying");
                }
            }
            tokio::time::sleep(RETRY).await;
        }
        metrics::histogram!("eshop_projection_batch_duration_seconds", "projection" => sink.name())
            .record(started.elapsed().as_secs_f64());
        drop(span);
        source.acknowledge(&batch);
    }
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

/// Runs each sink the configuration selects, fed by the bus (a Kafka
/// consumer group of its own, or the event store's feed), until `shutdown`
/// completes, watched for stalls (see [`StallWatch`]).
pub async fn run_sinks(
    pool: PgPool,
    config: ProjectorConfig,
    sinks: Vec<Arc<dyn Sink>>,
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
    let sinks: Vec<Arc<dyn Sink>> = sinks
        .into_iter()
        .filter(|s| config.runs(s.name()))
        .collect();
    let watched: Vec<(&'static str, &'static [&'static str])> = sinks
        .iter()
        .map(|s| (s.name(), s.aggregate_types()))
        .collect();
    let renewals = stall::Renewals::default();
    // With no broker, one watch of the feed's end for every projection.
    let tail = matches!(config.bus, EventBus::None)
        .then(|| StoreTail::watch(pool.clone(), config.store_poll));
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (pool, config, stopped) = (pool.clone(), config.clone(), stopping());
        let renewals = renewals.clone();
        tasks.spawn(async move {
            stall::watch_stalls(pool, config, watched, watch, renewals, stopped).await;
            Ok(())
        });
    }
    for sink in sinks {
        let (pool, config, stopped) = (pool.clone(), config.clone(), stopping());
        let renew = renewals.of(sink.name());
        let tail = tail.clone();
        tasks.spawn(async move {
            let (name, types) = (sink.name(), sink.aggregate_types());
            match &config.bus {
                EventBus::Kafka(_) => {
                    let (producer, consumer) = kafka::connect(&config, name, types).await?;
                    tracing::info!(projection = name, bus = "kafka", group = %group_id(&config, name), "projection started");
                    let dead = DeadLetters::new(pool.clone(), producer, config.dead_letter_topic.clone());
                    let mut source = KafkaSource::new(pool, config, name, types, consumer, renew);
                    run(sink.as_ref(), &mut source, &dead, stopped).await
                }
                EventBus::RabbitMq(rabbit) => {
                    tracing::info!(projection = name, bus = "rabbitmq", group = %group_id(&config, name), "projection started");
                    let stream = crate::rabbit::DeadLetterStream::new(rabbit.clone(), config.dead_letter_topic.clone());
                    let dead = DeadLetters::on_rabbit(pool.clone(), stream);
                    let mut source = crate::rabbit::RabbitSource::new(
                        pool,
                        config.database.clone(),
                        rabbit.clone(),
                        name,
                        group_id(&config, name),
                        types,
                    );
                    run(sink.as_ref(), &mut source, &dead, stopped).await
                }
                EventBus::None => {
                    tracing::info!(projection = name, bus = "none", "projection started");
                    let dead = DeadLetters::in_store(pool.clone());
                    let tail = tail.expect("watched with no broker");
                    let mut source = StoreSource::new(pool, config.database.clone(), name, types, tail);
                    run(sink.as_ref(), &mut source, &dead, stopped).await
                }
            }
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
