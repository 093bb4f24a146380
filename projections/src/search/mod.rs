//! The search projection: products and orders in an Elasticsearch or
//! OpenSearch index, fed by the same topics as the PostgreSQL views.
//!
//! It consumes in batches: for each batch it fetches the current documents
//! (`_mget`), folds the batch's events into them in memory, and writes them
//! back with one `_bulk` request, each document at the aggregate sequence
//! of the last event folded into it, with external versioning. A duplicate
//! or late event (sequence not newer than the document's version) changes
//! nothing, and a write racing a newer one loses with a 409 that is taken
//! as done. Offsets are committed after the bulk request is acknowledged,
//! so a crash replays the batch, which the versions make harmless.
//!
//! Each index is written through an alias (`{prefix}-products` pointing at
//! `{prefix}-products-v1`), so a rebuild can fill a new index and swap the
//! alias.

mod client;
pub mod document;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use reqwest::Url;
use sqlx::PgPool;

pub use client::{BulkOutcome, IndexOp, SearchClient, SearchError};
use document::Document;
pub use document::IndexKind;

use crate::event::Event;
use crate::position::{Admission, Positions};
use crate::projector::{self, Failure, ProjectorConfig, Source};

/// The projection's name: its consumer group is `{prefix}.search`.
pub const NAME: &str = read_models::SEARCH;

/// The aggregate types whose events reach the index.
pub const AGGREGATE_TYPES: &[&str] = &["Product", "Order"];

/// The version of the index mappings, part of each index's name.
const MAPPING_VERSION: &str = "v1";

/// The most messages folded into one bulk request.
const MAX_BATCH: usize = 500;

/// Where the search index lives.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchConfig {
    /// Elasticsearch 8/9 or OpenSearch 2/3 base URL; credentials in the URL
    /// are sent as basic auth.
    #[arg(
        id = "search_url",
        long = "search-url",
        env = "SEARCH_URL",
        default_value = "http://127.0.0.1:9200"
    )]
    pub url: Url,

    /// Index aliases are `{prefix}-products` and `{prefix}-orders`.
    #[arg(
        long = "search-index-prefix",
        env = "SEARCH_INDEX_PREFIX",
        default_value = "eshop"
    )]
    pub index_prefix: String,
}

impl SearchConfig {
    /// The alias that queries read and the projection writes.
    #[must_use]
    pub fn alias(&self, kind: IndexKind) -> String {
        format!("{}-{}", self.index_prefix, kind.suffix())
    }

    /// The concrete index the alias points at when eshop creates it.
    #[must_use]
    pub fn index(&self, kind: IndexKind) -> String {
        format!("{}-{MAPPING_VERSION}", self.alias(kind))
    }
}

/// Creates the indices with their mappings and aliases, or adds new fields
/// to existing ones.
pub async fn ensure_indices(client: &SearchClient, config: &SearchConfig) -> anyhow::Result<()> {
    for kind in IndexKind::ALL {
        client
            .ensure_index(&config.alias(kind), &config.index(kind), &kind.mappings())
            .await
            .with_context(|| format!("failed to prepare the index {}", config.alias(kind)))?;
    }
    Ok(())
}

impl From<SearchError> for Failure {
    fn from(error: SearchError) -> Self {
        match error {
            SearchError::Unavailable(reason) => Self::Transient(sqlx::Error::Protocol(reason)),
            SearchError::Refused(reason) => Self::Poison(reason),
        }
    }
}

/// The events of one document in a batch, in offset order.
struct DocumentEvents {
    kind: IndexKind,
    id: String,
    events: Vec<(usize, Event)>,
}

/// Folds a batch into the index. Returns the messages to dead-letter, with
/// their errors; a transient failure leaves the batch to be retried whole.
async fn index_batch(
    pool: &PgPool,
    client: &SearchClient,
    config: &SearchConfig,
    batch: &[OwnedMessage],
    upcasters: &[Box<dyn cqrs_es::persist::EventUpcaster>],
) -> Result<Vec<(usize, String)>, Failure> {
    let mut poison = Vec::new();
    let mut documents: Vec<DocumentEvents> = Vec::new();
    let mut slot: HashMap<(IndexKind, String), usize> = HashMap::new();
    for (position, message) in batch.iter().enumerate() {
        let Some(value) = message.payload() else {
            continue;
        };
        let event = match Event::decode(value) {
            Ok(event) => event,
            Err(error) => {
                poison.push((position, error.to_string()));
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
                return Err(Failure::Transient(sqlx::Error::Protocol(reason)));
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
async fn record_batch(pool: &PgPool, batch: &[OwnedMessage]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut last: HashMap<(&str, i32), &OwnedMessage> = HashMap::new();
    for message in batch {
        last.insert((message.topic(), message.partition()), message);
    }
    for message in last.into_values() {
        let event = message.payload().and_then(|v| Event::decode(v).ok());
        projector::record_offset(&mut tx, NAME, Source::of(message), event.as_ref()).await?;
    }
    tx.commit().await
}

/// Adds `message` to the batch when it is the next of its partition (see
/// [`crate::position`]); passes over redeliveries, and leaves a message
/// the consumer reached by skipping others to come again after the seek.
async fn admit(
    pool: &PgPool,
    consumer: &projector::ProjectionConsumer,
    positions: &mut Positions,
    batch: &mut Vec<OwnedMessage>,
    message: OwnedMessage,
) {
    match positions.admit(pool, consumer, &message).await {
        Ok(Admission::Take) => {
            positions.advance(&message);
            batch.push(message);
        }
        Ok(Admission::Taken | Admission::Rewound { .. }) => {}
        Err(error) => {
            tracing::warn!(projection = NAME, %error, "reading the recorded offset failed; reading the message again");
            let _ = consumer.seek(
                message.topic(),
                message.partition(),
                Offset::Offset(message.offset()),
                Duration::from_secs(5),
            );
        }
    }
}

/// Runs the search projection until `shutdown` completes.
pub async fn run(
    pool: PgPool,
    config: &ProjectorConfig,
    search: &SearchConfig,
    renew: std::sync::Arc<tokio::sync::Notify>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let client = SearchClient::new(&search.url)?;
    let upcasters = event_schemas::upcasters();
    // Mappings at start-up; wait for the engine if it is still starting.
    let mut wait = Duration::from_millis(200);
    loop {
        match ensure_indices(&client, search).await {
            Ok(()) => break,
            Err(error) if error.chain().any(|e| e.to_string().contains("unavailable")) => {
                tracing::warn!(%error, "search engine not ready; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error),
        }
    }
    let (producer, mut consumer) = projector::connect(config, NAME, AGGREGATE_TYPES).await?;
    let mut fences = projector::Fences::new();
    tracing::info!(projection = NAME, url = %search.url, "projection started");
    let mut positions = Positions::new(NAME);
    tokio::pin!(shutdown);
    loop {
        let next = tokio::select! {
            () = &mut shutdown => return Ok(()),
            next = projector::receive(&consumer, &renew, &mut fences, config, NAME) => next?,
        };
        let mut batch = Vec::new();
        match next {
            projector::Next::Message(message) => {
                admit(&pool, &consumer, &mut positions, &mut batch, message).await;
            }
            projector::Next::Again => continue,
            projector::Next::Renew => {
                consumer =
                    projector::renew_consumer(consumer, config, NAME, AGGREGATE_TYPES).await?;
                positions = Positions::new(NAME);
                continue;
            }
        }
        // Whatever else has already arrived joins the batch.
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout(Duration::from_millis(2), consumer.recv()).await {
                Ok(Ok(message)) => {
                    admit(
                        &pool,
                        &consumer,
                        &mut positions,
                        &mut batch,
                        message.detach(),
                    )
                    .await;
                }
                _ => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        loop {
            let failure = match index_batch(&pool, &client, search, &batch, &upcasters).await {
                Ok(poison) => {
                    let mut failure = None;
                    for (position, error) in poison {
                        let message = &batch[position];
                        tracing::error!(projection = NAME, topic = message.topic(), offset = message.offset(), %error, "event dead-lettered");
                        if let Err(f) =
                            projector::dead_letter(&pool, &producer, config, NAME, message, &error)
                                .await
                        {
                            failure = Some(f);
                            break;
                        }
                    }
                    match failure {
                        None => match record_batch(&pool, &batch).await {
                            Ok(()) => {
                                metrics::counter!("eshop_projection_events_total", "projection" => NAME, "outcome" => "indexed")
                                    .increment(batch.len() as u64);
                                break;
                            }
                            Err(error) => Failure::Transient(error),
                        },
                        Some(failure) => failure,
                    }
                }
                Err(failure) => failure,
            };
            match failure {
                Failure::Transient(error) => {
                    tracing::warn!(projection = NAME, %error, "indexing failed; retrying");
                }
                Failure::Poison(error) => {
                    tracing::error!(projection = NAME, %error, "the search engine refused the batch; retrying");
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        for message in &batch {
            next.insert((message.topic(), message.partition()), message.offset() + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            let _ = offsets.add_partition_offset(topic, partition, Offset::Offset(offset));
        }
        if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::warn!(projection = NAME, %error, "offset commit failed; the batch may be redelivered");
        }
    }
}
