//! Running the relay and the projectors inside a test.

use event_store::DatabaseConfig;
use projections::projector::ProjectorConfig;
use projections::relay::RelayConfig;
use tokio::sync::oneshot;

use crate::broker::{TestBroker, TestBus};
use crate::db::TestDb;
use crate::search::TestSearch;

/// A relay named `name` over the test's database and topics, polling every
/// 10 ms. Dropping the returned sender stops it. With no broker, no relay
/// runs (the projectors read the event store).
pub fn start_relay(db: &TestDb, broker: &TestBroker, name: &str) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    if broker.bus == TestBus::None {
        return stop;
    }
    let config = RelayConfig {
        bus: broker.event_bus(),
        batch_size: 100,
        max_in_flight: 4,
        linger_ms: 2,
        poll_ms: 10,
        name: name.to_owned(),
    };
    let database = DatabaseConfig::for_url(&db.url);
    tokio::spawn(async move {
        projections::relay::run(&database, config, async {
            let _ = stopped.await;
        })
        .await
        .expect("relay runs");
    });
    stop
}

/// Every projection (the views and the search index), fed by the test's
/// bus (on Kafka, in consumer groups of this test named after `group`).
/// Dropping the returned sender stops them.
pub fn start_projectors(
    db: &TestDb,
    broker: &TestBroker,
    search: &TestSearch,
    group: &str,
) -> oneshot::Sender<()> {
    start_projectors_cached(db, broker, search, group, crate::cache::test_cache())
}

/// [`start_projectors`], invalidating `basket_view` rows in `cache`.
pub fn start_projectors_cached(
    db: &TestDb,
    broker: &TestBroker,
    search: &TestSearch,
    group: &str,
    cache: cache::CacheConfig,
) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    let pool = db.pool.clone();
    let config = ProjectorConfig {
        database: DatabaseConfig::for_url(&db.url),
        bus: broker.event_bus(),
        group_prefix: format!("{}.{group}", broker.prefix),
        dead_letter_topic: broker.dead_letter_topic(),
        only: Vec::new(),
        session_timeout_ms: 6000,
        max_poll_interval_ms: 300_000,
        instance_id: None,
        store_poll: std::time::Duration::from_millis(10),
        search: search.config(),
        cache,
    };
    tokio::spawn(async move {
        projections::run_all(pool, config, projections::views::all(), async {
            let _ = stopped.await;
        })
        .await
        .expect("projectors run");
    });
    stop
}
