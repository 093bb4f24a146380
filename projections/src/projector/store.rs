//! The event store itself as a [`Source`], for a deployment without a
//! broker: a projection reads the store's global feed up to the end one
//! watch per process found readable ([`event_store::feed::readable_end`],
//! [`event_store::feed::read_until`]).
//!
//! - **Below the horizon.** The feed never passes an event whose
//!   transaction could still commit below it, so an event that commits
//!   late, below events already taken, is still read.
//! - **A checkpoint per projection**, in `relay_checkpoints` under the name
//!   `projection.<name>` (a reader of the feed keeps its place there,
//!   whatever it does with the events). It moves only over batches the
//!   sink has taken, and never backwards. A crash re-reads from it; the
//!   sink's claims by aggregate sequence skip what was taken already.
//!   Both the views and the checkpoint commit with `synchronous_commit =
//!   off` on one server: a crash loses a suffix of the write-ahead log, so
//!   a checkpoint that survived never stands ahead of a view change lost.
//! - **One active reader per projection**: a PostgreSQL advisory lock, held
//!   on a connection of its own. Another process running the projection
//!   waits on the lock and takes over when the holder's connection goes.
//! - **One watch of the feed's end per process** ([`StoreTail`]): a
//!   projection that has read everything waits until the end moves, instead
//!   of each projection polling the store. Idle, a process costs one short
//!   query per poll, however many projections it runs.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use cqrs_es::persist::EventUpcaster;
use event_store::DatabaseConfig;
use event_store::feed::{FeedFilter, GlobalPosition, RecordedEvent, read_until, readable_end};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;

use super::{Delivered, Source};
use crate::relay::checkpoint;

/// The topic name a message read from the store carries, in dead letters
/// and in `projection_offsets`.
pub const STORE_TOPIC: &str = "eshop.store";

/// How often the holder of the lock checks it still has its connection.
const LOCK_CHECK: Duration = crate::leader::RETRY;

/// The end of the event store's feed ([`readable_end`]), looked up every
/// `poll` by one task for all the projections of a process. Cloned into
/// each [`StoreSource`]; the task stops when the last clone is dropped.
#[derive(Clone)]
pub struct StoreTail {
    end: watch::Receiver<GlobalPosition>,
    poll: Duration,
}

impl StoreTail {
    /// Starts looking up the end of the feed every `poll`.
    #[must_use]
    pub fn watch(pool: PgPool, poll: Duration) -> Self {
        let (sender, end) = watch::channel(GlobalPosition::default());
        tokio::spawn(async move {
            while !sender.is_closed() {
                match readable_end(&pool).await {
                    Ok(now) => {
                        // Sources wake only when the end moved forward.
                        sender.send_if_modified(|end| {
                            let moved = now > *end;
                            if moved {
                                *end = now;
                            }
                            moved
                        });
                        tokio::time::sleep(poll).await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "reading the end of the event store's feed failed; retrying");
                        tokio::time::sleep(poll.max(Duration::from_millis(500))).await;
                    }
                }
            }
        });
        Self { end, poll }
    }
}

/// A projection's feed of the event store.
pub struct StoreSource {
    pool: PgPool,
    database: DatabaseConfig,
    name: &'static str,
    filter: FeedFilter,
    upcasters: Vec<Box<dyn EventUpcaster>>,
    tail: StoreTail,
    /// The end of the feed as the tail saw it just before the last read.
    seen: GlobalPosition,
    /// The connection holding the projection's lock, once it is held.
    lock: Option<(PgConnection, tokio::time::Instant)>,
    /// Where reading goes on from: the end of the last batch handed out.
    read: GlobalPosition,
    /// The end of the last batch the sink took, not yet written down.
    taken: Option<GlobalPosition>,
}

impl StoreSource {
    /// The feed of the events of `aggregate_types`, for the projection
    /// `name`, read again when `tail` has moved while there was nothing new.
    #[must_use]
    pub fn new(
        pool: PgPool,
        database: DatabaseConfig,
        name: &'static str,
        aggregate_types: &[&str],
        tail: StoreTail,
    ) -> Self {
        Self {
            pool,
            database,
            name,
            filter: FeedFilter {
                aggregate_types: Some(aggregate_types.iter().map(|t| (*t).to_owned()).collect()),
                beyond_horizon: false,
            },
            upcasters: event_schemas::upcasters(),
            tail,
            seen: GlobalPosition::default(),
            lock: None,
            read: GlobalPosition::default(),
            taken: None,
        }
    }

    /// The name of the projection's checkpoint in `relay_checkpoints`.
    #[must_use]
    pub fn checkpoint_name(projection: &str) -> String {
        format!("projection.{projection}")
    }

    /// The advisory lock of the one active reader of `projection`. Not the
    /// rebuild's swap lock ([`super::swap_lock`]): the sink takes that one,
    /// shared, for every batch, and a rebuild takes it exclusively.
    #[must_use]
    pub fn reader_lock(projection: &str) -> String {
        format!("eshop.store-reader.{projection}")
    }

    /// Holds the projection's lock (waiting for it), and knows where to
    /// read from; checks now and then that the lock is still held.
    async fn hold_lock(&mut self) -> anyhow::Result<()> {
        if let Some((connection, checked)) = &mut self.lock {
            if checked.elapsed() >= LOCK_CHECK {
                // The lock lives as long as this connection does.
                if let Err(error) = connection.ping().await {
                    self.lock = None;
                    return Err(error).context("lost the projection lock's connection");
                }
                *checked = tokio::time::Instant::now();
            }
            return Ok(());
        }
        let connection = crate::leader::hold(&self.database.url, &Self::reader_lock(self.name))
            .await
            .context("the projection's reader lock")?;
        self.read = checkpoint::load(&self.pool, &Self::checkpoint_name(self.name)).await?;
        self.taken = None;
        tracing::info!(projection = self.name, after = ?self.read, "reading the event store");
        self.lock = Some((connection, tokio::time::Instant::now()));
        Ok(())
    }

    /// Writes down the end of what the sink took.
    async fn write_checkpoint(&mut self) -> anyhow::Result<()> {
        if let Some(taken) = self.taken {
            checkpoint::advance(&self.pool, &Self::checkpoint_name(self.name), taken).await?;
            self.taken = None;
        }
        Ok(())
    }

    async fn read_next(&mut self, max: usize) -> anyhow::Result<Vec<Delivered>> {
        self.hold_lock().await?;
        self.write_checkpoint().await?;
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        // Everything up to the end the tail last saw is final: read up to
        // it, with no horizon of our own; a move of the end is the signal
        // to read again.
        self.seen = *self.tail.end.borrow_and_update();
        let events = read_until(&self.pool, self.read, self.seen, &self.filter, limit).await?;
        match events.last() {
            // A full batch: more may follow before the end.
            Some(last) if events.len() >= max => self.read = last.global,
            // Every event of the projection's types up to the end was read.
            _ => self.read = self.read.max(self.seen),
        }
        Ok(events
            .into_iter()
            .map(|event| delivered(event, &self.upcasters))
            .collect())
    }
}

/// A stored event as a message: the envelope the relay would publish.
fn delivered(event: RecordedEvent, upcasters: &[Box<dyn EventUpcaster>]) -> Delivered {
    let (position, key) = (event.global.position, event.aggregate_id.clone());
    let envelope = read_models::event::envelope_from(event, upcasters);
    let headers = read_models::event::message_headers(&envelope)
        .into_iter()
        .map(|(key, value)| (key.to_owned(), Some(value.into_bytes())))
        .collect();
    let payload =
        Some(serde_json::to_vec(&envelope).expect("an envelope is plain data: it serialises"));
    let event = read_models::event::Event::from_envelope(envelope).map_err(|e| e.to_string());
    Delivered {
        topic: STORE_TOPIC.to_owned(),
        partition: 0,
        offset: position,
        key: Some(key.into_bytes()),
        payload,
        headers,
        event,
    }
}

#[async_trait]
impl Source for StoreSource {
    async fn next(&mut self, max: usize) -> anyhow::Result<Vec<Delivered>> {
        match self.read_next(max).await {
            Ok(batch) if !batch.is_empty() => Ok(batch),
            Ok(_) => {
                // Nothing new: wait for the end of the feed to move (at
                // most a lock check's time, to check the lock's connection).
                let seen = self.seen;
                let moved = self.tail.end.wait_for(|end| *end > seen);
                let gone = matches!(tokio::time::timeout(LOCK_CHECK, moved).await, Ok(Err(_)));
                if gone {
                    // The tail's task is gone (it cannot end while a
                    // source holds it, but a panic would end it): poll.
                    tokio::time::sleep(self.tail.poll).await;
                }
                Ok(Vec::new())
            }
            Err(error) => {
                // The store or the lock's connection is away: try again,
                // from the checkpoint when the lock went with it.
                tracing::warn!(
                    projection = self.name,
                    error = format!("{error:#}"),
                    "reading the event store failed; retrying"
                );
                tokio::time::sleep(self.tail.poll.max(Duration::from_millis(500))).await;
                Ok(Vec::new())
            }
        }
    }

    fn acknowledge(&mut self, _batch: &[Delivered]) {
        // Batches are taken one at a time, in the order they were read:
        // the sink has taken everything read so far.
        self.taken = Some(self.read);
    }

    /// Writes down the last batch taken, which the next read would have
    /// done: a restart then reads on from there instead of taking that
    /// batch again (harmless, but wasted). Only while the lock is held:
    /// without it another reader may have moved on.
    async fn close(&mut self) {
        if self.lock.is_none() {
            return;
        }
        if let Err(error) = self.write_checkpoint().await {
            tracing::warn!(
                projection = self.name,
                error = format!("{error:#}"),
                "writing down the checkpoint at shutdown failed; the last batch will be read again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readers_lock_is_not_the_rebuilds_swap_lock() {
        for projection in read_models::names() {
            assert_ne!(
                StoreSource::reader_lock(projection),
                super::super::swap_lock(projection)
            );
        }
    }
}
