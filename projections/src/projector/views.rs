//! The PostgreSQL sink: a read model's tables, changed in the same
//! transaction that claims the events and records the partitions' offsets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use tracing::Instrument;

use super::claims::event_span;
use super::dead_letters::pass_over;
use super::{
    DeadLetters, Delivered, Failure, Origin, Projection, Sink, apply_batch, apply_message,
};
use crate::event::{Event, Payload};
use read_models::basket_cache::BasketCache;

/// Most messages applied in one transaction.
const MAX_BATCH: usize = 250;

/// A read model's tables as a projector's sink.
///
/// A batch is applied in one transaction ([`apply_batch`]): one commit for
/// a burst instead of one per event. A batch that fails with a poison
/// message is applied again one message at a time, so that only that
/// message goes to the dead-letter topic.
pub struct ViewSink {
    pool: PgPool,
    projection: Arc<dyn Projection>,
    basket_cache: Option<BasketCache>,
}

impl ViewSink {
    #[must_use]
    pub fn new(pool: PgPool, projection: Arc<dyn Projection>) -> Self {
        Self {
            pool,
            projection,
            basket_cache: None,
        }
    }

    /// Marks the cached rows of the baskets a batch changes as gone before
    /// committing the batch (for `basket_view`; see
    /// [`read_models::basket_cache`]).
    #[must_use]
    pub fn invalidating(mut self, cache: BasketCache) -> Self {
        self.basket_cache = Some(cache);
        self
    }

    /// Before a batch is applied: each basket it may change, at the
    /// furthest sequence it holds for it, is marked in the cache.
    async fn invalidate(&self, batch: &[Delivered]) {
        let Some(cache) = &self.basket_cache else {
            return;
        };
        let mut furthest: HashMap<uuid::Uuid, i64> = HashMap::new();
        for event in batch.iter().filter_map(|m| m.event.as_ref().ok()) {
            if matches!(event.payload, Payload::Basket(_)) {
                let seen = furthest.entry(event.aggregate_uuid()).or_insert(0);
                *seen = (*seen).max(event.envelope.aggregatesequence);
            }
        }
        cache.invalidate(furthest).await;
    }

    fn count(&self, outcome: &'static str, events: usize) {
        metrics::counter!("eshop_projection_events_total", "projection" => self.projection.name(), "outcome" => outcome)
            .increment(events as u64);
    }

    /// Applies one message; a poison one goes to the dead-letter topic and
    /// its sequence is passed over.
    async fn take_one(&self, message: &Delivered, dead: &DeadLetters) -> Result<(), Failure> {
        let name = self.projection.name();
        let applied = match &message.event {
            Ok(event) => {
                // The command's W3C trace context travels in the envelope
                // (and the record's `traceparent` header): the
                // projection's work joins its trace.
                apply_message(
                    &self.pool,
                    self.projection.as_ref(),
                    message.origin(),
                    event,
                )
                .instrument(event_span(self.projection.as_ref(), event))
                .await
            }
            Err(error) => Err(Failure::Poison(error.clone())),
        };
        match applied {
            Ok(applied) => {
                self.count(if applied { "applied" } else { "skipped" }, 1);
                Ok(())
            }
            Err(Failure::Poison(error)) => {
                dead.send(name, message, &error).await?;
                pass_over(&self.pool, name, message).await?;
                Ok(())
            }
            Err(failure) => Err(failure),
        }
    }
}

#[async_trait]
impl Sink for ViewSink {
    fn name(&self) -> &'static str {
        self.projection.name()
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        self.projection.aggregate_types()
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn take(&self, batch: &[Delivered], dead: &DeadLetters) -> Result<(), Failure> {
        self.invalidate(batch).await;
        let decoded: Option<Vec<(Origin<'_>, Event)>> = batch
            .iter()
            .map(|m| m.event.as_ref().ok().map(|e| (m.origin(), e.clone())))
            .collect();
        if let Some(events) = decoded {
            match apply_batch(&self.pool, self.projection.as_ref(), &events).await {
                Ok(applied) => {
                    self.count("applied", applied);
                    self.count("skipped", events.len() - applied);
                    return Ok(());
                }
                Err(Failure::Poison(_)) => {}
                Err(failure) => return Err(failure),
            }
        }
        // One at a time, each retried in place while the failure is
        // transient, so that a dead letter is sent once.
        for message in batch {
            while let Err(failure) = self.take_one(message, dead).await {
                tracing::warn!(projection = self.name(), error = %failure, "applying failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Ok(())
    }
}
