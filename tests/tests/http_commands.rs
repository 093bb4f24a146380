//! Every endpoint's success path over HTTP against a real PostgreSQL.

use cqrs_es::Aggregate;
use domain::basket::{Basket, BasketStatus};
use domain::order::{Order, OrderStatus};
use domain::product::{Product, ProductStatus};
use eshop_tests::TestApp;
use event_store::{EventStore, SnapshotPolicy};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

async fn load<A: Aggregate>(app: &TestApp, id: Uuid) -> A {
    let store = EventStore::new(
        app.db.pool.clone(),
        event_schemas::upcasters(),
        SnapshotPolicy::default(),
    );
    store
        .load::<A>(&id.to_string())
        .await
        .expect("load aggregate")
        .aggregate
}

#[tokio::test]
async fn registering_a_product_answers_201_with_location_etag_and_token() {
    let app = TestApp::spawn().await;
    let response = app
        .post(
            "/products",
            json!({"sku": "mug-1", "name": "Blue mug", "description": "Holds tea",
                   "price": {"amount_minor": 1299, "currency": "EUR"}, "initial_stock": 5}),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.body);
    let id = response.id();
    assert_eq!(
        response.header("location"),
        Some(format!("/products/{id}").as_str())
    );
    assert_eq!(response.header("etag"), Some("\"1\""));
    assert_eq!(response.version(), 1);
    assert!(
        response.body["consistency_token"]
            .as_str()
            .is_some_and(|t| t.parse::<i64>().is_ok())
    );

    let product: Product = load(&app, id).await;
    let details = product.details().expect("registered");
    assert_eq!(details.sku.as_str(), "MUG-1");
    assert_eq!(details.price.minor, 1299);
    assert_eq!(
        (product.on_hand(), product.available(), product.status()),
        (5, 5, ProductStatus::Active)
    );
}

#[tokio::test]
async fn price_stock_and_discontinue_change_the_product() {
    let app = TestApp::spawn().await;
    let id = app.register_product("LAMP", 4500, 3).await;

    let price = app
        .post(
            &format!("/products/{id}/price"),
            json!({"price": {"amount_minor": 3999, "currency": "EUR"}}),
        )
        .await;
    assert_eq!((price.status, price.version()), (200, 2), "{}", price.body);
    assert_eq!(price.header("etag"), Some("\"2\""));

    let stock = app
        .post(
            &format!("/products/{id}/stock"),
            json!({"delta": 7, "reason": "delivery"}),
        )
        .await;
    assert_eq!((stock.status, stock.version()), (200, 3), "{}", stock.body);

    let gone = app
        .send(
            Method::POST,
            &format!("/products/{id}/discontinue"),
            None,
            &[],
        )
        .await;
    assert_eq!((gone.status, gone.version()), (200, 4), "{}", gone.body);

    let product: Product = load(&app, id).await;
    assert_eq!(product.details().map(|d| d.price.minor), Some(3999));
    assert_eq!(product.on_hand(), 10);
    assert_eq!(product.status(), ProductStatus::Discontinued);
}

#[tokio::test]
async fn basket_lines_can_be_added_changed_removed_and_cleared() {
    let app = TestApp::spawn().await;
    let mug = app.register_product("MUG", 1000, 50).await;
    let cup = app.register_product("CUP", 500, 50).await;

    let opened = app
        .post("/baskets", json!({"customer_id": Uuid::now_v7()}))
        .await;
    assert_eq!(opened.status, 201);
    let basket = opened.id();
    assert_eq!(
        opened.header("location"),
        Some(format!("/baskets/{basket}").as_str())
    );

    assert_eq!(app.add_item(basket, mug, 2).await.version(), 2);
    assert_eq!(app.add_item(basket, cup, 1).await.version(), 3);
    // Adding a product already in the basket adds to its line.
    assert_eq!(app.add_item(basket, mug, 3).await.version(), 4);

    let changed = app
        .send(
            Method::PUT,
            &format!("/baskets/{basket}/items/{cup}"),
            Some(json!({"quantity": 4})),
            &[],
        )
        .await;
    assert_eq!(
        (changed.status, changed.version()),
        (200, 5),
        "{}",
        changed.body
    );

    let state: Basket = load(&app, basket).await;
    let quantities: Vec<(Uuid, u32)> = state
        .lines()
        .iter()
        .map(|l| (*l.product_id.as_uuid(), l.quantity))
        .collect();
    assert_eq!(quantities, vec![(mug, 5), (cup, 4)]);

    let removed = app
        .send(
            Method::DELETE,
            &format!("/baskets/{basket}/items/{mug}"),
            None,
            &[],
        )
        .await;
    assert_eq!(
        (removed.status, removed.version()),
        (200, 6),
        "{}",
        removed.body
    );
    let cleared = app
        .send(
            Method::DELETE,
            &format!("/baskets/{basket}/items"),
            None,
            &[],
        )
        .await;
    assert_eq!(
        (cleared.status, cleared.version()),
        (200, 7),
        "{}",
        cleared.body
    );

    let state: Basket = load(&app, basket).await;
    assert!(state.lines().is_empty());
    assert_eq!(state.status(), BasketStatus::Open);
}

#[tokio::test]
async fn checkout_places_an_order_at_current_prices_and_reserves_stock() {
    let app = TestApp::spawn().await;
    let mug = app.register_product("MUG", 1000, 5).await;
    let basket = app.open_basket().await;
    app.add_item(basket, mug, 2).await;
    // The price changes after the item was added: the order takes the new one.
    app.post(
        &format!("/products/{mug}/price"),
        json!({"price": {"amount_minor": 1200, "currency": "EUR"}}),
    )
    .await;

    let checkout = app.checkout(basket).await;
    assert_eq!(checkout.status, 201, "{}", checkout.body);
    let order_id = checkout.id();
    assert_eq!(
        checkout.header("location"),
        Some(format!("/orders/{order_id}").as_str())
    );
    assert_eq!(checkout.body["basket_id"], json!(basket));
    assert_eq!(checkout.body["basket_version"], 3);
    assert_eq!(checkout.body["order_version"], 1);

    let order: Order = load(&app, order_id).await;
    assert_eq!(order.status(), OrderStatus::Placed);
    assert_eq!(order.total().map(|t| t.minor), Some(2400));
    assert_eq!(order.lines()[0].unit_price.minor, 1200);
    let product: Product = load(&app, mug).await;
    assert_eq!(
        (product.on_hand(), product.reserved(), product.available()),
        (5, 2, 3)
    );
    let basket: Basket = load(&app, basket).await;
    assert_eq!(basket.status(), BasketStatus::CheckedOut);
    assert_eq!(basket.order_id().map(|o| *o.as_uuid()), Some(order_id));
}

#[tokio::test]
async fn an_order_is_paid_shipped_and_delivered() {
    let app = TestApp::spawn().await;
    let (order, product) = app.placed_order("MUG", 1500, 2).await;

    let paid = app.post(&format!("/orders/{order}/pay"), json!({"payment_reference": "psp-1", "amount": {"amount_minor": 3000, "currency": "EUR"}})).await;
    assert_eq!((paid.status, paid.version()), (200, 2), "{}", paid.body);
    let shipped = app
        .post(
            &format!("/orders/{order}/ship"),
            json!({"tracking_number": "TRACK-1"}),
        )
        .await;
    assert_eq!(
        (shipped.status, shipped.version()),
        (200, 3),
        "{}",
        shipped.body
    );
    let delivered = app
        .send(
            Method::POST,
            &format!("/orders/{order}/deliver"),
            Some(json!({})),
            &[],
        )
        .await;
    assert_eq!(
        (delivered.status, delivered.version()),
        (200, 4),
        "{}",
        delivered.body
    );

    assert_eq!(
        load::<Order>(&app, order).await.status(),
        OrderStatus::Delivered
    );
    // Shipping took the reserved units out of stock.
    let product: Product = load(&app, product).await;
    assert_eq!(
        (product.on_hand(), product.reserved(), product.available()),
        (8, 0, 8)
    );
}

#[tokio::test]
async fn cancelling_an_order_releases_its_reserved_stock() {
    let app = TestApp::spawn().await;
    let (order, product) = app.placed_order("MUG", 1500, 4).await;
    assert_eq!(load::<Product>(&app, product).await.available(), 6);

    let cancelled = app
        .post(
            &format!("/orders/{order}/cancel"),
            json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(
        (cancelled.status, cancelled.version()),
        (200, 2),
        "{}",
        cancelled.body
    );

    assert_eq!(
        load::<Order>(&app, order).await.status(),
        OrderStatus::Cancelled
    );
    let product: Product = load(&app, product).await;
    assert_eq!(
        (product.on_hand(), product.reserved(), product.available()),
        (10, 0, 10)
    );
}

#[tokio::test]
async fn events_carry_the_request_metadata() {
    let app = TestApp::spawn().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = app
        .send(
            Method::POST,
            "/baskets",
            Some(json!({"customer_id": Uuid::now_v7()})),
            &[
                ("x-correlation-id", "checkout-flow-42"),
                ("traceparent", traceparent),
            ],
        )
        .await;
    assert_eq!(response.status, 201);
    assert_eq!(
        response.header("x-correlation-id"),
        Some("checkout-flow-42")
    );

    let metadata: Value = sqlx::query_scalar("SELECT metadata FROM events")
        .fetch_one(&app.db.pool)
        .await
        .expect("one event");
    let event_id: Uuid = metadata["event_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("event id");
    assert_eq!(event_id.get_version_num(), 7);
    assert_eq!(metadata["correlation_id"], "checkout-flow-42");
    assert_eq!(metadata["traceparent"], traceparent);
    assert_eq!(metadata["schema_version"], "1.0");
    // The actor is the token's subject and client: here the operator
    // client's service account.
    let actor = metadata["actor"].as_str().expect("an actor");
    let (subject, client) = actor.split_once('/').expect("<subject>/<client>");
    assert_eq!(client, "eshop-ops", "{actor}");
    assert!(subject.parse::<Uuid>().is_ok(), "{actor}");
    assert!(
        metadata["causation_id"]
            .as_str()
            .is_some_and(|c| c.parse::<Uuid>().is_ok())
    );
    let occurred: chrono::DateTime<chrono::Utc> = metadata["occurred_at"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("RFC 3339 UTC time");
    assert!(
        metadata["occurred_at"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z')),
        "{occurred}"
    );
}

#[tokio::test]
async fn a_correlation_id_is_generated_when_absent() {
    let app = TestApp::spawn().await;
    let response = app.send(Method::GET, "/health/live", None, &[]).await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("x-correlation-id")
            .is_some_and(|id| id.parse::<Uuid>().is_ok())
    );
}

#[tokio::test]
async fn readiness_reports_postgres_by_name() {
    let app = TestApp::spawn().await;
    let ready = app.send(Method::GET, "/health/ready", None, &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["status"], "up");
    assert_eq!(ready.body["checks"][0]["name"], "postgres");
    assert_eq!(ready.body["checks"][0]["status"], "up");
}

#[tokio::test]
async fn readiness_is_503_when_postgres_is_unreachable() {
    let app = TestApp::spawn_with(|config| {
        config.database.acquire_timeout_secs = 1;
    })
    .await;
    app.db.refuse_connections().await;
    let ready = app.send(Method::GET, "/health/ready", None, &[]).await;
    app.db.allow_connections().await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.body["checks"][0]["name"], "postgres");
    assert_eq!(ready.body["checks"][0]["status"], "down");
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_lists_every_command() {
    let app = TestApp::spawn().await;
    let doc = app.send(Method::GET, "/openapi.json", None, &[]).await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    let paths = doc.body["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/products", "post"),
        ("/products/{id}/price", "post"),
        ("/products/{id}/stock", "post"),
        ("/products/{id}/discontinue", "post"),
        ("/baskets", "post"),
        ("/baskets/{id}/items", "post"),
        ("/baskets/{id}/items/{product_id}", "put"),
        ("/baskets/{id}/items/{product_id}", "delete"),
        ("/baskets/{id}/checkout", "post"),
        ("/orders/{id}/pay", "post"),
        ("/orders/{id}/ship", "post"),
        ("/orders/{id}/deliver", "post"),
        ("/orders/{id}/cancel", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
}

#[tokio::test]
async fn the_api_page_is_served_without_any_cdn() {
    let app = TestApp::spawn().await;
    let page = app
        .client
        .get(format!("{}/docs/", app.address))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("swagger"), "not the API page: {html}");
    for asset in ["swagger-ui-bundle.js", "swagger-ui.css"] {
        assert!(html.contains(asset));
        let served = app
            .client
            .get(format!("{}/docs/{asset}", app.address))
            .send()
            .await
            .expect("asset");
        assert_eq!(served.status().as_u16(), 200, "{asset} is not bundled");
    }
    assert!(
        !html.contains("https://"),
        "the page loads something from the network"
    );
}
