//! A poison event lands in the dead-letter outlet (a topic on a broker,
//! the `dead_letters` table without one) and the projections keep going.

use std::time::Duration;

use eshop_tests::{TestApp, TestBroker, TestSearch, eventually, start_projectors, start_relay};
use serde_json::Value;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_and_the_projections_go_on() {
    eshop_tests::log_projections();
    let app = TestApp::spawn().await;
    let broker = TestBroker::new();
    let search = TestSearch::new(&broker.prefix).await;
    // An order event whose data does not match its schema, as a buggy or
    // foreign writer might leave it.
    let poison = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Order', $1, 1, 'OrderPlaced', '1.0', '{\"OrderPlaced\": {\"total\": \"lots\"}}', '{}')",
    )
    .bind(poison.to_string())
    .execute(&app.db.pool)
    .await
    .expect("insert poison");
    let _relay = start_relay(&app.db, &broker, "dead-letters");
    let _projectors = start_projectors(&app.db, &broker, &search, "views");

    // A good order after the poison one still reaches the views.
    let (order, _) = app.placed_order("MUG", 500, 1).await;
    eventually(
        Duration::from_secs(60),
        "the good order in order_view",
        || async {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM order_view WHERE order_id = $1")
                    .bind(order)
                    .fetch_optional(&app.db.pool)
                    .await
                    .ok()?;
            status.filter(|s| s == "placed")
        },
    )
    .await;

    // ... and the search index.
    eventually(
        Duration::from_secs(60),
        "the good order in the index",
        || async { search.document("orders", &order.to_string()).await },
    )
    .await;

    // Every projection that reads orders dead-lettered it, with the error
    // and the original envelope.
    let letters = broker.dead_letters(&app.db.pool, 3).await;
    let mut projections: Vec<&str> = letters
        .iter()
        .map(|l| l.headers["dlq_projection"].as_str())
        .collect();
    projections.sort_unstable();
    assert_eq!(projections, ["order_view", "sales_daily", "search"]);
    for letter in &letters {
        assert!(
            letter.headers["dlq_error"].contains("does not match its schema"),
            "{:?}",
            letter.headers
        );
        assert_eq!(letter.headers["dlq_topic"], broker.topic_of("Order"));
        assert_eq!(letter.key, poison.to_string());
        assert_eq!(
            letter.headers["ce_type"], "eshop.Order.OrderPlaced",
            "the original headers follow"
        );
        assert_eq!(
            letter.envelope["data"]["total"],
            Value::from("lots"),
            "the original payload"
        );
    }
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT projection, dead_letters FROM projection_status ORDER BY projection",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("status");
    assert_eq!(
        counts,
        [
            ("order_view".to_owned(), 1),
            ("sales_daily".to_owned(), 1),
            ("search".to_owned(), 1)
        ]
    );
}
