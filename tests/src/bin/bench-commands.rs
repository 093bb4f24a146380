//! Benchmark of the write side: N concurrent HTTP clients send add-item
//! commands to `eshop serve` over a fresh database; then, in the same run
//! and on the same PostgreSQL, pgbench runs the equivalent bare transaction
//! (one SELECT of an aggregate's recent events, one INSERT of an event) at
//! the same concurrency, before and after the eshop load. Prints commands/s,
//! p50/p99 latency, pgbench TPS and the ratio of eshop to the mean of the
//! two pgbench runs. See docs/benchmarks.md.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use eshop_tests::bench::{Export, create_database, drop_database};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::Mutex;
use uuid::Uuid;

#[derive(Debug, Parser)]
struct Args {
    /// Concurrent clients (and pgbench clients).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Measured seconds for each side.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Unmeasured seconds before measuring eshop.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Also measure eshop with this cache (`redis://…` or
    /// `memcached://…`), in the same run, after the load without it.
    #[arg(long)]
    cache: Option<String>,
    /// Run `eshop serve --api-only`: the command path alone, without the
    /// relay and the projectors in the process (and their PostgreSQL work).
    #[arg(long)]
    api_only: bool,
    /// Span export settings to measure, one load each, in this order
    /// (comma-separated: off, all, tenth); ratios are to the mean of the
    /// `off` loads. With only `off`, the plain benchmark.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "off")]
    export: Vec<eshop_tests::bench::Export>,
    /// The OTLP/HTTP endpoint spans go to (`scripts/setup`'s Jaeger).
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    otlp: String,
    #[command(flatten)]
    target: eshop_tests::bench::Target,
}

const PRODUCTS: usize = 50;
/// The services whose CPU per command is reported.
const SERVICES: &[&str] = &["postgres", "redis-server", "memcached"];

/// eshop's CPU per command, in µs.
fn cpu_per_command(load: &Load) -> f64 {
    load.cpu.as_secs_f64() * 1e6 / (load.ok + load.failed).max(1) as f64
}

/// eshop's and the services' CPU per command, in µs.
fn cpu_split(load: &Load) -> String {
    let per = |cpu: Duration| cpu.as_secs_f64() * 1e6 / (load.ok + load.failed).max(1) as f64;
    let mut parts = vec![format!("eshop {:.0}", per(load.cpu))];
    for (name, cpu) in &load.services {
        if !cpu.is_zero() {
            parts.push(format!("{name} {:.0}", per(*cpu)));
        }
    }
    format!("CPU per command (µs): {}", parts.join(", "))
}
/// Adds per basket before it is replaced (50 products x 99 units max).
const ADDS_PER_BASKET: usize = 4_900;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(
    args: &Args,
    db_url: &str,
    cache: Option<&str>,
    export: eshop_tests::bench::Export,
) -> anyhow::Result<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut command = Command::new(&args.target.eshop);
    export.apply(&mut command, &args.otlp);
    if let Some(cache) = cache {
        command.env("CACHE_URL", cache);
    }
    let child = args.target.spawn(
        command
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                db_url,
            ])
            .args([
                "--database-max-connections",
                &args.clients.max(4).to_string(),
            ])
            .args(args.api_only.then_some("--api-only"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    )?;
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client
            .get(format!("{}/health/ready", server.base))
            .send()
            .await
            && response.status().is_success()
        {
            return Ok(server);
        }
        if Instant::now() > deadline {
            bail!("eshop did not become ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> anyhow::Result<Value> {
    let response = client.post(url).json(&body).send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("{status}: {body}");
    }
    Ok(body)
}

async fn open_basket(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let body = post(
        client,
        format!("{base}/baskets"),
        json!({"customer_id": Uuid::now_v7()}),
    )
    .await?;
    Ok(body["id"].as_str().context("basket id")?.to_owned())
}

struct Load {
    histogram: Histogram<u64>,
    ok: u64,
    failed: u64,
    elapsed: Duration,
    /// CPU time the eshop process used while measured.
    cpu: Duration,
    /// CPU time PostgreSQL's, Redis's and Memcached's processes used
    /// while measured (of those that ran throughout).
    services: Vec<(String, Duration)>,
}

/// Runs the clients for warm-up plus measured time; records only the
/// measured part.
async fn run_load(
    args: &Args,
    base: &str,
    pid: u32,
    products: Arc<Vec<String>>,
) -> anyhow::Result<Load> {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    // Every request carries a real access token of the operators' client
    // (an admin, so that it may open baskets for many customers), from the
    // local Keycloak.
    let client = eshop_tests::auth::client_builder(eshop_tests::auth::Who::Ops)
        .await
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let mut tasks = Vec::new();
    for worker in 0..args.clients {
        let (client, base, products) = (client.clone(), base.to_owned(), Arc::clone(&products));
        let (measuring, stop, done, failed, histogram) = (
            Arc::clone(&measuring),
            Arc::clone(&stop),
            Arc::clone(&done),
            Arc::clone(&failed),
            Arc::clone(&histogram),
        );
        tasks.push(tokio::spawn(async move {
            let mut local =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut basket = open_basket(&client, &base).await?;
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if n > 0 && n.is_multiple_of(ADDS_PER_BASKET) {
                    basket = open_basket(&client, &base).await?;
                }
                let product = &products[(worker + n) % products.len()];
                let started = Instant::now();
                let result = client
                    .post(format!("{base}/baskets/{basket}/items"))
                    .json(&json!({"product_id": product, "quantity": 1}))
                    .send()
                    .await;
                let ok = matches!(&result, Ok(r) if r.status().is_success());
                if let Ok(response) = result {
                    let _ = response.bytes().await;
                }
                n += 1;
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        local.record(
                            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                        )?;
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            histogram.lock().await.add(&local)?;
            anyhow::Ok(())
        }));
    }

    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let cpu_before = eshop_tests::bench::process_cpu(pid)?;
    let services_before = eshop_tests::bench::cpu_by_command(SERVICES)?;
    let started = Instant::now();
    let bar = ProgressBar::new(args.duration);
    bar.set_style(
        ProgressStyle::with_template("eshop   [{bar:30}] {pos}/{len} s  {msg}")?
            .progress_chars("=> "),
    );
    for second in 1..=args.duration {
        tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
        let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        bar.set_position(second);
        bar.set_message(format!("{rate:.0} commands/s"));
    }
    stop.store(true, Ordering::Relaxed);
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let cpu = eshop_tests::bench::process_cpu(pid)?.saturating_sub(cpu_before);
    let services = eshop_tests::bench::cpu_by_command(SERVICES)?
        .into_iter()
        .zip(services_before)
        .map(|((name, after), (_, before))| (name, after.saturating_sub(before)))
        .collect();
    bar.finish_and_clear();
    for task in tasks {
        task.await??;
    }
    let histogram = Arc::try_unwrap(histogram)
        .map_err(|_| anyhow::anyhow!("histogram still shared"))?
        .into_inner();
    Ok(Load {
        histogram,
        ok: done.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed,
        cpu,
        services,
    })
}

/// Aggregates the baseline reads, and their length: 25 events is the mean
/// tail an eshop load reads after a snapshot every 50 events.
const READ_AGGREGATES: usize = 1_000;
const EVENTS_PER_READ_AGGREGATE: usize = 25;

const EVENT_PAYLOAD: &str = r#"{"ItemAdded": {"product_id": "01a20086-6ce6-71da-9548-f2cad798d11d", "sku": "P-1", "name": "Product 1", "unit_price": {"amount_minor": 100, "currency": "EUR"}, "quantity": 1}}"#;
const EVENT_METADATA: &str = r#"{"event_id": "01a20086-6ce6-71da-9548-f2cad798d11e", "occurred_at": "2026-11-21T23:52:19.123456Z", "correlation_id": "01a20086-6ce5-7259-960e-243930c8aec9", "causation_id": "01a20086-6ce5-7259-960e-243930c8aec8", "actor": "anonymous", "schema_version": "1.0"}"#;

/// The bare transaction an add-item command amounts to: read all events of
/// an aggregate, append one event. Reads go to fixed-size aggregates so that
/// the baseline does not drift as the table grows; appends go to the end of
/// each client's own aggregate.
fn pgbench_script() -> String {
    format!(
        "\\set aggregate random(1, {READ_AGGREGATES})\n\
         BEGIN;\n\
         SELECT sequence, event_type, event_version, payload, metadata FROM events \
         WHERE aggregate_type = 'PgBenchRead' AND aggregate_id = 'read-' || :aggregate ORDER BY sequence;\n\
         INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('PgBenchWrite', 'client-' || :client_id, nextval('pgbench_append'), 'ItemAdded', '1.0', \
         '{EVENT_PAYLOAD}', '{EVENT_METADATA}');\n\
         END;\n"
    )
}

/// Creates what the baseline reads.
async fn prepare_pgbench(db_url: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(db_url).await?;
    conn.execute("CREATE SEQUENCE IF NOT EXISTS pgbench_append")
        .await?;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT 'PgBenchRead', 'read-' || a, s, 'ItemAdded', '1.0', $1::jsonb, $2::jsonb \
         FROM generate_series(1, $3) a, generate_series(1, $4) s",
    )
    .bind(EVENT_PAYLOAD)
    .bind(EVENT_METADATA)
    .bind(i32::try_from(READ_AGGREGATES)?)
    .bind(i32::try_from(EVENTS_PER_READ_AGGREGATE)?)
    .execute(&mut conn)
    .await?;
    conn.execute("ANALYZE events").await?;
    Ok(())
}

fn run_pgbench(args: &Args, db_url: &str) -> anyhow::Result<f64> {
    eshop_tests::pgbench::tps(&pgbench_script(), db_url, args.clients, args.duration)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let name = format!("eshop_bench_{}", Uuid::now_v7().simple());
    let db_url = args.target.database_url(&name);
    let mut admin = PgConnection::connect(&args.target.admin_url)
        .await
        .context("PostgreSQL must be running")?;
    create_database(&mut admin, &name).await?;

    let result = async {
        let first = args.export.first().copied().unwrap_or(Export::Off);
        let server = start_server(&args, &db_url, None, first).await?;
        let client = eshop_tests::auth::client(eshop_tests::auth::Who::Ops).await;
        let mut products = Vec::new();
        for n in 0..PRODUCTS {
            let body = json!({"sku": format!("BENCH-{n}"), "name": format!("Product {n}"),
                "price": {"amount_minor": 100 + n, "currency": "EUR"}, "initial_stock": 1_000_000});
            products.push(
                post(&client, format!("{}/products", server.base), body).await?["id"]
                    .as_str()
                    .context("id")?
                    .to_owned(),
            );
        }
        // The baseline runs before and after the load, on the same server,
        // so that drift on a shared machine shows and is averaged out.
        prepare_pgbench(&db_url).await?;
        let before = run_pgbench(&args, &db_url)?;
        eprintln!(
            "eshop: {} clients, {} s warm-up, {} s measured …",
            args.clients, args.warmup, args.duration
        );
        let products = Arc::new(products);
        let load = run_load(&args, &server.base, server.child.id(), products.clone()).await?;
        drop(server);
        let cached = match &args.cache {
            Some(cache) => {
                eprintln!("eshop with CACHE_URL={cache} …");
                let server = start_server(&args, &db_url, Some(cache), first).await?;
                let load =
                    run_load(&args, &server.base, server.child.id(), products.clone()).await?;
                drop(server);
                Some(load)
            }
            None => None,
        };
        // The other export settings, each on a server of its own.
        let mut exported = Vec::new();
        for &export in args.export.iter().skip(1) {
            eprintln!("eshop with {} …", export.name());
            let server = start_server(&args, &db_url, None, export).await?;
            let load = run_load(&args, &server.base, server.child.id(), products.clone()).await?;
            drop(server);
            exported.push((export, load));
        }
        let after = run_pgbench(&args, &db_url)?;
        anyhow::Ok((load, cached, exported, before, after))
    }
    .await;
    drop_database(&mut admin, &name).await?;
    let (load, cached, exported, before, after) = result?;
    let tps = (before + after) / 2.0;
    // The verifier alone, in the same run, against eshop's CPU per command.
    let cost = eshop_tests::bench::verifier_cost(500, 100_000)?;

    let rate = load.ok as f64 / load.elapsed.as_secs_f64();
    let p50 = load.histogram.value_at_quantile(0.50) as f64 / 1000.0;
    let p99 = load.histogram.value_at_quantile(0.99) as f64 / 1000.0;
    println!("clients:              {}", args.clients);
    println!(
        "eshop add-item:       {rate:.0} commands/s ({} ok, {} failed in {:.1} s)",
        load.ok,
        load.failed,
        load.elapsed.as_secs_f64()
    );
    println!("eshop latency:        p50 {p50:.2} ms, p99 {p99:.2} ms");
    println!(
        "pgbench equivalent:   {tps:.0} transactions/s (before {before:.0}, after {after:.0})"
    );
    println!("ratio eshop/pgbench:  {:.2}", rate / tps);
    println!(
        "{}",
        eshop_tests::bench::verifier_share(load.cpu, load.ok + load.failed, &cost)
    );
    println!(
        "| {} | {rate:.0} | {p50:.2} | {p99:.2} | {before:.0} / {after:.0} | {:.2} |",
        args.clients,
        rate / tps
    );
    println!("{}", cpu_split(&load));
    if let (Some(cached), Some(cache)) = (cached, &args.cache) {
        println!("with the cache, {}", cpu_split(&cached));
        let cached_rate = cached.ok as f64 / cached.elapsed.as_secs_f64();
        let p50 = cached.histogram.value_at_quantile(0.50) as f64 / 1000.0;
        let p99 = cached.histogram.value_at_quantile(0.99) as f64 / 1000.0;
        println!(
            "with the cache:       {cached_rate:.0} commands/s ({} ok, {} failed), p50 {p50:.2} ms, p99 {p99:.2} ms",
            cached.ok, cached.failed
        );
        println!(
            "cache/no cache:       {:.2}; with the cache/pgbench: {:.2}",
            cached_rate / rate,
            cached_rate / tps
        );
        println!(
            "| {} | {cache} | {cached_rate:.0} | {p50:.2} | {p99:.2} | {:.2} | {:.2} |",
            args.clients,
            cached_rate / rate,
            cached_rate / tps
        );
    }
    if !exported.is_empty() {
        print_export(&args, (args.export[0], &load), &exported, tps);
    }
    Ok(())
}

/// Each export setting's throughput, as a ratio to the mean of the loads
/// without export.
fn print_export(args: &Args, first: (Export, &Load), others: &[(Export, Load)], tps: f64) {
    let loads: Vec<(Export, &Load)> = std::iter::once(first)
        .chain(others.iter().map(|(e, l)| (*e, l)))
        .collect();
    let rate = |load: &Load| load.ok as f64 / load.elapsed.as_secs_f64();
    let off: Vec<f64> = loads
        .iter()
        .filter(|(e, _)| *e == Export::Off)
        .map(|(_, l)| rate(l))
        .collect();
    let baseline = (!off.is_empty()).then(|| off.iter().sum::<f64>() / off.len() as f64);
    println!();
    println!(
        "| clients | export | commands/s | p50 ms | p99 ms | / export off | / pgbench | eshop CPU µs/command | failed |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &(export, load) in &loads {
        let p50 = load.histogram.value_at_quantile(0.50) as f64 / 1000.0;
        let p99 = load.histogram.value_at_quantile(0.99) as f64 / 1000.0;
        println!(
            "| {} | {} | {:.0} | {p50:.2} | {p99:.2} | {} | {:.2} | {:.0} | {} |",
            args.clients,
            export.name(),
            rate(load),
            baseline.map_or_else(|| "n/a".to_owned(), |b| format!("{:.3}", rate(load) / b)),
            rate(load) / tps,
            cpu_per_command(load),
            load.failed
        );
    }
    // Each setting's mean over its loads (alternate the settings, e.g.
    // off,tenth,off,tenth,…, so that drift falls on both alike).
    println!();
    println!("| export | loads | mean commands/s | / export off | mean eshop CPU µs/command |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for export in [Export::Off, Export::All, Export::Tenth] {
        let rates: Vec<f64> = loads
            .iter()
            .filter(|(e, _)| *e == export)
            .map(|(_, l)| rate(l))
            .collect();
        if rates.is_empty() {
            continue;
        }
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        let cpu = loads
            .iter()
            .filter(|(e, _)| *e == export)
            .map(|(_, l)| cpu_per_command(l))
            .sum::<f64>()
            / rates.len() as f64;
        println!(
            "| {} | {} | {mean:.0} | {} | {cpu:.0} |",
            export.name(),
            rates.len(),
            baseline.map_or_else(|| "n/a".to_owned(), |b| format!("{:.3}", mean / b))
        );
    }
}
