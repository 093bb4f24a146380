//! The search projection: products and orders in an Elasticsearch or
//! OpenSearch index, fed by the same topics as the PostgreSQL views; a
//! [`Sink`] of the projector like them.
//!
//! It takes batches: for each batch it fetches the current documents
//! (`_mget`), folds the batch's events into them in memory
//! ([`read_models::search_document`]), and writes them back with one
//! `_bulk` request, each document at the aggregate sequence of the last
//! event folded into it, with external versioning. A duplicate or late
//! event (sequence not newer than the document's version) changes nothing,
//! and a write racing a newer one loses with a 409 that is taken as done.
//! Offsets are recorded after the bulk request is acknowledged, so a crash
//! replays the batch, which the versions make harmless.

use std::collections::HashMap;

use async_trait::async_trait;
use read_models::search_document::{self as document, Document};
use sqlx::PgPool;

pub use search_index::{
    BulkOutcome, IndexKind, IndexOp, SearchClient, SearchConfig, SearchError, ensure_indices,
};

use crate::event::Event;
use crate::projector::{self, DeadLetters, Delivered, Failure, Sink, Unavailable};

/// The projection's name: its consumer group is `{prefix}.search`.
pub const NAME: &str = read_models::SEARCH;

/// The aggregate types whose events reach the index.
pub const AGGREGATE_TYPES: &[&str] = read_models::SEARCH_AGGREGATE_TYPES;

/// The most messages folded into one bulk request.
const MAX_BATCH: usize = 500;

/// The search index as a projector's sink.
pub struct IndexSink {
    pool: PgPool,
    client: SearchClient,
    config: SearchConfig,
    upcasters: Vec<Box<dyn cqrs_es::persist::EventUpcaster>>,
}

impl IndexSink {
    /// The sink of the index `config` names.
    pub fn new(pool: PgPool, config: SearchConfig) -> Result<Self, SearchError> {
        Ok(Self {
            pool,
            client: SearchClient::new(&config.url)?,
            config,
            upcasters: event_schemas::upcasters(),
        })
    }
}

#[async_trait]
impl Sink for IndexSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        AGGREGATE_TYPES
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    /// The mappings, at start-up (waiting for an engine still starting).
    async fn prepare(&self) -> Result<(), Failure> {
        ensure_indices(&self.client, &self.config).await?;
        tracing::info!(projection = NAME, url = %self.config.url, "search index ready");
        Ok(())
    }

    async fn take(&self, batch: &[Delivered], dead: &DeadLetters) -> Result<(), Failure> {
        let poison = index_batch(
            &self.pool,
            &self.client,
            &self.config,
            batch,
            &self.upcasters,
        )
        .await?;
        for (position, error) in poison {
            dead.send(NAME, &batch[position], &error).await?;
        }
        record_batch(&self.pool, batch).await?;
        metrics::counter!("eshop_projection_events_total", "projection" => NAME, "outcome" => "indexed")
            .increment(batch.len() as u64);
        Ok(())
    }
}

/// The events of one document in a batch, in offset order.
struct DocumentEvents<'a> {
    kind: IndexKind,
    id: String,
    events: Vec<(usize, &'a Event)>,
}

/// Folds a batch into the index. Returns the messages to dead-letter, with
/// their errors; a transient failure leaves the batch to be retried whole.
async fn index_batch(
    pool: &PgPool,
    client: &SearchClient,
    config: &SearchConfig,
    batch: &[Delivered],
    upcasters: &[Box<dyn cqrs_es::persist::EventUpcaster>],
) -> Result<Vec<(usize, String)>, Failure> {
    let mut poison = Vec::new();
    let mut documents: Vec<DocumentEvents> = Vec::new();
    let mut slot: HashMap<(IndexKind, String), usize> = HashMap::new();
    for (position, message) in batch.iter().enumerate() {
        let event = match &message.event {
            Ok(event) => event,
            Err(error) => {
                poison.push((position, error.clone()));
                continue;
            }
        };
        let Some(kind) = IndexKind::of(&event.envelope.aggregatetype) else {
            continue;
        };
        let key = (kind, event.envelope.aggregateid.clone());
        let at = *slot.entry(key).or_insert_with(|| {
            documents.push(DocumentEvents {
                kind,
                id: event.envelope.aggregateid.clone(),
                events: Vec::new(),
            });
            documents.len() - 1
        });
        documents[at].events.push((position, event));
    }

    let mut current = HashMap::new();
    for kind in IndexKind::ALL {
        let ids: Vec<&str> = documents
            .iter()
            .filter(|d| d.kind == kind)
            .map(|d| d.id.as_str())
            .collect();
        for (id, found) in client.mget(&config.alias(kind), &ids).await? {
            current.insert((kind, id), found);
        }
    }

    let mut ops = Vec::new();
    let mut folded: Vec<Vec<usize>> = Vec::new();
    for doc in &documents {
        let (mut version, mut state) = match current.remove(&(doc.kind, doc.id.clone())) {
            Some((version, source)) => match Document::decode(doc.kind, source) {
                Ok(document) => (version, Some(document)),
                Err(error) => {
                    poison.extend(doc.events.iter().map(|(p, _)| (*p, error.to_string())));
                    continue;
                }
            },
            None => (0, None),
        };
        let start = version;
        let mut applied = Vec::new();
        for (position, event) in &doc.events {
            if event.envelope.aggregatesequence <= version {
                continue; // already in the index
            }
            if event.envelope.aggregatesequence > version + 1 {
                // Events the stream has not delivered before this one: fold
                // them in from the event store first.
                let mut db = pool.acquire().await?;
                let missing =
                    match projector::missing_events(&mut db, NAME, event, version, upcasters).await
                    {
                        Ok(missing) => missing,
                        Err(Failure::Poison(error)) => {
                            poison.push((*position, error));
                            continue;
                        }
                        Err(failure) => return Err(failure),
                    };
                let filled = missing.iter().try_fold(state.clone(), |state, earlier| {
                    document::apply(state, earlier).map(Some)
                });
                match filled {
                    Ok(filled) => state = filled,
                    Err(error) => {
                        poison.push((*position, error.to_string()));
                        continue;
                    }
                }
            }
            match document::apply(state.clone(), event) {
                Ok(next) => {
                    state = Some(next);
                    version = event.envelope.aggregatesequence;
                    applied.push(*position);
                }
                Err(error) => poison.push((*position, error.to_string())),
            }
        }
        if let (true, Some(state)) = (version > start, state) {
            ops.push(IndexOp {
                index: config.alias(doc.kind),
                id: doc.id.clone(),
                version,
                source: state.source(),
            });
            folded.push(applied);
        }
    }

    for (outcome, positions) in client.bulk(&ops).await?.into_iter().zip(folded) {
        match outcome {
            BulkOutcome::Indexed | BulkOutcome::Stale => {}
            BulkOutcome::Retry(reason) => {
                return Err(Failure::Transient(Unavailable::Search(reason)));
            }
            BulkOutcome::Rejected(reason) => {
                poison.extend(positions.into_iter().map(|p| (p, reason.clone())));
            }
        }
    }
    poison.sort_by_key(|(position, _)| *position);
    Ok(poison)
}

/// Records each partition's progress after the batch is in the index.
async fn record_batch(pool: &PgPool, batch: &[Delivered]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut last: HashMap<(&str, i32), &Delivered> = HashMap::new();
    for message in batch {
        last.insert((&message.topic, message.partition), message);
    }
    for message in last.into_values() {
        projector::record_offset(&mut tx, NAME, message.origin(), message.event.as_ref().ok())
            .await?;
    }
    tx.commit().await
}
