//! Replay, through real processes: `eshop projections rebuild` (from
//! scratch, under load, killed halfway, point-in-time snapshots) and
//! `eshop projections verify`, on histories made through the REST API and
//! projected by the live relay and projectors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::Utc;
use eshop_tests::fault::{assert_verified, caught_up, differences_found};
use eshop_tests::history::{Served, random_history};
use eshop_tests::{EshopEnv, ProcessStack, Rounds, TestDb, eventually};
use serde_json::{Value, json};
use uuid::Uuid;

/// The PostgreSQL views' tables, and each one's key.
const TABLES: &[(&str, &str)] = &[
    ("product_catalog", "product_id"),
    ("basket_view", "basket_id"),
    ("order_view", "order_id"),
    ("sales_daily", "day, product_id, currency"),
    ("sales_daily_orders", "order_id"),
];

/// Every row of every view, by table, in key order; and each view
/// projection's progress.
async fn views(db: &TestDb) -> BTreeMap<String, Vec<Value>> {
    let mut views = BTreeMap::new();
    for (table, key) in TABLES {
        let rows: Value = sqlx::query_scalar(&format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY {key}), '[]') FROM {table} t"
        ))
        .fetch_one(&db.pool)
        .await
        .expect("view rows");
        views.insert(
            (*table).to_owned(),
            rows.as_array().cloned().unwrap_or_default(),
        );
    }
    let progress: Value = sqlx::query_scalar(
        "SELECT coalesce(jsonb_agg(to_jsonb(p) ORDER BY projection, aggregate_id), '[]') \
         FROM projection_progress p WHERE projection <> 'search'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("progress rows");
    views.insert(
        "projection_progress".to_owned(),
        progress.as_array().cloned().unwrap_or_default(),
    );
    views
}

/// Fails with the first row that differs, by table.
fn assert_same_views(
    actual: &BTreeMap<String, Vec<Value>>,
    expected: &BTreeMap<String, Vec<Value>>,
) {
    for (table, rows) in expected {
        let other = &actual[table];
        for (row, expected) in other.iter().zip(rows) {
            assert_eq!(row, expected, "{table}: a row differs");
        }
        assert_eq!(other.len(), rows.len(), "{table}: row counts differ");
    }
}

async fn schema_exists(db: &TestDb, name: &str) -> bool {
    sqlx::query_scalar("SELECT to_regnamespace($1) IS NOT NULL")
        .bind(name)
        .fetch_one(&db.pool)
        .await
        .expect("schema lookup")
}

/// `eshop <args>` on a blocking thread, so the test's runtime goes on;
/// the future borrows neither, so that a task of its own can run it.
fn run(env: &EshopEnv, args: &[&str]) -> impl Future<Output = String> + Send + use<> {
    let env = env.clone();
    let args: Vec<String> = args.iter().map(ToString::to_string).collect();
    async move {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            env.run(&args)
        })
        .await
        .expect("eshop ran")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_from_scratch_equals_the_incremental_projection_on_a_random_history() {
    let stack = ProcessStack::new("rebuild-equal").await;
    let (mut serve, base) = stack.serve(&["serve"]).await;
    // A product registered before the schema changed: stored as version
    // 1.0 (price in cents, stock), read everywhere upcast to the current one.
    let old_product = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Product', $1, 1, 'ProductRegistered', '1.0', $2, '{}')",
    )
    .bind(old_product.to_string())
    .bind(json!({"ProductRegistered": {"sku": "OLD-1", "name": "Old mug",
        "description": "from 2025", "price_cents": 1299, "currency": "EUR", "stock": 7}}))
    .execute(&stack.db.pool)
    .await
    .expect("a stored version 1.0 event");
    let seed: u64 = rand::random();
    eprintln!("history seed: {seed}");
    let history = random_history(&base, &stack.db.pool, seed, 30, 8, 60).await;
    history.assert_ok();
    caught_up(&stack.env, Duration::from_secs(300)).await;
    let events = stack.db.event_count().await;
    assert!(events > 2_000, "a large history: {events} events");
    for kind in [
        "ProductRegistered",
        "PriceChanged",
        "StockAdjusted",
        "ProductDiscontinued",
        "StockReserved",
        "StockReleased",
        "ReservedStockShipped",
        "BasketOpened",
        "ItemAdded",
        "ItemQuantityChanged",
        "ItemRemoved",
        "BasketCleared",
        "BasketCheckedOut",
        "OrderPlaced",
        "OrderPaid",
        "OrderShipped",
        "OrderDelivered",
        "OrderCancelled",
    ] {
        let n = stack
            .db
            .count(&format!(
                "SELECT count(*) FROM events WHERE event_type = '{kind}'"
            ))
            .await;
        assert!(n > 0, "the history has no {kind} (seed {seed})");
    }
    let incremental = views(&stack.db).await;

    assert_verified(&stack.env).await;
    let out = run(&stack.env, &["projections", "rebuild", "--all"]).await;
    for name in [
        "product_catalog",
        "basket_view",
        "order_view",
        "sales_daily",
    ] {
        assert!(out.contains(&format!("{name}: rebuilt from")), "{out}");
    }
    assert_same_views(&views(&stack.db).await, &incremental);
    assert!(!schema_exists(&stack.db, "eshop_rebuild_order_view").await);
    let upcast: (String, i64, String, i64) = sqlx::query_as(
        "SELECT sku, price_minor, currency, on_hand FROM product_catalog WHERE product_id = $1",
    )
    .bind(old_product)
    .fetch_one(&stack.db.pool)
    .await
    .expect("the version 1.0 product, rebuilt");
    assert_eq!(upcast, ("OLD-1".to_owned(), 1299, "EUR".to_owned(), 7));

    // The live projector goes on over the swapped-in tables.
    let basket = eshop_tests::auth::client(eshop_tests::auth::Who::Ops)
        .await
        .post(format!("{base}/baskets"))
        .json(&json!({"customer_id": Uuid::now_v7()}))
        .send()
        .await
        .expect("open a basket");
    assert!(basket.status().is_success());
    caught_up(&stack.env, Duration::from_secs(120)).await;
    assert_eq!(
        stack.db.count("SELECT count(*) FROM basket_view").await,
        stack
            .db
            .count("SELECT count(*) FROM events WHERE event_type = 'BasketOpened'")
            .await
    );
    assert_verified(&stack.env).await;
    assert!(serve.running(), "serve exited; see {}", serve.log.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_while_commands_flow_loses_nothing_and_queries_keep_answering() {
    let Served {
        stack,
        mut serve,
        base,
        seed,
    } = Served::with_history("rebuild-live", rand::random(), (20, 4, 20)).await;

    let mut rounds = Rounds::default();
    // A reader of the views through the whole run: it must always get an
    // answer, and orders never disappear.
    let (pool, last) = (stack.db.pool.clone(), Arc::new(AtomicI64::new(0)));
    rounds.spawn(0, move || {
        let (pool, last) = (pool.clone(), Arc::clone(&last));
        async move {
            let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM order_view")
                .fetch_one(&pool)
                .await
                .expect("order_view answers during the rebuild");
            let last = last.swap(orders, Ordering::Relaxed);
            assert!(
                orders >= last,
                "order_view went from {last} to {orders} rows"
            );
            // A query every 5 ms: a steady reader, not a second load.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let env = stack.env.clone();
    rounds.spawn(2, move || run(&env, &["projections", "rebuild", "--all"]));
    let (history, counts) = rounds
        .beside(random_history(
            &base,
            &stack.db.pool,
            seed.wrapping_add(1),
            20,
            6,
            40,
        ))
        .await;
    history.assert_ok();
    eprintln!(
        "{} rebuilds, {} reads during the load",
        counts[1], counts[0]
    );

    caught_up(&stack.env, Duration::from_secs(300)).await;
    assert_eq!(
        stack.db.count("SELECT count(*) FROM order_view").await,
        stack
            .db
            .count("SELECT count(*) FROM events WHERE event_type = 'OrderPlaced'")
            .await,
        "one order row per OrderPlaced"
    );
    assert_verified(&stack.env).await;
    assert!(serve.running(), "serve exited; see {}", serve.log.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_rebuild_leaves_the_live_view_serving_and_a_rerun_finishes() {
    let Served {
        stack, mut serve, ..
    } = Served::with_history("rebuild-kill", rand::random(), (20, 4, 30)).await;
    caught_up(&stack.env, Duration::from_secs(300)).await;
    let before = views(&stack.db).await;

    // Killed while it waits to swap: a live transaction of the projection
    // holds its lock (here, the test).
    let mut holder = stack.db.pool.acquire().await.expect("connection");
    sqlx::query("SELECT pg_advisory_lock_shared(hashtext('eshop.projection.order_view'))")
        .execute(&mut *holder)
        .await
        .expect("lock");
    let mut rebuild = stack.env.spawn(&["projections", "rebuild", "order_view"]);
    // The swap's exclusive request, in this test's database: pg_locks
    // shows every database's locks, and other tests' projectors wait too.
    eventually(
        Duration::from_secs(120),
        "the rebuild to wait at the swap",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
             WHERE l.locktype = 'advisory' AND NOT l.granted AND l.mode = 'ExclusiveLock' \
               AND a.application_name = 'eshop-projector' AND a.datname = current_database()",
            )
            .fetch_one(&stack.db.pool)
            .await
            .ok()?;
            (waiting > 0).then_some(())
        },
    )
    .await;
    rebuild.kill();
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *holder)
        .await
        .expect("unlock");
    drop(holder);
    assert!(
        schema_exists(&stack.db, "eshop_rebuild_order_view").await,
        "the kill came before the swap"
    );
    assert_same_views(&views(&stack.db).await, &before);

    // Killed at a random moment of a rebuild of everything.
    let mut rebuild = stack.env.spawn(&["projections", "rebuild", "--all"]);
    eventually(Duration::from_secs(60), "the rebuild to start", || async {
        let started: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname LIKE 'eshop\\_rebuild\\_%' \
             AND nspname <> 'eshop_rebuild_order_view')",
        )
        .fetch_one(&stack.db.pool)
        .await
        .ok()?;
        started.then_some(())
    })
    .await;
    let pause = rand::random_range(0..200);
    tokio::time::sleep(Duration::from_millis(pause)).await;
    rebuild.kill();
    let live = views(&stack.db).await;
    assert_same_views(&live, &before);

    let out = run(&stack.env, &["projections", "rebuild", "--all"]).await;
    assert!(out.contains("order_view: rebuilt from"), "{out}");
    assert_same_views(&views(&stack.db).await, &before);
    let leftovers: i64 = stack
        .db
        .count("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'eshop\\_%'")
        .await;
    assert_eq!(leftovers, 0, "the rerun leaves no shadow or retired tables");
    assert_verified(&stack.env).await;
    assert!(serve.running(), "serve exited; see {}", serve.log.display());
}

/// The old tables a rebuild swapped out go in the same transaction as the
/// swap: a rebuild killed at any moment leaves none behind, and retired
/// tables kept on purpose (`--keep`) or left by an older version, even
/// from the same second, never stop the next rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_beside_retired_tables_of_the_same_second_swaps_and_leaves_none_of_its_own() {
    let Served {
        stack, mut serve, ..
    } = Served::with_history("rebuild-retired", 11, (5, 2, 6)).await;
    caught_up(&stack.env, Duration::from_secs(120)).await;
    let before = views(&stack.db).await;

    // Retired schemas named for every second of the next half minute, as
    // a rebuild killed after its swap used to leave them.
    let now = Utc::now();
    let mut planted = Vec::new();
    for second in 0..30 {
        let at = now + chrono::Duration::seconds(second);
        let name = format!(
            "eshop_retired_product_catalog_{}",
            at.format("%Y%m%d%H%M%S")
        );
        sqlx::raw_sql(&format!("CREATE SCHEMA {name}"))
            .execute(&stack.db.pool)
            .await
            .expect("schema");
        planted.push(name);
    }
    let out = stack
        .env
        .try_run(&["projections", "rebuild", "product_catalog"])
        .unwrap_or_else(|error| panic!("the rebuild failed beside retired schemas: {error}"));
    assert!(out.contains("product_catalog: rebuilt from"), "{out}");
    assert_same_views(&views(&stack.db).await, &before);
    let retired: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'eshop\\_retired\\_%' ORDER BY 1",
    )
    .fetch_all(&stack.db.pool)
    .await
    .expect("schemas");
    assert_eq!(
        retired, planted,
        "the rebuild left retired tables of its own"
    );

    // Kept on purpose, the old tables stay, under a name of their own.
    let out = run(
        &stack.env,
        &["projections", "rebuild", "--keep", "product_catalog"],
    )
    .await;
    assert!(
        out.contains("the old tables are in schema eshop_retired_product_catalog_"),
        "{out}"
    );
    let kept: i64 = stack
        .db
        .count("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'eshop\\_retired\\_%'")
        .await;
    assert_eq!(kept, 31);
    assert!(serve.running(), "serve exited; see {}", serve.log.display());
}

/// Places an order for `quantity` of `product`; returns its id.
async fn place(http: &reqwest::Client, base: &str, product: &str, quantity: u32) -> String {
    let basket: Value = http
        .post(format!("{base}/baskets"))
        .json(&json!({"customer_id": Uuid::now_v7()}))
        .send()
        .await
        .expect("open")
        .json()
        .await
        .expect("basket");
    let basket = basket["id"].as_str().expect("basket id");
    let added = http
        .post(format!("{base}/baskets/{basket}/items"))
        .json(&json!({"product_id": product, "quantity": quantity}))
        .send()
        .await
        .expect("add");
    assert!(added.status().is_success());
    let order: Value = http
        .post(format!("{base}/baskets/{basket}/checkout"))
        .json(
            &json!({"shipping_address": {"recipient": "Ada", "line1": "1 Road",
               "city": "London", "postal_code": "N1", "country": "GB"}}),
        )
        .send()
        .await
        .expect("checkout")
        .json()
        .await
        .expect("order");
    order["order_id"].as_str().expect("order id").to_owned()
}

async fn totals(db: &TestDb, table: &str) -> (i64, i64, i64) {
    sqlx::query_as(&format!(
        "SELECT coalesce(sum(units), 0)::bigint, coalesce(sum(revenue_minor), 0)::bigint, \
         coalesce(sum(orders), 0)::bigint FROM {table}"
    ))
    .fetch_one(&db.pool)
    .await
    .expect("totals")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn point_in_time_snapshots_match_a_hand_computed_expectation() {
    let stack = ProcessStack::new("rebuild-asof").await;
    let (mut serve, base) = stack.serve(&["serve"]).await;
    let http = eshop_tests::auth::client(eshop_tests::auth::Who::Ops).await;
    let product: Value = http
        .post(format!("{base}/products"))
        .json(
            &json!({"sku": "ASOF-1", "name": "Lamp", "description": "A lamp",
            "initial_stock": 100, "price": {"amount_minor": 250, "currency": "EUR"}}),
        )
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("product");
    let product = product["id"].as_str().expect("product id").to_owned();
    let a = place(&http, &base, &product, 2).await;
    let b = place(&http, &base, &product, 3).await;
    let between = Utc::now();
    let c = place(&http, &base, &product, 1).await;
    let cancelled = http
        .post(format!("{base}/orders/{a}/cancel"))
        .json(&json!({"reason": "changed my mind"}))
        .send()
        .await
        .expect("cancel");
    assert!(cancelled.status().is_success());
    caught_up(&stack.env, Duration::from_secs(120)).await;

    // By hand: before `between`, orders A (2 × 2.50) and B (3 × 2.50) were
    // placed and none cancelled; now C (1) is placed and A cancelled.
    assert_eq!(totals(&stack.db, "sales_daily").await, (4, 1000, 2));
    let at = between.to_rfc3339();
    let out = run(
        &stack.env,
        &[
            "projections",
            "rebuild",
            "sales_daily",
            "--as-of",
            &at,
            "--snapshot-name",
            "sales_daily_then",
        ],
    )
    .await;
    assert!(out.contains("sales_daily_then"), "{out}");
    assert_eq!(totals(&stack.db, "sales_daily_then").await, (5, 1250, 2));
    assert_eq!(
        totals(&stack.db, "sales_daily").await,
        (4, 1000, 2),
        "the live view is untouched"
    );
    assert_eq!(
        stack
            .db
            .count("SELECT count(*) FROM pg_class WHERE relname = 'sales_daily_orders_then'")
            .await,
        0,
        "only the analysts' table is kept"
    );

    // The orders as they stood: A placed (not yet cancelled), B placed, no C.
    run(
        &stack.env,
        &[
            "projections",
            "rebuild",
            "order_view",
            "--as-of",
            &at,
            "--snapshot-name",
            "orders_then",
        ],
    )
    .await;
    let then: Vec<(String, String)> =
        sqlx::query_as("SELECT order_id::text, status FROM orders_then ORDER BY placed_at")
            .fetch_all(&stack.db.pool)
            .await
            .expect("snapshot rows");
    assert_eq!(
        then,
        vec![
            (a.clone(), "placed".to_owned()),
            (b.clone(), "placed".to_owned())
        ]
    );
    let c_now: String =
        sqlx::query_scalar("SELECT status FROM order_view WHERE order_id = $1::uuid")
            .bind(&c)
            .fetch_one(&stack.db.pool)
            .await
            .expect("live order");
    assert_eq!(c_now, "placed");

    // Up to B's OrderPlaced, by global position, with the default name.
    let position: i64 = sqlx::query_scalar(
        "SELECT global_position FROM events WHERE aggregate_id = $1 AND event_type = 'OrderPlaced'",
    )
    .bind(&b)
    .fetch_one(&stack.db.pool)
    .await
    .expect("position");
    let out = run(
        &stack.env,
        &[
            "projections",
            "rebuild",
            "sales_daily",
            "--to-position",
            &position.to_string(),
        ],
    )
    .await;
    let table = format!("sales_daily_pos_{position}");
    assert!(out.contains(&table), "{out}");
    assert_eq!(totals(&stack.db, &table).await, (5, 1250, 2));

    // A name taken already is refused, and nothing is touched.
    let refused = stack.env.output(&[
        "projections",
        "rebuild",
        "sales_daily",
        "--to-position",
        "1",
        "--snapshot-name",
        "sales_daily",
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("exists already"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(totals(&stack.db, "sales_daily").await, (4, 1000, 2));

    // A dry run counts what each projection would read.
    let out = run(
        &stack.env,
        &["projections", "rebuild", "--all", "--dry-run"],
    )
    .await;
    let orders = stack
        .db
        .count("SELECT count(*) FROM events WHERE aggregate_type = 'Order'")
        .await;
    assert!(
        out.contains(&format!("order_view       would read {orders} events")),
        "{out}"
    );
    let out = run(
        &stack.env,
        &[
            "projections",
            "rebuild",
            "sales_daily",
            "--dry-run",
            "--to-position",
            &position.to_string(),
        ],
    )
    .await;
    let upto = stack.db.count(&format!("SELECT count(*) FROM events WHERE aggregate_type = 'Order' AND global_position <= {position}"),
    )
    .await;
    assert!(out.contains(&format!("would read {upto} events")), "{out}");
    assert!(serve.running(), "serve exited; see {}", serve.log.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_names_exactly_the_rows_corrupted_behind_its_back() {
    let Served {
        stack, mut serve, ..
    } = Served::with_history("verify", rand::random(), (10, 3, 15)).await;
    caught_up(&stack.env, Duration::from_secs(300)).await;
    assert_verified(&stack.env).await;

    let order: String = sqlx::query_scalar(
        "SELECT order_id::text FROM order_view WHERE status <> 'delivered' LIMIT 1",
    )
    .fetch_one(&stack.db.pool)
    .await
    .expect("an order");
    let product: String =
        sqlx::query_scalar("SELECT product_id::text FROM product_catalog LIMIT 1")
            .fetch_one(&stack.db.pool)
            .await
            .expect("a product");
    let (day, sold): (String, String) =
        sqlx::query_as("SELECT day::text, product_id::text FROM sales_daily LIMIT 1")
            .fetch_one(&stack.db.pool)
            .await
            .expect("a sales row");
    let stray = Uuid::now_v7();
    sqlx::raw_sql(&format!(
        "UPDATE order_view SET status = 'delivered' WHERE order_id = '{order}'; \
         DELETE FROM product_catalog WHERE product_id = '{product}'; \
         INSERT INTO basket_view (basket_id, customer_id, status, lines, total_minor, item_count, opened_at, updated_at, version) \
           VALUES ('{stray}', '{stray}', 'open', '[]', 0, 0, now(), now(), 1); \
         UPDATE sales_daily SET units = units + 1 WHERE day = '{day}' AND product_id = '{sold}'"
    ))
    .execute(&stack.db.pool)
    .await
    .expect("corrupt the views");

    let report = differences_found(&stack.env, "--all");
    let mut found: Vec<(String, String, String, Value)> = Vec::new();
    for table in report["tables"].as_array().expect("tables") {
        for difference in table["differences"].as_array().expect("differences") {
            found.push((
                table["table"].as_str().unwrap_or_default().to_owned(),
                difference["key"].as_str().unwrap_or_default().to_owned(),
                difference["kind"].as_str().unwrap_or_default().to_owned(),
                difference["columns"].clone(),
            ));
        }
        let differs = !table["differences"]
            .as_array()
            .expect("differences")
            .is_empty();
        assert_eq!(
            differs,
            table["view_hash"] != table["history_hash"],
            "the hash tells a table with differences: {table}"
        );
    }
    found.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    let mut expected = vec![
        (
            "basket_view".to_owned(),
            format!("basket_id={stray}"),
            "not in the history".to_owned(),
            json!([]),
        ),
        (
            "order_view".to_owned(),
            format!("order_id={order}"),
            "differs".to_owned(),
            json!(["status"]),
        ),
        (
            "product_catalog".to_owned(),
            format!("product_id={product}"),
            "missing from the view".to_owned(),
            json!([]),
        ),
    ];
    let sales: Vec<&(String, String, String, Value)> =
        found.iter().filter(|f| f.0 == "sales_daily").collect();
    assert!(
        sales.len() == 1
            && sales[0]
                .1
                .starts_with(&format!("day={day} product_id={sold} currency="))
            && sales[0].2 == "differs"
            && sales[0].3 == json!(["units"]),
        "the sales row: {sales:?}"
    );
    found.retain(|f| f.0 != "sales_daily");
    expected.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    assert_eq!(found, expected);
    assert!(serve.running(), "serve exited; see {}", serve.log.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_commands_refuse_bad_input_clearly() {
    let stack = ProcessStack::new("replay-input").await;
    for (args, message) in [
        (vec!["projections", "rebuild"], "name the projections"),
        (
            vec!["projections", "rebuild", "orders"],
            "unknown projection 'orders'",
        ),
        (
            vec!["projections", "rebuild", "order_view", "--all"],
            "not both",
        ),
        (
            vec!["projections", "rebuild", "search", "--to-position", "5"],
            "the search index has none",
        ),
        (
            vec![
                "projections",
                "rebuild",
                "order_view",
                "--as-of",
                "yesterday",
            ],
            "invalid value",
        ),
        (
            vec![
                "projections",
                "rebuild",
                "order_view",
                "--snapshot-name",
                "x",
            ],
            "required",
        ),
        (
            vec![
                "projections",
                "rebuild",
                "order_view",
                "--to-position",
                "5",
                "--snapshot-name",
                "Bad-Name",
            ],
            "not a valid table name",
        ),
        (
            vec!["projections", "verify", "nope"],
            "unknown projection 'nope'",
        ),
    ] {
        let output = stack.env.output(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
