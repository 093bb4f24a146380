//! The search projection end to end: REST commands → event store → relay →
//! Kafka → projector → the search engine (OpenSearch 2.19 in CI; any
//! Elasticsearch 8/9 or OpenSearch 2/3 by URL).

use std::time::Duration;

use eshop_tests::{TestApp, TestBroker, TestSearch, eventually, start_projectors, start_relay};
use serde_json::{Value, json};
use uuid::Uuid;

async fn register(app: &TestApp, sku: &str, name: &str, description: &str, price: i64) -> Uuid {
    let response = app
        .post(
            "/products",
            json!({
                "sku": sku, "name": name, "description": description,
                "price": {"amount_minor": price, "currency": "EUR"},
                "initial_stock": 10,
            }),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.body);
    response.id()
}

/// Waits until the index holds `id` at `version`.
async fn at_version(search: &TestSearch, suffix: &str, id: Uuid, version: i64) -> Value {
    eventually(
        Duration::from_secs(60),
        &format!("{suffix}/{id} at version {version}"),
        || async {
            search
                .document(suffix, &id.to_string())
                .await
                .and_then(|(v, source)| (v == version).then_some(source))
        },
    )
    .await
}

fn ids(result: &Value) -> Vec<String> {
    let mut ids: Vec<String> = result["hits"]["hits"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|hit| hit["_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_and_orders_are_searchable_with_the_right_values() {
    let app = TestApp::spawn().await;
    let broker = TestBroker::new();
    let search = TestSearch::new(&broker.prefix).await;
    let _relay = start_relay(&app.db, &broker, "search-test");
    let _projectors = start_projectors(&app.db, &broker, &search, "search");

    let mug = register(
        &app,
        "MUG-1",
        "Ceramic mug",
        "A red ceramic mug for tea",
        1500,
    )
    .await;
    let scarf = register(
        &app,
        "SCARF-1",
        "Wool scarf",
        "Warm blue wool, hand knitted",
        4500,
    )
    .await;
    let lamp = register(&app, "LAMP-1", "Desk lamp", "Bright LED lamp", 9900).await;
    app.post(
        &format!("/products/{mug}/price"),
        json!({"price": {"amount_minor": 1200, "currency": "EUR"}}),
    )
    .await;
    app.post(
        &format!("/products/{scarf}/stock"),
        json!({"delta": 5, "reason": "delivery"}),
    )
    .await;
    app.post(&format!("/products/{lamp}/discontinue"), json!({}))
        .await;

    let basket = app.open_basket().await;
    app.add_item(basket, mug, 2).await;
    app.add_item(basket, scarf, 1).await;
    let shipped = app.checkout(basket).await.id();
    app.post(
        &format!("/orders/{shipped}/pay"),
        json!({"payment_reference": "p-1", "amount": {"amount_minor": 6900, "currency": "EUR"}}),
    )
    .await;
    app.post(
        &format!("/orders/{shipped}/ship"),
        json!({"tracking_number": "T-1"}),
    )
    .await;
    app.post(&format!("/orders/{shipped}/deliver"), json!({}))
        .await;
    let other = app.open_basket().await;
    app.add_item(other, mug, 1).await;
    let cancelled = app.checkout(other).await.id();
    app.post(
        &format!("/orders/{cancelled}/cancel"),
        json!({"reason": "no"}),
    )
    .await;

    // Every event type has reached the index with its values. The mug:
    // registered, price, reserved ×2 (two orders), shipped, released.
    let doc = at_version(&search, "products", mug, 6).await;
    assert_eq!(doc["sku"], "MUG-1");
    assert_eq!(doc["name"], "Ceramic mug");
    assert_eq!(doc["price_minor"], 1200);
    assert_eq!(doc["currency"], "EUR");
    assert_eq!(doc["status"], "active");
    assert_eq!(
        (
            doc["on_hand"].as_i64(),
            doc["reserved"].as_i64(),
            doc["available"].as_i64()
        ),
        (Some(8), Some(0), Some(8))
    );
    let doc = at_version(&search, "products", scarf, 4).await;
    assert_eq!(
        (
            doc["on_hand"].as_i64(),
            doc["reserved"].as_i64(),
            doc["available"].as_i64()
        ),
        (Some(14), Some(0), Some(14))
    );
    let doc = at_version(&search, "products", lamp, 2).await;
    assert_eq!(doc["status"], "discontinued");

    let order = at_version(&search, "orders", shipped, 4).await;
    assert_eq!(order["status"], "delivered");
    assert_eq!(order["skus"], json!(["MUG-1", "SCARF-1"]));
    assert_eq!(order["total_minor"], 6900);
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["lines"][0]["quantity"], 2);
    assert_eq!(order["lines"][0]["unit_price_minor"], 1200);
    assert_eq!(
        order["city"],
        TestApp::address_json()["shipping_address"]["city"]
    );
    assert_eq!(order["country"], "GB");
    let customer = order["customer_id"].as_str().expect("customer").to_owned();
    let order2 = at_version(&search, "orders", cancelled, 2).await;
    assert_eq!(order2["status"], "cancelled");

    // Full text on name and description, with highlights.
    let found = search
        .search(
            "products",
            json!({
                "query": {"multi_match": {"query": "ceramic", "fields": ["name", "description"]}},
                "highlight": {"fields": {"description": {}}}
            }),
        )
        .await;
    assert_eq!(ids(&found), vec![mug.to_string()]);
    assert!(
        found["hits"]["hits"][0]["highlight"]["description"][0]
            .as_str()
            .is_some_and(|h| h.contains("<em>ceramic</em>")),
        "{found}"
    );
    // Filters and facets on price and status.
    let faceted = search
        .search(
            "products",
            json!({
                "size": 10,
                "query": {"bool": {"filter": [
                    {"range": {"price_minor": {"gte": 1000, "lt": 5000}}},
                    {"term": {"status": "active"}}
                ]}},
                "aggs": {
                    "status": {"terms": {"field": "status"}},
                    "price": {"range": {"field": "price_minor", "ranges": [{"to": 2000}, {"from": 2000}]}}
                }
            }),
        )
        .await;
    let mut expected = vec![mug.to_string(), scarf.to_string()];
    expected.sort();
    assert_eq!(ids(&faceted), expected);
    assert_eq!(
        faceted["aggregations"]["status"]["buckets"],
        json!([{"key": "active", "doc_count": 2}])
    );
    let buckets = &faceted["aggregations"]["price"]["buckets"];
    assert_eq!(
        (
            buckets[0]["doc_count"].as_i64(),
            buckets[1]["doc_count"].as_i64()
        ),
        (Some(1), Some(1))
    );

    // Orders by customer, SKU, status and date.
    let by_customer = search
        .search(
            "orders",
            json!({"query": {"term": {"customer_id": customer}}}),
        )
        .await;
    assert_eq!(ids(&by_customer), vec![shipped.to_string()]);
    let by_sku = search
        .search("orders", json!({"query": {"term": {"skus": "MUG-1"}}}))
        .await;
    let mut both = vec![shipped.to_string(), cancelled.to_string()];
    both.sort();
    assert_eq!(ids(&by_sku), both);
    let scarf_orders = search
        .search("orders", json!({"query": {"term": {"skus": "SCARF-1"}}}))
        .await;
    assert_eq!(ids(&scarf_orders), vec![shipped.to_string()]);
    let by_status = search
        .search(
            "orders",
            json!({"query": {"term": {"status": "cancelled"}}}),
        )
        .await;
    assert_eq!(ids(&by_status), vec![cancelled.to_string()]);
    let today = chrono::Utc::now().date_naive().to_string();
    let by_date = search
        .search(
            "orders",
            json!({"query": {"range": {"placed_at": {"gte": format!("{today}T00:00:00Z")}}}}),
        )
        .await;
    assert_eq!(ids(&by_date), both);
    let none_before = search
        .search(
            "orders",
            json!({"query": {"range": {"placed_at": {"lt": format!("{today}T00:00:00Z")}}}}),
        )
        .await;
    assert!(ids(&none_before).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_or_late_event_never_regresses_a_document() {
    let app = TestApp::spawn().await;
    let broker = TestBroker::new();
    let search = TestSearch::new(&broker.prefix).await;
    let _relay = start_relay(&app.db, &broker, "search-test");
    let projectors = start_projectors(&app.db, &broker, &search, "search");

    let mug = register(&app, "MUG-1", "Ceramic mug", "A mug", 1500).await;
    app.post(
        &format!("/products/{mug}/price"),
        json!({"price": {"amount_minor": 1200, "currency": "EUR"}}),
    )
    .await;
    let before = at_version(&search, "products", mug, 2).await;

    // Deliver the registration again, as after a crash before the
    // position was written down (on a broker: a relay that crashed before
    // its checkpoint), with the projectors restarted; then an event that
    // follows it, so we know when the projector got past the duplicate.
    drop(projectors);
    let published = broker.published(&app.db.pool).await;
    let registration = published
        .iter()
        .find(|m| m.envelope["aggregatesequence"] == 1)
        .expect("the registration was published");
    broker.deliver_again(&app.db, "search", registration).await;
    let _projectors = start_projectors(&app.db, &broker, &search, "search");
    app.post(&format!("/products/{mug}/discontinue"), json!({}))
        .await;

    let after = at_version(&search, "products", mug, 3).await;
    assert_eq!(after["price_minor"], before["price_minor"]);
    assert_eq!(after["price_minor"], 1200);
    assert_eq!(after["status"], "discontinued");
    // The duplicate was not dead-lettered either: it was simply not newer.
    let dead: Option<i64> = sqlx::query_scalar(
        "SELECT dead_letters FROM projection_status WHERE projection = 'search'",
    )
    .fetch_optional(&app.db.pool)
    .await
    .expect("status");
    assert_eq!(dead, None);
}
