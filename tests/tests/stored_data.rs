//! Stored data that does not decode is an error wherever it is read, never
//! a made-up default: the projector dead-letters the event that would have
//! written a default back, and the GraphQL API answers with a coded error
//! instead of an order that was never so.

use eshop_tests::graphql::{TestGraphql, error_codes};
use eshop_tests::{TestApp, TestBroker, TestSearch};
use projections::projector::{Failure, Origin, apply_message};
use query_api::config::QueryConfig;
use read_models::testing::History;
use serde_json::{Value, json};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basket_row_whose_lines_do_not_decode_dead_letters_the_next_event_and_stays_as_it_was() {
    let app = TestApp::spawn().await;
    let basket = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO basket_view (basket_id, customer_id, status, lines, total_minor, item_count, \
           opened_at, updated_at, version) \
         VALUES ($1, $2, 'open', '[{\"not\": \"a line\"}]', 0, 0, now(), now(), 1)",
    )
    .bind(basket)
    .bind(Uuid::now_v7())
    .execute(&app.db.pool)
    .await
    .expect("a corrupt row");
    sqlx::query(
        "INSERT INTO projection_progress (projection, aggregate_id, sequence) VALUES ('basket_view', $1, 1)",
    )
    .bind(basket.to_string())
    .execute(&app.db.pool)
    .await
    .expect("its progress");

    let added = History::after("Basket", basket, 1).next(
        "ItemAdded",
        json!({"product_id": Uuid::now_v7(), "sku": "MUG-1", "name": "Mug",
               "unit_price": {"amount_minor": 500, "currency": "EUR"}, "quantity": 1}),
    );
    let view = projections::views::all()
        .into_iter()
        .find(|p| p.name() == "basket_view")
        .expect("the basket view");
    let origin = Origin {
        topic: "baskets",
        partition: 0,
        offset: 0,
    };
    match apply_message(&app.db.pool, view.as_ref(), origin, &added).await {
        Err(Failure::Poison(error)) => {
            assert!(error.contains("does not decode"), "{error}");
        }
        Err(Failure::Transient(error)) => panic!("a transient failure: {error}"),
        Ok(applied) => panic!("applied ({applied}) over a row that does not decode"),
    }
    let (lines, version): (Value, i64) =
        sqlx::query_as("SELECT lines, version FROM basket_view WHERE basket_id = $1")
            .bind(basket)
            .fetch_one(&app.db.pool)
            .await
            .expect("the row");
    assert_eq!(
        (lines, version),
        (json!([{"not": "a line"}]), 1),
        "the row is left as it was, not written back with no lines"
    );
}

/// An `order_view` row as the projector writes it, with `status` and
/// `lines` as given.
async fn stored_order(app: &TestApp, status: &str, lines: Value) -> Uuid {
    let order = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO order_view (order_id, customer_id, basket_id, status, total_minor, currency, lines, \
           shipping_address, status_history, placed_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, 500, 'EUR', $5, $6, $7, now(), now(), 1)",
    )
    .bind(order)
    .bind(Uuid::now_v7())
    .bind(Uuid::now_v7())
    .bind(status)
    .bind(lines)
    .bind(&TestApp::address_json()["shipping_address"])
    .bind(json!([{"status": "placed", "at": "2026-11-29T10:00:00Z"}]))
    .execute(&app.db.pool)
    .await
    .expect("an order row");
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_row_that_does_not_decode_is_an_internal_error_not_a_made_up_order() {
    let app = TestApp::spawn().await;
    let broker = TestBroker::new();
    let search = TestSearch::new(&broker.prefix).await;
    let gql = TestGraphql::spawn(&app, &broker, &search, "stored", QueryConfig::default()).await;
    let line = json!({"product_id": Uuid::now_v7(), "sku": "MUG-1", "name": "Mug",
                      "unit_price": {"amount_minor": 500, "currency": "EUR"}, "quantity": 1});
    let query = "query($id: ID!) { order(id: $id) { id status lines { sku } } }";

    let sound = stored_order(&app, "paid", json!([line])).await;
    let answer = gql.query(query, json!({"id": sound})).await;
    assert_eq!(
        answer["data"]["order"],
        json!({"id": sound, "status": "PAID", "lines": [{"sku": "MUG-1"}]}),
        "{answer}"
    );

    for (status, lines) in [
        // Read as PLACED before.
        ("shipped-ish", json!([line])),
        // Read as no lines before.
        ("paid", json!([{"not": "a line"}])),
    ] {
        let order = stored_order(&app, status, lines).await;
        let answer = gql.query(query, json!({"id": order})).await;
        assert_eq!(
            error_codes(&answer),
            ["INTERNAL_SERVER_ERROR"],
            "{status}: {answer}"
        );
        assert_eq!(answer["data"]["order"], Value::Null, "{answer}");
        let message = answer["errors"][0]["message"].as_str().unwrap_or("");
        assert!(
            !message.contains("shipped-ish") && !message.contains("a line"),
            "the cause is logged, not shown: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stored_without_its_occurrence_time_is_booked_on_the_day_it_was_recorded() {
    let db = eshop_tests::TestDb::new().await;
    let order = Uuid::now_v7();
    let line = json!({"product_id": Uuid::now_v7(), "sku": "MUG-1", "name": "Mug",
                      "unit_price": {"amount_minor": 500, "currency": "EUR"}, "quantity": 2});
    // As another writer could leave it: no metadata at all.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Order', $1, 1, 'OrderPlaced', '1.0', $2, '{}')",
    )
    .bind(order.to_string())
    .bind(json!({"OrderPlaced": {
        "customer_id": Uuid::now_v7(), "basket_id": Uuid::now_v7(),
        "lines": [line], "total": {"amount_minor": 1000, "currency": "EUR"},
        "shipping_address": TestApp::address_json()["shipping_address"],
    }}))
    .execute(&db.pool)
    .await
    .expect("a stored event");

    let selection =
        projections::replay::select(&["sales_daily".to_owned()], false).expect("a projection");
    let no_search = projections::search::SearchConfig {
        url: "http://127.0.0.1:9200".parse().expect("a URL"),
        index_prefix: "unused".to_owned(),
    };
    projections::replay::rebuild(
        &event_store::DatabaseConfig::for_url(&db.url),
        &selection,
        &no_search,
        &projections::replay::RebuildOptions::default(),
    )
    .await
    .expect("the rebuild runs");
    let (booked, recorded): (chrono::NaiveDate, chrono::NaiveDate) = sqlx::query_as(
        "SELECT s.day, (e.recorded_at AT TIME ZONE 'UTC')::date \
         FROM sales_daily_orders s JOIN events e ON e.aggregate_id = s.order_id::text \
         WHERE s.order_id = $1",
    )
    .bind(order)
    .fetch_one(&db.pool)
    .await
    .expect("the order is booked");
    assert_eq!(booked, recorded, "not on 1970-01-01");
}
