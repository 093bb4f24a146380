//! Idempotency keys and If-Match over HTTP.

use std::time::Duration;

use eshop_tests::{TestApp, TestDb, TestResponse, eventually};
use event_store::{CommitError, EventStore, IdempotencyRecord, SnapshotPolicy, UnitOfWork};
use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

fn product(sku: &str) -> Value {
    json!({"sku": sku, "name": "Mug", "price": {"amount_minor": 100, "currency": "EUR"}, "initial_stock": 3})
}

/// POSTs `body` to `path` with `Idempotency-Key: key`.
async fn post_keyed(app: &TestApp, path: &str, body: Value, key: &str) -> TestResponse {
    app.send(Method::POST, path, Some(body), &[("idempotency-key", key)])
        .await
}

/// A new basket holding one `product`.
async fn basket_with(app: &TestApp, product: Uuid) -> Uuid {
    let basket = app.open_basket().await;
    app.add_item(basket, product, 1).await;
    basket
}

/// Checks `basket` out (to the usual address) with `Idempotency-Key: key`.
async fn checkout_keyed(app: &TestApp, basket: Uuid, key: &str) -> TestResponse {
    let path = format!("/baskets/{basket}/checkout");
    post_keyed(app, &path, TestApp::address_json(), key).await
}

/// Adds one `product` to `basket` with `If-Match: if_match`.
async fn add_if_match(app: &TestApp, basket: Uuid, product: Uuid, if_match: &str) -> TestResponse {
    app.send(
        Method::POST,
        &format!("/baskets/{basket}/items"),
        Some(json!({"product_id": product, "quantity": 1})),
        &[("if-match", if_match)],
    )
    .await
}

/// Waits (10 s at most) until `sql`, a count, satisfies `done`.
async fn until_count(db: &TestDb, what: &str, sql: &str, done: impl Fn(i64) -> bool) {
    eventually(Duration::from_secs(10), what, || async {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&db.pool).await.ok()?;
        done(n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_original_response_and_appends_nothing() {
    let app = TestApp::spawn().await;
    let key = "register-mug-1";
    let first = post_keyed(&app, "/products", product("MUG"), key).await;
    assert_eq!(first.status, 201);
    let events = app.event_count().await;

    // Same body, keys in another order and other whitespace: the same request.
    let retry = post_keyed(
        &app,
        "/products",
        json!({"initial_stock": 3, "price": {"currency": "EUR", "amount_minor": 100}, "name": "Mug", "sku": "MUG"}),
        key,
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
    let key = "k-1";
    assert_eq!(
        post_keyed(&app, "/products", product("MUG"), key)
            .await
            .status,
        201
    );
    let events = app.event_count().await;

    let other_body = post_keyed(&app, "/products", product("CUP"), key).await;
    other_body.assert_problem(422, "idempotency-key-reused");
    let other_path = post_keyed(
        &app,
        "/baskets",
        json!({"customer_id": Uuid::now_v7()}),
        key,
    )
    .await;
    other_path.assert_problem(422, "idempotency-key-reused");
    assert_eq!(app.event_count().await, events);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_append_once() {
    let app = TestApp::spawn().await;
    let responses =
        join_all((0..10).map(|_| post_keyed(&app, "/products", product("BURST"), "burst"))).await;
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
    let basket = basket_with(&app, item).await;
    let first = checkout_keyed(&app, basket, "checkout-1").await;
    let retry = checkout_keyed(&app, basket, "checkout-1").await;
    assert_eq!((first.status, retry.status), (201, 201));
    assert_eq!(first.body["order_id"], retry.body["order_id"]);
    assert_eq!(orders_placed(&app).await, 1);
}

#[tokio::test]
async fn keys_are_kept_in_postgres_for_at_least_24_hours() {
    let app = TestApp::spawn().await;
    let first = post_keyed(&app, "/products", product("AGED"), "aged").await;
    let age = |hours: i32| {
        sqlx::query("UPDATE idempotency_keys SET created_at = now() - make_interval(hours => $1) WHERE key LIKE '%:aged'")
            .bind(hours)
            .execute(&app.db.pool)
    };

    age(23).await.expect("age the key");
    let retry = post_keyed(&app, "/products", product("AGED"), "aged").await;
    assert_eq!(retry.body, first.body, "a 23-hour-old key still replays");

    age(25).await.expect("age the key");
    let after_expiry = post_keyed(&app, "/products", product("AGED-2"), "aged").await;
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

    let ok = add_if_match(&app, basket, item, "\"1\"").await;
    assert_eq!((ok.status, ok.header("etag")), (200, Some("\"2\"")));
    let events = app.event_count().await;
    let stale = add_if_match(&app, basket, item, "\"1\"").await;
    stale.assert_problem(412, "stale-version");
    assert_eq!(app.event_count().await, events);
    let any = add_if_match(&app, basket, item, "*").await;
    assert_eq!(any.status, 200);
}

#[tokio::test]
async fn if_match_with_a_concurrent_writer_never_applies_twice() {
    let app = TestApp::spawn().await;
    let item = app.register_product("MUG", 100, 500).await;
    let basket = app.open_basket().await;
    // Ten clients all believe the basket is at version 1.
    let responses = join_all((0..10).map(|_| add_if_match(&app, basket, item, "\"1\""))).await;
    let accepted = responses.iter().filter(|r| r.status == 200).count();
    assert_eq!(accepted, 1, "exactly one write at version 1 succeeds");
    for response in responses.iter().filter(|r| r.status != 200) {
        response.assert_problem(412, "stale-version");
    }
}

/// The number of orders placed in the test's database.
async fn orders_placed(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'OrderPlaced'")
        .fetch_one(&app.db.pool)
        .await
        .expect("count orders")
}

#[tokio::test]
async fn concurrent_checkouts_with_one_key_all_answer_with_the_one_order() {
    let app = TestApp::spawn().await;
    let item = app.register_product("MUG", 100, 100).await;
    // The race is between one request's commit and another's look-up of the
    // key, so each round gives it 64 chances.
    for round in 0..8 {
        let basket = basket_with(&app, item).await;
        let key = format!("checkout-burst-{round}");

        let responses = join_all((0..64).map(|_| checkout_keyed(&app, basket, &key))).await;

        for response in &responses {
            assert_eq!(
                response.status, 201,
                "round {round}: every duplicate replays: {}",
                response.body
            );
            assert_eq!(response.body, responses[0].body, "round {round}");
            assert_eq!(response.header("location"), responses[0].header("location"));
        }
    }
    assert_eq!(orders_placed(&app).await, 8);
}

#[tokio::test]
async fn a_checkout_and_its_immediate_retry_both_answer_with_the_one_order() {
    let app = TestApp::spawn().await;
    let item = app.register_product("MUG", 100, 100).await;
    for trial in 0..30 {
        let basket = basket_with(&app, item).await;
        let key = format!("checkout-{trial}");
        let (original, retry) = tokio::join!(
            checkout_keyed(&app, basket, &key),
            checkout_keyed(&app, basket, &key),
        );
        assert_eq!(original.status, 201, "trial {trial}: {}", original.body);
        assert_eq!(retry.status, 201, "trial {trial}: {}", retry.body);
        assert_eq!(retry.body, original.body, "trial {trial}");
    }
    assert_eq!(orders_placed(&app).await, 30);
}

#[tokio::test]
async fn a_key_held_by_a_request_in_flight_answers_a_retryable_409_until_its_claim_lapses() {
    let app = TestApp::spawn_with(|config| config.idempotency_wait_ms = 100).await;
    let body = json!({"customer_id": Uuid::now_v7()});
    let opened = post_keyed(&app, "/baskets", body.clone(), "template").await;
    assert_eq!(opened.status, 201, "{}", opened.body);
    // The same request under the key 'in-flight', claimed by a request that
    // has not finished (or has crashed).
    sqlx::query(
        "INSERT INTO idempotency_keys (key, fingerprint, claim_id, claimed_until) \
         SELECT replace(key, ':template', ':in-flight'), fingerprint, gen_random_uuid(), \
                now() + interval '1 hour' \
         FROM idempotency_keys WHERE key LIKE '%:template'",
    )
    .execute(&app.db.pool)
    .await
    .expect("claim the key");
    let events = app.event_count().await;
    let key = "in-flight";

    let busy = post_keyed(&app, "/baskets", body.clone(), key).await;
    busy.assert_problem(409, "idempotency-key-in-progress");
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert!(
        busy.body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("'in-flight'")),
        "the detail names the key: {}",
        busy.body
    );
    let other = post_keyed(
        &app,
        "/baskets",
        json!({"customer_id": Uuid::now_v7()}),
        key,
    )
    .await;
    other.assert_problem(422, "idempotency-key-reused");
    assert_eq!(app.event_count().await, events, "nothing ran meanwhile");

    // The claim lapses: the key is free again, and then remembered.
    sqlx::query(
        "UPDATE idempotency_keys SET claimed_until = now() - interval '1 second' \
         WHERE key LIKE '%:in-flight'",
    )
    .execute(&app.db.pool)
    .await
    .expect("lapse the claim");
    let retry = post_keyed(&app, "/baskets", body.clone(), key).await;
    assert_eq!(retry.status, 201, "{}", retry.body);
    let again = post_keyed(&app, "/baskets", body, key).await;
    assert_eq!(again.body, retry.body);
    assert_eq!(app.event_count().await, events + 1);
}

#[tokio::test]
async fn a_rejected_command_is_not_remembered_and_its_retry_runs_again() {
    let app = TestApp::spawn().await;
    let item = app.register_product("MUG", 100, 5).await;
    let basket = app.open_basket().await;
    let key = "checkout-too-early";

    let empty = checkout_keyed(&app, basket, key).await;
    empty.assert_problem(409, "basket-empty");
    app.add_item(basket, item, 1).await;
    let retry = checkout_keyed(&app, basket, key).await;
    assert_eq!(retry.status, 201, "{}", retry.body);
    assert_eq!(orders_placed(&app).await, 1);
}

#[tokio::test]
async fn a_claim_that_lapsed_and_was_taken_over_cannot_commit() {
    let db = TestDb::new().await;
    let store = EventStore::new(
        db.pool.clone(),
        event_schemas::upcasters(),
        SnapshotPolicy::default(),
    );
    let (slow, quick) = (Uuid::now_v7(), Uuid::now_v7());
    let claim = |claim| store.claim_idempotency_key("k", b"request", claim, Duration::ZERO);
    assert_eq!(claim(slow).await.expect("claim"), None);
    // A lease of zero lapses at once, so the next request takes the key.
    assert_eq!(claim(quick).await.expect("take over"), None);

    let record = |claim, outcome: &'static str| {
        let mut uow = UnitOfWork::new();
        uow.record_idempotency(IdempotencyRecord {
            key: "k".into(),
            claim,
            outcome: Box::new(move |_| json!(outcome)),
        });
        uow
    };
    assert!(matches!(
        store.commit(record(slow, "slow")).await,
        Err(CommitError::IdempotencyKeyTaken)
    ));
    assert!(
        !store
            .release_idempotency_key("k", slow)
            .await
            .expect("release")
    );
    store.commit(record(quick, "quick")).await.expect("commit");

    let stored = claim(Uuid::now_v7())
        .await
        .expect("look up")
        .expect("the key is taken");
    assert_eq!(stored.outcome, Some(json!("quick")));
}

#[tokio::test]
async fn a_request_abandoned_by_its_client_releases_its_key() {
    let app = TestApp::spawn().await;
    let basket = json!({"customer_id": Uuid::now_v7()});
    // Appends wait while this transaction holds the table; reads do not.
    let mut lock = app.db.pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock the events");
    let request = tokio::spawn({
        let (client, url) = (app.client.clone(), format!("{}/baskets", app.address));
        let body = basket.clone();
        async move {
            client
                .post(url)
                .header("idempotency-key", "abandoned")
                .json(&body)
                .send()
                .await
        }
    });
    until_count(
        &app.db,
        "the request to wait to append",
        "SELECT count(*) FROM pg_locks WHERE relation = 'events'::regclass AND NOT granted",
        |waiting| waiting > 0,
    )
    .await;

    request.abort();
    until_count(
        &app.db,
        "the claim to be released",
        "SELECT count(*) FROM idempotency_keys WHERE key LIKE '%:abandoned'",
        |claims| claims == 0,
    )
    .await;
    lock.rollback().await.expect("unlock the events");

    let retry = post_keyed(&app, "/baskets", basket, "abandoned").await;
    assert_eq!(retry.status, 201, "{}", retry.body);
}
