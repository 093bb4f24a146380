//! Replay: projections rebuilt from the event store itself (the full
//! history; Kafka's retention may be shorter), point-in-time snapshots for
//! analysts, and the completeness audit.
//!
//! A build reads a projection's events from `events`, grouped by aggregate
//! in sequence order, and folds them in memory one aggregate at a time
//! ([`Fold`]): every eshop view row is a function of its own aggregate's
//! history (`sales_daily` adds up per-order figures, which does not depend
//! on the order of the orders). So a build holds one aggregate at a time
//! (plus the view's totals), whatever the length of the history, and its
//! rows go to PostgreSQL with `COPY`, not one statement per event.
//!
//! Which events a build takes is a [`Cut`]: the events committed when it
//! starts (a rebuild), up to a position or a time (a snapshot), or, per
//! aggregate, up to what the live view holds (verify).
//!
//! A rebuild without downtime:
//! 1. builds into shadow tables in the schema `eshop_rebuild_<name>`,
//!    from one `REPEATABLE READ` snapshot of the store; indexes come after
//!    the load;
//! 2. catches up with what was committed since, through the incremental
//!    projection's own statements against the shadow tables (including the
//!    per-aggregate progress, so nothing is applied twice);
//! 3. swaps, in one transaction: it takes the projection's lock (live
//!    projectors take it, shared, in every transaction, so they pause here
//!    and only here), applies the last events, recreates the live tables'
//!    triggers on the new ones, replaces the projection's progress, and
//!    moves the old tables out and the new ones in. The old tables are
//!    dropped in the same transaction (or, with `--keep`, moved to a
//!    schema of their own). Queries keep reading the old tables until the
//!    commit, then the new ones.
//!
//! A crash before the swap leaves the live tables untouched; a rerun
//! starts the shadow tables over.

mod progress;

mod search;
mod verify;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use event_store::DatabaseConfig;
use event_store::feed::{self, COLUMNS};
use futures::TryStreamExt;
use sqlx::{Acquire, Executor, PgConnection, PgPool};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::event::Event;
use crate::projector::Projection;

pub use progress::Progress;
pub use read_models::{CopyValue, Fold, Rows, Table, pg_json_time};
pub use search::{rebuild_search, verify_search};
pub use verify::{Difference, TableReport, VerifyReport, report_table, verify};

pub use crate::projector::swap_lock;

/// Which events a build reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Every event committed when the build starts.
    Now,
    /// Events whose global position is at most this one.
    ToPosition(i64),
    /// Events that occurred (their `occurred_at`) at or before this time.
    AsOf(DateTime<Utc>),
    /// Per aggregate, the events the live projection has applied.
    Live,
}

impl Cut {
    /// The SQL condition on `events` (values are ours, not user text).
    fn condition(self, live: &str, projection: &str) -> String {
        match self {
            Self::Now => "true".to_owned(),
            Self::ToPosition(position) => format!("events.global_position <= {position}"),
            Self::AsOf(at) => format!(
                "(events.metadata->>'occurred_at')::timestamptz <= '{}'::timestamptz",
                at.to_rfc3339()
            ),
            Self::Live => format!(
                "events.sequence <= (SELECT p.sequence FROM {live}.projection_progress p \
                 WHERE p.projection = '{projection}' AND p.aggregate_id = events.aggregate_id)"
            ),
        }
    }
}

/// What `eshop projections rebuild` does.
#[derive(Debug, Clone, Default)]
pub struct RebuildOptions {
    /// Keep the replaced tables (in a schema named in the output).
    pub keep: bool,
    /// Only count the events each projection would read.
    pub dry_run: bool,
    /// Build a snapshot up to this point instead of replacing the view.
    pub snapshot: Option<Cut>,
    /// The snapshot table's name (one projection only).
    pub snapshot_name: Option<String>,
}

/// What a build read and wrote.
#[derive(Debug, Clone, Default)]
pub struct Built {
    pub events: u64,
    /// Events that do not decode (the live projector dead-letters them).
    pub undecodable: u64,
    /// Rows per table, in the order of [`Projection::tables`].
    pub rows: Vec<u64>,
}

/// What a replay command works on: PostgreSQL views, and the search
/// index.
pub struct Selection {
    pub views: Vec<std::sync::Arc<dyn Projection>>,
    pub search: bool,
}

/// The projections a replay command names: the given ones, or all (the
/// views and `search`).
pub fn select(names: &[String], all: bool) -> anyhow::Result<Selection> {
    let views = crate::views::all();
    if all {
        if !names.is_empty() {
            bail!("give projection names or --all, not both");
        }
        return Ok(Selection {
            views,
            search: true,
        });
    }
    if names.is_empty() {
        bail!("name the projections to replay, or give --all");
    }
    let mut selection = Selection {
        views: Vec::new(),
        search: false,
    };
    for name in names {
        if name == crate::search::NAME {
            selection.search = true;
            continue;
        }
        let view = views.iter().find(|p| p.name() == name).with_context(|| {
            let known: Vec<&str> = views
                .iter()
                .map(|p| p.name())
                .chain([crate::search::NAME])
                .collect();
            format!("unknown projection '{name}'; known: {}", known.join(", "))
        })?;
        selection.views.push(view.clone());
    }
    Ok(selection)
}

/// The pool replays use: named as a read-model writer (so the relay does
/// not wait for their transactions, and the store refuses their appends),
/// in UTC like the projectors.
/// Its statements read whole histories: sqlx's slow-statement warnings
/// would only be noise.
pub fn pool(database: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(&database.url)?
        .application_name(event_store::READ_MODEL_WRITER)
        .options([("synchronous_commit", "off"), ("TimeZone", "UTC")])
        .disable_statement_logging();
    Ok(sqlx::postgres::PgPoolOptions::new()
        .max_connections(database.max_connections.max(12))
        .acquire_timeout(std::time::Duration::from_secs(
            database.acquire_timeout_secs,
        ))
        .connect_lazy_with(options))
}

/// Runs `eshop projections rebuild`.
pub async fn rebuild(
    database: &DatabaseConfig,
    selection: &Selection,
    search: &crate::search::SearchConfig,
    options: &RebuildOptions,
) -> anyhow::Result<()> {
    if selection.search && options.snapshot.is_some() {
        bail!("snapshots are tables for analysts: the search index has none (leave out search)");
    }
    let projections = &selection.views;
    let pool = pool(database).context("invalid DATABASE_URL")?;
    let live: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&pool)
        .await
        .context("cannot reach the database")?;
    if options.snapshot_name.is_some() && projections.len() != 1 {
        bail!("--snapshot-name names one snapshot: give one projection");
    }
    if options.dry_run {
        for projection in projections {
            let cut = options.snapshot.unwrap_or(Cut::Now);
            let events = count(&pool, projection.as_ref(), cut, &live).await?;
            println!("{:<16} would read {events} events", projection.name());
        }
        if selection.search {
            let types: Vec<String> = crate::search::AGGREGATE_TYPES
                .iter()
                .map(ToString::to_string)
                .collect();
            let events: i64 =
                sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = ANY($1)")
                    .bind(types)
                    .fetch_one(&pool)
                    .await?;
            println!("{:<16} would read {events} events", crate::search::NAME);
        }
        return Ok(());
    }
    // Projections of the same aggregate types are built from one read.
    let mut groups: Vec<Vec<&dyn Projection>> = Vec::new();
    for projection in projections {
        let projection = projection.as_ref();
        match groups
            .iter_mut()
            .find(|g| g[0].aggregate_types() == projection.aggregate_types())
        {
            Some(group) => group.push(projection),
            None => groups.push(vec![projection]),
        }
    }
    for group in groups {
        let mut guards = Vec::new();
        for projection in &group {
            guards.push(Guard::take(&pool, &format!("eshop.rebuild.{}", projection.name())).await?);
        }
        match options.snapshot {
            Some(cut) => snapshot(&pool, &group, cut, options, &live).await?,
            None => replace(&pool, &group, options, &live).await?,
        }
    }
    if selection.search {
        rebuild_search(database, search, options.keep).await?;
    }
    Ok(())
}

/// A session advisory lock, so that two replays of one projection do not
/// run at once.
struct Guard {
    _connection: sqlx::pool::PoolConnection<sqlx::Postgres>,
}

impl Guard {
    /// Takes the lock, waiting a little for a holder that is finishing: a
    /// replay that has just ended may still be closing its connection.
    async fn take(pool: &PgPool, key: &str) -> anyhow::Result<Self> {
        let mut connection = pool.acquire().await?;
        sqlx::query("SELECT set_config('lock_timeout', $1, false)")
            .bind(GUARD_WAIT)
            .execute(&mut *connection)
            .await?;
        let taken = sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
            .bind(key)
            .execute(&mut *connection)
            .await;
        if let Err(error) = taken {
            connection.close_on_drop();
            if lock_timed_out(&anyhow::Error::from(error)) {
                bail!("{key} is running in another process; try again when it has finished");
            }
            bail!("failed to take the {key} lock");
        }
        sqlx::query("SELECT set_config('lock_timeout', '0', false)")
            .execute(&mut *connection)
            .await?;
        // The lock goes with the connection: never hand it back to the pool.
        Ok(Self {
            _connection: connection,
        })
    }
}

/// How long a replay waits for another one of the same projection.
const GUARD_WAIT: &str = "10s";

impl Drop for Guard {
    fn drop(&mut self) {
        self._connection.close_on_drop();
    }
}

async fn count(
    pool: &PgPool,
    projection: &dyn Projection,
    cut: Cut,
    live: &str,
) -> anyhow::Result<u64> {
    let mut db = pool.acquire().await?;
    count_on(&mut db, projection, cut, live).await
}

async fn count_on(
    db: &mut PgConnection,
    projection: &dyn Projection,
    cut: Cut,
    live: &str,
) -> anyhow::Result<u64> {
    let sql = format!(
        "SELECT count(*) FROM events WHERE events.aggregate_type = ANY($1) AND {}",
        cut.condition(live, projection.name())
    );
    let events: i64 = sqlx::query_scalar(&sql)
        .bind(aggregate_types(projection))
        .fetch_one(db)
        .await?;
    Ok(u64::try_from(events).unwrap_or(0))
}

fn aggregate_types(projection: &dyn Projection) -> Vec<String> {
    projection
        .aggregate_types()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Creates `schema` afresh with empty copies of the projection's tables
/// (columns, defaults, generated columns and checks; no indexes yet), and
/// of `projection_progress` when `progress` is set.
async fn create_tables(
    pool: &PgPool,
    projection: &dyn Projection,
    live: &str,
    schema: &str,
    progress: bool,
) -> anyhow::Result<()> {
    let mut db = pool.acquire().await?;
    let mut sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};");
    let tables = projection
        .tables()
        .iter()
        .map(|t| t.name)
        .chain(progress.then_some("projection_progress"));
    for table in tables {
        let _ = write!(
            sql,
            " CREATE TABLE {schema}.{table} (LIKE {live}.{table} INCLUDING DEFAULTS \
             INCLUDING GENERATED INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS);"
        );
    }
    if progress {
        // What lets the swap attach it as the projection's partition
        // without scanning it.
        let _ = write!(
            sql,
            " ALTER TABLE {schema}.projection_progress ADD CONSTRAINT projection_progress_of \
             CHECK (projection = '{}');",
            projection.name()
        );
    }
    sqlx::raw_sql(&sql)
        .execute(&mut *db)
        .await
        .with_context(|| format!("failed to create the tables in {schema}"))?;
    Ok(())
}

/// Gives the tables in `schema` the live tables' keys and indexes (built
/// after the load, which is faster than maintaining them row by row), and
/// fresh planner statistics.
async fn add_indexes(
    db: &mut PgConnection,
    tables: impl Iterator<Item = &str>,
    live: &str,
    schema: &str,
) -> anyhow::Result<()> {
    for table in tables {
        let constraints: Vec<(String, String)> = sqlx::query_as(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = to_regclass($1) AND contype IN ('p', 'u') ORDER BY conname",
        )
        .bind(format!("{live}.{table}"))
        .fetch_all(&mut *db)
        .await?;
        for (name, definition) in constraints {
            sqlx::raw_sql(&format!(
                "ALTER TABLE {schema}.{table} ADD CONSTRAINT {name} {definition}"
            ))
            .execute(&mut *db)
            .await?;
        }
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i \
             WHERE i.indrelid = to_regclass($1) \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) \
             ORDER BY i.indexrelid",
        )
        .bind(format!("{live}.{table}"))
        .fetch_all(&mut *db)
        .await?;
        for definition in indexes {
            let from = format!(" ON {live}.{table} ");
            if !definition.contains(&from) {
                bail!("unexpected index definition on {table}: {definition}");
            }
            let to = format!(" ON {schema}.{table} ");
            sqlx::raw_sql(&definition.replacen(&from, &to, 1))
                .execute(&mut *db)
                .await?;
        }
        sqlx::raw_sql(&format!("ANALYZE {schema}.{table}"))
            .execute(&mut *db)
            .await?;
    }
    Ok(())
}

/// Encoded rows are handed to their table's COPY in chunks of about this
/// many bytes.
const CHUNK: usize = 1 << 20;

/// One COPY into one table, fed chunks through a channel.
struct Writer {
    chunks: mpsc::Sender<Vec<u8>>,
    task: JoinHandle<anyhow::Result<u64>>,
}

impl Writer {
    fn start(pool: &PgPool, schema: &str, table: &str, columns: &[&str]) -> Self {
        let statement = format!("COPY {schema}.{table} ({}) FROM STDIN", columns.join(", "));
        let (chunks, mut incoming) = mpsc::channel::<Vec<u8>>(4);
        let pool = pool.clone();
        let task = tokio::spawn(async move {
            let mut db = pool.acquire().await?;
            let mut copy = db.copy_in_raw(&statement).await?;
            while let Some(chunk) = incoming.recv().await {
                copy.send(chunk).await?;
            }
            Ok(copy.finish().await?)
        });
        Self { chunks, task }
    }
}

/// Where a build writes: the schema of its tables, beside the live ones,
/// and whether it also writes the projection's progress.
struct Destination<'a> {
    live: &'a str,
    schema: &'a str,
    progress_table: bool,
}

/// One projection's part of a build: its fold, its rows and their COPYs.
struct Target<'a> {
    projection: &'a dyn Projection,
    progress_table: bool,
    fold: Box<dyn Fold>,
    rows: Rows,
    writers: Vec<Writer>,
}

impl Target<'_> {
    fn end_aggregate(&mut self, current: &Option<(String, String, i64)>) {
        self.fold.end_aggregate(&mut self.rows);
        if let (true, Some((_, id, sequence))) = (self.progress_table, current) {
            let tables = self.projection.tables().len();
            self.rows
                .row(tables, &[&self.projection.name(), id, sequence]);
        }
    }

    /// Hands each table's rows to its COPY once there are enough of them
    /// (all of them with `all`).
    async fn flush(&mut self, all: bool) -> anyhow::Result<()> {
        for (i, writer) in self.writers.iter().enumerate() {
            if self.rows.pending(i) >= CHUNK || (all && self.rows.pending(i) > 0) {
                let (chunk, _) = self.rows.take(i);
                writer
                    .chunks
                    .send(chunk)
                    .await
                    .context("a COPY stopped early")?;
            }
        }
        Ok(())
    }

    /// Ends the COPYs; the rows written per table.
    async fn finish(mut self) -> anyhow::Result<Vec<u64>> {
        self.fold.end(&mut self.rows);
        self.flush(true).await?;
        let tables = self.projection.tables().len();
        let mut rows = Vec::new();
        for (i, writer) in self.writers.into_iter().enumerate() {
            drop(writer.chunks);
            let written = writer.task.await.context("a COPY task failed")??;
            if i < tables {
                rows.push(written);
            }
        }
        Ok(rows)
    }
}

/// Reads the events that `cut` takes (on `reader`, which is in the
/// snapshot the caller chose) once, folds them for every projection given
/// (they read the same aggregate types), and COPYs each one's rows into
/// its destination's tables; with `progress_table`, also its progress (the
/// last sequence of every aggregate read).
async fn build(
    pool: &PgPool,
    reader: &mut PgConnection,
    cut: Cut,
    projections: &[(&dyn Projection, Destination<'_>)],
    progress: &mut Progress,
) -> anyhow::Result<Vec<Built>> {
    let Some((first, Destination { live, .. })) = projections.first() else {
        return Ok(Vec::new());
    };
    let mut targets: Vec<Target<'_>> = projections
        .iter()
        .map(|(projection, to)| {
            let mut writers: Vec<Writer> = projection
                .tables()
                .iter()
                .map(|t| Writer::start(pool, to.schema, t.name, t.columns))
                .collect();
            if to.progress_table {
                writers.push(Writer::start(
                    pool,
                    to.schema,
                    "projection_progress",
                    &["projection", "aggregate_id", "sequence"],
                ));
            }
            Target {
                projection: *projection,
                progress_table: to.progress_table,
                fold: projection.fold(),
                rows: Rows::new(writers.len()),
                writers,
            }
        })
        .collect();
    let upcasters = event_schemas::upcasters();
    let (mut events, mut undecodable) = (0, 0);
    // The folds read an event's time from its metadata and nothing else
    // there: leave the rest in the database rather than parse it a million
    // times.
    let columns = COLUMNS.replace(
        "events.metadata",
        "jsonb_build_object('occurred_at', events.metadata->'occurred_at') AS metadata",
    );
    let sql = format!(
        "SELECT {columns} FROM events WHERE events.aggregate_type = ANY($1) AND {} \
         ORDER BY events.aggregate_type, events.aggregate_id, events.sequence",
        cut.condition(live, first.name())
    );
    let types = aggregate_types(*first);
    let mut stream = sqlx::query(&sql).bind(&types).fetch(&mut *reader);
    // The aggregate being folded, and its last sequence.
    let mut current: Option<(String, String, i64)> = None;
    let mut unreported = 0;
    while let Some(row) = stream.try_next().await? {
        let recorded = feed::decode(&row)?;
        let same = current.as_ref().is_some_and(|(t, id, _)| {
            *t == recorded.aggregate_type && *id == recorded.aggregate_id
        });
        if !same && current.is_some() {
            for target in &mut targets {
                target.end_aggregate(&current);
            }
        }
        let (position, sequence) = (recorded.global.position, recorded.sequence);
        let next = (!same).then(|| {
            (
                recorded.aggregate_type.clone(),
                recorded.aggregate_id.clone(),
            )
        });
        match Event::from_recorded_owned(recorded, &upcasters) {
            Ok(event) => {
                for target in &mut targets {
                    target.fold.apply(&event).with_context(|| {
                        format!(
                            "{}: event {position} ({} {} #{sequence}) does not fold",
                            target.projection.name(),
                            event.envelope.aggregatetype,
                            event.envelope.aggregateid
                        )
                    })?;
                }
            }
            Err(error) => {
                undecodable += 1;
                tracing::warn!(
                    global_position = position,
                    %error,
                    "event skipped: it does not decode (the live projector dead-letters it)"
                );
            }
        }
        match (&mut current, next) {
            (_, Some((aggregate_type, aggregate_id))) => {
                current = Some((aggregate_type, aggregate_id, sequence));
            }
            (Some(held), None) => held.2 = sequence,
            (None, None) => {}
        }
        events += 1;
        unreported += 1;
        if unreported == 1024 {
            progress.advance(unreported);
            unreported = 0;
            for target in &mut targets {
                target.flush(false).await?;
            }
        }
    }
    drop(stream);
    progress.advance(unreported);
    let mut built = Vec::new();
    for mut target in targets {
        if current.is_some() {
            target.end_aggregate(&current);
        }
        built.push(Built {
            events,
            undecodable,
            rows: target.finish().await?,
        });
    }
    Ok(built)
}

/// Starts a `REPEATABLE READ` transaction on `db` and returns its
/// snapshot's xmin: every transaction below it had finished. (Plain
/// `execute` of a string, not `raw_sql`: its future is `Send`, so a replay
/// can run on a spawned task.)
async fn begin_snapshot(db: &mut PgConnection, read_only: bool) -> anyhow::Result<String> {
    let mode = if read_only { "READ ONLY" } else { "READ WRITE" };
    db.execute(format!("BEGIN ISOLATION LEVEL REPEATABLE READ, {mode}").as_str())
        .await?;
    Ok(current_xmin(db).await?)
}

/// Commits the transaction [`begin_snapshot`] started.
async fn commit(db: &mut PgConnection) -> anyhow::Result<()> {
    db.execute("COMMIT").await?;
    Ok(())
}

/// The snapshot xmin of a new statement: every transaction below it has
/// finished, and those that committed are visible from now on.
async fn current_xmin(db: &mut PgConnection) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        .fetch_one(db)
        .await
}

/// Builds the projections' tables (of the same aggregate types) from one
/// read of the events committed now; then, one projection after the
/// other, catches up and swaps them in.
async fn replace(
    pool: &PgPool,
    group: &[&dyn Projection],
    options: &RebuildOptions,
    live: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let shadows: Vec<String> = group
        .iter()
        .map(|p| format!("eshop_rebuild_{}", p.name()))
        .collect();
    for (projection, shadow) in group.iter().zip(&shadows) {
        create_tables(pool, *projection, live, shadow, true).await?;
    }
    let mut reader = pool.acquire().await?.detach();
    let since = begin_snapshot(&mut reader, true).await?;
    let total = count_on(&mut reader, group[0], Cut::Now, live).await?;
    let names: Vec<&str> = group.iter().map(|p| p.name()).collect();
    let names = names.join(", ");
    tracing::info!(projections = %names, events = total, "rebuild started");
    let mut progress = Progress::new(format!("rebuilding {names}"), total);
    let targets: Vec<(&dyn Projection, Destination<'_>)> = group
        .iter()
        .zip(&shadows)
        .map(|(projection, shadow)| {
            (
                *projection,
                Destination {
                    live,
                    schema: shadow,
                    progress_table: true,
                },
            )
        })
        .collect();
    let built = build(pool, &mut reader, Cut::Now, &targets, &mut progress).await?;
    commit(&mut reader).await?;
    progress.finish();
    let loaded = started.elapsed();
    // Each projection's indexes, catch-up and swap are its own: run them
    // side by side (index builds keep the database busy while this
    // process waits).
    let swaps = group
        .iter()
        .zip(&shadows)
        .zip(&built)
        .map(|((projection, shadow), built)| {
            swap_in(
                pool,
                *projection,
                shadow,
                since.clone(),
                built,
                loaded,
                options,
                live,
            )
        });
    futures::future::try_join_all(swaps).await?;
    Ok(())
}

/// Gives a projection's shadow tables their indexes, catches them up with
/// what was committed since the build's snapshot (`since`, its xmin), and
/// swaps them in.
#[allow(clippy::too_many_arguments)]
async fn swap_in(
    pool: &PgPool,
    projection: &dyn Projection,
    shadow: &str,
    mut since: String,
    built: &Built,
    loaded: std::time::Duration,
    options: &RebuildOptions,
    live: &str,
) -> anyhow::Result<()> {
    let name = projection.name();
    let mut db = pool.acquire().await?;
    let tables = projection.tables().iter().map(|t| t.name);
    add_indexes(&mut db, tables, live, shadow).await?;
    // Named as the projection's partition of the live table will be.
    sqlx::raw_sql(&format!(
        "ALTER TABLE {shadow}.projection_progress ADD CONSTRAINT projection_progress_{name}_pkey \
         PRIMARY KEY (projection, aggregate_id); ANALYZE {shadow}.projection_progress"
    ))
    .execute(&mut *db)
    .await?;
    copy_triggers(&mut db, projection, live, shadow).await?;

    // Catch up while the live projector goes on, until little is left for
    // the swap itself.
    let mut caught_up = 0;
    for _ in 0..10 {
        let mut tx = db.begin().await?;
        sqlx::raw_sql(&format!("SET LOCAL search_path = {shadow}, {live}"))
            .execute(&mut *tx)
            .await?;
        let (applied, next) = catch_up(&mut tx, projection, &since).await?;
        tx.commit().await?;
        caught_up += applied;
        since = next;
        if applied < 1_000 {
            break;
        }
    }

    // To the millisecond: rebuilds of one projection never overlap (see
    // `Guard`), so no two of them retire tables under the same name.
    let retired = format!(
        "eshop_retired_{name}_{}",
        Utc::now().format("%Y%m%d%H%M%S%3f")
    );
    // The swap waits for live transactions of the projection (and, for a
    // moment, for every one that touches `projection_progress`), and makes
    // the ones after it wait. Rather than queue indefinitely behind a long
    // one (with every projector queued behind the swap), it gives up after
    // a while, lets them through, and tries again.
    let mut attempt = 0;
    let (applied, pause) = loop {
        attempt += 1;
        let swap_started = Instant::now();
        let kept = options.keep.then_some(retired.as_str());
        match swap(&mut db, projection, shadow, live, kept, &since).await {
            Ok(applied) => break (applied, swap_started.elapsed()),
            Err(error) if attempt < SWAP_ATTEMPTS && lock_timed_out(&error) => {
                tracing::warn!(
                    projection = name,
                    attempt,
                    "the swap waited too long for its locks; trying again"
                );
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
            }
            Err(error) => return Err(error),
        }
    };
    caught_up += applied;

    let seconds = loaded.as_secs_f64();
    let rows: Vec<String> = projection
        .tables()
        .iter()
        .zip(&built.rows)
        .map(|(t, n)| format!("{} {n} rows", t.name))
        .collect();
    println!(
        "{name}: rebuilt from {} events in {:.1} s ({:.0} events/s; {}), caught up {caught_up} \
         events, swapped in {} ms{}{}",
        built.events,
        seconds,
        built.events as f64 / seconds.max(1e-9),
        rows.join(", "),
        pause.as_millis(),
        if options.keep {
            format!("; the old tables are in schema {retired}")
        } else {
            String::new()
        },
        if built.undecodable > 0 {
            format!(
                "; {} events did not decode and were skipped",
                built.undecodable
            )
        } else {
            String::new()
        },
    );
    tracing::info!(
        projection = name,
        events = built.events,
        seconds,
        caught_up,
        swap_ms = pause.as_millis() as u64,
        "rebuild finished"
    );
    Ok(())
}

/// Gives the shadow tables the live tables' triggers (the `order_view`
/// notifications that GraphQL subscriptions listen to), before the
/// catch-up: a change the catch-up makes notifies like a live one, which
/// matters for the events the live projector then skips as taken.
async fn copy_triggers(
    db: &mut PgConnection,
    projection: &dyn Projection,
    live: &str,
    shadow: &str,
) -> anyhow::Result<()> {
    let mut sql = String::new();
    for table in projection.tables() {
        let table = table.name;
        let triggers: Vec<String> = sqlx::query_scalar(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger \
             WHERE tgrelid = to_regclass($1) AND NOT tgisinternal ORDER BY tgname",
        )
        .bind(format!("{live}.{table}"))
        .fetch_all(&mut *db)
        .await?;
        for trigger in triggers {
            let from = format!(" ON {live}.{table} ");
            if !trigger.contains(&from) {
                bail!("unexpected trigger definition on {table}: {trigger}");
            }
            let _ = write!(
                sql,
                "{};",
                trigger.replacen(&from, &format!(" ON {shadow}.{table} "), 1)
            );
        }
    }
    if !sql.is_empty() {
        sqlx::raw_sql(&sql).execute(&mut *db).await?;
    }
    Ok(())
}

/// How many times a rebuild tries its swap.
const SWAP_ATTEMPTS: u32 = 10;

/// How long the swap waits for a lock before it lets others through.
const SWAP_LOCK_TIMEOUT: &str = "5s";

fn lock_timed_out(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::Database(db)) if db.code().as_deref() == Some("55P03")
        )
    })
}

/// One try at the swap, in one transaction: applies the last events to the
/// shadow tables, gives them the live tables' triggers, and exchanges the
/// tables and the projection's progress partition. The old tables go to
/// schema `kept`, or are dropped in the same transaction: a rebuild killed
/// at any moment leaves none behind. Returns the events it applied.
async fn swap(
    db: &mut PgConnection,
    projection: &dyn Projection,
    shadow: &str,
    live: &str,
    kept: Option<&str>,
    since: &str,
) -> anyhow::Result<u64> {
    let name = projection.name();
    let retiring = format!("eshop_retiring_{name}");
    let retired = kept.unwrap_or(&retiring);
    let mut tx = db.begin().await?;
    sqlx::raw_sql(&format!("SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;

    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(swap_lock(name))
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(&format!("SET LOCAL search_path = {shadow}, {live}"))
        .execute(&mut *tx)
        .await?;
    let (applied, _) = catch_up(&mut tx, projection, since).await?;
    let mut sql = String::new();
    // The projection's progress: its partition of `projection_progress`
    // is replaced by the shadow one (a catalog change, whatever the number
    // of aggregates). A projection without a partition of its own (in the
    // default one) gets one.
    let partition = format!("projection_progress_{name}");
    let partitioned: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = to_regclass($1) \
         AND inhrelid = to_regclass($2))",
    )
    .bind(format!("{live}.projection_progress"))
    .bind(format!("{live}.{partition}"))
    .fetch_one(&mut *tx)
    .await?;
    let _ = write!(sql, "CREATE SCHEMA {retired};");
    if partitioned {
        let _ = write!(
            sql,
            " ALTER TABLE {live}.projection_progress DETACH PARTITION {live}.{partition}; \
             ALTER TABLE {live}.{partition} SET SCHEMA {retired};"
        );
    } else {
        let _ = write!(
            sql,
            " DELETE FROM {live}.projection_progress WHERE projection = '{name}';"
        );
    }
    let _ = write!(
        sql,
        " ALTER TABLE {shadow}.projection_progress RENAME TO {partition}; \
         ALTER TABLE {shadow}.{partition} SET SCHEMA {live}; \
         ALTER TABLE {live}.projection_progress ATTACH PARTITION {live}.{partition} \
           FOR VALUES IN ('{name}');"
    );
    for table in projection.tables() {
        let table = table.name;
        let _ = write!(
            sql,
            " ALTER TABLE {live}.{table} SET SCHEMA {retired}; \
             ALTER TABLE {shadow}.{table} SET SCHEMA {live};"
        );
    }
    let _ = write!(sql, " DROP SCHEMA {shadow} CASCADE;");
    if kept.is_none() {
        let _ = write!(sql, " DROP SCHEMA {retired} CASCADE;");
    }
    sqlx::raw_sql(&sql).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(applied)
}

/// Applies, to the tables the connection's `search_path` finds first,
/// every committed event of the projection from transactions at or after
/// `since` (an xmin), claiming each as the live projector does, so an
/// event already built in is skipped. Returns how many were applied, and
/// the xmin to catch up from next.
async fn catch_up(
    db: &mut PgConnection,
    projection: &dyn Projection,
    since: &str,
) -> anyhow::Result<(u64, String)> {
    let next = current_xmin(&mut *db).await?;
    let upcasters = event_schemas::upcasters();
    let types = aggregate_types(projection);
    let sql = format!(
        "SELECT {COLUMNS} FROM events \
         WHERE (events.transaction_id, events.global_position) > ($1::text::xid8, $2) \
           AND events.aggregate_type = ANY($3) \
         ORDER BY events.transaction_id, events.global_position LIMIT 1000"
    );
    let (mut after_xid, mut after_position) = (since.to_owned(), -1_i64);
    let mut applied = 0;
    loop {
        let page = sqlx::query(&sql)
            .bind(&after_xid)
            .bind(after_position)
            .bind(&types)
            .fetch_all(&mut *db)
            .await?;
        if page.is_empty() {
            break;
        }
        for row in &page {
            let recorded = feed::decode(row)?;
            after_xid = recorded.global.transaction_id.to_string();
            after_position = recorded.global.position;
            let Ok(event) = Event::from_recorded(&recorded, &upcasters) else {
                continue;
            };
            match crate::projector::take(&mut *db, projection, &event).await {
                Ok(true) => applied += 1,
                Ok(false) => {}
                Err(crate::projector::Failure::Transient(error)) => return Err(error.into()),
                Err(crate::projector::Failure::Poison(error)) => bail!(
                    "event {} ({} {} #{}) cannot be applied: {error}",
                    recorded.global.position,
                    recorded.aggregate_type,
                    recorded.aggregate_id,
                    recorded.sequence
                ),
            }
        }
    }
    Ok((applied, next))
}

/// Builds point-in-time copies of the projections' main tables (of the
/// same aggregate types, from one read), named for analysts, without
/// touching the live views.
async fn snapshot(
    pool: &PgPool,
    group: &[&dyn Projection],
    cut: Cut,
    options: &RebuildOptions,
    live: &str,
) -> anyhow::Result<()> {
    let target = |projection: &dyn Projection, table: &str| {
        let kept = projection.tables().iter().filter(|t| t.in_snapshot).count();
        match (&options.snapshot_name, cut) {
            (Some(given), _) if kept == 1 => given.clone(),
            (Some(given), _) => format!("{given}_{table}"),
            (None, Cut::AsOf(at)) => format!("{table}_asof_{}", at.format("%Y%m%d_%H%M%S")),
            (None, Cut::ToPosition(position)) => format!("{table}_pos_{position}"),
            (None, Cut::Now | Cut::Live) => format!("{table}_now"),
        }
    };
    let schemas: Vec<String> = group
        .iter()
        .map(|p| format!("eshop_snapshot_{}", p.name()))
        .collect();
    for (projection, schema) in group.iter().zip(&schemas) {
        for table in projection.tables().iter().filter(|t| t.in_snapshot) {
            let target = target(*projection, table.name);
            if !is_identifier(&target) {
                bail!(
                    "'{target}' is not a valid table name (lowercase letters, digits and _, \
                     starting with a letter, at most 63 characters)"
                );
            }
            let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
                .bind(format!("{live}.{target}"))
                .fetch_one(pool)
                .await?;
            if exists.is_some() {
                bail!("a table named {target} exists already: drop it or choose another name");
            }
        }
        create_tables(pool, *projection, live, schema, false).await?;
    }
    let mut reader = pool.acquire().await?.detach();
    begin_snapshot(&mut reader, true).await?;
    let total = count_on(&mut reader, group[0], cut, live).await?;
    let names: Vec<&str> = group.iter().map(|p| p.name()).collect();
    let mut progress = Progress::new(format!("snapshot of {}", names.join(", ")), total);
    let targets: Vec<(&dyn Projection, Destination<'_>)> = group
        .iter()
        .zip(&schemas)
        .map(|(projection, schema)| {
            (
                *projection,
                Destination {
                    live,
                    schema,
                    progress_table: false,
                },
            )
        })
        .collect();
    let built = build(pool, &mut reader, cut, &targets, &mut progress).await?;
    commit(&mut reader).await?;
    progress.finish();
    for ((projection, schema), built) in group.iter().zip(&schemas).zip(built) {
        let mut sql = String::new();
        let mut written = Vec::new();
        for (table, rows) in projection.tables().iter().zip(&built.rows) {
            if !table.in_snapshot {
                continue;
            }
            let target = target(*projection, table.name);
            let _ = write!(
                sql,
                "ALTER TABLE {schema}.{} RENAME TO {target}; \
                 ALTER TABLE {schema}.{target} ADD PRIMARY KEY ({}); \
                 ALTER TABLE {schema}.{target} SET SCHEMA {live};",
                table.name,
                table.key.join(", ")
            );
            written.push(format!("{target} ({rows} rows)"));
        }
        let _ = write!(sql, " DROP SCHEMA {schema} CASCADE;");
        let mut db = pool.acquire().await?;
        let mut tx = db.begin().await?;
        sqlx::raw_sql(&sql).execute(&mut *tx).await?;
        tx.commit().await?;
        println!(
            "{}: snapshot of {} events written to {}",
            projection.name(),
            built.events,
            written.join(", ")
        );
    }
    Ok(())
}

fn is_identifier(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
