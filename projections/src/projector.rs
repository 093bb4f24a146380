//! Runs projections: one Kafka consumer group per projection, each event
//! applied with effectively-once semantics.
//!
//! For every message, one PostgreSQL transaction records the projection's
//! progress for the event's aggregate and applies the view change. An event
//! whose aggregate sequence is not newer than the recorded one (a
//! redelivery, or a duplicate from a relay that crashed after publishing)
//! changes nothing. The Kafka offset is committed only after the database
//! commit: a crash in between redelivers the message, which is then skipped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use sqlx::{PgConnection, PgPool};

use crate::event::Event;
use crate::relay::KafkaConfig;

/// A read model fed by events: which aggregate types it reads, and what
/// each event changes. Writes go through the given connection, inside the
/// transaction that also records the projection's progress.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Names the projection's consumer group and progress.
    fn name(&self) -> &'static str;

    /// The aggregate types whose topics it reads.
    fn aggregate_types(&self) -> &'static [&'static str];

    /// Applies one event.
    async fn apply(&self, db: &mut PgConnection, event: &Event) -> Result<(), sqlx::Error>;
}

/// Configuration of `eshop project`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProjectorConfig {
    #[command(flatten)]
    pub kafka: KafkaConfig,

    /// Consumer groups are named `{prefix}.{projection}`; processes with the
    /// same prefix share each projection's partitions.
    #[arg(
        long = "projector-group-prefix",
        env = "PROJECTOR_GROUP_PREFIX",
        default_value = "eshop.projection"
    )]
    pub group_prefix: String,
}

/// The consumer group of a projection.
#[must_use]
pub fn group_id(config: &ProjectorConfig, projection: &dyn Projection) -> String {
    format!("{}.{}", config.group_prefix, projection.name())
}

/// Records that `projection` reached `sequence` of `aggregate_id`; false when
/// it already had (the event must be skipped).
async fn claim(
    db: &mut PgConnection,
    projection: &str,
    aggregate_id: &str,
    sequence: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO projection_progress (projection, aggregate_id, sequence) VALUES ($1, $2, $3) \
         ON CONFLICT (projection, aggregate_id) DO UPDATE SET sequence = EXCLUDED.sequence \
           WHERE projection_progress.sequence < EXCLUDED.sequence",
    )
    .bind(projection)
    .bind(aggregate_id)
    .bind(sequence)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Applies one message with effectively-once semantics. Returns false when
/// the event had already been applied.
pub async fn apply_message(
    pool: &PgPool,
    projection: &dyn Projection,
    event: &Event,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let envelope = &event.envelope;
    if !claim(
        &mut tx,
        projection.name(),
        &envelope.aggregateid,
        envelope.aggregatesequence,
    )
    .await?
    {
        return Ok(false);
    }
    projection.apply(&mut tx, event).await?;
    tx.commit().await?;
    Ok(true)
}

fn consumer(
    config: &ProjectorConfig,
    projection: &dyn Projection,
) -> anyhow::Result<StreamConsumer> {
    let kafka = &config.kafka;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group_id(config, projection))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .context("failed to create the consumer")?;
    let topics: Vec<&str> = projection
        .aggregate_types()
        .iter()
        .filter_map(|t| kafka.topics.topic(t))
        .collect();
    consumer.subscribe(&topics).context("failed to subscribe")?;
    Ok(consumer)
}

async fn handle(
    pool: &PgPool,
    projection: &dyn Projection,
    message: &BorrowedMessage<'_>,
) -> Result<(), sqlx::Error> {
    let Some(value) = message.payload() else {
        return Ok(());
    };
    match Event::decode(value) {
        Ok(event) => {
            apply_message(pool, projection, &event).await?;
        }
        Err(error) => {
            tracing::error!(projection = projection.name(), topic = message.topic(), offset = message.offset(), %error, "undecodable event skipped");
        }
    }
    Ok(())
}

/// Runs every projection until `shutdown` completes.
pub async fn run_all(
    pool: PgPool,
    config: ProjectorConfig,
    projections: Vec<Arc<dyn Projection>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for projection in projections {
        let (pool, config, mut stopped) = (pool.clone(), config.clone(), stopped.clone());
        tasks.spawn(async move {
            run(pool, &config, projection, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
        });
    }
    shutdown.await;
    let _ = stop.send(true);
    while let Some(result) = tasks.join_next().await {
        result.context("projection task panicked")??;
    }
    Ok(())
}

/// Runs one projection until `shutdown` completes.
pub async fn run(
    pool: PgPool,
    config: &ProjectorConfig,
    projection: Arc<dyn Projection>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let consumer = consumer(config, projection.as_ref())?;
    tracing::info!(projection = projection.name(), group = %group_id(config, projection.as_ref()), "projection started");
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            () = &mut shutdown => return Ok(()),
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(projection = projection.name(), %error, "consuming failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        // A database failure leaves the offset where it was: retry the same
        // message until it applies.
        while let Err(error) = handle(&pool, projection.as_ref(), &message).await {
            tracing::warn!(projection = projection.name(), %error, "applying failed; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Err(error) = consumer.commit_message(&message, CommitMode::Async) {
            tracing::warn!(projection = projection.name(), %error, "offset commit failed; the event may be redelivered and skipped");
        }
    }
}
