//! The completeness audit: each projection rebuilt from the event store into
//! scratch tables, up to what the live view holds, and compared with it.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use event_store::DatabaseConfig;
use serde::Serialize;
use sqlx::PgConnection;

use super::{
    Cut, Destination, Guard, Progress, begin_snapshot, build, commit, count_on, create_tables,
};
use crate::projector::Projection;

/// How many times `verify` reads the search index again, 2 s apart, while
/// documents are missing from it.
const SEARCH_RECHECKS: usize = 5;

/// One row that differs between the view and its history.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Difference {
    /// The row's key, `column=value` pairs.
    pub key: String,
    /// `missing from the view`, `not in the history`, or `differs`.
    pub kind: String,
    /// The columns whose values differ.
    pub columns: Vec<String>,
}

/// One table: the view against the rows its history gives.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub projection: String,
    pub table: String,
    pub view_rows: i64,
    pub history_rows: i64,
    pub view_hash: String,
    pub history_hash: String,
    pub differences: Vec<Difference>,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub tables: Vec<TableReport>,
    /// Events read from the store.
    pub events: u64,
}

impl VerifyReport {
    /// Whether every view equals its history.
    #[must_use]
    pub fn clean(&self) -> bool {
        self.tables.iter().all(|t| {
            t.differences.is_empty()
                && t.view_rows == t.history_rows
                && t.view_hash == t.history_hash
        })
    }
}

/// Rebuilds each projection into scratch tables from the events its live
/// view has applied (per aggregate, from the same snapshot as the view),
/// and compares them table by table: row counts, a content hash, and every
/// row that differs, by key.
pub async fn verify(
    database: &DatabaseConfig,
    selection: &super::Selection,
    search: &crate::search::SearchConfig,
    keep: bool,
) -> anyhow::Result<VerifyReport> {
    let projections: &[Arc<dyn Projection>] = &selection.views;
    let pool = super::pool(database).context("invalid DATABASE_URL")?;
    let live: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&pool)
        .await
        .context("cannot reach the database")?;
    let mut report = VerifyReport {
        tables: Vec::new(),
        events: 0,
    };
    for projection in projections {
        let projection = projection.as_ref();
        let name = projection.name();
        let _guard = Guard::take(&pool, &format!("eshop.verify.{name}")).await?;
        let scratch = format!("eshop_verify_{name}");
        let started = Instant::now();
        create_tables(&pool, projection, &live, &scratch, false).await?;
        let mut reader = pool.acquire().await?.detach();
        begin_snapshot(&mut reader, false).await?;
        // The view as it stands in the snapshot the events are read in.
        for table in projection.tables() {
            sqlx::raw_sql(&format!(
                "CREATE TABLE {scratch}.live_{0} AS SELECT * FROM {live}.{0}",
                table.name
            ))
            .execute(&mut reader)
            .await?;
        }
        let total = count_on(&mut reader, projection, Cut::Live, &live).await?;
        let mut progress = Progress::new(format!("verifying {name}"), total);
        let built = build(
            &pool,
            &mut reader,
            Cut::Live,
            &[(
                projection,
                Destination {
                    live: &live,
                    schema: &scratch,
                    progress_table: false,
                },
            )],
            &mut progress,
        )
        .await
        // A figure of the history beyond its column (an overflowing sum)
        // fails the build: verify reports it rather than compare a wrapped
        // number with another.
        .with_context(|| format!("failed to build {name} from its history"))?
        .remove(0);
        commit(&mut reader).await?;
        progress.finish();
        report.events += built.events;
        let mut db = pool.acquire().await?;
        for table in projection.tables() {
            report
                .tables
                .push(compare(&mut db, name, table, &scratch).await?);
        }
        if !keep {
            sqlx::raw_sql(&format!("DROP SCHEMA {scratch} CASCADE"))
                .execute(&mut *db)
                .await?;
        }
        tracing::info!(
            projection = name,
            events = built.events,
            seconds = started.elapsed().as_secs_f64(),
            "verified"
        );
    }
    if selection.search {
        // The index has no per-aggregate progress to cut the history at: a
        // document missing may only be late (the projector is a moment
        // behind). Read again a few times before reporting one missing.
        let missing = |tables: &[TableReport]| {
            tables.iter().any(|t| {
                t.differences
                    .iter()
                    .any(|d| d.kind == "missing from the view")
            })
        };
        let mut tables = super::verify_search(database, search).await?;
        for _ in 0..SEARCH_RECHECKS {
            if !missing(&tables) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            tables = super::verify_search(database, search).await?;
        }
        report.tables.extend(tables);
    }
    Ok(report)
}

async fn compare(
    db: &mut PgConnection,
    projection: &str,
    table: &super::Table,
    scratch: &str,
) -> anyhow::Result<TableReport> {
    let name = table.name;
    let order = table
        .key
        .iter()
        .map(|k| format!("x.{k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let summary = |relation: String| {
        format!(
            "SELECT count(*), md5(coalesce(string_agg(to_jsonb(x)::text, E'\\n' ORDER BY {order}), '')) \
             FROM {scratch}.{relation} AS x"
        )
    };
    let (view_rows, view_hash): (i64, String) = sqlx::query_as(&summary(format!("live_{name}")))
        .fetch_one(&mut *db)
        .await?;
    let (history_rows, history_hash): (i64, String) = sqlx::query_as(&summary(name.to_owned()))
        .fetch_one(&mut *db)
        .await?;
    let first = table.key[0];
    let join = table
        .key
        .iter()
        .map(|k| format!("v.{k} = h.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let key = table
        .key
        .iter()
        .map(|k| format!("'{k}=' || coalesce(v.{k}, h.{k})::text"))
        .collect::<Vec<_>>()
        .join(" || ' ' || ");
    let differences: Vec<(String, String, Vec<String>)> = sqlx::query_as(&format!(
        "SELECT {key}, \
           CASE WHEN v.{first} IS NULL THEN 'missing from the view' \
                WHEN h.{first} IS NULL THEN 'not in the history' ELSE 'differs' END, \
           CASE WHEN v.{first} IS NULL OR h.{first} IS NULL THEN ARRAY[]::text[] ELSE \
             ARRAY(SELECT c.key FROM jsonb_each(to_jsonb(v)) AS c \
                   WHERE c.value IS DISTINCT FROM to_jsonb(h) -> c.key ORDER BY c.key) END \
         FROM {scratch}.live_{name} AS v FULL JOIN {scratch}.{name} AS h ON {join} \
         WHERE v.{first} IS NULL OR h.{first} IS NULL OR to_jsonb(v) <> to_jsonb(h) \
         ORDER BY 1"
    ))
    .fetch_all(&mut *db)
    .await?;
    Ok(TableReport {
        projection: projection.to_owned(),
        table: name.to_owned(),
        view_rows,
        history_rows,
        view_hash,
        history_hash,
        differences: differences
            .into_iter()
            .map(|(key, kind, columns)| Difference { key, kind, columns })
            .collect(),
    })
}

/// The report as a human table, then each differing row.
#[must_use]
pub fn report_table(report: &VerifyReport) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<16} {:<20} {:>10} {:>13} {:<10} {:<12} {:>11}\n",
        "PROJECTION",
        "TABLE",
        "VIEW ROWS",
        "HISTORY ROWS",
        "VIEW HASH",
        "HISTORY HASH",
        "DIFFERENCES"
    );
    for t in &report.tables {
        let _ = writeln!(
            out,
            "{:<16} {:<20} {:>10} {:>13} {:<10} {:<12} {:>11}",
            t.projection,
            t.table,
            t.view_rows,
            t.history_rows,
            &t.view_hash[..t.view_hash.len().min(8)],
            &t.history_hash[..t.history_hash.len().min(8)],
            t.differences.len()
        );
    }
    for t in &report.tables {
        for d in &t.differences {
            let _ = write!(out, "{}.{} {}: {}", t.projection, t.table, d.key, d.kind);
            if !d.columns.is_empty() {
                let _ = write!(out, " ({})", d.columns.join(", "));
            }
            out.push('\n');
        }
    }
    let _ = writeln!(
        out,
        "{}",
        if report.clean() {
            "every view equals its history"
        } else {
            "DIFFERENCES FOUND"
        }
    );
    out
}
