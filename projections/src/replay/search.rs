//! The search index rebuilt from the event store without downtime, and
//! audited against it.
//!
//! A rebuild:
//! 1. creates a new concrete index per alias (`{alias}-v1-r{time}`), with
//!    no alias yet;
//! 2. reads the products' and orders' events from one `REPEATABLE READ`
//!    snapshot, grouped by aggregate in sequence order, folds each
//!    aggregate with [`document::apply`] exactly as the live projector
//!    does, and indexes each final document at its aggregate's last
//!    sequence with external versioning, in `_bulk` requests of
//!    [`BULK`] documents (one aggregate in memory at a time);
//! 3. catches up with what was committed since: every aggregate with a
//!    newer event is folded again from its whole history and indexed (a
//!    version conflict means the index holds that version or a newer one);
//! 4. moves both aliases in one `POST /_aliases` request, then catches up
//!    once more from a point before the move: an event that the live
//!    projector wrote to the old index just before the move was committed
//!    before it was published, so this pass brings it into the new index;
//!    an event published after the move the live projector writes through
//!    the alias into the new index itself.
//!
//! Queries and the live projector use the aliases throughout, so they
//! answer from the old index until the move and from the new one after.
//! The live projector never names a concrete index: at start-up it only
//! creates an index when the alias is missing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use event_store::DatabaseConfig;
use event_store::feed::{self, COLUMNS, RecordedEvent};
use futures::TryStreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Difference, Guard, Progress, TableReport, begin_snapshot, commit, current_xmin};
use crate::event::Event;
use crate::search::{
    self, BulkOutcome, IndexOp, SearchClient, SearchConfig, SearchError, ensure_indices,
};
use read_models::search_document::{self as document, Document, IndexKind};

/// Documents per `_bulk` request.
const BULK: usize = 1_000;

/// Documents per page when the live index is read.
const PAGE: usize = 1_000;

/// Catch-up passes before the swap stop once a pass touches fewer
/// aggregates than this.
const FEW: u64 = 100;

/// How often a `_bulk` request the engine could not take is retried.
const RETRIES: u32 = 8;

type Upcasters = [Box<dyn cqrs_es::persist::EventUpcaster>];

/// One aggregate folded as the live projector folds it: event after event,
/// up to the first that does not decode or apply. The live projector
/// dead-letters that event, and every later one of the aggregate too,
/// since it cannot fold them without it (it reads the missing event from
/// the store again and fails again), so the document stays as it was.
#[derive(Debug, Default)]
struct Folding {
    document: Option<Document>,
    /// The sequence of the last event folded in.
    version: i64,
    stuck: bool,
    /// Events left out: the one that failed and every one after it.
    skipped: u64,
}

impl Folding {
    fn take(&mut self, recorded: &RecordedEvent, upcasters: &Upcasters) {
        if self.stuck {
            self.skipped += 1;
            return;
        }
        let folded = Event::from_recorded(recorded, upcasters)
            .map_err(|error| error.to_string())
            .and_then(|event| {
                document::apply(self.document.clone(), &event).map_err(|error| error.to_string())
            });
        match folded {
            Ok(document) => {
                self.document = Some(document);
                self.version = recorded.sequence;
            }
            Err(error) => {
                self.stuck = true;
                self.skipped += 1;
                tracing::warn!(
                    projection = search::NAME,
                    aggregate.id = %recorded.aggregate_id,
                    sequence = recorded.sequence,
                    %error,
                    "event skipped with the rest of its aggregate (the live projector \
                     dead-letters them)"
                );
            }
        }
    }

    /// The document to index into `index`, if the aggregate has one.
    fn op(self, index: &str, id: &str) -> Option<IndexOp> {
        let document = self.document?;
        Some(IndexOp {
            index: index.to_owned(),
            id: id.to_owned(),
            version: self.version,
            source: document.source(),
        })
    }
}

/// What became of the documents sent to the index.
#[derive(Debug, Default, Clone, Copy)]
struct Indexed {
    indexed: u64,
    /// Already there at this version or a newer one.
    stale: u64,
    /// Refused by the engine (the live projector dead-letters their events).
    rejected: u64,
}

impl Indexed {
    fn add(&mut self, other: Self) {
        self.indexed += other.indexed;
        self.stale += other.stale;
        self.rejected += other.rejected;
    }
}

/// Indexes `ops` with external versions, retrying what the engine could
/// not take now (429, 5xx, unreachable).
async fn index_all(client: &SearchClient, mut ops: Vec<IndexOp>) -> anyhow::Result<Indexed> {
    let mut done = Indexed::default();
    let mut wait = Duration::from_millis(200);
    let mut attempt = 0;
    while !ops.is_empty() {
        attempt += 1;
        let outcomes = match client.bulk(&ops).await {
            Ok(outcomes) => outcomes,
            Err(SearchError::Unavailable(reason)) if attempt < RETRIES => {
                tracing::warn!(%reason, "bulk indexing failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
                continue;
            }
            Err(error) => return Err(error).context("bulk indexing failed"),
        };
        let mut again = Vec::new();
        for (op, outcome) in ops.into_iter().zip(outcomes) {
            match outcome {
                BulkOutcome::Indexed => done.indexed += 1,
                BulkOutcome::Stale => done.stale += 1,
                BulkOutcome::Retry(reason) if attempt < RETRIES => {
                    tracing::debug!(id = %op.id, %reason, "document to index again");
                    again.push(op);
                }
                BulkOutcome::Retry(reason) => {
                    bail!(
                        "the search engine did not take {} in {attempt} tries: {reason}",
                        op.id
                    )
                }
                BulkOutcome::Rejected(reason) => {
                    done.rejected += 1;
                    tracing::warn!(index = %op.index, id = %op.id, %reason, "document refused");
                }
            }
        }
        ops = again;
        if !ops.is_empty() {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    Ok(done)
}

/// Indexes batches of documents on a task of its own, so that the next
/// batch is folded while one is being indexed; at most two batches wait,
/// so memory stays flat however long the history.
struct Indexer {
    batches: mpsc::Sender<Vec<IndexOp>>,
    task: JoinHandle<anyhow::Result<Indexed>>,
}

impl Indexer {
    fn start(client: &SearchClient) -> Self {
        let (batches, mut incoming) = mpsc::channel::<Vec<IndexOp>>(2);
        let client = client.clone();
        let task = tokio::spawn(async move {
            let mut done = Indexed::default();
            while let Some(batch) = incoming.recv().await {
                done.add(index_all(&client, batch).await?);
            }
            Ok(done)
        });
        Self { batches, task }
    }

    async fn send(&self, batch: Vec<IndexOp>) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.batches.send(batch).await.is_err() {
            // The task stopped on an error, which `finish` returns.
            bail!("indexing stopped early");
        }
        Ok(())
    }

    async fn finish(self) -> anyhow::Result<Indexed> {
        drop(self.batches);
        self.task.await.context("the indexing task failed")?
    }
}

/// What the load from the snapshot read and wrote.
#[derive(Debug, Default)]
struct Loaded {
    events: u64,
    skipped: u64,
    documents: u64,
    indexed: Indexed,
}

fn aggregate_types() -> Vec<String> {
    search::AGGREGATE_TYPES
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The index name of the aggregate type's documents.
fn index_of<'a>(indices: &'a HashMap<IndexKind, String>, aggregate_type: &str) -> Option<&'a str> {
    IndexKind::of(aggregate_type).and_then(|kind| indices.get(&kind).map(String::as_str))
}

/// Folds every product and order in `reader`'s snapshot and indexes the
/// documents into `indices`.
async fn load(
    client: &SearchClient,
    reader: &mut PgConnection,
    indices: &HashMap<IndexKind, String>,
    progress: &mut Progress,
) -> anyhow::Result<Loaded> {
    let upcasters = event_schemas::upcasters();
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE events.aggregate_type = ANY($1) \
         ORDER BY events.aggregate_type, events.aggregate_id, events.sequence"
    );
    let types = aggregate_types();
    let mut stream = sqlx::query(&sql).bind(&types).fetch(&mut *reader);
    let indexer = Indexer::start(client);
    let mut loaded = Loaded::default();
    let mut batch = Vec::with_capacity(BULK);
    // The aggregate being folded.
    let mut current: Option<(String, String, Folding)> = None;
    let mut unreported = 0;
    while let Some(row) = stream.try_next().await? {
        let recorded = feed::decode(&row)?;
        let same = current.as_ref().is_some_and(|(t, id, _)| {
            *t == recorded.aggregate_type && *id == recorded.aggregate_id
        });
        if !same {
            if let Some((aggregate_type, id, folding)) = current.take() {
                loaded.skipped += folding.skipped;
                if let Some(op) =
                    index_of(indices, &aggregate_type).and_then(|index| folding.op(index, &id))
                {
                    batch.push(op);
                }
            }
            current = Some((
                recorded.aggregate_type.clone(),
                recorded.aggregate_id.clone(),
                Folding::default(),
            ));
        }
        if let Some((_, _, folding)) = current.as_mut() {
            folding.take(&recorded, &upcasters);
        }
        loaded.events += 1;
        unreported += 1;
        if unreported == 1024 {
            progress.advance(unreported);
            unreported = 0;
        }
        if batch.len() >= BULK {
            loaded.documents += batch.len() as u64;
            indexer
                .send(std::mem::replace(&mut batch, Vec::with_capacity(BULK)))
                .await?;
        }
    }
    drop(stream);
    progress.advance(unreported);
    if let Some((aggregate_type, id, folding)) = current {
        loaded.skipped += folding.skipped;
        if let Some(op) =
            index_of(indices, &aggregate_type).and_then(|index| folding.op(index, &id))
        {
            batch.push(op);
        }
    }
    loaded.documents += batch.len() as u64;
    let sent = indexer.send(batch).await;
    loaded.indexed = indexer.finish().await?;
    sent?;
    Ok(loaded)
}

/// Folds again, from their whole history, the aggregates with an event
/// committed by a transaction at or after `since` (an xmin), and indexes
/// them into `indices`. Returns how many aggregates it touched, and the
/// xmin to catch up from next.
async fn catch_up(
    pool: &PgPool,
    client: &SearchClient,
    indices: &HashMap<IndexKind, String>,
    since: &str,
) -> anyhow::Result<(u64, String)> {
    let mut db = pool.acquire().await?;
    let next = current_xmin(&mut db).await?;
    let types = aggregate_types();
    // `events.transaction_id`, not the text output column of that name.
    let sql = "SELECT events.transaction_id::text AS transaction_id, events.global_position, \
                      events.aggregate_type, events.aggregate_id \
               FROM events \
               WHERE (events.transaction_id, events.global_position) > ($1::text::xid8, $2) \
                 AND events.aggregate_type = ANY($3) \
               ORDER BY events.transaction_id, events.global_position LIMIT 1000";
    let (mut after_xid, mut after_position) = (since.to_owned(), -1_i64);
    let mut touched = BTreeSet::new();
    loop {
        let page: Vec<(String, i64, String, String)> = sqlx::query_as(sql)
            .bind(&after_xid)
            .bind(after_position)
            .bind(&types)
            .fetch_all(&mut *db)
            .await?;
        let Some((xid, position, _, _)) = page.last() else {
            break;
        };
        (after_xid, after_position) = (xid.clone(), *position);
        touched.extend(page.into_iter().map(|(_, _, t, id)| (t, id)));
    }
    let upcasters = event_schemas::upcasters();
    let mut batch = Vec::new();
    for (aggregate_type, id) in &touched {
        let Some(index) = index_of(indices, aggregate_type) else {
            continue;
        };
        let history = feed::read_aggregate(&mut *db, aggregate_type, id, 0, i64::MAX).await?;
        let mut folding = Folding::default();
        for recorded in &history {
            folding.take(recorded, &upcasters);
        }
        batch.extend(folding.op(index, id));
        if batch.len() >= BULK {
            index_all(client, std::mem::take(&mut batch)).await?;
        }
    }
    index_all(client, batch).await?;
    Ok((touched.len() as u64, next))
}

/// How many documents `index` holds (after a refresh).
async fn count_documents(client: &SearchClient, index: &str) -> anyhow::Result<u64> {
    let reply = client
        .search(
            index,
            &json!({ "size": 0, "track_total_hits": true, "query": { "match_all": {} } }),
        )
        .await?;
    Ok(reply.hits.total.value())
}

/// Runs `eshop projections rebuild search`: fills new indices from the
/// event store, catches them up with the live stream, and moves the
/// aliases to them in one atomic request. The old indices are deleted
/// unless `keep` is set. The live search projector goes on throughout.
pub async fn rebuild_search(
    database: &DatabaseConfig,
    config: &SearchConfig,
    keep: bool,
) -> anyhow::Result<()> {
    let pool = super::pool(database).context("invalid DATABASE_URL")?;
    let client = SearchClient::new(&config.url).context("invalid SEARCH_URL")?;
    let _guard = Guard::take(&pool, &format!("eshop.rebuild.{}", search::NAME)).await?;
    // On a fresh system, the aliases and their first indices, as the live
    // projector makes them: the swap below then works the same.
    ensure_indices(&client, config).await?;
    remove_unfinished(&pool, &client).await?;
    let stamp = Utc::now().format("%Y%m%d%H%M%S%3f");
    let mut indices = HashMap::new();
    for kind in IndexKind::ALL {
        let index = format!("{}-r{stamp}", config.index(kind));
        // Listed before it exists: a rebuild killed from here on leaves a
        // row for the next one to clean up.
        sqlx::query("INSERT INTO search_rebuild_indices (index_name, alias) VALUES ($1, $2)")
            .bind(&index)
            .bind(config.alias(kind))
            .execute(&pool)
            .await
            .context("failed to list the new index")?;
        client
            .create_index(&index, &kind.mappings())
            .await
            .with_context(|| format!("failed to create the index {index}"))?;
        indices.insert(kind, index);
    }
    let result = fill_and_swap(&pool, &client, config, &indices, keep).await;
    // Swapped in: forget them. Failed: delete those no alias points at.
    let cleaned = remove_unfinished(&pool, &client).await;
    match (result, cleaned) {
        (Err(error), Err(cleanup)) => {
            tracing::warn!(
                error = format!("{cleanup:#}"),
                "the unfinished indices are left for the next rebuild"
            );
            Err(error)
        }
        (Err(error), Ok(())) | (Ok(()), Err(error)) => Err(error),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// Deletes the indices that rebuilds created and never put behind their
/// alias (a rebuild that failed, or was killed), and forgets every index
/// listed. An index an alias points at is the live one now: it stays.
async fn remove_unfinished(pool: &PgPool, client: &SearchClient) -> anyhow::Result<()> {
    let listed: Vec<(String, String)> =
        sqlx::query_as("SELECT index_name, alias FROM search_rebuild_indices ORDER BY index_name")
            .fetch_all(pool)
            .await
            .context("failed to read search_rebuild_indices")?;
    for (index, alias) in listed {
        if !client.alias_indices(&alias).await?.contains(&index) {
            client
                .delete_index(&index)
                .await
                .with_context(|| format!("failed to delete the unfinished index {index}"))?;
            tracing::info!(projection = search::NAME, index = %index, "deleted an index a rebuild did not finish");
        }
        sqlx::query("DELETE FROM search_rebuild_indices WHERE index_name = $1")
            .bind(&index)
            .execute(pool)
            .await?;
    }
    Ok(())
}

async fn fill_and_swap(
    pool: &PgPool,
    client: &SearchClient,
    config: &SearchConfig,
    indices: &HashMap<IndexKind, String>,
    keep: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut reader = pool.acquire().await?.detach();
    let mut since = begin_snapshot(&mut reader, true).await?;
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = ANY($1)")
            .bind(aggregate_types())
            .fetch_one(&mut reader)
            .await?;
    tracing::info!(projection = search::NAME, events = total, "rebuild started");
    let mut progress = Progress::new(
        format!("rebuilding {}", search::NAME),
        u64::try_from(total).unwrap_or(0),
    );
    let loaded = load(client, &mut reader, indices, &mut progress).await?;
    commit(&mut reader).await?;
    drop(reader);
    progress.finish();
    let load_time = started.elapsed();

    // Catch up while the live projector goes on, until little is left.
    let mut caught_up = 0;
    for _ in 0..10 {
        let (touched, next) = catch_up(pool, client, indices, &since).await?;
        caught_up += touched;
        since = next;
        if touched < FEW {
            break;
        }
    }

    let swap_started = Instant::now();
    let mut actions = Vec::new();
    let mut old = Vec::new();
    for kind in IndexKind::ALL {
        let alias = config.alias(kind);
        for index in client.alias_indices(&alias).await? {
            actions.push(json!({ "remove": { "index": index, "alias": alias } }));
            old.push(index);
        }
        actions.push(json!({ "add": {
            "index": indices[&kind], "alias": alias, "is_write_index": true
        }}));
    }
    client
        .update_aliases(&actions)
        .await
        .context("failed to move the aliases to the new indices")?;
    let swap = swap_started.elapsed();
    // `since` was taken before the move: every event committed before it
    // and not yet read (the live projector may have written it to the old
    // index only) is read now.
    let (touched, _) = catch_up(pool, client, indices, &since).await?;
    caught_up += touched;

    for index in indices.values() {
        client.refresh(index).await?;
    }
    if !keep {
        for index in &old {
            client
                .delete_index(index)
                .await
                .with_context(|| format!("failed to delete the old index {index}"))?;
        }
    }
    let products = count_documents(client, &indices[&IndexKind::Products]).await?;
    let orders = count_documents(client, &indices[&IndexKind::Orders]).await?;
    let seconds = load_time.as_secs_f64();
    let mut notes = String::new();
    if keep && !old.is_empty() {
        notes.push_str(&format!("; the old indices are kept: {}", old.join(", ")));
    }
    if loaded.skipped > 0 {
        notes.push_str(&format!(
            "; {} events did not decode or apply and were skipped (the live projector \
             dead-letters them)",
            loaded.skipped
        ));
    }
    if loaded.indexed.rejected > 0 {
        notes.push_str(&format!(
            "; the search engine refused {} documents",
            loaded.indexed.rejected
        ));
    }
    let new: Vec<&str> = IndexKind::ALL.iter().map(|k| indices[k].as_str()).collect();
    println!(
        "{}: rebuilt {products} products and {orders} orders from {} events in {seconds:.1} s \
         ({:.0} events/s), caught up {caught_up} aggregates, swapped the aliases to {} in {} ms{notes}",
        search::NAME,
        loaded.events,
        loaded.events as f64 / seconds.max(1e-9),
        new.join(", "),
        swap.as_millis(),
    );
    tracing::info!(
        projection = search::NAME,
        events = loaded.events,
        documents = loaded.documents,
        seconds,
        caught_up,
        swap_ms = swap.as_millis() as u64,
        "rebuild finished"
    );
    Ok(())
}

/// The field of a document that holds its id (a keyword in both indices,
/// so pages can be sorted and continued on it).
const fn id_field(kind: IndexKind) -> &'static str {
    match kind {
        IndexKind::Products => "product_id",
        IndexKind::Orders => "order_id",
    }
}

/// Every document behind `alias`, by id: `(version, source)`. Reads pages
/// sorted on the id field with `search_after`, which Elasticsearch and
/// OpenSearch both offer beyond 10,000 hits.
async fn live_documents(
    client: &SearchClient,
    alias: &str,
    kind: IndexKind,
) -> anyhow::Result<BTreeMap<String, (i64, Value)>> {
    let mut documents = BTreeMap::new();
    let mut after: Option<Value> = None;
    loop {
        let mut body = json!({
            "size": PAGE,
            "version": true,
            "sort": [{ id_field(kind): "asc" }],
            "query": { "match_all": {} },
        });
        if let Some(after) = &after {
            body["search_after"] = after.clone();
        }
        let reply = client.search(alias, &body).await?;
        let hits = reply.hits.hits;
        let full = hits.len() == PAGE;
        after = hits.last().map(|last| last.sort.clone());
        for hit in hits {
            let version = hit.version()?;
            documents.insert(hit.id, (version, hit.source));
        }
        if !full {
            break;
        }
    }
    Ok(documents)
}

/// JSON with every object's keys sorted, so equal documents hash the same
/// whatever order the engine gave their fields in.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The digest of one document: its id, version and source.
fn digest(id: &str, version: i64, source: &Value) -> [u8; 32] {
    let mut line = String::new();
    canonical(
        &json!({ "id": id, "version": version, "source": source }),
        &mut line,
    );
    Sha256::digest(line.as_bytes()).into()
}

/// An index's hash: SHA-256 over its documents' digests in id order.
fn table_hash<'a>(digests: impl Iterator<Item = &'a [u8; 32]>) -> String {
    let mut hasher = Sha256::new();
    for digest in digests {
        hasher.update(digest);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The top-level fields whose values differ (and `_version` when the
/// versions do).
fn differing_fields(live: &(i64, Value), history: &(i64, Value)) -> Vec<String> {
    let mut fields = BTreeSet::new();
    if live.0 != history.0 {
        fields.insert("_version".to_owned());
    }
    let empty = serde_json::Map::new();
    let left = live.1.as_object().unwrap_or(&empty);
    let right = history.1.as_object().unwrap_or(&empty);
    for key in left.keys().chain(right.keys()) {
        if left.get(key) != right.get(key) {
            fields.insert(key.clone());
        }
    }
    if fields.is_empty() && live.1 != history.1 {
        fields.insert("_source".to_owned());
    }
    fields.into_iter().collect()
}

/// One index's side of the audit while the events are read.
struct Audit {
    kind: IndexKind,
    live: BTreeMap<String, (i64, Value)>,
    history: BTreeMap<String, [u8; 32]>,
    differences: Vec<Difference>,
}

impl Audit {
    fn key(&self, id: &str) -> String {
        format!("{}={id}", id_field(self.kind))
    }

    /// Compares the aggregate's folded document with the live one.
    fn aggregate(&mut self, id: &str, folding: Folding) {
        let version = folding.version;
        let folded = folding.document.map(|d| (version, d.source()));
        match (self.live.get(id), folded) {
            (Some(live), Some(folded)) => {
                if *live != folded {
                    self.differences.push(Difference {
                        key: self.key(id),
                        kind: "differs".to_owned(),
                        columns: differing_fields(live, &folded),
                    });
                }
                self.history
                    .insert(id.to_owned(), digest(id, folded.0, &folded.1));
            }
            (None, Some(folded)) => {
                self.differences.push(Difference {
                    key: self.key(id),
                    kind: "missing from the view".to_owned(),
                    columns: Vec::new(),
                });
                self.history
                    .insert(id.to_owned(), digest(id, folded.0, &folded.1));
            }
            (_, None) => {}
        }
    }

    fn report(mut self, alias: String) -> TableReport {
        for id in self.live.keys() {
            if !self.history.contains_key(id) {
                self.differences.push(Difference {
                    key: self.key(id),
                    kind: "not in the history".to_owned(),
                    columns: Vec::new(),
                });
            }
        }
        self.differences.sort_by(|a, b| a.key.cmp(&b.key));
        let live_digests: Vec<[u8; 32]> = self
            .live
            .iter()
            .map(|(id, (version, source))| digest(id, *version, source))
            .collect();
        TableReport {
            projection: search::NAME.to_owned(),
            table: alias,
            view_rows: self.live.len() as i64,
            history_rows: self.history.len() as i64,
            view_hash: table_hash(live_digests.iter()),
            history_hash: table_hash(self.history.values()),
            differences: self.differences,
        }
    }
}

/// Audits the search index: reads every live document, folds each
/// aggregate's events from the store up to the document's own version
/// (its aggregate sequence), and compares them, one [`TableReport`] per
/// index (its table is the alias): document counts, a content hash, and
/// every document that differs, is missing from the index, or has no
/// history. Aggregates with no document are compared on the events
/// committed before the index was read, so that commands going on do not
/// show up as differences.
pub async fn verify_search(
    database: &DatabaseConfig,
    config: &SearchConfig,
) -> anyhow::Result<Vec<TableReport>> {
    let pool = super::pool(database).context("invalid DATABASE_URL")?;
    let client = SearchClient::new(&config.url).context("invalid SEARCH_URL")?;
    let _guard = Guard::take(&pool, &format!("eshop.verify.{}", search::NAME)).await?;
    let mut reader = pool.acquire().await?.detach();
    let horizon: u64 = current_xmin(&mut reader).await?.parse().unwrap_or(0);
    let mut audits = HashMap::new();
    for kind in IndexKind::ALL {
        let alias = config.alias(kind);
        client.refresh(&alias).await?;
        let live = live_documents(&client, &alias, kind)
            .await
            .with_context(|| format!("failed to read the index {alias}"))?;
        audits.insert(
            kind,
            Audit {
                kind,
                live,
                history: BTreeMap::new(),
                differences: Vec::new(),
            },
        );
    }

    begin_snapshot(&mut reader, true).await?;
    let types = aggregate_types();
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = ANY($1)")
            .bind(&types)
            .fetch_one(&mut reader)
            .await?;
    let mut progress = Progress::new(
        format!("verifying {}", search::NAME),
        u64::try_from(total).unwrap_or(0),
    );
    let upcasters = event_schemas::upcasters();
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE events.aggregate_type = ANY($1) \
         ORDER BY events.aggregate_type, events.aggregate_id, events.sequence"
    );
    let mut stream = sqlx::query(&sql).bind(&types).fetch(&mut reader);
    // The aggregate being folded, and the last sequence to fold: the live
    // document's version, or none for an aggregate with no document.
    let mut current: Option<(IndexKind, String, Option<i64>, Folding)> = None;
    let mut unreported = 0;
    while let Some(row) = stream.try_next().await? {
        let recorded = feed::decode(&row)?;
        unreported += 1;
        if unreported == 1024 {
            progress.advance(unreported);
            unreported = 0;
        }
        let Some(kind) = IndexKind::of(&recorded.aggregate_type) else {
            continue;
        };
        let same = current
            .as_ref()
            .is_some_and(|(k, id, _, _)| *k == kind && *id == recorded.aggregate_id);
        if !same {
            if let Some((kind, id, _, folding)) = current.take()
                && let Some(audit) = audits.get_mut(&kind)
            {
                audit.aggregate(&id, folding);
            }
            let limit = audits
                .get(&kind)
                .and_then(|audit| audit.live.get(&recorded.aggregate_id))
                .map(|(version, _)| *version);
            current = Some((
                kind,
                recorded.aggregate_id.clone(),
                limit,
                Folding::default(),
            ));
        }
        if let Some((_, _, limit, folding)) = current.as_mut() {
            let taken = match limit {
                Some(version) => recorded.sequence <= *version,
                None => recorded.global.transaction_id < horizon,
            };
            if taken {
                folding.take(&recorded, &upcasters);
            } else if limit.is_none() {
                // Committed after the index was read: this and the rest
                // of the aggregate are not compared.
                *limit = Some(0);
            }
        }
    }
    drop(stream);
    progress.advance(unreported);
    if let Some((kind, id, _, folding)) = current
        && let Some(audit) = audits.get_mut(&kind)
    {
        audit.aggregate(&id, folding);
    }
    commit(&mut reader).await?;
    progress.finish();

    let mut reports = Vec::new();
    for kind in IndexKind::ALL {
        if let Some(audit) = audits.remove(&kind) {
            reports.push(audit.report(config.alias(kind)));
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuild_and_verify_can_run_on_a_spawned_task() {
        fn is_send<T: Send>(_: &T) {}
        let database = DatabaseConfig {
            url: "postgres://127.0.0.1:1/none".to_owned(),
            max_connections: 1,
            acquire_timeout_secs: 1,
        };
        let config = SearchConfig {
            url: "http://127.0.0.1:1".parse().expect("url"),
            index_prefix: "none".to_owned(),
        };
        is_send(&rebuild_search(&database, &config, false));
        is_send(&verify_search(&database, &config));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let mut out = String::new();
        canonical(
            &json!({ "b": [{ "y": 1, "x": "q\"" }], "a": null }),
            &mut out,
        );
        assert_eq!(out, r#"{"a":null,"b":[{"x":"q\"","y":1}]}"#);
    }

    #[test]
    fn differing_fields_names_the_changed_fields_and_the_version() {
        let live = (3, json!({ "name": "a", "price_minor": 1, "sku": "s" }));
        let history = (2, json!({ "name": "b", "price_minor": 1, "sku": "s" }));
        assert_eq!(differing_fields(&live, &history), ["_version", "name"]);
        assert!(differing_fields(&live, &live).is_empty());
    }
}
