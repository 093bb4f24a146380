//! Benchmark of replay: `eshop projections rebuild order_view sales_daily`
//! over a history of N order events written straight into a fresh event
//! store; then, in the same run and on the same PostgreSQL, the rate of
//! COPYing the rebuilt (final) rows into empty tables with the same
//! indexes. Prints events/s, the rebuild's rows/s against COPY's, and the
//! rebuild's peak memory (at N and at N/4, to show it flat in the event
//! count). See docs/benchmarks.md.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{TimeZone, Utc};
use clap::Parser;
use cqrs_es::DomainEvent;
use domain::order::{OrderEvent, OrderLine, ShippingAddress};
use eshop_tests::bench::recreate_database;
use event_schemas::EventMetadata;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use projections::replay::Rows;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

#[derive(Debug, Parser)]
struct Args {
    /// Events in the history.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[command(flatten)]
    target: eshop_tests::bench::Target,
}

const PRODUCTS: usize = 500;

/// Writes a history of about `events` order events: each order placed with
/// one to three lines on one of 365 days, then paid, shipped and delivered,
/// or cancelled along the way.
async fn write_history(db: &mut PgConnection, events: u64) -> anyhow::Result<u64> {
    let mut rng = StdRng::seed_from_u64(42);
    let products: Vec<(Uuid, String, i64)> = (0..PRODUCTS)
        .map(|i| {
            (
                Uuid::now_v7(),
                format!("SKU-{i}"),
                100 + (i as i64 * 37) % 9_900,
            )
        })
        .collect();
    let bar = ProgressBar::new(events);
    bar.set_style(ProgressStyle::with_template(
        "writing history [{bar:30}] {human_pos}/{human_len} events {per_sec} ETA {eta}",
    )?);
    let mut copy = db
        .copy_in_raw(
            "COPY events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             FROM STDIN",
        )
        .await?;
    let mut rows = Rows::new(1);
    let mut written = 0;
    let start = Utc
        .with_ymd_and_hms(2026, 1, 1, 8, 0, 0)
        .single()
        .context("a date")?;
    let address: ShippingAddress = serde_json::from_value(serde_json::json!({
        "recipient": "Ada Lovelace", "line1": "1 Road", "line2": null, "city": "London",
        "postal_code": "N1", "country": "GB"}))?;
    while written < events {
        let order = Uuid::now_v7().to_string();
        let placed_at = start
            + chrono::Duration::seconds(rng.random_range(0..365 * 24 * 3600))
            + chrono::Duration::microseconds(rng.random_range(0..1_000_000));
        let lines: Vec<OrderLine> = (0..rng.random_range(1..=3))
            .map(|_| {
                let (id, sku, price) = &products[rng.random_range(0..PRODUCTS)];
                serde_json::from_value(serde_json::json!({
                    "product_id": id, "sku": sku, "name": format!("Product {sku}"),
                    "unit_price": {"amount_minor": price, "currency": "EUR"},
                    "quantity": rng.random_range(1..5)}))
            })
            .collect::<Result<_, _>>()?;
        let total: i64 = lines
            .iter()
            .map(|l| l.unit_price.minor * i64::from(l.quantity))
            .sum();
        let money = serde_json::json!({"amount_minor": total, "currency": "EUR"});
        let mut history = vec![serde_json::from_value::<OrderEvent>(serde_json::json!({
            "OrderPlaced": {"customer_id": Uuid::now_v7(), "basket_id": Uuid::now_v7(),
                "lines": lines, "total": money, "shipping_address": address}}))?];
        let fate = rng.random_range(0..10);
        if fate == 0 {
            history.push(serde_json::from_value(
                serde_json::json!({"OrderCancelled": {"reason": "changed my mind"}}),
            )?);
        } else {
            history.push(serde_json::from_value(serde_json::json!({
                "OrderPaid": {"payment_reference": "psp-1", "amount": money}}))?);
            if fate == 1 {
                history.push(serde_json::from_value(
                    serde_json::json!({"OrderCancelled": {"reason": "refund"}}),
                )?);
            } else if fate >= 3 {
                history.push(serde_json::from_value(
                    serde_json::json!({"OrderShipped": {"tracking_number": "TRK1"}}),
                )?);
                if fate >= 5 {
                    history.push(serde_json::from_value(
                        serde_json::json!({"OrderDelivered": {}}),
                    )?);
                }
            }
        }
        for (i, event) in history.iter().enumerate() {
            let metadata = EventMetadata {
                event_id: Uuid::now_v7(),
                occurred_at: placed_at + chrono::Duration::hours(i as i64),
                correlation_id: "bench".to_owned(),
                causation_id: "bench".to_owned(),
                actor: "bench".to_owned(),
                schema_version: event.event_version(),
                traceparent: None,
            };
            let sequence = i as i64 + 1;
            rows.row(
                0,
                &[
                    &"Order",
                    &order,
                    &sequence,
                    &event.event_type(),
                    &event.event_version(),
                    &serde_json::to_value(event)?,
                    &serde_json::to_value(metadata.to_map())?,
                ],
            );
        }
        written += history.len() as u64;
        if rows.pending(0) > 1 << 20 {
            copy.send(rows.take(0).0).await?;
            bar.set_position(written);
        }
    }
    copy.send(rows.take(0).0).await?;
    copy.finish().await?;
    bar.finish_and_clear();
    Ok(written)
}

/// Runs the rebuild; returns its wall time and peak resident memory (kB).
fn rebuild(eshop: &str, url: &str) -> anyhow::Result<(Duration, u64, String)> {
    let started = Instant::now();
    let mut child = Command::new(eshop)
        .args(["projections", "rebuild", "order_view", "sales_daily"])
        .env("DATABASE_URL", url)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("eshop starts")?;
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        // VmHWM is the peak so far: the last reading before exit is the peak.
        if let Some(kb) = std::fs::read_to_string(&status_file)
            .ok()
            .as_deref()
            .and_then(|status| status.lines().find_map(|l| l.strip_prefix("VmHWM:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kb);
        }
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("the rebuild failed");
    }
    Ok((
        started.elapsed(),
        peak,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

/// COPYs the final rows of `tables` into empty copies with the same
/// indexes; returns the rows and the time the COPYs took.
async fn copy_baseline(db: &mut PgConnection, tables: &[&str]) -> anyhow::Result<(u64, Duration)> {
    let mut dumps = Vec::new();
    for table in tables {
        let mut out = db.copy_out_raw(&format!("COPY {table} TO STDOUT")).await?;
        let mut dump = Vec::new();
        while let Some(chunk) = out.next().await {
            dump.extend_from_slice(&chunk?);
        }
        drop(out);
        db.execute(
            format!(
                "DROP TABLE IF EXISTS copy_{table}; \
                 CREATE TABLE copy_{table} (LIKE {table} INCLUDING ALL EXCLUDING INDEXES)"
            )
            .as_str(),
        )
        .await?;
        dumps.push((table, dump));
    }
    let mut rows = 0;
    let started = Instant::now();
    for (table, dump) in &dumps {
        // Columns by name: the generated `available` column is not copied.
        let mut copy = db
            .copy_in_raw(&format!("COPY copy_{table} FROM STDIN"))
            .await?;
        for chunk in dump.chunks(1 << 20) {
            copy.send(chunk).await?;
        }
        rows += copy.finish().await?;
        // The same keys and indexes as the live table, built after the load
        // as the rebuild does.
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = to_regclass($1)",
        )
        .bind(format!("public.{table}"))
        .fetch_all(&mut *db)
        .await?;
        for index in indexes {
            let index = index.replacen("INDEX ", "INDEX copy_", 1).replacen(
                &format!(" ON public.{table} "),
                &format!(" ON public.copy_{table} "),
                1,
            );
            db.execute(index.as_str()).await?;
        }
    }
    Ok((rows, started.elapsed()))
}

async fn fresh_database(admin_url: &str, eshop: &str, name: &str) -> anyhow::Result<String> {
    let mut admin = PgConnection::connect(admin_url).await?;
    recreate_database(&mut admin, name).await?;
    let url = match admin_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => bail!("BENCH_ADMIN_URL must name a database"),
    };
    let status = Command::new(eshop)
        .args(["migrate"])
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .status()?;
    if !status.success() {
        bail!("eshop migrate failed");
    }
    Ok(url)
}

struct Run {
    events: u64,
    rows: u64,
    rebuild: Duration,
    peak_kb: u64,
    copy_rows: u64,
    copy: Duration,
}

async fn run(args: &Args, events: u64) -> anyhow::Result<Run> {
    let url = fresh_database(
        &args.target.admin_url,
        &args.target.eshop,
        "eshop_bench_rebuild",
    )
    .await?;
    let mut db = PgConnection::connect(&url).await?;
    let events = write_history(&mut db, events).await?;
    db.execute("VACUUM ANALYZE events").await?;
    eprintln!("rebuilding order_view and sales_daily from {events} events…");
    let (elapsed, peak_kb, output) = rebuild(&args.target.eshop, &url)?;
    eprint!("{output}");
    let tables = ["order_view", "sales_daily", "sales_daily_orders"];
    let mut rows = 0;
    for table in tables {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut db)
            .await?;
        rows += n as u64;
    }
    let (copy_rows, copy) = copy_baseline(&mut db, &tables).await?;
    Ok(Run {
        events,
        rows,
        rebuild: elapsed,
        peak_kb,
        copy_rows,
        copy,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let small = run(&args, args.events / 4).await?;
    let full = run(&args, args.events).await?;
    for (label, r) in [("N/4", &small), ("N", &full)] {
        let rebuild_rate = r.rows as f64 / r.rebuild.as_secs_f64();
        let copy_rate = r.copy_rows as f64 / r.copy.as_secs_f64();
        println!(
            "{label:>3}: {} events rebuilt in {:.1} s = {:.0} events/s; {} rows = {:.0} rows/s; \
             COPY of the same rows {:.1} s = {:.0} rows/s; ratio {:.2}; peak memory {} MB",
            r.events,
            r.rebuild.as_secs_f64(),
            r.events as f64 / r.rebuild.as_secs_f64(),
            r.rows,
            rebuild_rate,
            r.copy.as_secs_f64(),
            copy_rate,
            rebuild_rate / copy_rate,
            r.peak_kb / 1024
        );
    }
    Ok(())
}
