//! Concurrent writers over HTTP: no lost update, no oversold stock.

use domain::basket::Basket;
use domain::product::Product;
use eshop_tests::TestApp;
use event_store::{EventStore, SnapshotPolicy};
use futures::future::join_all;
use uuid::Uuid;

fn store(app: &TestApp) -> EventStore {
    EventStore::new(
        app.db.pool.clone(),
        event_schemas::upcasters(),
        SnapshotPolicy::default(),
    )
}

#[tokio::test]
async fn fifty_concurrent_add_items_on_one_basket_lose_no_update() {
    let app = TestApp::spawn().await;
    let mut products = Vec::new();
    for n in 0..50 {
        products.push(app.register_product(&format!("P-{n}"), 100, 10).await);
    }
    let basket = app.open_basket().await;

    let responses = join_all(
        products
            .iter()
            .map(|product| app.add_item(basket, *product, 1)),
    )
    .await;
    let accepted = responses.iter().filter(|r| r.status == 200).count();
    for response in responses.iter().filter(|r| r.status != 200) {
        // The only acceptable failure is contention outlasting the retries.
        response.assert_problem(409, "concurrent-modification");
    }

    let loaded = store(&app)
        .load::<Basket>(&basket.to_string())
        .await
        .expect("load basket");
    assert_eq!(
        loaded.version,
        1 + accepted,
        "final version = 1 + accepted requests"
    );
    assert_eq!(loaded.aggregate.lines().len(), accepted);
    assert!(
        accepted >= 40,
        "only {accepted} of 50 were accepted within the retry budget"
    );
}

#[tokio::test]
async fn fifty_concurrent_adds_of_one_product_sum_up_exactly() {
    let app = TestApp::spawn().await;
    let product = app.register_product("ONE", 100, 10).await;
    let basket = app.open_basket().await;

    let responses = join_all((0..50).map(|_| app.add_item(basket, product, 1))).await;
    let accepted = responses.iter().filter(|r| r.status == 200).count();
    assert!(responses.iter().all(|r| r.status == 200 || r.status == 409));

    let loaded = store(&app)
        .load::<Basket>(&basket.to_string())
        .await
        .expect("load basket");
    assert_eq!(loaded.version, 1 + accepted);
    assert_eq!(
        loaded.aggregate.lines()[0].quantity as usize,
        accepted,
        "every accepted add counted once"
    );
}

#[tokio::test]
async fn twenty_checkouts_for_the_last_unit_yield_exactly_one_order() {
    let app = TestApp::spawn().await;
    let product = app.register_product("LAST", 999, 1).await;
    let mut baskets = Vec::new();
    for _ in 0..20 {
        let basket = app.open_basket().await;
        assert_eq!(app.add_item(basket, product, 1).await.status, 200);
        baskets.push(basket);
    }
    let events_before = app.event_count().await;

    let responses = join_all(baskets.iter().map(|basket| app.checkout(*basket))).await;
    let winners: Vec<Uuid> = responses
        .iter()
        .filter(|r| r.status == 201)
        .map(|r| r.id())
        .collect();
    assert_eq!(winners.len(), 1, "exactly one checkout succeeds");
    for loser in responses.iter().filter(|r| r.status != 201) {
        loser.assert_problem(409, "insufficient-stock");
    }

    // The winner appended basket + reservation + order; the losers nothing.
    assert_eq!(app.event_count().await, events_before + 3);
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'OrderPlaced'")
            .fetch_one(&app.db.pool)
            .await
            .expect("count orders");
    assert_eq!(orders, 1);
    let stock = store(&app)
        .load::<Product>(&product.to_string())
        .await
        .expect("load product")
        .aggregate;
    assert_eq!(
        (stock.on_hand(), stock.reserved(), stock.available()),
        (1, 1, 0)
    );
    let mut open = 0;
    for basket in &baskets {
        let loaded = store(&app)
            .load::<Basket>(&basket.to_string())
            .await
            .expect("load basket");
        if loaded.aggregate.order_id().is_none() {
            open += 1;
            assert_eq!(loaded.version, 2, "a losing basket is untouched");
        }
    }
    assert_eq!(open, 19);
}
