//! The relay: publishes every event of the store, in the global order and
//! without gaps, to the event bus: one Kafka topic per aggregate type, or
//! RabbitMQ's exchange, into each aggregate type's lanes
//! ([`crate::rabbit`]).
//!
//! - It reads with [`event_store::feed::read_after`], which never passes an
//!   event whose transaction could still commit below it.
//! - Each event becomes a CloudEvents envelope (upcast to the current
//!   schema), keyed by aggregate id so that an aggregate's events stay in
//!   order within one partition.
//! - Batches are pipelined: while up to `RELAY_MAX_IN_FLIGHT` batches await
//!   the broker's acknowledgement (idempotent producer, `acks=all`), the
//!   relay reads and sends the next. The checkpoint advances only over the
//!   acknowledged prefix of what was sent, in order. A refusal or a crash
//!   may republish batches, never skip one; consumers drop events whose
//!   aggregate sequence they have already applied.
//! - While the broker is down, batches are retried with backoff; the write
//!   side is not affected and the backlog drains when the broker returns.
//! - Relays with the same name elect one leader through a PostgreSQL
//!   advisory lock held on a dedicated connection; the others wait.

pub mod checkpoint;
mod config;
mod publish;

use std::future::Future;
use std::time::Duration;

use std::collections::VecDeque;

use anyhow::Context;
use backon::{BackoffBuilder, ExponentialBuilder};
use event_schemas::metadata::TRACEPARENT;
use event_store::DatabaseConfig;
use event_store::feed::{FeedFilter, GlobalPosition, read_after};
use futures::FutureExt;
use sqlx::{Connection, PgPool};
use tracing::Instrument;

pub use checkpoint::{advance as advance_checkpoint, load as load_checkpoint};
pub use config::{KafkaConfig, RelayConfig, RelayOptions, TopicMap};
pub(crate) use publish::confirmed;
pub use publish::{Acknowledgement, KafkaPublisher, PublishError, broker_reachable, create_topics};

use crate::bus::EventBus;
use crate::rabbit::RabbitPublisher;

/// What the relay publishes with: a Kafka producer, or a RabbitMQ channel
/// with publisher confirms.
pub enum Publisher {
    Kafka(KafkaPublisher),
    Rabbit(Box<RabbitPublisher>),
}

impl Publisher {
    /// The publisher of the bus `config` names.
    ///
    /// # Errors
    /// The bus has no broker, or the Kafka producer cannot be made.
    pub fn new(config: &RelayConfig) -> anyhow::Result<Self> {
        match &config.bus {
            EventBus::Kafka(kafka) => Ok(Self::Kafka(
                KafkaPublisher::new(kafka, config)
                    .context("failed to create the Kafka producer")?,
            )),
            EventBus::RabbitMq(rabbit) => {
                Ok(Self::Rabbit(Box::new(RabbitPublisher::new(rabbit.clone()))))
            }
            EventBus::None => anyhow::bail!(
                "the event bus is none: there is no broker to relay to (the projectors read the event store themselves); run `eshop project` alone"
            ),
        }
    }

    /// Creates the topics, or declares the exchange and the lanes.
    async fn ensure_topology(&mut self) -> Result<(), PublishError> {
        match self {
            Self::Kafka(kafka) => Ok(kafka.ensure_topics().await?),
            Self::Rabbit(rabbit) => rabbit.ensure_topology().await,
        }
    }

    async fn send(
        &mut self,
        batch: &[event_store::feed::RecordedEvent],
    ) -> Result<Acknowledgement, PublishError> {
        match self {
            Self::Kafka(kafka) => kafka.send(batch),
            Self::Rabbit(rabbit) => rabbit.send(batch).await,
        }
    }

    /// After a refusal: a Kafka producer that lost its idempotence state is
    /// replaced; a RabbitMQ connection is opened anew for the next batch.
    fn renew_if_broken(
        &mut self,
        config: &RelayConfig,
        error: &PublishError,
    ) -> anyhow::Result<()> {
        match self {
            Self::Kafka(kafka) => {
                kafka
                    .renew_if_broken(config, error)
                    .context("failed to replace the Kafka producer")?;
            }
            Self::Rabbit(rabbit) => rabbit.reset(),
        }
        Ok(())
    }
}
pub use read_models::event::{envelope_from, envelope_of};

/// How often a leader checks that it still holds its lock.
const LEADERSHIP_CHECK: Duration = Duration::from_secs(1);

/// Runs the relay until `shutdown` completes.
pub async fn run(
    database: &DatabaseConfig,
    config: RelayConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let pool = event_store::connect(database).context("invalid DATABASE_URL")?;
    let mut publisher = Publisher::new(&config)?;
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
    let mut lock = crate::leader::hold(&database.url, &format!("eshop.relay.{}", config.name))
        .await
        .context("the relay's leader lock")?;
    tracing::info!(relay = %config.name, "relay is the leader");
    publisher.ensure_topology().await?;
    let mut pipeline = Pipeline::new(checkpoint::load(pool, &config.name).await?);
    let filter = FeedFilter::default();
    let mut last_check = tokio::time::Instant::now();
    let mut delays = retry_delays();
    loop {
        if last_check.elapsed() >= LEADERSHIP_CHECK {
            // The lock lives as long as this connection does.
            lock.ping()
                .await
                .context("lost the leader lock's connection")?;
            last_check = tokio::time::Instant::now();
        }
        let outcome = match pipeline.retire_acknowledged() {
            Ok(Some(acknowledged)) => Ok(Some(acknowledged)),
            Ok(None) if pipeline.has_room(config) => {
                match send_next(pool, publisher, config, &filter, &mut pipeline).await? {
                    // Sent: look for more at once.
                    Ok(true) => continue,
                    Ok(false) => pipeline.wait(config.poll_interval()).await,
                    Err(error) => Err(error),
                }
            }
            Ok(None) => pipeline.wait(config.poll_interval()).await,
            Err(error) => Err(error),
        };
        match outcome {
            Ok(Some(acknowledged)) => {
                checkpoint::advance(pool, &config.name, acknowledged.last).await?;
                delays = retry_delays();
                tracing::debug!(
                    batches = acknowledged.batches,
                    events = acknowledged.events,
                    position = acknowledged.last.position,
                    in_flight = pipeline.len(),
                    publish_ms = acknowledged.publish.as_millis() as u64,
                    oldest_ms = acknowledged.oldest_ms,
                    "batches acknowledged"
                );
            }
            Ok(None) => {}
            Err(error) => {
                // Whatever was in flight may or may not have reached the
                // broker: send it all again from the checkpoint (consumers
                // skip what they already have).
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(%error, retry_in_ms = delay.as_millis(), in_flight = pipeline.len(), "publishing failed");
                pipeline.restart();
                publisher.renew_if_broken(config, &error)?;
                tokio::time::sleep(delay).await;
                lock.ping()
                    .await
                    .context("lost the leader lock's connection while retrying")?;
            }
        }
    }
}

/// Reads the batch after what the pipeline has sent and sends it. Ok(false)
/// when there was nothing to read; the inner error when the producer
/// refused it.
async fn send_next(
    pool: &PgPool,
    publisher: &mut Publisher,
    config: &RelayConfig,
    filter: &FeedFilter,
    pipeline: &mut Pipeline,
) -> anyhow::Result<Result<bool, PublishError>> {
    let started = std::time::Instant::now();
    let batch = read_after(pool, pipeline.sent, filter, config.batch_size).await?;
    let Some(last) = batch.last().map(|event| event.global) else {
        return Ok(Ok(false));
    };
    // From reading the batch to the broker's acknowledgement; linked to
    // the commands that wrote its events.
    let span = tracing::debug_span!(
        target: telemetry::SPANS,
        "relay.publish",
        otel.kind = "producer",
        relay = %config.name,
        messaging.batch.message_count = batch.len(),
        event.first = batch.first().map_or(0, |event| event.global.position),
        event.last = last.position,
    );
    telemetry::link_all(
        &span,
        batch.iter().map(|event| {
            event
                .metadata
                .get(TRACEPARENT)
                .and_then(serde_json::Value::as_str)
        }),
    );
    let oldest = batch.iter().map(|event| event.recorded_at).min();
    let sent = publisher.send(&batch).instrument(span.clone()).await;
    Ok(sent.map(|acknowledgement| {
        pipeline.push(Flight {
            last,
            events: batch.len(),
            oldest,
            started,
            sent_at: std::time::Instant::now(),
            acknowledgement,
            span,
        });
        true
    }))
}

/// Backoff between tries while the broker refuses: from 100 ms, with
/// jitter (up to the delay again), at most 5 s.
fn retry_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_millis(2500))
        .with_jitter()
        .without_max_times()
        .build()
}

/// A batch sent and not yet acknowledged.
struct Flight {
    last: GlobalPosition,
    events: usize,
    oldest: Option<chrono::DateTime<chrono::Utc>>,
    /// When its read began.
    started: std::time::Instant,
    sent_at: std::time::Instant,
    acknowledgement: Acknowledgement,
    /// Ends when the flight is retired (acknowledged) or dropped.
    span: tracing::Span,
}

/// What the broker acknowledged: a prefix of the batches in flight.
struct Acknowledged {
    last: GlobalPosition,
    batches: usize,
    events: usize,
    /// From sending the oldest of them to its acknowledgement.
    publish: Duration,
    /// How old the oldest event of them was when acknowledged.
    oldest_ms: i64,
}

/// The batches in flight, oldest first. The checkpoint may only move over
/// the acknowledged prefix: a later batch acknowledged before an earlier
/// one waits for it, and a refusal sends everything from the checkpoint
/// again.
struct Pipeline {
    /// The last event acknowledged (where the checkpoint stands).
    acknowledged: GlobalPosition,
    /// The last event handed to the producer.
    sent: GlobalPosition,
    flights: VecDeque<Flight>,
    /// The front flight's acknowledgement, once it has resolved.
    front_done: Option<Result<(), PublishError>>,
}

impl Pipeline {
    fn new(checkpoint: GlobalPosition) -> Self {
        Self {
            acknowledged: checkpoint,
            sent: checkpoint,
            flights: VecDeque::new(),
            front_done: None,
        }
    }

    fn len(&self) -> usize {
        self.flights.len()
    }

    fn has_room(&self, config: &RelayConfig) -> bool {
        self.flights.len() < config.max_in_flight.max(1)
    }

    fn push(&mut self, flight: Flight) {
        self.sent = flight.last;
        self.flights.push_back(flight);
    }

    /// Forgets what is in flight: the next batch is read from the
    /// checkpoint again.
    fn restart(&mut self) {
        self.flights.clear();
        self.front_done = None;
        self.sent = self.acknowledged;
    }

    /// Takes every flight at the front whose acknowledgement has resolved,
    /// without waiting: the acknowledged prefix, if any, or the refusal.
    fn retire_acknowledged(&mut self) -> Result<Option<Acknowledged>, PublishError> {
        let mut done: Option<Acknowledged> = None;
        while let Some(front) = self.flights.front_mut() {
            let result = match self.front_done.take() {
                Some(result) => result,
                None => match (&mut front.acknowledgement).now_or_never() {
                    Some(result) => result,
                    None => break,
                },
            };
            if let Err(error) = result {
                // An acknowledged prefix before it still counts: report it
                // first, and the refusal on the next call.
                if done.is_some() {
                    self.front_done = Some(Err(error));
                    break;
                }
                return Err(error);
            }
            let flight = self.flights.pop_front().expect("front exists");
            metrics::histogram!("eshop_relay_batch_duration_seconds")
                .record(flight.started.elapsed().as_secs_f64());
            drop(flight.span);
            self.acknowledged = flight.last;
            let oldest_ms = flight
                .oldest
                .map_or(0, |at| (chrono::Utc::now() - at).num_milliseconds());
            let entry = done.get_or_insert(Acknowledged {
                last: flight.last,
                batches: 0,
                events: 0,
                publish: flight.sent_at.elapsed(),
                oldest_ms,
            });
            entry.last = flight.last;
            entry.batches += 1;
            entry.events += flight.events;
        }
        Ok(done)
    }

    /// Waits up to `most` for the front flight's acknowledgement (or just
    /// `most` when nothing is in flight), then takes the acknowledged
    /// prefix.
    async fn wait(&mut self, most: Duration) -> Result<Option<Acknowledged>, PublishError> {
        match self.flights.front_mut() {
            Some(front) if self.front_done.is_none() => {
                if let Ok(result) = tokio::time::timeout(most, &mut front.acknowledgement).await {
                    self.front_done = Some(result);
                }
            }
            Some(_) => {}
            None => tokio::time::sleep(most).await,
        }
        self.retire_acknowledged()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn at(position: i64) -> GlobalPosition {
        GlobalPosition {
            transaction_id: 1,
            position,
        }
    }

    /// A flight ending at `position` whose acknowledgement the returned
    /// sender settles.
    fn flight(position: i64) -> (Flight, oneshot::Sender<Result<(), PublishError>>) {
        let (settle, settled) = oneshot::channel();
        let acknowledgement: Acknowledgement = Box::pin(async move {
            settled.await.unwrap_or(Err(PublishError::Kafka(
                rdkafka::error::KafkaError::Canceled,
            )))
        });
        let flight = Flight {
            last: at(position),
            events: 10,
            oldest: None,
            started: std::time::Instant::now(),
            sent_at: std::time::Instant::now(),
            acknowledgement,
            span: tracing::Span::none(),
        };
        (flight, settle)
    }

    fn refused() -> PublishError {
        PublishError::NoTopic("Nothing".to_owned())
    }

    #[tokio::test]
    async fn the_checkpoint_moves_over_the_acknowledged_prefix_only() {
        let mut pipeline = Pipeline::new(at(0));
        let (first, settle_first) = flight(10);
        let (second, settle_second) = flight(20);
        let (third, _pending) = flight(30);
        pipeline.push(first);
        pipeline.push(second);
        pipeline.push(third);
        assert_eq!(pipeline.sent, at(30));

        // The second batch is acknowledged before the first: nothing moves.
        settle_second.send(Ok(())).expect("open");
        assert!(
            pipeline
                .retire_acknowledged()
                .expect("no refusal")
                .is_none()
        );
        assert_eq!(pipeline.len(), 3);

        // The first one too: both are retired, the third stays in flight.
        settle_first.send(Ok(())).expect("open");
        let acknowledged = pipeline
            .wait(Duration::from_secs(5))
            .await
            .expect("no refusal")
            .expect("acknowledged");
        assert_eq!((acknowledged.last, acknowledged.batches), (at(20), 2));
        assert_eq!(acknowledged.events, 20);
        assert_eq!(pipeline.acknowledged, at(20));
        assert_eq!(pipeline.len(), 1);
    }

    #[tokio::test]
    async fn a_refusal_resends_everything_after_the_acknowledged_prefix() {
        let mut pipeline = Pipeline::new(at(0));
        let (first, settle_first) = flight(10);
        let (second, settle_second) = flight(20);
        let (third, settle_third) = flight(30);
        pipeline.push(first);
        pipeline.push(second);
        pipeline.push(third);
        settle_first.send(Ok(())).expect("open");
        settle_second.send(Err(refused())).expect("open");
        settle_third.send(Ok(())).expect("open");

        // The prefix before the refusal counts, then the refusal.
        let acknowledged = pipeline
            .retire_acknowledged()
            .expect("the prefix first")
            .expect("acknowledged");
        assert_eq!(acknowledged.last, at(10));
        assert!(pipeline.retire_acknowledged().is_err());

        // The third batch was acknowledged, but after a refused one: it is
        // sent again, from the checkpoint.
        pipeline.restart();
        assert_eq!((pipeline.sent, pipeline.acknowledged), (at(10), at(10)));
        assert_eq!(pipeline.len(), 0);
    }

    #[tokio::test]
    async fn waiting_with_nothing_in_flight_only_pauses() {
        let mut pipeline = Pipeline::new(at(5));
        let acknowledged = pipeline
            .wait(Duration::from_millis(1))
            .await
            .expect("no refusal");
        assert!(acknowledged.is_none());
        assert_eq!(pipeline.sent, at(5));
    }
}
