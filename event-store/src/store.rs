use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::Aggregate;
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::{Json, Uuid};
use sqlx::{PgPool, Row};
use tracing::Instrument;

use crate::error::{CommitError, StoreError, violated_constraint};
use crate::snapshot::SnapshotPolicy;
use crate::state_cache::StateCache;
use crate::unit_of_work::{
    AppendResult, Commit, PendingAppend, PendingState, StoredOutcome, UnitOfWork,
};

/// An aggregate as loaded from the store, with the version (sequence of its
/// last event) it was loaded at. Version 0 means no event exists.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    pub aggregate: A,
    pub version: usize,
    snapshot_every: usize,
    /// Whether its type's states are kept in the cache.
    pub(crate) cached: bool,
}

impl<A> Loaded<A> {
    pub(crate) fn snapshot_due(&self, new_version: usize) -> bool {
        self.snapshot_every > 0
            && new_version / self.snapshot_every > self.version / self.snapshot_every
    }

    #[must_use]
    pub const fn exists(&self) -> bool {
        self.version > 0
    }
}

/// The PostgreSQL event store. Cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    upcasters: Arc<Vec<Box<dyn EventUpcaster>>>,
    snapshots: SnapshotPolicy,
    idempotency_ttl: Duration,
    state_cache: Option<StateCache>,
}

/// Applies every upcaster that accepts the event, in order.
pub fn upcast(event: SerializedEvent, upcasters: &[Box<dyn EventUpcaster>]) -> SerializedEvent {
    upcasters.iter().fold(event, |event, upcaster| {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            upcaster.upcast(event)
        } else {
            event
        }
    })
}

impl EventStore {
    #[must_use]
    pub fn new(
        pool: PgPool,
        upcasters: Vec<Box<dyn EventUpcaster>>,
        snapshots: SnapshotPolicy,
    ) -> Self {
        Self {
            pool,
            upcasters: Arc::new(upcasters),
            snapshots,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            state_cache: None,
        }
    }

    /// Keeps the states of the aggregate types `cache` names in it (see
    /// [`crate::state_cache`]).
    #[must_use]
    pub fn with_state_cache(mut self, cache: StateCache) -> Self {
        self.state_cache = Some(cache);
        self
    }

    /// The state cache, if one is attached.
    #[must_use]
    pub const fn state_cache(&self) -> Option<&StateCache> {
        self.state_cache.as_ref()
    }

    fn caches(&self, aggregate_type: &str) -> bool {
        self.state_cache
            .as_ref()
            .is_some_and(|cache| cache.caches(aggregate_type))
    }

    /// The aggregate from the cache, if its type is cached and the cache
    /// holds it.
    async fn cached<A: Aggregate>(&self, aggregate_id: &str) -> Option<Loaded<A>> {
        let cache = self.state_cache.as_ref().filter(|c| c.caches(A::TYPE))?;
        let (aggregate, version) = cache.get::<A>(aggregate_id).await?;
        Some(Loaded {
            aggregate,
            version,
            snapshot_every: self.snapshots.every(A::TYPE),
            cached: true,
        })
    }

    /// Puts an aggregate read from PostgreSQL in the cache, if its type is
    /// cached.
    async fn remember<A: Aggregate>(&self, aggregate_id: &str, loaded: &Loaded<A>) {
        if let Some(cache) = self
            .state_cache
            .as_ref()
            .filter(|_| loaded.cached && loaded.exists())
            && let Ok(bytes) = serde_json::to_vec(&loaded.aggregate)
        {
            cache
                .put(A::TYPE, aggregate_id, loaded.version, bytes)
                .await;
        }
    }

    /// How long an idempotency key is remembered (at least this long).
    #[must_use]
    pub fn with_idempotency_ttl(mut self, ttl: Duration) -> Self {
        self.idempotency_ttl = ttl;
        self
    }

    #[must_use]
    pub const fn pool(&self) -> &PgPool {
        &self.pool
    }

    #[must_use]
    pub fn upcasters(&self) -> &[Box<dyn EventUpcaster>] {
        &self.upcasters
    }

    /// Loads an aggregate: its latest snapshot, if snapshots are on for its
    /// type, then every later event, upcast to the current schema and
    /// applied once each. One query.
    pub async fn load<A: Aggregate>(&self, aggregate_id: &str) -> Result<Loaded<A>, StoreError> {
        let span = telemetry::span!("load", aggregate.type = A::TYPE);
        async {
            if let Some(loaded) = self.cached::<A>(aggregate_id).await {
                return Ok(loaded);
            }
            self.load_from_postgres(aggregate_id).await
        }
        .instrument(span)
        .await
    }

    /// Loads an aggregate from PostgreSQL, and caches it if its type is.
    async fn load_from_postgres<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Loaded<A>, StoreError> {
        let rows = self.fetch(&[(A::TYPE, aggregate_id)]).await?;
        let loaded = self.fold::<A>(aggregate_id, &rows).await?;
        self.remember(aggregate_id, &loaded).await;
        Ok(loaded)
    }

    /// Loads two aggregates with one query (a product and the basket it is
    /// added to, say).
    pub async fn load_both<A: Aggregate, B: Aggregate>(
        &self,
        first_id: &str,
        second_id: &str,
    ) -> Result<(Loaded<A>, Loaded<B>), StoreError> {
        let span = telemetry::span!("load", first.type = A::TYPE, second.type = B::TYPE);
        self.load_both_once(first_id, second_id)
            .instrument(span)
            .await
    }

    async fn load_both_once<A: Aggregate, B: Aggregate>(
        &self,
        first_id: &str,
        second_id: &str,
    ) -> Result<(Loaded<A>, Loaded<B>), StoreError> {
        match (
            self.cached::<A>(first_id).await,
            self.cached::<B>(second_id).await,
        ) {
            (Some(first), Some(second)) => return Ok((first, second)),
            (Some(first), None) => return Ok((first, self.load_from_postgres(second_id).await?)),
            (None, Some(second)) => return Ok((self.load_from_postgres(first_id).await?, second)),
            (None, None) => {}
        }
        let rows = self
            .fetch(&[(A::TYPE, first_id), (B::TYPE, second_id)])
            .await?;
        let (first, second): (Vec<PgRow>, Vec<PgRow>) = rows
            .into_iter()
            .partition(|row| row.try_get::<i64, _>("n").unwrap_or(0) == 1);
        let (first, second) = (
            self.fold::<A>(first_id, &first).await?,
            self.fold::<B>(second_id, &second).await?,
        );
        self.remember(first_id, &first).await;
        self.remember(second_id, &second).await;
        Ok((first, second))
    }

    /// The rows of several aggregates, each its snapshot (kind 0, if
    /// snapshots are on for its type) and the events after it (kind 1),
    /// tagged with the aggregate's 1-based place in `keys`.
    async fn fetch(&self, keys: &[(&str, &str)]) -> Result<Vec<PgRow>, StoreError> {
        let types: Vec<&str> = keys.iter().map(|(t, _)| *t).collect();
        let ids: Vec<&str> = keys.iter().map(|(_, id)| *id).collect();
        let snapshots: Vec<bool> = keys
            .iter()
            .map(|(t, _)| self.snapshots.every(t) > 0)
            .collect();
        // Each aggregate is looked up by its primary key: the OFFSET 0
        // fences keep the planner from flattening the lateral subqueries
        // into joins that scan whole tables.
        let rows = sqlx::query(
            "WITH keys AS ( \
               SELECT * FROM UNNEST($1::text[], $2::text[], $3::bool[]) \
                 WITH ORDINALITY AS k(aggregate_type, aggregate_id, use_snapshot, n)), \
             bounds AS ( \
               SELECT k.n, k.aggregate_type, k.aggregate_id, s.last_sequence, s.payload FROM keys k \
               LEFT JOIN LATERAL ( \
                 SELECT last_sequence, payload FROM snapshots \
                 WHERE k.use_snapshot AND aggregate_type = k.aggregate_type AND aggregate_id = k.aggregate_id \
                 OFFSET 0) s ON true) \
             SELECT n, 0 AS kind, last_sequence AS sequence, '' AS event_type, '' AS event_version, payload \
             FROM bounds WHERE last_sequence IS NOT NULL \
             UNION ALL \
             SELECT b.n, 1, e.sequence, e.event_type, e.event_version, e.payload \
             FROM bounds b CROSS JOIN LATERAL ( \
               SELECT sequence, event_type, event_version, payload FROM events \
               WHERE aggregate_type = b.aggregate_type AND aggregate_id = b.aggregate_id \
                 AND sequence > coalesce(b.last_sequence, 0) \
               OFFSET 0) e \
             ORDER BY n, kind, sequence",
        )
        .bind(types)
        .bind(ids)
        .bind(snapshots)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Folds an aggregate's rows into its state. Payloads are decoded
    /// straight into the event type, unless an upcaster applies to them.
    async fn fold<A: Aggregate>(
        &self,
        aggregate_id: &str,
        rows: &[PgRow],
    ) -> Result<Loaded<A>, StoreError> {
        let snapshot_every = self.snapshots.every(A::TYPE);
        let mut aggregate = A::default();
        let mut version = 0usize;
        for row in rows {
            let sequence = usize::try_from(row.try_get::<i64, _>("sequence")?).unwrap_or(0);
            if row.try_get::<i32, _>("kind")? == 0 {
                match row.try_get::<Json<A>, _>("payload") {
                    Ok(Json(state)) => aggregate = state,
                    Err(error) => {
                        // A snapshot of an older state shape: replay everything.
                        tracing::warn!(%error, aggregate.type = A::TYPE, "ignoring undecodable snapshot");
                        return self.replay::<A>(aggregate_id).await;
                    }
                }
                version = sequence;
                continue;
            }
            let event_type: String = row.try_get("event_type")?;
            let event_version: String = row.try_get("event_version")?;
            let needs_upcast = self
                .upcasters
                .iter()
                .any(|u| u.can_upcast(&event_type, &event_version));
            let decoded = if needs_upcast {
                let event = upcast(
                    SerializedEvent::new(
                        aggregate_id.to_owned(),
                        sequence,
                        A::TYPE.to_owned(),
                        event_type.clone(),
                        event_version,
                        row.try_get("payload")?,
                        Value::Null,
                    ),
                    &self.upcasters,
                );
                serde_json::from_value::<A::Event>(event.payload)
            } else {
                row.try_get::<Json<A::Event>, _>("payload")
                    .map(|Json(event)| event)
                    .map_err(|error| match error {
                        sqlx::Error::ColumnDecode { source, .. } => {
                            match source.downcast::<serde_json::Error>() {
                                Ok(json) => *json,
                                Err(other) => serde::de::Error::custom(other),
                            }
                        }
                        other => serde::de::Error::custom(other),
                    })
            };
            let event = decoded.map_err(|source| StoreError::Decode {
                what: format!("{event_type} #{sequence}"),
                source,
            })?;
            aggregate.apply(event);
            version = sequence;
        }
        Ok(Loaded {
            aggregate,
            version,
            snapshot_every,
            cached: self.caches(A::TYPE),
        })
    }

    /// Loads an aggregate from all of its events, ignoring any snapshot.
    async fn replay<A: Aggregate>(&self, aggregate_id: &str) -> Result<Loaded<A>, StoreError> {
        let unsnapshotted = Self {
            snapshots: SnapshotPolicy::default(),
            ..self.clone()
        };
        let rows = unsnapshotted.fetch(&[(A::TYPE, aggregate_id)]).await?;
        let loaded = Box::pin(unsnapshotted.fold::<A>(aggregate_id, &rows)).await?;
        Ok(Loaded {
            snapshot_every: self.snapshots.every(A::TYPE),
            ..loaded
        })
    }

    /// The global position of an aggregate's last event.
    pub async fn last_global_position(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        let position: Option<i64> = sqlx::query_scalar(
            "SELECT max(global_position) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(position)
    }

    /// Claims an idempotency key for the request `claim` before it runs its
    /// command, for `lease` at most. Returns `None` if the key is now this
    /// request's, otherwise what the request holding it stored: its outcome,
    /// or `None` while that request is still in progress.
    ///
    /// A key is free when it is new, when its outcome is older than the
    /// retention period, or when it is a claim whose lease lapsed (its
    /// request crashed or gave up without releasing it). The claim is its own
    /// statement, committed at once, so a duplicate request sees it and waits
    /// instead of running the command again.
    pub async fn claim_idempotency_key(
        &self,
        key: &str,
        fingerprint: &[u8],
        claim: Uuid,
        lease: Duration,
    ) -> Result<Option<StoredOutcome>, StoreError> {
        // The outer SELECT reads the statement's snapshot, which misses a key
        // that a concurrent request claimed and committed while this INSERT
        // waited for it; then nothing is read and the claim is tried again.
        for _ in 0..3 {
            let row = sqlx::query(
                "WITH claimed AS ( \
                   INSERT INTO idempotency_keys (key, fingerprint, outcome, claim_id, claimed_until) \
                   VALUES ($1, $2, NULL, $3, now() + make_interval(secs => $4)) \
                   ON CONFLICT (key) DO UPDATE \
                     SET fingerprint = EXCLUDED.fingerprint, outcome = NULL, created_at = now(), \
                         claim_id = EXCLUDED.claim_id, claimed_until = EXCLUDED.claimed_until \
                     WHERE idempotency_keys.created_at <= now() - make_interval(secs => $5) \
                        OR (idempotency_keys.outcome IS NULL AND idempotency_keys.claimed_until <= now()) \
                   RETURNING key) \
                 SELECT EXISTS (SELECT 1 FROM claimed) AS claimed, k.fingerprint, k.outcome \
                 FROM (VALUES (1)) AS one LEFT JOIN idempotency_keys k ON k.key = $1",
            )
            .bind(key)
            .bind(fingerprint)
            .bind(claim)
            .bind(lease.as_secs_f64())
            .bind(self.idempotency_ttl.as_secs_f64())
            .fetch_one(&self.pool)
            .await?;
            if row.try_get::<bool, _>("claimed")? {
                return Ok(None);
            }
            if let Some(fingerprint) = row.try_get::<Option<Vec<u8>>, _>("fingerprint")? {
                return Ok(Some(StoredOutcome {
                    fingerprint,
                    outcome: row.try_get("outcome")?,
                }));
            }
        }
        // The key keeps changing hands: report it as in progress.
        Ok(Some(StoredOutcome {
            fingerprint: fingerprint.to_vec(),
            outcome: None,
        }))
    }

    /// Gives up the claim `claim` on an idempotency key whose request failed,
    /// so that a retry runs the command again. Returns `false` if the claim
    /// was no longer held: the request committed after all, or its lease
    /// lapsed and another request took the key.
    pub async fn release_idempotency_key(
        &self,
        key: &str,
        claim: Uuid,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE key = $1 AND claim_id = $2 AND outcome IS NULL",
        )
        .bind(key)
        .bind(claim)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes idempotency keys older than the retention period; returns how
    /// many.
    pub async fn purge_expired_idempotency_keys(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE created_at <= now() - make_interval(secs => $1)",
        )
        .bind(self.idempotency_ttl.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Commits a unit of work in one transaction: all of it or none of it.
    pub async fn commit(&self, uow: UnitOfWork) -> Result<Commit, CommitError> {
        let span = telemetry::span!("commit", events = uow.events.len());
        self.commit_once(uow).instrument(span).await
    }

    async fn commit_once(&self, mut uow: UnitOfWork) -> Result<Commit, CommitError> {
        let states = std::mem::take(&mut uow.states);
        let committed = self.commit_to_postgres(uow).await;
        if let Some(cache) = &self.state_cache {
            match &committed {
                // The new states, over older ones only.
                Ok(_) => {
                    for PendingState {
                        aggregate_type,
                        aggregate_id,
                        version,
                        bytes,
                    } in states
                    {
                        cache
                            .put(aggregate_type, &aggregate_id, version, bytes)
                            .await;
                    }
                }
                // The store holds more than the state decided on, which may
                // have come from the cache: forget it, so that the retry
                // reads PostgreSQL.
                Err(CommitError::Conflict {
                    aggregate_type,
                    aggregate_id,
                }) if cache.caches(aggregate_type) => {
                    cache.forget(aggregate_type, aggregate_id).await
                }
                Err(_) => {}
            }
        }
        committed
    }

    async fn commit_to_postgres(&self, uow: UnitOfWork) -> Result<Commit, CommitError> {
        let UnitOfWork {
            events,
            appends,
            snapshots,
            claims,
            idempotency,
            states: _,
        } = uow;
        // A unit of work that is one INSERT needs no explicit transaction: a
        // single statement is atomic, and this saves two round trips on the
        // most common commands.
        if claims.is_empty() && snapshots.is_empty() && idempotency.is_none() {
            let last_positions = insert_events(&self.pool, events).await?;
            return Ok(commit_of(appends, &last_positions));
        }
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;

        for claim in &claims {
            sqlx::query(
                "INSERT INTO unique_claims (scope, value, aggregate_id) VALUES ($1, $2, $3)",
            )
            .bind(&claim.scope)
            .bind(&claim.value)
            .bind(&claim.aggregate_id)
            .execute(&mut *tx)
            .await
            .map_err(|error| match violated_constraint(&error) {
                Some("unique_claims_pkey") => CommitError::Duplicate {
                    scope: claim.scope.clone(),
                    value: claim.value.clone(),
                },
                _ => StoreError::from(error).into(),
            })?;
        }

        let last_positions = insert_events(&mut *tx, events).await?;

        for snapshot in &snapshots {
            sqlx::query(
                "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
                 VALUES ($1, $2, $3, 1, $4) \
                 ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
                   SET last_sequence = EXCLUDED.last_sequence, \
                       current_snapshot = snapshots.current_snapshot + 1, \
                       payload = EXCLUDED.payload, timestamp = now() \
                   WHERE snapshots.last_sequence < EXCLUDED.last_sequence",
            )
            .bind(snapshot.aggregate_type)
            .bind(&snapshot.aggregate_id)
            .bind(i64::try_from(snapshot.last_sequence).unwrap_or(i64::MAX))
            .bind(&snapshot.payload)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        }

        let commit = commit_of(appends, &last_positions);

        // The outcome is stored only while the request still holds its claim
        // on the key. If the claim lapsed and another request took the key,
        // this rolls back: the two can never both append. The row lock makes
        // a concurrent take-over wait for this transaction and then find the
        // outcome.
        if let Some(record) = idempotency {
            let outcome = (record.outcome)(&commit);
            let stored = sqlx::query(
                "UPDATE idempotency_keys SET outcome = $3, claim_id = NULL, claimed_until = NULL \
                 WHERE key = $1 AND claim_id = $2 AND outcome IS NULL",
            )
            .bind(&record.key)
            .bind(record.claim)
            .bind(&outcome)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
            if stored.rows_affected() == 0 {
                return Err(CommitError::IdempotencyKeyTaken);
            }
        }

        tx.commit().await.map_err(StoreError::from)?;
        Ok(commit)
    }
}

type Positions = HashMap<(String, String), i64>;

/// Inserts the events of a unit of work in one statement and returns the
/// last global position written per aggregate.
async fn insert_events<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    events: Vec<SerializedEvent>,
) -> Result<Positions, CommitError> {
    let mut last_positions = Positions::new();
    if events.is_empty() {
        return Ok(last_positions);
    }
    // Which aggregates the events append to, to name the one a conflict is
    // about.
    let mut appended: Vec<(String, String)> = events
        .iter()
        .map(|event| (event.aggregate_type.clone(), event.aggregate_id.clone()))
        .collect();
    appended.sort_unstable();
    appended.dedup();
    let rows = if let [event] = events.as_slice() {
        // The common case, one event: a plain INSERT is cheaper to execute.
        sqlx::query(
            "INSERT INTO events \
               (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             RETURNING aggregate_type, aggregate_id, global_position",
        )
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .bind(i64::try_from(event.sequence).unwrap_or(i64::MAX))
        .bind(&event.event_type)
        .bind(&event.event_version)
        .bind(&event.payload)
        .bind(&event.metadata)
        .fetch_all(executor)
        .await
    } else {
        let mut columns = EventColumns::with_capacity(events.len());
        for event in events {
            columns.push(event);
        }
        sqlx::query(
            "INSERT INTO events \
               (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             SELECT t, i, s, et, ev, p, m FROM UNNEST( \
               $1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[] \
             ) WITH ORDINALITY AS e(t, i, s, et, ev, p, m, n) ORDER BY n \
             RETURNING aggregate_type, aggregate_id, global_position",
        )
        .bind(columns.aggregate_types)
        .bind(columns.aggregate_ids)
        .bind(columns.sequences)
        .bind(columns.event_types)
        .bind(columns.event_versions)
        .bind(columns.payloads)
        .bind(columns.metadata)
        .fetch_all(executor)
        .await
    };
    let rows = rows.map_err(|error| match violated_constraint(&error) {
        Some("events_pkey") => {
            let (aggregate_type, aggregate_id) = conflicting_aggregate(&error, appended);
            CommitError::Conflict {
                aggregate_type,
                aggregate_id,
            }
        }
        _ => StoreError::from(error).into(),
    })?;
    for row in rows {
        let key = (
            row.try_get("aggregate_type").map_err(StoreError::from)?,
            row.try_get("aggregate_id").map_err(StoreError::from)?,
        );
        let position: i64 = row.try_get("global_position").map_err(StoreError::from)?;
        let entry = last_positions.entry(key).or_insert(position);
        *entry = (*entry).max(position);
    }
    Ok(last_positions)
}

/// Where each appended aggregate stands after the commit.
fn commit_of(appends: Vec<PendingAppend>, last_positions: &Positions) -> Commit {
    let appends: Vec<AppendResult> = appends
        .into_iter()
        .map(|append| {
            let key = (append.aggregate_type.clone(), append.aggregate_id.clone());
            AppendResult {
                last_global_position: (append.event_count > 0)
                    .then(|| last_positions.get(&key).copied())
                    .flatten(),
                aggregate_type: append.aggregate_type,
                aggregate_id: append.aggregate_id,
                version: append.version,
            }
        })
        .collect();
    Commit {
        last_global_position: last_positions.values().copied().max(),
        appends,
    }
}

/// The events of a unit of work as column arrays, for one multi-row INSERT.
struct EventColumns {
    aggregate_types: Vec<String>,
    aggregate_ids: Vec<String>,
    sequences: Vec<i64>,
    event_types: Vec<String>,
    event_versions: Vec<String>,
    payloads: Vec<Value>,
    metadata: Vec<Value>,
}

impl EventColumns {
    fn with_capacity(n: usize) -> Self {
        Self {
            aggregate_types: Vec::with_capacity(n),
            aggregate_ids: Vec::with_capacity(n),
            sequences: Vec::with_capacity(n),
            event_types: Vec::with_capacity(n),
            event_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, event: SerializedEvent) {
        self.aggregate_types.push(event.aggregate_type);
        self.aggregate_ids.push(event.aggregate_id);
        self.sequences
            .push(i64::try_from(event.sequence).unwrap_or(i64::MAX));
        self.event_types.push(event.event_type);
        self.event_versions.push(event.event_version);
        self.payloads.push(event.payload);
        self.metadata.push(event.metadata);
    }
}

/// Which of the `appended` aggregates a primary key violation was about:
/// the only one, or the one the server's detail names
/// (`Key (aggregate_type, aggregate_id, sequence)=(T, I, S) already exists.`;
/// the `(…)=(…)` part is not translated). When neither tells, all of them,
/// joined, rather than a made-up one.
fn conflicting_aggregate(
    error: &sqlx::Error,
    mut appended: Vec<(String, String)>,
) -> (String, String) {
    if appended.len() == 1 {
        return appended.remove(0);
    }
    let detail = match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| pg.detail().map(str::to_owned)),
        _ => None,
    };
    let named = detail
        .as_deref()
        .and_then(|d| d.split_once(")=(").map(|(_, rest)| rest))
        .and_then(|rest| {
            let mut parts = rest.splitn(3, ", ");
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        });
    match named {
        Some(named) if appended.contains(&named) => named,
        _ => {
            let (types, ids): (Vec<String>, Vec<String>) = appended.into_iter().unzip();
            (types.join(" or "), ids.join(" or "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aggregate(kind: &str, id: &str) -> (String, String) {
        (kind.to_owned(), id.to_owned())
    }

    #[test]
    fn a_conflict_names_the_only_aggregate_appended_to() {
        let error = sqlx::Error::PoolTimedOut;
        assert_eq!(
            conflicting_aggregate(&error, vec![aggregate("Basket", "b-1")]),
            aggregate("Basket", "b-1")
        );
    }

    #[test]
    fn a_conflict_that_cannot_be_placed_names_every_candidate_not_a_made_up_one() {
        let error = sqlx::Error::PoolTimedOut;
        assert_eq!(
            conflicting_aggregate(
                &error,
                vec![aggregate("Basket", "b-1"), aggregate("Order", "o-1")]
            ),
            aggregate("Basket or Order", "b-1 or o-1")
        );
    }
}
