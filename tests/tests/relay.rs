//! The relay against a real PostgreSQL and a real Kafka-protocol broker.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use eshop_tests::{Consumed, TestApp, TestBroker, TestDb, start_relay};
use serde_json::Value;

async fn stored_events(db: &TestDb) -> Vec<(String, String, i64, Value)> {
    sqlx::query_as("SELECT aggregate_type, aggregate_id, sequence, metadata FROM events ORDER BY global_position")
        .fetch_all(&db.pool)
        .await
        .expect("events")
}

/// What the relay promises (docs/streaming.md, "Delivery"): every stored
/// event, per aggregate in sequence order without a gap. A crash, a refusal
/// or an unconfirmed delivery republishes from the checkpoint, so an event
/// may come again after the ones published with it; a repeat is always of
/// an event already published, never a jump ahead.
fn assert_complete_and_ordered(consumed: &[Consumed], expected: usize) {
    let mut seen = HashSet::new();
    let mut highest: HashMap<String, i64> = HashMap::new();
    for message in consumed {
        let id = message.envelope["id"]
            .as_str()
            .expect("envelope id")
            .to_owned();
        let aggregate = message.envelope["aggregateid"]
            .as_str()
            .expect("aggregate id")
            .to_owned();
        let sequence = message.envelope["aggregatesequence"]
            .as_i64()
            .expect("sequence");
        let top = highest.entry(aggregate.clone()).or_insert(0);
        assert!(
            sequence <= *top + 1,
            "aggregate {aggregate}: #{sequence} after #{top}, a gap"
        );
        if sequence == *top + 1 {
            *top = sequence;
            assert!(seen.insert(id.clone()), "event {id} under two sequences");
        } else {
            assert!(
                seen.contains(&id),
                "aggregate {aggregate}: #{sequence} repeated, but not as published before"
            );
        }
    }
    assert_eq!(seen.len(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_published_in_order_with_its_envelope_and_headers() {
    let app = TestApp::spawn().await;
    let broker = TestBroker::new();
    let (order, product) = app.placed_order("MUG", 1500, 2).await;
    app.post(
        &format!("/orders/{order}/cancel"),
        serde_json::json!({"reason": "test"}),
    )
    .await;
    let stored = stored_events(&app.db).await;

    let _relay = start_relay(&app.db, &broker, "it");
    let consumed = broker
        .consume_until(Duration::from_secs(60), |seen| {
            Consumed::distinct(seen) >= stored.len()
        })
        .await;
    assert_complete_and_ordered(&consumed, stored.len());

    for (aggregate_type, aggregate_id, sequence, metadata) in &stored {
        let message = consumed
            .iter()
            .find(|m| {
                m.envelope["aggregateid"] == aggregate_id.as_str()
                    && m.envelope["aggregatesequence"] == *sequence
            })
            .unwrap_or_else(|| panic!("{aggregate_type} {aggregate_id} #{sequence} not published"));
        let topic_suffix = match aggregate_type.as_str() {
            "Product" => "products",
            "Basket" => "baskets",
            _ => "orders",
        };
        assert_eq!(message.topic, format!("{}.{topic_suffix}", broker.prefix));
        assert_eq!(&message.key, aggregate_id, "keyed by aggregate id");
        let envelope = &message.envelope;
        assert_eq!(envelope["specversion"], "1.0");
        assert_eq!(envelope["id"], metadata["event_id"]);
        assert_eq!(envelope["subject"], aggregate_id.as_str());
        assert_eq!(envelope["source"], format!("/eshop/{aggregate_type}"));
        assert_eq!(envelope["correlationid"], metadata["correlation_id"]);
        assert_eq!(
            message.headers["ce_id"],
            envelope["id"].as_str().unwrap_or_default()
        );
        assert_eq!(
            message.headers["ce_type"],
            envelope["type"].as_str().unwrap_or_default()
        );
        assert_eq!(
            message.headers["ce_schemaversion"],
            envelope["schemaversion"].as_str().unwrap_or_default()
        );
    }
    // The product's events carry its data in the current schema.
    let registered = consumed
        .iter()
        .find(|m| {
            m.envelope["type"] == "eshop.Product.ProductRegistered" && m.key == product.to_string()
        })
        .expect("registration published");
    assert_eq!(registered.envelope["schemaversion"], "2.0");
    assert_eq!(registered.envelope["data"]["price"]["amount_minor"], 1500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_follows_the_broker_acknowledgements_and_a_restart_resumes_there() {
    let app = TestApp::spawn().await;
    let broker = TestBroker::new();
    app.placed_order("FIRST", 100, 1).await;
    let first = stored_events(&app.db).await.len();
    let relay = start_relay(&app.db, &broker, "resume");
    broker
        .consume_until(Duration::from_secs(60), |seen| {
            Consumed::distinct(seen) >= first
        })
        .await;
    drop(relay);

    // Written while no relay runs, published by the next one.
    app.placed_order("SECOND", 100, 1).await;
    let total = stored_events(&app.db).await.len();
    let _relay = start_relay(&app.db, &broker, "resume");
    let consumed = broker
        .consume_until(Duration::from_secs(60), |seen| {
            Consumed::distinct(seen) >= total
        })
        .await;
    assert_complete_and_ordered(&consumed, total);

    let checkpoint = projections::relay::load_checkpoint(&app.db.pool, "resume")
        .await
        .expect("checkpoint");
    let last: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(&app.db.pool)
        .await
        .expect("max");
    assert_eq!(checkpoint.position, last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_several_relays_with_one_name_only_the_leader_publishes() {
    let app = TestApp::spawn().await;
    let broker = TestBroker::new();
    let _relays: Vec<_> = (0..3)
        .map(|_| start_relay(&app.db, &broker, "shared"))
        .collect();
    for n in 0..5 {
        app.placed_order(&format!("P{n}"), 100, 1).await;
    }
    let total = stored_events(&app.db).await.len();
    let consumed = broker
        .consume_until(Duration::from_secs(60), |seen| {
            Consumed::distinct(seen) >= total
        })
        .await;
    // Give duplicates, if any, the time to show up behind the last event.
    let more = broker
        .consume_until(Duration::from_secs(60), |seen| {
            Consumed::distinct(seen) >= total
        })
        .await;
    assert_complete_and_ordered(&consumed, total);
    // One publisher: with two, every event would stand twice.
    assert_eq!(
        more.len(),
        total,
        "a second reader sees the same events, no duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_slow_and_fast_writers_are_all_published() {
    let db = TestDb::new().await;
    let broker = TestBroker::new();
    let _relay = start_relay(&db, &broker, "interleaved");
    let writers = 6;
    let per_writer = 20;
    let tasks = db.interleaved_writers(writers, per_writer, "Order", "OrderDelivered");
    for task in tasks {
        task.await.expect("writer");
    }
    let total = (writers * per_writer) as usize;
    let consumed = broker
        .consume_until(Duration::from_secs(60), |seen| {
            Consumed::distinct(seen) >= total
        })
        .await;
    // Each writer's events in their order, whatever order the writers'
    // transactions committed in.
    assert_complete_and_ordered(&consumed, total);
}

/// A backlog goes out in full batches, each spread over every partition
/// or lane and handed to the broker as a whole: each aggregate's events
/// still arrive in their order, without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_sent_in_full_batches_arrives_in_each_aggregates_order() {
    let db = TestDb::new().await;
    let broker = TestBroker::new();
    let (writers, per_writer) = (8, 40);
    for task in db.interleaved_writers(writers, per_writer, "Order", "OrderDelivered") {
        task.await.expect("writer");
    }
    let _relay = start_relay(&db, &broker, "backlog");
    let published = broker.published(&db.pool).await;
    assert_complete_and_ordered(&published, (writers * per_writer) as usize);
}
