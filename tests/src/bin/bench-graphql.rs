//! Benchmark of the GraphQL API: throughput and latency of `order(id)` and
//! `orders(customerId)` at a number of concurrent clients, against pgbench
//! running the equivalent SQL with as many clients on the same PostgreSQL
//! in the same run. See docs/benchmarks.md.
//!
//! 1. `eshop serve` (release) on a database, topics and indices of its
//!    own; orders are placed through the REST API and projected (the real
//!    path), then the benchmark waits for `order_view` to hold them all.
//! 2. `eshop query-api` alone serves the reads. For each query, every
//!    client sends it in a loop with a random id for `--duration` seconds;
//!    each response must be a 200 with data and no error.
//! 3. pgbench: the same rows by the same keys, prepared statements.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use eshop_tests::{ProcessStack, pgbench};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Debug, Parser)]
struct Args {
    /// Concurrent clients, for eshop and for pgbench.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds each query is measured.
    #[arg(long, default_value_t = 15)]
    duration: u64,
    /// Orders placed before measuring.
    #[arg(long, default_value_t = 2_000)]
    orders: usize,
    /// Customers they belong to.
    #[arg(long, default_value_t = 200)]
    customers: usize,
    /// Also measure `basket(id)` from PostgreSQL and from this cache
    /// (`redis://…` or `memcached://…`), in the same run.
    #[arg(long)]
    cache: Option<String>,
}

const ORDER_FIELDS: &str = "id customerId status total { amount currency formatted } \
    lines { productId sku name quantity unitPrice { amount } lineTotal { amount } } \
    shippingAddress { city country } statusHistory { status at } placedAt version";
const BASKET_FIELDS: &str = "id customerId status lines { productId sku name quantity \
    unitPrice { amount } lineTotal { amount } } total { amount currency } itemCount orderId version";
const BASKET_COLUMNS: &str = "basket_id, customer_id, status, currency, lines, total_minor, item_count, \
    order_id, opened_at, updated_at, version";
const ORDER_COLUMNS: &str = "order_id, customer_id, basket_id, status, total_minor, currency, lines, \
    shipping_address, payment_reference, tracking_number, cancellation_reason, status_history, \
    placed_at, updated_at, version";

async fn post(http: &reqwest::Client, url: String, body: Value) -> anyhow::Result<Value> {
    let response = http.post(&url).json(&body).send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("{url}: {status} {body}");
    }
    Ok(body)
}

/// Places `orders` orders for `customers` customers through the API.
async fn populate(base: &str, args: &Args) -> anyhow::Result<Vec<(Uuid, Uuid, Uuid)>> {
    let http = eshop_tests::auth::client(eshop_tests::auth::Who::Ops).await;
    let mut products = Vec::new();
    for n in 0..20 {
        let body = post(&http, format!("{base}/products"), json!({
            "sku": format!("GQL-{n}"), "name": format!("Product {n}"), "description": "benchmark",
            "price": {"amount_minor": 500 + n * 10, "currency": "EUR"}, "initial_stock": 1_000_000
        })).await?;
        products.push(body["id"].as_str().context("product id")?.to_owned());
    }
    let customers: Vec<Uuid> = (0..args.customers).map(|_| Uuid::now_v7()).collect();
    let bar = ProgressBar::new(args.orders as u64);
    bar.set_style(ProgressStyle::with_template(
        "placing orders {bar:40} {pos}/{len} {per_sec} eta {eta}",
    )?);
    let placed = futures::stream::iter(0..args.orders)
        .map(|n| {
            let (http, base, bar) = (http.clone(), base.to_owned(), bar.clone());
            let customer = customers[n % customers.len()];
            let product = products[n % products.len()].clone();
            async move {
                let basket = post(
                    &http,
                    format!("{base}/baskets"),
                    json!({"customer_id": customer}),
                )
                .await?;
                let basket: Uuid = basket["id"].as_str().context("basket id")?.parse()?;
                post(
                    &http,
                    format!("{base}/baskets/{basket}/items"),
                    json!({"product_id": product, "quantity": 1 + n % 3}),
                )
                .await?;
                let order = post(
                    &http,
                    format!("{base}/baskets/{basket}/checkout"),
                    json!({
                    "shipping_address": {"recipient": "Ada", "line1": "1 Road", "city": "London",
                                         "postal_code": "N1", "country": "GB"}}),
                )
                .await?;
                bar.inc(1);
                let order: Uuid = order["order_id"].as_str().context("order id")?.parse()?;
                Ok::<_, anyhow::Error>((order, customer, basket))
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    bar.finish();
    placed.into_iter().collect()
}

use futures::StreamExt;

/// Creates `table` (n, `column`): the keys pgbench picks from, numbered
/// from 1.
async fn numbered_keys(
    pool: &sqlx::PgPool,
    table: &str,
    column: &str,
    ids: &[Uuid],
) -> anyhow::Result<()> {
    sqlx::query(&format!(
        "CREATE TABLE {table} (n int PRIMARY KEY, {column} uuid NOT NULL)"
    ))
    .execute(pool)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO {table} SELECT n::int, id FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, n)"
    ))
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// Sends `make(n)` once for every key, 16 at a time, unmeasured: each
/// basket read once (and so cached, when there is a cache).
async fn fill(
    base: &str,
    make: &Arc<dyn Fn(usize) -> Value + Send + Sync>,
    keys: usize,
) -> anyhow::Result<()> {
    let http = eshop_tests::auth::client(eshop_tests::auth::Who::Ops).await;
    let url = format!("{base}/graphql");
    let answers = futures::stream::iter(0..keys)
        .map(|n| {
            let (http, url, body) = (http.clone(), url.clone(), make(n));
            async move {
                let answer: Value = http.post(&url).json(&body).send().await?.json().await?;
                if answer.get("errors").is_some() {
                    bail!("GraphQL answered with errors: {answer}");
                }
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<anyhow::Result<()>>>()
        .await;
    answers.into_iter().collect()
}

struct Measured {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    /// CPU time the eshop process used while measured.
    cpu: Duration,
}

/// Every client sends `make(random index)` for `duration`.
async fn drive(
    base: &str,
    pid: u32,
    args: &Args,
    what: &str,
    make: Arc<dyn Fn(usize) -> Value + Send + Sync>,
    keys: usize,
) -> anyhow::Result<Measured> {
    // A real access token of the operators' client (an admin reads every
    // customer's orders), from the local Keycloak, on every request.
    let http = eshop_tests::auth::client_builder(eshop_tests::auth::Who::Ops)
        .await
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("{base}/graphql");
    // Warm up connections and caches, unmeasured.
    for n in 0..args.clients {
        http.post(&url)
            .json(&make(n % keys))
            .send()
            .await?
            .bytes()
            .await?;
    }
    eprintln!("{what}: {} clients for {} s …", args.clients, args.duration);
    let cpu_before = eshop_tests::bench::process_cpu(pid)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (http, url, stop, make) = (http.clone(), url.clone(), stop.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            while !stop.load(Ordering::Relaxed) {
                let body = make(rand::rng().random_range(0..keys));
                let sent = Instant::now();
                let response = http.post(&url).json(&body).send().await?;
                let ok = response.status().is_success();
                let answer = response.bytes().await?;
                // As cheap a check as pgbench's: a 200 with data and no
                // errors (the load generator shares the CPU with eshop).
                if !ok
                    || !answer.starts_with(b"{\"data\":{")
                    || answer.windows(9).any(|w| w == b"\"errors\":")
                {
                    bail!(
                        "GraphQL answered with errors: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
                latencies.record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX))?;
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        all.add(task.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = eshop_tests::bench::process_cpu(pid)?.saturating_sub(cpu_before);
    Ok(Measured {
        requests: all.len(),
        cpu,
        rate: all.len() as f64 / elapsed,
        p50_ms: all.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: all.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.duration == 0 || args.orders == 0 || args.customers == 0 {
        bail!("--clients, --duration, --orders and --customers must be positive");
    }
    let ProcessStack { db, port, env, .. } = ProcessStack::new("bench-graphql").await;
    let env = env
        .with("DATABASE_MAX_CONNECTIONS", "40")
        .with("RUST_LOG", "warn");
    let mut serve = env.spawn(&["serve"]);
    let base = serve.wait_live(port).await;
    let placed = populate(&base, &args).await?;
    eprintln!("waiting for order_view to hold {} orders …", placed.len());
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        // Both views the reads below serve: the orders, and their baskets
        // checked out.
        let projected: i64 = sqlx::query_scalar(
            "SELECT least((SELECT count(*) FROM order_view), \
                          (SELECT count(*) FROM basket_view WHERE status = 'checked_out'))",
        )
        .fetch_one(&db.pool)
        .await?;
        if projected as usize >= placed.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {projected} of {} orders projected in 300 s; see {}",
                placed.len(),
                serve.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The keys pgbench picks from, by number.
    let orders: Vec<Uuid> = placed.iter().map(|(o, _, _)| *o).collect();
    let baskets: Vec<Uuid> = placed.iter().map(|(_, _, b)| *b).collect();
    let mut customers: Vec<Uuid> = placed.iter().map(|(_, c, _)| *c).collect();
    customers.sort();
    customers.dedup();
    for (table, column, ids) in [
        ("bench_orders", "order_id", &orders),
        ("bench_customers", "customer_id", &customers),
        ("bench_baskets", "basket_id", &baskets),
    ] {
        numbered_keys(&db.pool, table, column, ids).await?;
    }
    sqlx::query("ANALYZE").execute(&db.pool).await?;
    // Reads are measured on `eshop query-api` alone, as a read replica of
    // the service would run, not beside the idle relay and projectors.
    serve.kill();
    let query_port = eshop_tests::free_port();
    let mut query_api = env
        .clone()
        .with("QUERY_LISTEN_ADDR", &format!("127.0.0.1:{query_port}"))
        .spawn(&["query-api"]);
    let base = query_api.wait_live(query_port).await;

    let by_id =
        {
            let keys = orders.clone();
            drive(&base, query_api.pid(), &args, "order(id)", Arc::new(move |n| json!({
            "query": format!("query($id: ID!) {{ order(id: $id) {{ {ORDER_FIELDS} }} }}"),
            "variables": {"id": keys[n]}
        })), orders.len()).await?
        };
    let by_customer = {
        let keys = customers.clone();
        drive(&base, query_api.pid(), &args, "orders(customerId)", Arc::new(move |n| json!({
            "query": format!("query($c: ID!) {{ orders(customerId: $c, first: 10) {{ edges {{ cursor node {{ {ORDER_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"),
            "variables": {"c": keys[n]}
        })), customers.len()).await?
    };
    query_api.kill();
    // basket(id) from PostgreSQL, then from the cache: `eshop query-api`
    // without and with CACHE_URL, every basket read once before measuring
    // (the cache filled, PostgreSQL's buffers warm alike).
    let basket_query = {
        let keys = baskets.clone();
        Arc::new(move |n: usize| {
            json!({
                "query": format!("query($id: ID!) {{ basket(id: $id) {{ {BASKET_FIELDS} }} }}"),
                "variables": {"id": keys[n]}
            })
        }) as Arc<dyn Fn(usize) -> Value + Send + Sync>
    };
    let mut basket_runs = Vec::new();
    if let Some(cache) = &args.cache {
        for (what, cache) in [
            ("basket(id) from PostgreSQL", None),
            ("basket(id) from the cache", Some(cache)),
        ] {
            let query_port = eshop_tests::free_port();
            let mut with = env
                .clone()
                .with("QUERY_LISTEN_ADDR", &format!("127.0.0.1:{query_port}"));
            if let Some(cache) = cache {
                with = with.with("CACHE_URL", cache);
            }
            let mut query_api = with.spawn(&["query-api"]);
            let base = query_api.wait_live(query_port).await;
            fill(&base, &basket_query, baskets.len()).await?;
            let measured = drive(
                &base,
                query_api.pid(),
                &args,
                what,
                basket_query.clone(),
                baskets.len(),
            )
            .await?;
            query_api.kill();
            basket_runs.push((what, measured));
        }
    }
    let pg_basket = if args.cache.is_some() {
        pgbench::tps(
            &format!(
                "\\set n random(1, {})\nSELECT {BASKET_COLUMNS} FROM basket_view WHERE basket_id = (SELECT basket_id FROM bench_baskets WHERE n = :n);\n",
                baskets.len()
            ),
            &db.url,
            args.clients,
            args.duration,
        )?
    } else {
        0.0
    };
    let pg_by_id = pgbench::tps(
        &format!(
            "\\set n random(1, {})\nSELECT {ORDER_COLUMNS} FROM order_view WHERE order_id = (SELECT order_id FROM bench_orders WHERE n = :n);\n",
            orders.len()
        ),
        &db.url,
        args.clients,
        args.duration,
    )?;
    let pg_by_customer = pgbench::tps(
        &format!(
            "\\set n random(1, {})\nSELECT {ORDER_COLUMNS} FROM order_view WHERE customer_id = (SELECT customer_id FROM bench_customers WHERE n = :n) ORDER BY placed_at DESC, order_id DESC LIMIT 11;\n",
            customers.len()
        ),
        &db.url,
        args.clients,
        args.duration,
    )?;

    println!(
        "\nGraphQL at {} clients, {} s each, {} orders of {} customers\n",
        args.clients,
        args.duration,
        orders.len(),
        customers.len()
    );
    println!("| query | eshop req/s | p50 ms | p99 ms | pgbench tps (same SQL) | ratio |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, measured, baseline) in [
        ("order(id)", &by_id, pg_by_id),
        (
            "orders(customerId, first: 10)",
            &by_customer,
            pg_by_customer,
        ),
    ] {
        println!(
            "| `{name}` | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} |",
            measured.rate,
            measured.p50_ms,
            measured.p99_ms,
            baseline,
            measured.rate / baseline
        );
    }
    for (name, measured) in &basket_runs {
        println!(
            "| `{name}` | {:.0} | {:.2} | {:.2} | {pg_basket:.0} | {:.2} |",
            measured.rate,
            measured.p50_ms,
            measured.p99_ms,
            measured.rate / pg_basket
        );
    }
    if let [(_, postgres), (_, cached)] = basket_runs.as_slice() {
        println!(
            "\nbasket(id) from the cache / from PostgreSQL: {:.2} × the requests/s, p99 {:.2} × ({} cache)",
            cached.rate / postgres.rate,
            cached.p99_ms / postgres.p99_ms,
            args.cache.as_deref().unwrap_or_default()
        );
    }
    // The verifier alone, in the same run, against eshop's CPU per query.
    let cost = eshop_tests::bench::verifier_cost(500, 100_000)?;
    println!();
    for (name, measured) in [("order(id)", &by_id), ("orders(customerId)", &by_customer)] {
        println!(
            "{name}: {}",
            eshop_tests::bench::verifier_share(measured.cpu, measured.requests, &cost)
        );
    }
    Ok(())
}
