//! Projections without a broker: each reads the event store's global feed
//! itself (`StoreSource`), below the horizon, from a checkpoint of its
//! own, one active reader at a time.

use std::time::Duration;

use eshop_tests::{TestDb, eventually};
use event_store::DatabaseConfig;
use event_store::feed::{GlobalPosition, readable_end};
use projections::projector::{DeadLetters, Source, StoreSource, StoreTail, ViewSink, run};
use serde_json::{Value, json};
use sqlx::{Executor, PgPool};
use uuid::Uuid;

const CATALOG: &str = "product_catalog";

/// Appends a product's registration through `db` (a pool or an open
/// transaction), as the command side would.
async fn register<'e>(
    db: impl Executor<'e, Database = sqlx::Postgres>,
    product: Uuid,
    payload: Value,
) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Product', $1, 1, 'ProductRegistered', '2.0', $2, '{}')",
    )
    .bind(product.to_string())
    .bind(json!({ "ProductRegistered": payload }))
    .execute(db)
    .await
    .expect("append a registration");
}

fn product(sku: &str) -> Value {
    json!({"sku": sku, "name": format!("Mug {sku}"), "description": "",
           "price": {"amount_minor": 1299, "currency": "EUR"}, "initial_stock": 5})
}

fn source(db: &TestDb, pool: &PgPool) -> StoreSource {
    StoreSource::new(
        pool.clone(),
        DatabaseConfig::for_url(&db.url),
        CATALOG,
        &["Product"],
        StoreTail::watch(pool.clone(), Duration::from_millis(10)),
    )
}

/// Where `product`'s registration stands in the global order.
async fn position_of(pool: &PgPool, product: Uuid) -> GlobalPosition {
    let (transaction_id, position): (String, i64) = sqlx::query_as(
        "SELECT transaction_id::text, global_position FROM events WHERE aggregate_id = $1",
    )
    .bind(product.to_string())
    .fetch_one(pool)
    .await
    .expect("the registration is stored");
    GlobalPosition {
        transaction_id: transaction_id.parse().expect("a transaction id"),
        position,
    }
}

/// A transaction that has taken its id (as a writer that appends later).
async fn begin_with_an_id(db: &TestDb) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut transaction = db.pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *transaction)
        .await
        .expect("take an id");
    transaction
}

/// Registers `late` in a transaction that takes its id first, then
/// `committed` outside it; returns the late transaction, still open: the
/// late writer commits last, below an event already committed.
async fn commit_late_around(
    db: &TestDb,
    late: Uuid,
    committed: Uuid,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut writing = begin_with_an_id(db).await;
    register(&mut *writing, late, product("LATE")).await;
    register(&db.pool, committed, product("COMMITTED")).await;
    writing
}

fn projector_pool(db: &TestDb) -> PgPool {
    projections::projector::pool(&DatabaseConfig::for_url(&db.url)).expect("projector pool")
}

/// The aggregate ids of the next batch that has any, in order. The
/// horizon is the server's, not the database's: while a transaction of
/// another test is open anywhere on it, the feed waits.
async fn next_ids(source: &mut StoreSource) -> Vec<String> {
    next_ids_of_at_most(source, 100).await
}

/// [`next_ids`] of a batch of at most `max` events.
async fn next_ids_of_at_most(source: &mut StoreSource, max: usize) -> Vec<String> {
    let ids = |batch: Vec<projections::projector::Delivered>| {
        batch
            .iter()
            .map(|message| {
                String::from_utf8(message.key.clone().expect("a key")).expect("a UUID's text")
            })
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let batch = source.next(max).await.expect("the store answers");
        if !batch.is_empty() {
            return ids(batch);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing to read for 30 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_late_below_later_ones_is_read_not_passed() {
    let db = TestDb::new().await;
    let pool = projector_pool(&db);
    let mut feed = source(&db, &pool);
    let (late, early) = (Uuid::now_v7(), Uuid::now_v7());

    let writing = commit_late_around(&db, late, early).await;
    let batch = feed.next(100).await.expect("the store answers");
    let read: Vec<i64> = batch.iter().map(|message| message.offset).collect();
    assert!(
        read.is_empty(),
        "the committed event waits above the running transaction; read positions {read:?}"
    );

    writing.commit().await.expect("commit late");
    assert_eq!(
        next_ids(&mut feed).await,
        [late.to_string(), early.to_string()],
        "both, in the order of their transactions"
    );
}

/// The end of the feed moves past an event committed by an older
/// transaction while a younger one is still open: the read stops at that
/// end, never taking what committed above the open transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_stops_at_the_end_while_a_younger_transaction_is_still_open() {
    let db = TestDb::new().await;
    let pool = projector_pool(&db);
    let mut feed = source(&db, &pool);
    let (early, late, committed) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());

    let mut older = begin_with_an_id(&db).await;
    let writing = commit_late_around(&db, late, committed).await;
    register(&mut *older, early, product("EARLY")).await;
    older.commit().await.expect("commit the older transaction");
    assert_eq!(
        next_ids(&mut feed).await,
        [early.to_string()],
        "only the older transaction's event: the one above the open transaction waits"
    );

    writing.commit().await.expect("commit late");
    assert_eq!(
        next_ids(&mut feed).await,
        [late.to_string(), committed.to_string()],
        "then both, in the order of their transactions"
    );
}

/// A projection reads up to the end the process's watch found readable,
/// in batches of the size its loop asks for: a batch cut short by its
/// size is followed by the rest, and events of other types on the way are
/// passed over, not taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_cut_short_by_their_size_go_on_to_the_end_of_the_feed() {
    let db = TestDb::new().await;
    let pool = projector_pool(&db);
    let products = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    register(&db.pool, products[0], product("ONE")).await;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Basket', $1, 1, 'BasketOpened', '1.0', '{}', '{}')",
    )
    .bind(Uuid::now_v7().to_string())
    .execute(&db.pool)
    .await
    .expect("append another type's event");
    register(&db.pool, products[1], product("TWO")).await;
    register(&db.pool, products[2], product("THREE")).await;
    let last = position_of(&db.pool, products[2]).await;
    eventually(Duration::from_secs(30), "every event to be readable", || {
        let pool = pool.clone();
        async move { (readable_end(&pool).await.expect("the store answers") == last).then_some(()) }
    })
    .await;

    let mut feed = source(&db, &pool);
    for product in products {
        assert_eq!(
            next_ids_of_at_most(&mut feed, 1).await,
            [product.to_string()],
            "one registration per batch, in order"
        );
    }
}

/// The end the projections of a process wait on: a projection that found
/// nothing new reads again only when it moves, so it must never stand
/// past an event still to become readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_the_feed_stays_below_a_running_transaction_and_moves_when_it_commits() {
    let db = TestDb::new().await;
    let pool = projector_pool(&db);
    assert_eq!(
        readable_end(&pool).await.expect("the store answers"),
        GlobalPosition::default(),
        "an empty store ends before the first event"
    );
    let (first, late, after) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    register(&db.pool, first, product("FIRST")).await;
    let first_at = position_of(&db.pool, first).await;
    // Other tests' transactions on the server may hold the horizon a while.
    eventually(
        Duration::from_secs(30),
        "the first event to be readable",
        || {
            let pool = pool.clone();
            async move {
                (readable_end(&pool).await.expect("the store answers") == first_at).then_some(())
            }
        },
    )
    .await;

    let writing = commit_late_around(&db, late, after).await;
    assert_eq!(
        readable_end(&pool).await.expect("the store answers"),
        first_at,
        "an event committed above a running transaction is not readable yet"
    );

    writing.commit().await.expect("commit late");
    let after_at = position_of(&db.pool, after).await;
    assert!(after_at > position_of(&db.pool, late).await);
    eventually(Duration::from_secs(30), "the end to move past both", || {
        let pool = pool.clone();
        async move { (readable_end(&pool).await.expect("the store answers") == after_at).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_the_checkpoint_when_the_active_reader_goes() {
    let db = TestDb::new().await;
    let pool = projector_pool(&db);
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    register(&db.pool, first, product("FIRST")).await;

    let mut active = source(&db, &pool);
    assert_eq!(next_ids(&mut active).await, [first.to_string()]);
    active.acknowledge(&[]);
    // The next read writes the checkpoint down first.
    assert!(active.next(100).await.expect("read").is_empty());

    register(&db.pool, second, product("SECOND")).await;
    let mut standby = source(&db, &pool);
    // It waits on the lock while the active reader holds it.
    let waiting = tokio::spawn(async move { next_ids(&mut standby).await });
    drop(active);
    let taken_over = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the standby takes over")
        .expect("the standby's read");
    assert_eq!(
        taken_over,
        [second.to_string()],
        "from the checkpoint: nothing lost, nothing taken twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_projects_the_store_and_dead_letters_what_does_not_decode() {
    eshop_tests::log_projections();
    let db = TestDb::new().await;
    let pool = projector_pool(&db);
    let (broken, fine) = (Uuid::now_v7(), Uuid::now_v7());
    register(&db.pool, broken, json!({"not": "a registration"})).await;
    register(&db.pool, fine, product("FINE")).await;

    let view = read_models::all()
        .into_iter()
        .find(|p| p.name() == CATALOG)
        .expect("the catalog");
    let sink = ViewSink::new(pool.clone(), view);
    let dead = DeadLetters::in_store(pool.clone());
    let mut feed = source(&db, &pool);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let projector = tokio::spawn(async move {
        run(&sink, &mut feed, &dead, async {
            let _ = stopped.await;
        })
        .await
    });

    let sku: String = eventually(
        Duration::from_secs(30),
        "the product in the catalog",
        || async {
            sqlx::query_scalar("SELECT sku FROM product_catalog WHERE product_id = $1")
                .bind(fine)
                .fetch_optional(&db.pool)
                .await
                .expect("read the catalog")
        },
    )
    .await;
    assert_eq!(sku, "FINE");
    let (projection, key, error): (String, Vec<u8>, String) =
        sqlx::query_as("SELECT projection, key, error FROM dead_letters")
            .fetch_one(&db.pool)
            .await
            .expect("one dead letter");
    assert_eq!(
        (projection.as_str(), key),
        (CATALOG, broken.to_string().into_bytes())
    );
    assert!(error.contains("ProductRegistered"), "{error}");
    let counted: i64 =
        sqlx::query_scalar("SELECT dead_letters FROM projection_status WHERE projection = $1")
            .bind(CATALOG)
            .fetch_one(&db.pool)
            .await
            .expect("counted in status");
    assert_eq!(counted, 1);

    stop.send(()).expect("the projector runs");
    projector
        .await
        .expect("the projector task")
        .expect("the projector stops cleanly");
}

/// A sink that stops its loop from inside the batch it takes: the loop
/// meets the shutdown right after the batch.
struct StopAfterTaking {
    inner: ViewSink,
    stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

#[async_trait::async_trait]
impl projections::projector::Sink for StopAfterTaking {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn aggregate_types(&self) -> &'static [&'static str] {
        self.inner.aggregate_types()
    }
    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }
    async fn take(
        &self,
        batch: &[projections::projector::Delivered],
        dead: &DeadLetters,
    ) -> Result<(), projections::projector::Failure> {
        let taken = self.inner.take(batch, dead).await;
        if let Some(stop) = self.stop.lock().expect("not poisoned").take() {
            let _ = stop.send(());
        }
        taken
    }
}

/// A projector stopped right after a batch writes down that batch before
/// it lets go of the projection: a restart reads on after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_stopped_after_a_batch_writes_its_checkpoint_down() {
    for _ in 0..5 {
        let db = TestDb::new().await;
        let pool = projector_pool(&db);
        let registered = Uuid::now_v7();
        register(&db.pool, registered, product("STOPPED")).await;
        let at = position_of(&db.pool, registered).await;

        take_one_batch(&db, &pool).await;

        let checkpoint: Option<(String, i64)> = sqlx::query_as(
            "SELECT transaction_id::text, global_position FROM relay_checkpoints WHERE name = $1",
        )
        .bind(StoreSource::checkpoint_name(CATALOG))
        .fetch_optional(&db.pool)
        .await
        .expect("read the checkpoint");
        assert_eq!(
            checkpoint,
            Some((at.transaction_id.to_string(), at.position)),
            "the batch taken is written down"
        );
    }
}

/// Runs the catalog's projector loop until it has taken one batch.
async fn take_one_batch(db: &TestDb, pool: &PgPool) {
    use projections::projector::Sink as _;
    let view = read_models::all()
        .into_iter()
        .find(|p| p.name() == CATALOG)
        .expect("the catalog");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sink = StopAfterTaking {
        inner: ViewSink::new(pool.clone(), view),
        stop: std::sync::Mutex::new(Some(stop)),
    };
    assert_eq!(sink.name(), CATALOG);
    let dead = DeadLetters::in_store(pool.clone());
    let mut feed = source(db, pool);
    tokio::time::timeout(
        Duration::from_secs(30),
        run(&sink, &mut feed, &dead, async {
            let _ = stopped.await;
        }),
    )
    .await
    .expect("the loop stops")
    .expect("cleanly");
}

/// The lag benchmark's drain phase counts what a projection took from the
/// store in the feed's order, not by the offsets recorded with the views:
/// an event committed at a lower position than one taken is not counted
/// before it is taken, and a projection whose checkpoint is at the end is
/// done whatever offset its sink recorded last (the benchmark once waited
/// its full 900 s for `search`, done, whose last batch in the feed's order
/// did not end at its highest position).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_counts_what_a_projection_took_in_the_feeds_order() {
    let db = TestDb::new().await;
    let pool = projector_pool(&db);
    let count = || async {
        let mut connection = db.pool.acquire().await.expect("a connection");
        eshop_tests::bench::store_messages_taken(&mut connection, CATALOG, &["Product"])
            .await
            .expect("count what was taken")
    };
    // The older transaction takes its id first and appends after the
    // younger one: its event has the higher position and comes first in the
    // feed. A transaction between them stays open: the feed ends below it.
    let (first, last) = (Uuid::now_v7(), Uuid::now_v7());
    let mut older = begin_with_an_id(&db).await;
    let between = begin_with_an_id(&db).await;
    register(&db.pool, last, product("LAST")).await;
    register(&mut *older, first, product("FIRST")).await;
    older.commit().await.expect("commit the older");
    assert!(
        position_of(&db.pool, first).await.position > position_of(&db.pool, last).await.position,
        "the feed's first event has the higher position"
    );

    take_one_batch(&db, &pool).await;
    assert_eq!(
        count().await,
        1,
        "the older transaction's event is taken; the younger's, committed at a lower position, waits"
    );

    between.rollback().await.expect("end the one between");
    take_one_batch(&db, &pool).await;
    assert_eq!(count().await, 2, "both are taken");
}
