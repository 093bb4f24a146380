//! Projectors end to end: REST commands → event store → relay → broker →
//! projectors → PostgreSQL views.

use std::time::Duration;

use eshop_tests::{TestApp, TestBroker, eventually, start_projectors, start_relay};
use projections::event::Event;
use projections::projector::apply_message;
use serde_json::{Value, json};
use uuid::Uuid;

async fn rows(app: &TestApp, sql: &str) -> Vec<Value> {
    sqlx::query_scalar::<_, Value>(&format!(
        "SELECT coalesce(jsonb_agg(t ORDER BY t), '[]') FROM ({sql}) t"
    ))
    .fetch_one(&app.db.pool)
    .await
    .map(|v| v.as_array().cloned().unwrap_or_default())
    .expect("view rows")
}

async fn views(app: &TestApp) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    (
        rows(app, "SELECT product_id, sku, price_minor, on_hand, reserved, available, status, version FROM product_catalog").await,
        rows(app, "SELECT order_id, status, total_minor, lines, status_history, version FROM order_view").await,
        rows(
            app,
            "SELECT b.basket_id, b.status, b.total_minor, b.version, s.units, s.revenue_minor, s.orders \
             FROM basket_view b CROSS JOIN sales_daily s",
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_and_products_reach_their_views_with_the_right_values() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,eshop_projections=info")
        .with_test_writer()
        .try_init();
    let app = TestApp::spawn().await;
    let broker = TestBroker::new();
    let _relay = start_relay(&app.db, &broker, "projections-test");
    let _projectors = start_projectors(&app.db, &broker, "views");

    let mug = app.register_product("MUG", 1500, 10).await;
    app.post(
        &format!("/products/{mug}/price"),
        json!({"price": {"amount_minor": 1200, "currency": "EUR"}}),
    )
    .await;
    let basket = app.open_basket().await;
    app.add_item(basket, mug, 2).await;
    let shipped = app.checkout(basket).await.id();
    app.post(
        &format!("/orders/{shipped}/pay"),
        json!({"payment_reference": "p-1", "amount": {"amount_minor": 2400, "currency": "EUR"}}),
    )
    .await;
    app.post(
        &format!("/orders/{shipped}/ship"),
        json!({"tracking_number": "T-1"}),
    )
    .await;
    let other = app.open_basket().await;
    app.add_item(other, mug, 3).await;
    let cancelled = app.checkout(other).await.id();
    app.post(
        &format!("/orders/{cancelled}/cancel"),
        json!({"reason": "changed my mind"}),
    )
    .await;

    // The product's last event is its 6th (register, price, reserve,
    // ship, reserve, release); the orders' are their 3rd and 2nd.
    let (catalog, orders) =
        eventually(Duration::from_secs(60), "the views to catch up", || async {
            let (catalog, orders, _) = views(&app).await;
            let done = catalog.first().is_some_and(|p| p["version"] == 6)
                && orders
                    .iter()
                    .filter(|o| o["status"] == "shipped" || o["status"] == "cancelled")
                    .count()
                    == 2;
            done.then_some((catalog, orders))
        })
        .await;

    let product = &catalog[0];
    assert_eq!(product["sku"], "MUG");
    assert_eq!(product["price_minor"], 1200);
    assert_eq!(
        (
            product["on_hand"].as_i64(),
            product["reserved"].as_i64(),
            product["available"].as_i64()
        ),
        (Some(8), Some(0), Some(8))
    );
    assert_eq!(product["status"], "active");

    let by_id = |id: Uuid| {
        orders
            .iter()
            .find(|o| o["order_id"] == id.to_string())
            .cloned()
            .expect("order row")
    };
    let shipped = by_id(shipped);
    assert_eq!(shipped["total_minor"], 2400);
    assert_eq!(shipped["lines"][0]["quantity"], 2);
    assert_eq!(shipped["lines"][0]["unit_price"]["amount_minor"], 1200);
    let history: Vec<&str> = shipped["status_history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(history, ["placed", "paid", "shipped"]);
    let cancelled = by_id(cancelled);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["total_minor"], 3600);

    let baskets = eventually(
        Duration::from_secs(60),
        "basket_view to catch up",
        || async {
            let rows = rows(
                &app,
                "SELECT basket_id, status, lines, total_minor, item_count FROM basket_view",
            )
            .await;
            (rows.len() == 2 && rows.iter().all(|b| b["status"] == "checked_out")).then_some(rows)
        },
    )
    .await;
    let first = baskets
        .iter()
        .find(|b| b["basket_id"] == basket.to_string())
        .expect("basket row");
    assert_eq!(
        first["total_minor"], 2400,
        "two mugs at the price when added"
    );
    assert_eq!(first["item_count"], 2);
    assert_eq!(first["lines"][0]["line_total_minor"], 2400);

    // Sales of the day: the shipped order's 2 units; the cancelled order's
    // 3 were booked and taken off again.
    let sales = eventually(
        Duration::from_secs(60),
        "sales_daily to catch up",
        || async {
            let rows = rows(
                &app,
                "SELECT product_id, units, revenue_minor, orders, currency FROM sales_daily",
            )
            .await;
            rows.first()
                .is_some_and(|r| r["orders"] == 1)
                .then_some(rows)
        },
    )
    .await;
    assert_eq!(sales.len(), 1);
    assert_eq!(sales[0]["product_id"], mug.to_string());
    assert_eq!(
        (
            sales[0]["units"].as_i64(),
            sales[0]["revenue_minor"].as_i64()
        ),
        (Some(2), Some(2400))
    );
    assert_eq!(sales[0]["currency"], "EUR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_delivered_again_change_nothing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,eshop_projections=info")
        .with_test_writer()
        .try_init();
    let app = TestApp::spawn().await;
    let broker = TestBroker::new();
    let _relay = start_relay(&app.db, &broker, "projections-test");
    let first = start_projectors(&app.db, &broker, "first");
    let (order, _) = app.placed_order("MUG", 700, 3).await;
    app.post(
        &format!("/orders/{order}/cancel"),
        json!({"reason": "test"}),
    )
    .await;
    let before = eventually(Duration::from_secs(60), "the views to catch up", || async {
        let views = views(&app).await;
        let caught_up = views.0.first().is_some_and(|p| p["version"] == 3)
            && views.1.first().is_some_and(|o| o["status"] == "cancelled")
            && views
                .2
                .first()
                .is_some_and(|r| r["status"] == "checked_out" && r["orders"] == 0);
        caught_up.then_some(views)
    })
    .await;
    drop(first);

    // Deliver every published event again: each is skipped, because the
    // views already hold its aggregate's sequence.
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    let published = broker
        .consume_until(Duration::from_secs(60), |seen| seen.len() as i64 >= total)
        .await;
    let mut redelivered = 0;
    for message in &published {
        let event =
            Event::decode(&serde_json::to_vec(&message.envelope).expect("json")).expect("decodes");
        for projection in projections::views::all() {
            if projection
                .aggregate_types()
                .contains(&event.envelope.aggregatetype.as_str())
            {
                let applied = apply_message(&app.db.pool, projection.as_ref(), &event)
                    .await
                    .expect("apply");
                assert!(
                    !applied,
                    "{} applied {} twice",
                    projection.name(),
                    event.envelope.event_type
                );
                redelivered += 1;
            }
        }
    }
    // product_catalog: registered, reserved, released; basket_view: opened,
    // item added, checked out; order_view and sales_daily: placed, cancelled.
    assert_eq!(redelivered, 10);
    let after = views(&app).await;
    assert_eq!(after, before);
    assert_eq!(before.0[0]["reserved"], 0);
    assert_eq!(before.0[0]["on_hand"], 10);
}
