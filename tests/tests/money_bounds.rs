//! Money stays within what every view can hold (issue 11, defect 6): the
//! command API refuses prices beyond the domain's bound and says so in its
//! OpenAPI document; orders at the bounds are placed; and stored events
//! from before the bound (beyond it) are dead-lettered by the live views
//! and fail a rebuild or a verify, never stored wrapped or saturated.

use std::time::Duration;

use eshop_tests::{TestApp, TestBroker, TestDb, TestSearch, eventually};
use eshop_tests::{start_projectors, start_relay};
use event_store::DatabaseConfig;
use projections::replay::{RebuildOptions, Selection};
use projections::search::SearchConfig;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// The most a unit price may be, in minor units.
const MAX_PRICE: i64 = 1_000_000_000_000;
/// 2^62 minor units: two of them overflow a bigint.
const HUGE: i64 = 4_611_686_018_427_387_904;

fn product_body(sku: &str, amount_minor: i64) -> Value {
    json!({
        "sku": sku,
        "name": "Gold bar",
        "price": {"amount_minor": amount_minor, "currency": "EUR"},
        "initial_stock": 10,
    })
}

/// The field names of a validation problem's errors.
fn fields(body: &Value) -> Vec<&str> {
    body["errors"]
        .as_array()
        .map(|errors| errors.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn registering_a_price_beyond_the_maximum_is_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let response = app.post("/products", product_body("GOLD-1", HUGE)).await;
    response.assert_problem(422, "validation-failed");
    assert_eq!(fields(&response.body), ["price.amount_minor"]);

    let response = app
        .post("/products", product_body("GOLD-2", MAX_PRICE + 1))
        .await;
    response.assert_problem(422, "validation-failed");
    assert_eq!(fields(&response.body), ["price.amount_minor"]);
    assert_eq!(app.event_count().await, 0, "nothing was appended");

    let at_bound = app
        .post("/products", product_body("GOLD-3", MAX_PRICE))
        .await;
    assert_eq!(at_bound.status, 201, "{}", at_bound.body);
}

#[tokio::test]
async fn changing_a_price_beyond_the_maximum_is_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let product = app.register_product("GOLD", 100, 1).await;
    let response = app
        .post(
            &format!("/products/{product}/price"),
            json!({"price": {"amount_minor": HUGE, "currency": "EUR"}}),
        )
        .await;
    response.assert_problem(422, "validation-failed");
    assert_eq!(fields(&response.body), ["price.amount_minor"]);
    assert_eq!(app.event_count().await, 1, "only the registration");
}

#[tokio::test]
async fn an_order_of_the_most_expensive_product_in_the_largest_quantity_is_placed() {
    let app = TestApp::spawn().await;
    let product = app.register_product("GOLD", MAX_PRICE, 99).await;
    let basket = app.open_basket().await;
    assert_eq!(app.add_item(basket, product, 99).await.status, 200);
    let checkout = app.checkout(basket).await;
    assert_eq!(checkout.status, 201, "checkout: {}", checkout.body);
    let pay = app
        .post(
            &format!("/orders/{}/pay", checkout.id()),
            json!({"payment_reference": "psp-1",
                   "amount": {"amount_minor": MAX_PRICE * 99, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(pay.status, 200, "{}", pay.body);
}

/// Follows a local `$ref` of the OpenAPI document.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let target = schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/"))
        .map(|path| path.split('/').fold(doc, |node, key| &node[key]));
    target.unwrap_or(schema)
}

/// The schema of a request body's property.
fn body_property<'a>(doc: &'a Value, path: &str, property: &str) -> &'a Value {
    let body = &doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"];
    resolve(doc, &resolve(doc, body)["properties"][property])
}

#[tokio::test]
async fn the_openapi_document_states_the_bounds_of_prices_amounts_and_quantities() {
    let app = TestApp::spawn().await;
    let doc = app.send(Method::GET, "/openapi.json", None, &[]).await.body;
    for path in ["/products", "/products/{id}/price"] {
        let price = body_property(&doc, path, "price");
        assert_eq!(
            price["properties"]["amount_minor"]["maximum"],
            json!(MAX_PRICE),
            "{path}: {price}"
        );
    }
    // An order total: 50 lines of 99 units at the highest price.
    let amount = body_property(&doc, "/orders/{id}/pay", "amount");
    assert_eq!(
        amount["properties"]["amount_minor"]["maximum"],
        json!(MAX_PRICE * 99 * 50),
        "{amount}"
    );
    let quantity = body_property(&doc, "/baskets/{id}/items", "quantity");
    assert_eq!(quantity["maximum"], json!(99), "{quantity}");
}

/// Appends a stored event as an older eshop (or another writer) left it.
async fn store(db: &TestDb, aggregate: (&str, Uuid), sequence: i64, payload: Value) {
    let event_type = payload
        .as_object()
        .and_then(|o| o.keys().next())
        .cloned()
        .unwrap_or_default();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ($1, $2, $3, $4, '1.0', $5, '{}')",
    )
    .bind(aggregate.0)
    .bind(aggregate.1.to_string())
    .bind(sequence)
    .bind(event_type)
    .bind(payload)
    .execute(&db.pool)
    .await
    .expect("a stored event");
}

fn eur(amount_minor: i64) -> Value {
    json!({"amount_minor": amount_minor, "currency": "EUR"})
}

/// An order of one line of `quantity` units of `product` at `price`, as
/// stored before prices were bounded.
async fn store_order(db: &TestDb, product: Uuid, price: i64, quantity: u32) -> Uuid {
    let order = Uuid::now_v7();
    let line = json!({"product_id": product, "sku": "GOLD", "name": "Gold bar",
                      "unit_price": eur(price), "quantity": quantity});
    let total = price.checked_mul(i64::from(quantity)).unwrap_or(i64::MAX);
    store(
        db,
        ("Order", order),
        1,
        json!({"OrderPlaced": {
            "customer_id": Uuid::now_v7(), "basket_id": Uuid::now_v7(),
            "lines": [line], "total": eur(total),
            "shipping_address": TestApp::address_json()["shipping_address"],
        }}),
    )
    .await;
    order
}

async fn dead_letters(db: &TestDb, projection: &str) -> i64 {
    sqlx::query_scalar("SELECT dead_letters FROM projection_status WHERE projection = $1")
        .bind(projection)
        .fetch_optional(&db.pool)
        .await
        .expect("projection status")
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_amounts_beyond_a_bigint_are_dead_lettered_by_the_views_never_wrapped() {
    let app = TestApp::spawn().await;
    let broker = TestBroker::new();
    let search = TestSearch::new(&broker.prefix).await;
    // The product, sold twice: each order fits, their sum does not.
    let gold = Uuid::now_v7();
    let orders = [
        store_order(&app.db, gold, HUGE, 1).await,
        store_order(&app.db, gold, HUGE, 1).await,
    ];
    // A basket line whose total alone exceeds a bigint, as the basket
    // accepted it before prices were bounded.
    let basket = Uuid::now_v7();
    store(
        &app.db,
        ("Basket", basket),
        1,
        json!({"BasketOpened": {"customer_id": Uuid::now_v7()}}),
    )
    .await;
    store(
        &app.db,
        ("Basket", basket),
        2,
        json!({"ItemAdded": {"product_id": gold, "sku": "GOLD", "name": "Gold bar",
                             "unit_price": eur(HUGE), "quantity": 2}}),
    )
    .await;
    let _relay = start_relay(&app.db, &broker, "money-bounds");
    let _projectors = start_projectors(&app.db, &broker, &search, "money-bounds");

    let (order, _) = app.placed_order("MUG", 500, 1).await;
    // Every change above taken by its views, applied or dead-lettered.
    let mut taken = vec![("sales_daily", order, 1), ("basket_view", basket, 2)];
    taken.extend(orders.iter().map(|o| ("sales_daily", *o, 1)));
    for (projection, aggregate, sequence) in taken {
        eventually(
            Duration::from_secs(60),
            &format!("{projection} to take {aggregate}"),
            || async {
                let at: Option<i64> = sqlx::query_scalar(
                    "SELECT sequence FROM projection_progress WHERE projection = $1 AND aggregate_id = $2",
                )
                .bind(projection)
                .bind(aggregate.to_string())
                .fetch_optional(&app.db.pool)
                .await
                .ok()
                .flatten();
                at.filter(|at| *at >= sequence)
            },
        )
        .await;
    }

    let gold_sales: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT units, revenue_minor, orders FROM sales_daily WHERE product_id = $1",
    )
    .bind(gold)
    .fetch_all(&app.db.pool)
    .await
    .expect("sales");
    assert_eq!(gold_sales, [(1, HUGE, 1)], "one order booked, one refused");

    let (total, lines): (i64, Value) =
        sqlx::query_as("SELECT total_minor, lines FROM basket_view WHERE basket_id = $1")
            .bind(basket)
            .fetch_one(&app.db.pool)
            .await
            .expect("the basket's row");
    assert_eq!(
        (total, lines),
        (0, json!([])),
        "the oversized line is not in"
    );
    assert_eq!(
        (
            dead_letters(&app.db, "sales_daily").await,
            dead_letters(&app.db, "basket_view").await
        ),
        (1, 1)
    );
}

fn no_search() -> SearchConfig {
    SearchConfig {
        url: "http://127.0.0.1:9200".parse().expect("a URL"),
        index_prefix: "unused".to_owned(),
    }
}

fn sales_daily() -> Selection {
    projections::replay::select(&["sales_daily".to_owned()], false).expect("a projection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_whose_sums_exceed_a_bigint_fails_and_leaves_the_view_as_it_was() {
    let db = TestDb::new().await;
    let gold = Uuid::now_v7();
    store_order(&db, gold, HUGE, 1).await;
    store_order(&db, gold, HUGE, 1).await;

    let rebuilt = projections::replay::rebuild(
        &DatabaseConfig::for_url(&db.url),
        &sales_daily(),
        &no_search(),
        &RebuildOptions::default(),
    )
    .await;
    let error = format!("{:#}", rebuilt.expect_err("the sum does not fit"));
    assert!(error.contains("out of range"), "{error}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sales_daily")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(rows, 0, "the live view is left as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_does_not_pass_a_view_whose_sum_wrapped() {
    let db = TestDb::new().await;
    let gold = Uuid::now_v7();
    let orders = [
        store_order(&db, gold, HUGE, 1).await,
        store_order(&db, gold, HUGE, 1).await,
    ];
    // What the rebuild of the issue stored: both orders booked (on the day
    // of their time, which these events lack), the sum wrapped to i64::MIN.
    for order in orders {
        sqlx::query(
            "INSERT INTO projection_progress (projection, aggregate_id, sequence) \
             VALUES ('sales_daily', $1, 1)",
        )
        .bind(order.to_string())
        .execute(&db.pool)
        .await
        .expect("progress");
        sqlx::query(
            "INSERT INTO sales_daily_orders (order_id, day, lines) \
             SELECT $1, '1970-01-01', payload->'OrderPlaced'->'lines' FROM events WHERE aggregate_id = $2",
        )
        .bind(order)
        .bind(order.to_string())
        .execute(&db.pool)
        .await
        .expect("order booked");
    }
    sqlx::query(
        "INSERT INTO sales_daily (day, product_id, currency, sku, units, revenue_minor, orders) \
         VALUES ('1970-01-01', $1, 'EUR', 'GOLD', 2, $2, 2)",
    )
    .bind(gold)
    .bind(i64::MIN)
    .execute(&db.pool)
    .await
    .expect("the wrapped row");

    let verified = projections::replay::verify(
        &DatabaseConfig::for_url(&db.url),
        &sales_daily(),
        &no_search(),
        false,
    )
    .await;
    match verified {
        Ok(report) => panic!(
            "verify passed a wrapped sum:\n{}",
            projections::replay::report_table(&report)
        ),
        Err(error) => {
            let error = format!("{error:#}");
            assert!(error.contains("out of range"), "{error}");
        }
    }
}
