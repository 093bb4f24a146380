//! Idempotency keys and If-Match over HTTP.

use eshop_tests::TestApp;
use futures::future::join_all;
use reqwest::Method;
use serde_json::json;

fn product(sku: &str) -> serde_json::Value {
    json!({"sku": sku, "name": "Mug", "price": {"amount_minor": 100, "currency": "EUR"}, "initial_stock": 3})
}

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_original_response_and_appends_nothing() {
    let app = TestApp::spawn().await;
    let key = [("idempotency-key", "register-mug-1")];
    let first = app
        .send(Method::POST, "/products", Some(product("MUG")), &key)
        .await;
    assert_eq!(first.status, 201);
    let events = app.event_count().await;

    // Same body, keys in another order and other whitespace: the same request.
    let retry = app
        .send(
            Method::POST,
            "/products",
            Some(json!({"initial_stock": 3, "price": {"currency": "EUR", "amount_minor": 100}, "name": "Mug", "sku": "MUG"})),
            &key,
        )
        .await;
    assert_eq!(retry.status, 201);
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.header("location"), first.header("location"));
    assert_eq!(retry.header("etag"), first.header("etag"));
    assert_eq!(app.event_count().await, events);
}

#[tokio::test]
async fn the_same_key_with_another_body_or_path_is_422() {
    let app = TestApp::spawn().await;
    let key = [("idempotency-key", "k-1")];
    assert_eq!(
        app.send(Method::POST, "/products", Some(product("MUG")), &key)
            .await
            .status,
        201
    );
    let events = app.event_count().await;

    let other_body = app
        .send(Method::POST, "/products", Some(product("CUP")), &key)
        .await;
    other_body.assert_problem(422, "idempotency-key-reused");
    let other_path = app
        .send(
            Method::POST,
            "/baskets",
            Some(json!({"customer_id": uuid::Uuid::now_v7()})),
            &key,
        )
        .await;
    other_path.assert_problem(422, "idempotency-key-reused");
    assert_eq!(app.event_count().await, events);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_append_once() {
    let app = TestApp::spawn().await;
    let key = [("idempotency-key", "burst")];
    let responses = join_all(
        (0..10).map(|_| app.send(Method::POST, "/products", Some(product("BURST")), &key)),
    )
    .await;
    for response in &responses {
        assert_eq!(response.status, 201, "{}", response.body);
        assert_eq!(response.body, responses[0].body);
    }
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn a_retried_checkout_returns_the_same_order() {
    let app = TestApp::spawn().await;
    let item = app.register_product("MUG", 100, 5).await;
    let basket = app.open_basket().await;
    app.add_item(basket, item, 1).await;
    let path = format!("/baskets/{basket}/checkout");
    let key = [("idempotency-key", "checkout-1")];
    let first = app
        .send(Method::POST, &path, Some(TestApp::address_json()), &key)
        .await;
    let retry = app
        .send(Method::POST, &path, Some(TestApp::address_json()), &key)
        .await;
    assert_eq!((first.status, retry.status), (201, 201));
    assert_eq!(first.body["order_id"], retry.body["order_id"]);
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'OrderPlaced'")
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(orders, 1);
}

#[tokio::test]
async fn keys_are_kept_in_postgres_for_at_least_24_hours() {
    let app = TestApp::spawn().await;
    let key = [("idempotency-key", "aged")];
    let first = app
        .send(Method::POST, "/products", Some(product("AGED")), &key)
        .await;
    let age = |hours: i32| {
        sqlx::query("UPDATE idempotency_keys SET created_at = now() - make_interval(hours => $1) WHERE key = 'aged'")
            .bind(hours)
            .execute(&app.db.pool)
    };

    age(23).await.expect("age the key");
    let retry = app
        .send(Method::POST, "/products", Some(product("AGED")), &key)
        .await;
    assert_eq!(retry.body, first.body, "a 23-hour-old key still replays");

    age(25).await.expect("age the key");
    let after_expiry = app
        .send(Method::POST, "/products", Some(product("AGED-2")), &key)
        .await;
    assert_eq!(
        after_expiry.status, 201,
        "an expired key is free again: {}",
        after_expiry.body
    );
    assert_ne!(after_expiry.body["id"], first.body["id"]);
}

#[tokio::test]
async fn if_match_applies_only_at_the_named_version() {
    let app = TestApp::spawn().await;
    let item = app.register_product("MUG", 100, 5).await;
    let basket = app.open_basket().await;
    let path = format!("/baskets/{basket}/items");
    let body = json!({"product_id": item, "quantity": 1});

    let ok = app
        .send(
            Method::POST,
            &path,
            Some(body.clone()),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!((ok.status, ok.header("etag")), (200, Some("\"2\"")));
    let events = app.event_count().await;
    let stale = app
        .send(
            Method::POST,
            &path,
            Some(body.clone()),
            &[("if-match", "\"1\"")],
        )
        .await;
    stale.assert_problem(412, "stale-version");
    assert_eq!(app.event_count().await, events);
    let any = app
        .send(Method::POST, &path, Some(body), &[("if-match", "*")])
        .await;
    assert_eq!(any.status, 200);
}

#[tokio::test]
async fn if_match_with_a_concurrent_writer_never_applies_twice() {
    let app = TestApp::spawn().await;
    let item = app.register_product("MUG", 100, 500).await;
    let basket = app.open_basket().await;
    let path = format!("/baskets/{basket}/items");
    let body = json!({"product_id": item, "quantity": 1});
    // Ten clients all believe the basket is at version 1.
    let responses = join_all((0..10).map(|_| {
        app.send(
            Method::POST,
            &path,
            Some(body.clone()),
            &[("if-match", "\"1\"")],
        )
    }))
    .await;
    let accepted = responses.iter().filter(|r| r.status == 200).count();
    assert_eq!(accepted, 1, "exactly one write at version 1 succeeds");
    for response in responses.iter().filter(|r| r.status != 200) {
        response.assert_problem(412, "stale-version");
    }
}
