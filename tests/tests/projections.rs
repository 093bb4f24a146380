//! Projectors end to end: REST commands → event store → relay → broker →
//! projectors → PostgreSQL views.

use std::time::Duration;

use eshop_tests::{
    Consumed, TestApp, TestBroker, TestSearch, eventually, start_projectors, start_relay,
};
use projections::event::Event;
use projections::projector::{Origin, apply_batch, apply_message};
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

/// Every event of the store, once each, as the projectors receive it.
async fn every_published_event(app: &TestApp, broker: &TestBroker) -> Vec<Consumed> {
    broker.published(&app.db.pool).await
}

/// An order of 3 × 7.00 placed and cancelled; every event of it, as the
/// relay published it.
async fn cancelled_order_published(app: &TestApp) -> Vec<Consumed> {
    let broker = TestBroker::new();
    let _relay = start_relay(&app.db, &broker, "projections-test");
    let (order, _) = app.placed_order("MUG", 700, 3).await;
    app.post(
        &format!("/orders/{order}/cancel"),
        json!({"reason": "test"}),
    )
    .await;
    every_published_event(app, &broker).await
}

/// A consumed message as a projector sees it: where it came from, and its
/// event.
fn decoded(message: &Consumed) -> (Origin<'_>, Event) {
    let event =
        Event::decode(&serde_json::to_vec(&message.envelope).expect("json")).expect("decodes");
    let source = Origin {
        topic: &message.topic,
        partition: message.partition,
        offset: message.offset,
    };
    (source, event)
}

/// Hands a consumed message to every view that reads its aggregate type,
/// as its projector would; returns, per view, whether it applied it.
async fn deliver(app: &TestApp, message: &Consumed) -> Vec<(&'static str, bool)> {
    let (source, event) = decoded(message);
    let mut outcomes = Vec::new();
    for projection in projections::views::all() {
        if projection
            .aggregate_types()
            .contains(&event.envelope.aggregatetype.as_str())
        {
            let applied = apply_message(&app.db.pool, projection.as_ref(), source, &event)
                .await
                .expect("apply");
            outcomes.push((projection.name(), applied));
        }
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_and_products_reach_their_views_with_the_right_values() {
    eshop_tests::log_projections();
    let app = TestApp::spawn().await;
    let broker = TestBroker::new();
    let search = TestSearch::new(&broker.prefix).await;
    let _relay = start_relay(&app.db, &broker, "projections-test");
    let _projectors = start_projectors(&app.db, &broker, &search, "views");

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
    eshop_tests::log_projections();
    let app = TestApp::spawn().await;
    let broker = TestBroker::new();
    let search = TestSearch::new(&broker.prefix).await;
    let _relay = start_relay(&app.db, &broker, "projections-test");
    let first = start_projectors(&app.db, &broker, &search, "first");
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
    let published = every_published_event(&app, &broker).await;
    let mut redelivered = 0;
    for message in &published {
        for (projection, applied) in deliver(&app, message).await {
            assert!(!applied, "{projection} applied an event twice");
            redelivered += 1;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_delivered_out_of_order_build_the_same_views() {
    let app = TestApp::spawn().await;
    let published = cancelled_order_published(&app).await;

    // Newest first, as a broker that reordered retried batches, or a stray
    // request of a crashed producer, might deliver them: each aggregate's
    // last event arrives first, and the events before it are read from the
    // event store; the late copies are then skipped.
    let mut applied = 0;
    for message in published.iter().rev() {
        for (_, taken) in deliver(&app, message).await {
            applied += usize::from(taken);
        }
    }
    // Only the last event of each aggregate, per projection, came first:
    // product_catalog 1, basket_view 1, order_view and sales_daily 1 each.
    assert_eq!(applied, 4);
    let (catalog, orders, baskets_and_sales) = views(&app).await;
    assert_eq!(catalog.len(), 1);
    assert_eq!(catalog[0]["version"], 3);
    assert_eq!(
        (
            catalog[0]["on_hand"].as_i64(),
            catalog[0]["reserved"].as_i64()
        ),
        (Some(10), Some(0)),
        "reserved 3, released 3"
    );
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["status"], "cancelled");
    assert_eq!(orders[0]["total_minor"], 2100);
    let history: Vec<&str> = orders[0]["status_history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(history, ["placed", "cancelled"]);
    assert_eq!(baskets_and_sales.len(), 1);
    assert_eq!(baskets_and_sales[0]["status"], "checked_out");
    assert_eq!(
        (
            baskets_and_sales[0]["units"].as_i64(),
            baskets_and_sales[0]["orders"].as_i64()
        ),
        (Some(0), Some(0)),
        "booked and taken off again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_of_events_out_of_order_and_twice_applies_each_once() {
    let app = TestApp::spawn().await;
    let published = cancelled_order_published(&app).await;

    // Every message twice, newest first both times, in one transaction per
    // view, as a projector takes a burst after a seek: each event is applied
    // once (the newest of each aggregate first, with the ones before it
    // from the event store), and each partition's offset is recorded at its
    // furthest message, though the batch ends with its nearest.
    let delivered: Vec<&Consumed> = published
        .iter()
        .rev()
        .chain(published.iter().rev())
        .collect();
    let decoded: Vec<(Origin<'_>, Event)> = delivered.iter().map(|m| decoded(m)).collect();
    let mut applied = 0;
    for projection in projections::views::all() {
        let mine: Vec<(Origin<'_>, Event)> = decoded
            .iter()
            .filter(|(_, event)| {
                projection
                    .aggregate_types()
                    .contains(&event.envelope.aggregatetype.as_str())
            })
            .map(|(source, event)| (*source, event.clone()))
            .collect();
        applied += apply_batch(&app.db.pool, projection.as_ref(), &mine)
            .await
            .expect("apply");
    }
    assert_eq!(applied, 4, "one per view and aggregate, the rest skipped");
    let (catalog, orders, baskets_and_sales) = views(&app).await;
    assert_eq!(catalog[0]["version"], 3);
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["status"], "cancelled");
    assert_eq!(baskets_and_sales[0]["status"], "checked_out");
    let recorded: Vec<(String, String, i32, i64)> = sqlx::query_as(
        "SELECT projection, topic, partition, next_offset FROM projection_offsets ORDER BY 1, 2, 3",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("offsets");
    for (projection, topic, partition, next) in &recorded {
        let reads = projections::views::all()
            .into_iter()
            .find(|p| p.name() == projection)
            .expect("a view")
            .aggregate_types();
        let furthest = published
            .iter()
            .filter(|m| &m.topic == topic && m.partition == *partition)
            .filter(|m| reads.contains(&m.envelope["aggregatetype"].as_str().expect("type")))
            .map(|m| m.offset)
            .max()
            .expect("a message of the partition");
        assert_eq!(*next, furthest + 1, "{projection} on {topic}/{partition}");
    }
    assert!(!recorded.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_discontinuation_basket_edits_and_delivery_reach_their_views() {
    let app = TestApp::spawn().await;
    let broker = TestBroker::new();
    let search = TestSearch::new(&broker.prefix).await;
    let _relay = start_relay(&app.db, &broker, "projections-test");
    let _projectors = start_projectors(&app.db, &broker, &search, "views");

    // StockAdjusted, then ProductDiscontinued.
    let lamp = app.register_product("LAMP", 4000, 5).await;
    let adjusted = app
        .post(
            &format!("/products/{lamp}/stock"),
            json!({"delta": 7, "reason": "delivery"}),
        )
        .await;
    assert_eq!(adjusted.status, 200, "{}", adjusted.body);
    assert_eq!(
        app.post(&format!("/products/{lamp}/discontinue"), json!({}))
            .await
            .status,
        200
    );

    // ItemQuantityChanged and ItemRemoved in one basket, BasketCleared in
    // another; OrderPaid, OrderShipped and OrderDelivered on an order.
    let mug = app.register_product("MUG", 1000, 50).await;
    let cup = app.register_product("CUP", 300, 50).await;
    let edited = app.open_basket().await;
    app.add_item(edited, mug, 1).await;
    app.add_item(edited, cup, 2).await;
    let changed = app
        .send(
            reqwest::Method::PUT,
            &format!("/baskets/{edited}/items/{mug}"),
            Some(json!({"quantity": 4})),
            &[],
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let removed = app
        .send(
            reqwest::Method::DELETE,
            &format!("/baskets/{edited}/items/{cup}"),
            None,
            &[],
        )
        .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    let cleared_basket = app.open_basket().await;
    app.add_item(cleared_basket, cup, 3).await;
    let cleared = app
        .send(
            reqwest::Method::DELETE,
            &format!("/baskets/{cleared_basket}/items"),
            None,
            &[],
        )
        .await;
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    let bought = app.open_basket().await;
    app.add_item(bought, cup, 1).await;
    let order = app.checkout(bought).await.id();
    app.post(
        &format!("/orders/{order}/pay"),
        json!({"payment_reference": "p-9", "amount": {"amount_minor": 300, "currency": "EUR"}}),
    )
    .await;
    app.post(
        &format!("/orders/{order}/ship"),
        json!({"tracking_number": "T-9"}),
    )
    .await;
    assert_eq!(
        app.post(&format!("/orders/{order}/deliver"), json!({}))
            .await
            .status,
        200
    );

    let lamp_row = eventually(Duration::from_secs(60), "the lamp's last event", || async {
        rows(
            &app,
            &format!("SELECT on_hand, reserved, available, status, version FROM product_catalog WHERE product_id = '{lamp}'"),
        )
        .await
        .into_iter()
        .find(|r| r["version"] == 3)
    })
    .await;
    assert_eq!(
        (lamp_row["on_hand"].as_i64(), lamp_row["available"].as_i64()),
        (Some(12), Some(12))
    );
    assert_eq!(lamp_row["status"], "discontinued");

    let baskets = eventually(Duration::from_secs(60), "both edited baskets", || async {
        let rows = rows(
            &app,
            &format!(
                "SELECT basket_id, status, lines, total_minor, item_count, version FROM basket_view \
                 WHERE basket_id IN ('{edited}', '{cleared_basket}')"
            ),
        )
        .await;
        let versions: Vec<i64> = rows.iter().filter_map(|r| r["version"].as_i64()).collect();
        (versions.len() == 2 && versions.iter().all(|v| *v == 5 || *v == 3)
            && rows.iter().any(|r| r["version"] == 5)
            && rows.iter().any(|r| r["version"] == 3))
        .then_some(rows)
    })
    .await;
    let edited_row = baskets
        .iter()
        .find(|b| b["basket_id"] == edited.to_string())
        .expect("edited basket");
    let lines = edited_row["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 1, "the cup was removed: {lines:?}");
    assert_eq!(lines[0]["product_id"], mug.to_string());
    assert_eq!(lines[0]["quantity"], 4);
    assert_eq!(lines[0]["line_total_minor"], 4000);
    assert_eq!(
        (
            edited_row["total_minor"].as_i64(),
            edited_row["item_count"].as_i64()
        ),
        (Some(4000), Some(4))
    );
    let cleared_row = baskets
        .iter()
        .find(|b| b["basket_id"] == cleared_basket.to_string())
        .expect("cleared basket");
    assert_eq!(cleared_row["lines"], json!([]));
    assert_eq!(
        (
            cleared_row["total_minor"].as_i64(),
            cleared_row["item_count"].as_i64()
        ),
        (Some(0), Some(0))
    );

    let delivered = eventually(Duration::from_secs(60), "the delivered order", || async {
        rows(
            &app,
            &format!("SELECT status, status_history FROM order_view WHERE order_id = '{order}'"),
        )
        .await
        .into_iter()
        .find(|o| o["status"] == "delivered")
    })
    .await;
    let history: Vec<&str> = delivered["status_history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(history, ["placed", "paid", "shipped", "delivered"]);
    // The cup's stock: 50, one unit reserved and then shipped.
    let cup_row = eventually(Duration::from_secs(60), "the cup shipped", || async {
        rows(
            &app,
            &format!(
                "SELECT on_hand, reserved, version FROM product_catalog WHERE product_id = '{cup}'"
            ),
        )
        .await
        .into_iter()
        .find(|r| r["version"] == 3)
    })
    .await;
    assert_eq!(
        (cup_row["on_hand"].as_i64(), cup_row["reserved"].as_i64()),
        (Some(49), Some(0))
    );
}
