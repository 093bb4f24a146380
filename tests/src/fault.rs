//! What fault tests share: a command load over HTTP, catching up, and the
//! comparison of a system's views and index with a from-scratch build of
//! the same events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::broker::{TestBroker, TestBus};
use crate::db::TestDb;
use crate::process::{EshopEnv, EshopProcess};
use crate::search::TestSearch;
use crate::wait::eventually;

/// What a load did.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: u64,
    /// Every command that did not get a 2xx, with its answer.
    pub failures: Vec<String>,
}

/// Asserts that no command failed, showing the first few that did.
pub fn assert_no_failures(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{what}: {:?}",
        &failures[..failures.len().min(5)]
    );
}

/// Sends shop traffic to the API at `base`: `products` products, then
/// `orders` baskets each opened, filled with two lines and checked out;
/// every fifth order is cancelled. At least
/// `products + orders * 4` commands, `concurrency` at a time. `sent`
/// counts commands as they complete.
pub async fn shop_load(
    base: &str,
    sku_prefix: &str,
    products: usize,
    orders: usize,
    concurrency: usize,
    sent: Arc<AtomicU64>,
) -> LoadReport {
    let http = crate::auth::client(crate::auth::Who::Ops).await;
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let post = |path: String, body: Value| {
        let (http, failures, sent) = (http.clone(), failures.clone(), sent.clone());
        let url = format!("{base}{path}");
        async move {
            let answer = http.post(&url).json(&body).send().await;
            sent.fetch_add(1, Ordering::Relaxed);
            match answer {
                Ok(response) if response.status().is_success() => {
                    response.json::<Value>().await.ok()
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    failures
                        .lock()
                        .expect("lock")
                        .push(format!("POST {path}: {status} {text}"));
                    None
                }
                Err(error) => {
                    failures
                        .lock()
                        .expect("lock")
                        .push(format!("POST {path}: {error}"));
                    None
                }
            }
        }
    };
    let catalogue: Vec<Value> = futures::stream::iter(0..products)
        .map(|i| {
            post(
                "/products".to_owned(),
                json!({"sku": format!("{sku_prefix}-{i}"), "name": format!("Product {i}"),
                       "description": "load", "initial_stock": 1_000_000,
                       "price": {"amount_minor": 100 + i * 7, "currency": "EUR"}}),
            )
        })
        .buffer_unordered(concurrency)
        .filter_map(|answer| async move { answer.map(|a| a["id"].clone()) })
        .collect()
        .await;
    let catalogue = Arc::new(catalogue);
    // No product registered (every registration failed): no order to place.
    let orders = if catalogue.is_empty() { 0 } else { orders };
    futures::stream::iter(0..orders)
        .map(|i| {
            let catalogue = catalogue.clone();
            async move {
                let basket = post("/baskets".into(), json!({"customer_id": Uuid::now_v7()}))
                    .await?["id"]
                    .as_str()?
                    .to_owned();
                for k in 0..2 {
                    let product = &catalogue[(i * 3 + k * 5) % catalogue.len()];
                    post(
                        format!("/baskets/{basket}/items"),
                        json!({"product_id": product, "quantity": 1 + k}),
                    )
                    .await?;
                }
                let order = post(
                    format!("/baskets/{basket}/checkout"),
                    json!({"shipping_address": {"recipient": "Ada", "line1": "1 Road",
                           "city": "London", "postal_code": "N1", "country": "GB"}}),
                )
                .await?;
                let order = order["order_id"].as_str()?.to_owned();
                if i % 5 == 0 {
                    post(format!("/orders/{order}/cancel"), json!({"reason": "load"})).await?;
                }
                Some(())
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let failures = std::mem::take(&mut *failures.lock().expect("lock"));
    LoadReport {
        ok: sent.load(Ordering::Relaxed) - failures.len() as u64,
        failures,
    }
}

/// Waits until `eshop projections status` says every projection has taken
/// every event of the store.
pub async fn caught_up(env: &EshopEnv, deadline: Duration) {
    let last = std::sync::Mutex::new(String::new());
    let started = std::time::Instant::now();
    let done = tokio::time::timeout(
        deadline,
        eventually(deadline * 2, "every projection to catch up", || async {
            // A status that cannot be read now (the broker or the database
            // busy) is asked again; the deadline bounds it.
            let (out, json) = match (
                env.try_run(&["projections", "status"]),
                env.try_run(&["projections", "status", "--json"]),
            ) {
                (Ok(out), Ok(json)) => (out, json),
                (Err(error), _) | (_, Err(error)) => {
                    *last.lock().expect("lock") = error;
                    return None;
                }
            };
            *last.lock().expect("lock") = out;
            let statuses: Value = serde_json::from_str(&json).ok()?;
            statuses
                .as_array()?
                .iter()
                .all(|s| s["events_behind"] == 0)
                .then_some(())
        }),
    )
    .await;
    assert!(
        done.is_ok(),
        "gave up after {:?} waiting for every projection to catch up; last status:\n{}",
        started.elapsed(),
        last.lock().expect("lock")
    );
}

/// `eshop projections verify --all`, which must find every view equal to
/// its history.
pub async fn assert_verified(env: &EshopEnv) {
    let verify = {
        let env = env.clone();
        tokio::task::spawn_blocking(move || env.output(&["projections", "verify", "--all"]))
            .await
            .expect("verify ran")
    };
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && report.contains("every view equals its history"),
        "verify found differences:\n{report}\n{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// The JSON report of `eshop projections verify <which> --json`, which
/// must exit 1: it found differences.
pub fn differences_found(env: &EshopEnv, which: &str) -> Value {
    let output = env.output(&["projections", "verify", which, "--json"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "verify exits 1 on differences"
    );
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}

/// Every view's rows (ordered, without bookkeeping columns) and every
/// search document with its version.
#[derive(Debug, PartialEq)]
pub struct Projected {
    pub views: BTreeMap<String, Vec<Value>>,
    pub products: BTreeMap<String, (i64, Value)>,
    pub orders: BTreeMap<String, (i64, Value)>,
}

impl Projected {
    pub async fn read(db: &TestDb, search: &TestSearch) -> Self {
        let mut views = BTreeMap::new();
        for table in [
            "product_catalog",
            "basket_view",
            "order_view",
            "sales_daily",
            "sales_daily_orders",
        ] {
            let rows: Value = sqlx::query_scalar(&format!(
                "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]') FROM {table} t"
            ))
            .fetch_one(&db.pool)
            .await
            .expect("view rows");
            views.insert(
                table.to_owned(),
                rows.as_array().cloned().unwrap_or_default(),
            );
        }
        Self {
            views,
            products: search.documents("products").await,
            orders: search.documents("orders").await,
        }
    }

    /// Fails the test with the first difference, by table and row.
    pub fn assert_same(&self, scratch: &Self) {
        for (table, rows) in &self.views {
            let other = &scratch.views[table];
            assert_eq!(rows.len(), other.len(), "{table}: row counts differ");
            for (row, expected) in rows.iter().zip(other) {
                assert_eq!(
                    row, expected,
                    "{table}: a row differs from the from-scratch build"
                );
            }
        }
        assert_eq!(
            self.products.len(),
            scratch.products.len(),
            "product documents"
        );
        assert_eq!(self.products, scratch.products, "product documents differ");
        assert_eq!(self.orders.len(), scratch.orders.len(), "order documents");
        assert_eq!(self.orders, scratch.orders, "order documents differ");
    }
}

/// Builds every projection from scratch over a copy of `db`'s events: a new
/// database, new topics, a new index prefix, a fresh relay and projector
/// process; returns what they built.
pub async fn scratch_build(db: &TestDb) -> Projected {
    let scratch = TestDb::new().await;
    copy_events(db, &scratch).await;
    let broker = TestBroker::new();
    let search = TestSearch::new(&broker.prefix).await;
    let env = EshopEnv::new(&scratch, &broker, &search, "scratch");
    // With no broker, no relay: the projector reads the event store.
    let mut relay = (broker.bus != TestBus::None).then(|| env.spawn(&["relay"]));
    let mut projector = env.spawn(&["project"]);
    eprintln!(
        "from-scratch build: relay log {:?}, projector log {}",
        relay.as_ref().map(|r| r.log.display().to_string()),
        projector.log.display()
    );
    caught_up(&env, Duration::from_secs(300)).await;
    assert!(
        relay.as_mut().is_none_or(EshopProcess::running) && projector.running(),
        "a scratch process exited"
    );
    // Events the live system took cannot be poison to a fresh one: a dead
    // letter here is a bug, not data.
    let statuses: Value =
        serde_json::from_str(&env.run(&["projections", "status", "--json"])).expect("status json");
    for status in statuses.as_array().expect("statuses") {
        assert_eq!(
            status["dead_letters"],
            0,
            "the from-scratch build dead-lettered events of {}; see {}",
            status["projection"],
            projector.log.display()
        );
    }
    let built = Projected::read(&scratch, &search).await;
    if let Some(relay) = &mut relay {
        relay.kill();
    }
    projector.kill();
    built
}

/// Copies the event store, positions and transaction ids included.
pub async fn copy_events(from: &TestDb, to: &TestDb) {
    let mut source = from.pool.acquire().await.expect("connection");
    let mut out = source
        .copy_out_raw("COPY events TO STDOUT")
        .await
        .expect("copy out");
    let mut target = to.pool.acquire().await.expect("connection");
    let mut sink = target
        .copy_in_raw("COPY events FROM STDIN")
        .await
        .expect("copy in");
    while let Some(chunk) = out.next().await {
        sink.send(chunk.expect("chunk")).await.expect("send");
    }
    sink.finish().await.expect("copy done");
}

/// Kills and restarts `process` (as `eshop <args>`) at random moments until
/// `done` is set; returns how many times it did.
pub async fn chaos(
    env: &EshopEnv,
    processes: &mut [(EshopProcess, Vec<&str>)],
    done: &std::sync::atomic::AtomicBool,
) -> u32 {
    use rand::Rng;
    let mut kills = 0;
    while !done.load(Ordering::Relaxed) {
        // A random moment: this is the fault's timing, not synchronisation.
        let pause = rand::rng().random_range(150..900);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let victim = rand::rng().random_range(0..processes.len());
        let (process, args) = &mut processes[victim];
        process.kill();
        *process = env.spawn(args);
        kills += 1;
    }
    kills
}
