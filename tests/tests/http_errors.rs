//! Every error class of the REST API: the right status and problem code,
//! and nothing appended to the event store.

use eshop_tests::TestApp;
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

/// Runs a request that must fail and checks that it appended nothing.
macro_rules! rejected {
    ($app:expr, $request:expr) => {{
        let before = $app.event_count().await;
        let response = $request.await;
        assert_eq!(
            $app.event_count().await,
            before,
            "a rejected request appended events: {}",
            response.body
        );
        response
    }};
}

fn product_body(sku: &str) -> serde_json::Value {
    json!({"sku": sku, "name": "Mug", "price": {"amount_minor": 100, "currency": "EUR"}, "initial_stock": 1})
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::spawn().await;
    for body in ["{\"sku\": ", "not json", "{} trailing"] {
        let response = rejected!(
            app,
            app.send_raw("/products", Some("application/json"), body)
        );
        response.assert_problem(400, "malformed-json");
    }
}

#[tokio::test]
async fn a_body_over_64_kib_is_413() {
    let app = TestApp::spawn().await;
    let huge = json!({"sku": "BIG", "name": "x", "description": "d".repeat(70 * 1024),
                      "price": {"amount_minor": 1, "currency": "EUR"}, "initial_stock": 1});
    let response = rejected!(app, app.send(Method::POST, "/products", Some(huge), &[]));
    response.assert_problem(413, "payload-too-large");
}

#[tokio::test]
async fn a_content_type_that_is_not_text_is_415_not_read_as_none() {
    let app = TestApp::spawn().await;
    let before = app.event_count().await;
    let response = app
        .client
        .post(format!("{}/products", app.address))
        .header(
            "content-type",
            reqwest::header::HeaderValue::from_bytes(b"application/json; charset=\xff")
                .expect("an obs-text header value"),
        )
        .body(product_body("OBS-TEXT").to_string())
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 415);
    let problem: serde_json::Value = response.json().await.expect("a problem");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not text")),
        "{problem}"
    );
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = TestApp::spawn().await;
    let response = rejected!(app, app.send_raw("/products", Some("text/plain"), "{}"));
    response.assert_problem(415, "unsupported-media-type");
    let response = rejected!(app, app.send_raw("/products", None, "{}"));
    response.assert_problem(415, "unsupported-media-type");
    // JSON with a structured-syntax suffix and a charset is JSON.
    let body = product_body("SUFFIX").to_string();
    let accepted = app
        .send_raw(
            "/products",
            Some("application/merge-patch+json; charset=utf-8"),
            &body,
        )
        .await;
    assert_eq!(accepted.status, 201, "{}", accepted.body);
}

#[tokio::test]
async fn unknown_aggregates_are_404() {
    let app = TestApp::spawn().await;
    let missing = Uuid::now_v7();
    let product = app.register_product("REAL", 100, 1).await;
    let cases = [
        (
            format!("/products/{missing}/price"),
            json!({"price": {"amount_minor": 1, "currency": "EUR"}}),
        ),
        (
            format!("/products/{missing}/stock"),
            json!({"delta": 1, "reason": "count"}),
        ),
        (format!("/products/{missing}/discontinue"), json!({})),
        (
            format!("/baskets/{missing}/items"),
            json!({"product_id": product, "quantity": 1}),
        ),
        (
            format!("/baskets/{missing}/checkout"),
            TestApp::address_json(),
        ),
        (
            format!("/orders/{missing}/pay"),
            json!({"payment_reference": "p", "amount": {"amount_minor": 1, "currency": "EUR"}}),
        ),
        (
            format!("/orders/{missing}/ship"),
            json!({"tracking_number": "t"}),
        ),
        (format!("/orders/{missing}/deliver"), json!({})),
        (format!("/orders/{missing}/cancel"), json!({"reason": "r"})),
    ];
    for (path, body) in cases {
        let response = rejected!(app, app.post(&path, body));
        assert_eq!(response.status, 404, "{path}: {}", response.body);
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json")
        );
    }
    let response = rejected!(
        app,
        app.send(
            Method::PUT,
            &format!("/baskets/{missing}/items/{product}"),
            Some(json!({"quantity": 1})),
            &[]
        )
    );
    response.assert_problem(404, "basket-not-found");
    let response = rejected!(
        app,
        app.send(
            Method::DELETE,
            &format!("/baskets/{missing}/items"),
            None,
            &[]
        )
    );
    response.assert_problem(404, "basket-not-found");
}

#[tokio::test]
async fn malformed_ids_and_unknown_routes_are_404_problems() {
    let app = TestApp::spawn().await;
    rejected!(app, app.post("/products/not-a-uuid/price", json!({})))
        .assert_problem(404, "not-found");
    rejected!(app, app.post("/nowhere", json!({}))).assert_problem(404, "not-found");
    let wrong_method = app.send(Method::GET, "/products", None, &[]).await;
    wrong_method.assert_problem(405, "method-not-allowed");
}

#[tokio::test]
async fn an_invalid_transition_is_409_and_names_the_current_state() {
    let app = TestApp::spawn().await;
    let (order, _) = app.placed_order("MUG", 100, 1).await;
    let response = rejected!(
        app,
        app.post(
            &format!("/orders/{order}/ship"),
            json!({"tracking_number": "T-1"})
        )
    );
    response.assert_problem(409, "invalid-transition");
    assert_eq!(
        response.body["detail"],
        "cannot ship an order that is placed"
    );

    let response = rejected!(
        app,
        app.post(&format!("/orders/{order}/deliver"), json!({}))
    );
    assert_eq!(
        response.body["detail"],
        "cannot deliver an order that is placed"
    );
}

#[tokio::test]
async fn a_checked_out_basket_accepts_no_change() {
    let app = TestApp::spawn().await;
    let product = app.register_product("MUG", 100, 10).await;
    let basket = app.open_basket().await;
    app.add_item(basket, product, 1).await;
    assert_eq!(app.checkout(basket).await.status, 201);

    let response = rejected!(app, app.add_item(basket, product, 1));
    response.assert_problem(409, "basket-not-open");
    assert_eq!(
        response.body["detail"],
        "basket is checked out and accepts no further change"
    );
    rejected!(app, app.checkout(basket)).assert_problem(409, "basket-not-open");
}

#[tokio::test]
async fn a_duplicate_sku_is_409_and_case_insensitive() {
    let app = TestApp::spawn().await;
    app.register_product("MUG-1", 100, 1).await;
    let response = rejected!(app, app.post("/products", product_body("mug-1")));
    response.assert_problem(409, "duplicate-sku");
    assert_eq!(response.body["errors"][0]["field"], "sku");
}

#[tokio::test]
async fn checkout_without_enough_stock_is_409_and_leaves_no_trace() {
    let app = TestApp::spawn().await;
    let plenty = app.register_product("PLENTY", 100, 10).await;
    let scarce = app.register_product("SCARCE", 100, 1).await;
    let basket = app.open_basket().await;
    app.add_item(basket, plenty, 2).await;
    app.add_item(basket, scarce, 2).await;

    let response = rejected!(app, app.checkout(basket));
    response.assert_problem(409, "insufficient-stock");
    assert!(
        response.body["detail"].as_str().is_some_and(
            |d| d.contains(&scarce.to_string()) && d.contains("2 requested, 1 available")
        )
    );
    // The basket is still open: lowering the quantity lets checkout pass.
    let changed = app
        .send(
            Method::PUT,
            &format!("/baskets/{basket}/items/{scarce}"),
            Some(json!({"quantity": 1})),
            &[],
        )
        .await;
    assert_eq!(changed.status, 200);
    assert_eq!(app.checkout(basket).await.status, 201);
}

#[tokio::test]
async fn a_stale_if_match_is_412() {
    let app = TestApp::spawn().await;
    let product = app.register_product("MUG", 100, 1).await;
    let body = json!({"delta": 1, "reason": "count"});
    let response = rejected!(
        app,
        app.send(
            Method::POST,
            &format!("/products/{product}/stock"),
            Some(body.clone()),
            &[("if-match", "\"5\"")]
        )
    );
    response.assert_problem(412, "stale-version");
    let fresh = app
        .send(
            Method::POST,
            &format!("/products/{product}/stock"),
            Some(body),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!((fresh.status, fresh.header("etag")), (200, Some("\"2\"")));
}

#[tokio::test]
async fn invalid_headers_are_400() {
    let app = TestApp::spawn().await;
    let product = app.register_product("MUG", 100, 1).await;
    let path = format!("/products/{product}/stock");
    let body = json!({"delta": 1, "reason": "count"});
    let response = rejected!(
        app,
        app.send(
            Method::POST,
            &path,
            Some(body.clone()),
            &[("if-match", "banana")]
        )
    );
    response.assert_problem(400, "invalid-header");
    assert_eq!(response.body["errors"][0]["field"], "If-Match");
    let key = "k".repeat(300);
    let response = rejected!(
        app,
        app.send(
            Method::POST,
            &path,
            Some(body),
            &[("idempotency-key", key.as_str())]
        )
    );
    assert_eq!(response.body["errors"][0]["field"], "Idempotency-Key");
}

#[tokio::test]
async fn invalid_values_are_422_with_every_field_named() {
    let app = TestApp::spawn().await;
    let body = json!({"sku": "has space", "name": "", "price": {"amount_minor": -5, "currency": "eur"}, "initial_stock": 1});
    let response = rejected!(app, app.post("/products", body));
    response.assert_problem(422, "validation-failed");
    assert_eq!(
        response.error_fields(),
        ["sku", "name", "price.currency", "price.amount_minor"]
    );
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let product = app.register_product("MUG", 100, 1).await;
    let basket = app.open_basket().await;
    let cases = [
        (
            json!({"product_id": product, "quantity": "two"}),
            "quantity",
        ),
        (json!({"product_id": product, "quantity": -1}), "quantity"),
        (json!({"product_id": "nope", "quantity": 1}), "product_id"),
        (json!({"quantity": 1}), "body"),
        (
            json!({"product_id": product, "quantity": 1, "colour": "red"}),
            "colour",
        ),
    ];
    for (body, field) in cases {
        let response = rejected!(
            app,
            app.post(&format!("/baskets/{basket}/items"), body.clone())
        );
        response.assert_problem(422, "validation-failed");
        assert_eq!(response.body["errors"][0]["field"], field, "{body}");
    }
}

#[tokio::test]
async fn domain_rules_are_422() {
    let app = TestApp::spawn().await;
    let product = app.register_product("MUG", 100, 500).await;
    let basket = app.open_basket().await;
    for quantity in [0, 100] {
        rejected!(app, app.add_item(basket, product, quantity))
            .assert_problem(422, "quantity-out-of-range");
    }
    rejected!(app, app.add_item(basket, Uuid::now_v7(), 1)).assert_problem(422, "unknown-product");
    let other = app
        .post("/products", json!({"sku": "USD-MUG", "name": "Mug", "price": {"amount_minor": 100, "currency": "USD"}, "initial_stock": 5}))
        .await
        .id();
    app.add_item(basket, product, 1).await;
    rejected!(app, app.add_item(basket, other, 1)).assert_problem(422, "currency-mismatch");

    let (order, _) = app.placed_order("CUP", 250, 2).await;
    let wrong =
        json!({"payment_reference": "p-1", "amount": {"amount_minor": 499, "currency": "EUR"}});
    rejected!(app, app.post(&format!("/orders/{order}/pay"), wrong))
        .assert_problem(422, "amount-mismatch");
    let address = json!({"shipping_address": {"recipient": "", "line1": "x", "city": "y", "postal_code": "z", "country": "Germany"}});
    let fresh = app.open_basket().await;
    let response = rejected!(
        app,
        app.post(&format!("/baskets/{fresh}/checkout"), address)
    );
    assert_eq!(
        response.error_fields(),
        ["shipping_address.recipient", "shipping_address.country"]
    );
}

#[tokio::test]
async fn checkout_of_an_empty_basket_is_409() {
    let app = TestApp::spawn().await;
    let basket = app.open_basket().await;
    rejected!(app, app.checkout(basket)).assert_problem(409, "basket-empty");
}

#[tokio::test]
async fn a_discontinued_product_cannot_be_added() {
    let app = TestApp::spawn().await;
    let product = app.register_product("OLD", 100, 5).await;
    app.post(&format!("/products/{product}/discontinue"), json!({}))
        .await;
    let basket = app.open_basket().await;
    rejected!(app, app.add_item(basket, product, 1)).assert_problem(422, "product-discontinued");
}
