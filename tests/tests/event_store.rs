//! The event store against a real PostgreSQL: upcasting of stored rows, the
//! global order, and cqrs-es's repository contract.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, SerializedEvent,
};
use cqrs_es::{CqrsFramework, EventStore as _};
use domain::CustomerId;
use domain::basket::{Basket, BasketCommand};
use domain::product::{Product, ProductStatus};
use eshop_tests::{TestApp, TestDb, eventually};
use event_store::feed::{FeedFilter, GlobalPosition, RecordedEvent, read_after};
use event_store::{EventStore, PgEventRepository, SnapshotPolicy};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

fn store(pool: &PgPool) -> EventStore {
    EventStore::new(
        pool.clone(),
        event_schemas::upcasters(),
        SnapshotPolicy::default(),
    )
}

async fn insert_raw(
    pool: &PgPool,
    aggregate_id: &str,
    sequence: i64,
    event_type: &str,
    version: &str,
    payload: serde_json::Value,
) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Product', $1, $2, $3, $4, $5, '{}')",
    )
    .bind(aggregate_id)
    .bind(sequence)
    .bind(event_type)
    .bind(version)
    .bind(payload)
    .execute(pool)
    .await
    .expect("insert raw event");
}

#[tokio::test]
async fn a_stored_version_1_registration_loads_as_the_current_type() {
    let app = TestApp::spawn().await;
    let id = Uuid::now_v7();
    let v1 = json!({"ProductRegistered": {
        "sku": "OLD-1", "name": "Old mug", "description": "from 2025", "price_cents": 1299, "currency": "EUR", "stock": 7
    }});
    insert_raw(
        &app.db.pool,
        &id.to_string(),
        1,
        "ProductRegistered",
        "1.0",
        v1,
    )
    .await;

    let loaded = store(&app.db.pool)
        .load::<Product>(&id.to_string())
        .await
        .expect("v1 loads");
    let details = loaded.aggregate.details().expect("registered");
    assert_eq!(
        (
            details.sku.as_str(),
            details.price.minor,
            details.price.currency.as_str()
        ),
        ("OLD-1", 1299, "EUR")
    );
    assert_eq!((loaded.aggregate.on_hand(), loaded.version), (7, 1));

    // And the API works on it: the new price must be in the upcast currency.
    let changed = app
        .post(
            &format!("/products/{id}/price"),
            json!({"price": {"amount_minor": 999, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(
        (changed.status, changed.version()),
        (200, 2),
        "{}",
        changed.body
    );

    // cqrs-es's own store, given our upcasters, reads it the same way.
    let cqrs_store = PersistedEventStore::<_, Product>::new_event_store(PgEventRepository::new(
        app.db.pool.clone(),
    ))
    .with_upcasters(event_schemas::upcasters());
    let events = cqrs_store
        .load_events(&id.to_string())
        .await
        .expect("load through cqrs-es");
    assert_eq!(events.len(), 2);
}

async fn read_all(pool: &PgPool, after: GlobalPosition) -> Vec<RecordedEvent> {
    read_after(pool, after, &FeedFilter::default(), 10_000)
        .await
        .expect("read the feed")
}

#[tokio::test]
async fn the_feed_waits_for_a_transaction_that_took_a_lower_position_and_commits_late() {
    let db = TestDb::new().await;
    // The slow writer takes position 1 and stays open.
    let mut slow = db.pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Product', 'slow', 1, 'ProductDiscontinued', '1.0', '{\"ProductDiscontinued\": {}}', '{}')",
    )
    .execute(&mut *slow)
    .await
    .expect("slow insert");
    // The fast writer takes position 2 and commits first.
    insert_raw(
        &db.pool,
        "fast",
        1,
        "ProductDiscontinued",
        "1.0",
        json!({"ProductDiscontinued": {}}),
    )
    .await;

    // A reader following positions alone would now pass position 2 and
    // never see position 1. The feed shows nothing yet instead.
    assert!(
        read_all(&db.pool, GlobalPosition::default())
            .await
            .is_empty()
    );

    slow.commit().await.expect("slow commit");
    // The horizon is cluster-wide: a transaction of another database may
    // still hold it back for a moment.
    let events = eventually(
        Duration::from_secs(30),
        "both events below the horizon",
        || async {
            let events = read_all(&db.pool, GlobalPosition::default()).await;
            (events.len() == 2).then_some(events)
        },
    )
    .await;
    let ids: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(ids, ["slow", "fast"]);
    assert!(events[0].global < events[1].global);
}

#[tokio::test]
async fn interleaved_slow_and_fast_writers_are_read_completely_in_order() {
    let db = TestDb::new().await;
    let writers = 8;
    let per_writer = 25;
    let tasks = db.interleaved_writers(writers, per_writer, "Product", "ProductDiscontinued");

    let total = (writers * per_writer) as usize;
    let mut seen = Vec::new();
    let mut after = GlobalPosition::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < total {
        assert!(
            Instant::now() < deadline,
            "read {} of {total} events before the deadline",
            seen.len()
        );
        for event in read_all(&db.pool, after).await {
            assert!(event.global > after, "the feed went backwards");
            after = event.global;
            seen.push((event.aggregate_id, event.sequence));
        }
        tokio::task::yield_now().await;
    }
    for task in tasks {
        task.await.expect("writer");
    }
    assert!(
        read_all(&db.pool, after).await.is_empty(),
        "events appeared behind the reader"
    );
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), total, "every event exactly once");
    // Per aggregate, events arrive in sequence order.
    for writer in 0..writers {
        let sequences: Vec<i64> = seen
            .iter()
            .filter(|(id, _)| *id == format!("writer-{writer}"))
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(sequences, (1..=i64::from(per_writer)).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn cqrs_es_runs_on_our_repository() {
    let db = TestDb::new().await;
    let repo = PgEventRepository::new(db.pool.clone());
    let cqrs = CqrsFramework::new(
        PersistedEventStore::<_, Basket>::new_event_store(repo.clone()),
        vec![],
        (),
    );
    let id = Uuid::now_v7().to_string();
    cqrs.execute(
        &id,
        BasketCommand::Open {
            customer_id: CustomerId::generate(),
        },
    )
    .await
    .expect("open");
    cqrs.execute(&id, BasketCommand::Clear)
        .await
        .expect("clear of an empty basket appends nothing");
    let error = cqrs
        .execute(
            &id,
            BasketCommand::Open {
                customer_id: CustomerId::generate(),
            },
        )
        .await;
    assert!(error.is_err(), "a second open is refused");

    let events = repo.get_events::<Basket>(&id).await.expect("events");
    assert_eq!(events.len(), 1);
    let loaded = store(&db.pool).load::<Basket>(&id).await.expect("load");
    assert_eq!(loaded.version, 1);

    // Appending an existing sequence is an optimistic lock error.
    let duplicate = SerializedEvent {
        sequence: 1,
        ..events[0].clone()
    };
    let result = repo.persist::<Basket>(&[duplicate], None).await;
    assert!(
        matches!(result, Err(PersistenceError::OptimisticLockError)),
        "{result:?}"
    );
}

#[tokio::test]
async fn stream_all_events_follows_the_global_order() {
    let db = TestDb::new().await;
    for sequence in 1..=3 {
        insert_raw(
            &db.pool,
            "a",
            sequence,
            "ProductDiscontinued",
            "1.0",
            json!({"ProductDiscontinued": {}}),
        )
        .await;
    }
    insert_raw(
        &db.pool,
        "b",
        1,
        "ProductDiscontinued",
        "1.0",
        json!({"ProductDiscontinued": {}}),
    )
    .await;

    let repo = PgEventRepository::new(db.pool.clone());
    let mut stream = repo.stream_all_events::<Product>().await.expect("stream");
    let mut order = Vec::new();
    while let Some(event) = stream.next::<Product>(&[]).await {
        let event = event.expect("no error");
        order.push((event.aggregate_id, event.sequence));
    }
    // Global order, not per-aggregate sequence order (a#1, b#1, a#2, a#3).
    assert_eq!(
        order,
        [
            ("a".to_owned(), 1),
            ("a".to_owned(), 2),
            ("a".to_owned(), 3),
            ("b".to_owned(), 1)
        ]
    );
}

#[tokio::test]
async fn a_database_error_ends_the_stream_with_an_error_not_a_panic() {
    let db = TestDb::new().await;
    insert_raw(
        &db.pool,
        "a",
        1,
        "ProductDiscontinued",
        "1.0",
        json!({"ProductDiscontinued": {}}),
    )
    .await;
    let repo = PgEventRepository::new(db.pool.clone());
    db.pool.close().await;
    let mut stream = repo
        .stream_all_events::<Product>()
        .await
        .expect("the stream starts");
    let first = stream.next::<Product>(&[]).await;
    assert!(
        matches!(first, Some(Err(_))),
        "expected an error item, got {first:?}"
    );
    assert!(
        stream.next::<Product>(&[]).await.is_none(),
        "the stream ends after the error"
    );
}

#[tokio::test]
async fn postgres_es_reads_the_same_table() {
    let app = TestApp::spawn().await;
    let id = app.register_product("SHARED", 100, 2).await;
    app.post(&format!("/products/{id}/discontinue"), json!({}))
        .await;
    let ours = PgEventRepository::new(app.db.pool.clone())
        .get_events::<Product>(&id.to_string())
        .await
        .expect("ours");
    let theirs = postgres_es::PostgresEventRepository::new(app.db.pool.clone())
        .get_events::<Product>(&id.to_string())
        .await
        .expect("postgres-es");
    assert_eq!(ours, theirs);
    let loaded = store(&app.db.pool)
        .load::<Product>(&id.to_string())
        .await
        .expect("load");
    assert_eq!(loaded.aggregate.status(), ProductStatus::Discontinued);
}

#[tokio::test]
async fn a_projector_transaction_does_not_hold_the_feed_back_and_cannot_append() {
    let db = TestDb::new().await;
    let projector = event_store::connect_with(
        &event_store::DatabaseConfig::for_url(&db.url),
        event_store::READ_MODEL_WRITER,
        &[],
    )
    .expect("projector pool");
    // A view transaction that has written and stays open.
    let mut view = projector.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO projection_progress (projection, aggregate_id, sequence) VALUES ('v', 'a', 1)",
    )
    .execute(&mut *view)
    .await
    .expect("view write");

    // An event committed after it is still read, while it stays open.
    insert_raw(
        &db.pool,
        "after-view",
        1,
        "ProductDiscontinued",
        "1.0",
        json!({"ProductDiscontinued": {}}),
    )
    .await;
    let events = eventually(
        Duration::from_secs(30),
        "the event past the open view transaction",
        || async {
            let events = read_all(&db.pool, GlobalPosition::default()).await;
            (!events.is_empty()).then_some(events)
        },
    )
    .await;
    assert_eq!(events[0].aggregate_id, "after-view");

    // Which is safe only because such a connection cannot append.
    let refused = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Product', 'from-view', 1, 'ProductDiscontinued', '1.0', '{\"ProductDiscontinued\": {}}', '{}')",
    )
    .execute(&mut *view)
    .await
    .expect_err("a projector connection appended an event");
    assert!(
        refused.to_string().contains("cannot append events"),
        "{refused}"
    );
    view.rollback().await.expect("rollback");
}
