//! The relay: publishes every event of the store, in the global order and
//! without gaps, to one Kafka topic per aggregate type.
//!
//! - It reads with [`event_store::feed::read_after`], which never passes an
//!   event whose transaction could still commit below it.
//! - Each event becomes a CloudEvents envelope (upcast to the current
//!   schema), keyed by aggregate id so that an aggregate's events stay in
//!   order within one partition.
//! - The checkpoint advances only after the broker acknowledged the whole
//!   batch (idempotent producer, `acks=all`). A crash may republish a
//!   batch, never skip one; consumers drop events whose aggregate sequence
//!   they have already applied.
//! - While the broker is down, batches are retried with backoff; the write
//!   side is not affected and the backlog drains when the broker returns.
//! - Relays with the same name elect one leader through a PostgreSQL
//!   advisory lock held on a dedicated connection; the others wait.

pub mod checkpoint;
mod config;
mod publish;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use backon::{BackoffBuilder, ExponentialBuilder};
use event_store::DatabaseConfig;
use event_store::feed::{FeedFilter, read_after};
use sqlx::{Connection, PgConnection, PgPool};

pub use checkpoint::{advance as advance_checkpoint, load as load_checkpoint};
pub use config::{KafkaConfig, RelayConfig, RelayOptions, TopicMap};
pub use publish::{Publisher, broker_reachable, create_topics, envelope_from, envelope_of};

/// How often a leader checks that it still holds its lock.
const LEADERSHIP_CHECK: Duration = Duration::from_secs(1);

/// Runs the relay until `shutdown` completes.
pub async fn run(
    database: &DatabaseConfig,
    config: RelayConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let pool = event_store::connect(database).context("invalid DATABASE_URL")?;
    let mut publisher = Publisher::new(&config).context("failed to create the Kafka producer")?;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            result = lead(database, &pool, &config, &mut publisher) => {
                if let Err(error) = result {
                    tracing::warn!(error = format!("{error:#}"), "relay interrupted; starting over");
                }
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(config.poll_interval().max(Duration::from_millis(500))) => {}
                }
            }
        }
    }
}

/// Waits to become the leader, then publishes until an error.
async fn lead(
    database: &DatabaseConfig,
    pool: &PgPool,
    config: &RelayConfig,
    publisher: &mut Publisher,
) -> anyhow::Result<()> {
    let mut lock = PgConnection::connect(&database.url)
        .await
        .context("failed to connect for the leader lock")?;
    let key = format!("eshop.relay.{}", config.name);
    loop {
        let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(&key)
            .fetch_one(&mut lock)
            .await?;
        if acquired {
            break;
        }
        tokio::time::sleep(LEADERSHIP_CHECK).await;
    }
    tracing::info!(relay = %config.name, "relay is the leader");
    publisher.ensure_topics(config).await?;
    let mut position = checkpoint::load(pool, &config.name).await?;
    let filter = FeedFilter::default();
    let mut last_check = tokio::time::Instant::now();
    loop {
        if last_check.elapsed() >= LEADERSHIP_CHECK {
            // The lock lives as long as this connection does.
            lock.ping()
                .await
                .context("lost the leader lock's connection")?;
            last_check = tokio::time::Instant::now();
        }
        let started = std::time::Instant::now();
        let batch = read_after(pool, position, &filter, config.batch_size).await?;
        let Some(last) = batch.last().map(|event| event.global) else {
            tokio::time::sleep(config.poll_interval()).await;
            continue;
        };
        let read = started.elapsed();
        publish_with_retry(publisher, config, &batch, &mut lock).await?;
        let published = started.elapsed();
        checkpoint::advance(pool, &config.name, last).await?;
        position = last;
        // How long the batch's oldest event waited since its transaction
        // began: what a reader of the views sees as the relay's share.
        let oldest_ms = batch
            .iter()
            .map(|event| event.recorded_at)
            .min()
            .map_or(0, |at| (chrono::Utc::now() - at).num_milliseconds());
        tracing::debug!(
            events = batch.len(),
            position = last.position,
            read_ms = read.as_millis() as u64,
            publish_ms = (published - read).as_millis() as u64,
            checkpoint_ms = (started.elapsed() - published).as_millis() as u64,
            oldest_ms,
            "batch published"
        );
    }
}

/// Publishes a batch, retrying with backoff until the broker acknowledges
/// all of it. Gives up only when leadership is lost.
async fn publish_with_retry(
    publisher: &mut Publisher,
    config: &RelayConfig,
    batch: &[event_store::feed::RecordedEvent],
    lock: &mut PgConnection,
) -> anyhow::Result<()> {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        // With jitter (up to the delay again), at most 5 s between tries.
        .with_max_delay(Duration::from_millis(2500))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        match publisher.publish(config, batch).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(%error, retry_in_ms = delay.as_millis(), events = batch.len(), "publishing failed");
                publisher
                    .renew_if_broken(config, &error)
                    .context("failed to replace the Kafka producer")?;
                tokio::time::sleep(delay).await;
                lock.ping()
                    .await
                    .context("lost the leader lock's connection while retrying")?;
            }
        }
    }
}
