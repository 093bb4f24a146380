//! The distributed cache against real servers: the Redis and Memcached
//! that `scripts/setup` starts (`TEST_REDIS_URL`, `TEST_MEMCACHED_URL`),
//! and servers of a test's own that it stops and starts again. Each test
//! runs on both engines with the same assertions.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cache::{Cache, CacheConfig, CacheError, CacheUrl, Entry, Key, Stored};
use eshop_tests::eventually;
use uuid::Uuid;

/// The two engines.
#[derive(Debug, Clone, Copy)]
enum Engine {
    Redis,
    Memcached,
}

const ENGINES: [Engine; 2] = [Engine::Redis, Engine::Memcached];

impl Engine {
    /// The server `scripts/setup` runs.
    fn shared_url(self) -> CacheUrl {
        match self {
            Self::Redis => eshop_tests::cache::redis_url(),
            Self::Memcached => eshop_tests::cache::memcached_url(),
        }
    }

    fn url_on(self, port: u16) -> CacheUrl {
        match self {
            Self::Redis => format!("redis://127.0.0.1:{port}"),
            Self::Memcached => format!("memcached://127.0.0.1:{port}"),
        }
        .parse()
        .expect("a cache URL")
    }
}

fn cache(url: CacheUrl, timeout_ms: u64) -> Cache {
    let config = CacheConfig {
        timeout_ms,
        ..CacheConfig::at(url)
    };
    Cache::new(&config).expect("a client").expect("a cache")
}

/// The shared server's cache, failing loudly when it is not running.
async fn shared(engine: Engine) -> Cache {
    let url = engine.shared_url();
    let cache = cache(url.clone(), 500);
    if let Err(error) = cache.ping().await {
        panic!("{engine:?} at {url} is not running (scripts/setup starts it): {error}");
    }
    cache
}

fn entry(version: u64) -> Entry {
    Entry {
        version,
        bytes: format!("{{\"state\":{version}}}").into_bytes(),
    }
}

fn fresh_key() -> Key {
    Key::new("test", 1, &Uuid::now_v7().to_string()).expect("a UUID fits a key")
}

#[tokio::test]
async fn an_entry_is_stored_over_an_older_one_only() {
    for engine in ENGINES {
        let cache = shared(engine).await;
        let key = fresh_key();
        assert_eq!(cache.get(&key).await.expect("get"), None, "{engine:?}");

        assert_eq!(
            cache.put_if_newer(&key, &entry(2)).await.expect("put"),
            Stored::Stored
        );
        assert_eq!(
            cache.get(&key).await.expect("get"),
            Some(entry(2)),
            "{engine:?}"
        );
        for older in [1, 2] {
            assert_eq!(
                cache.put_if_newer(&key, &entry(older)).await.expect("put"),
                Stored::NotNewer,
                "{engine:?}: version {older} over 2"
            );
        }
        assert_eq!(
            cache.get(&key).await.expect("get"),
            Some(entry(2)),
            "{engine:?}"
        );
        assert_eq!(
            cache.put_if_newer(&key, &entry(3)).await.expect("put"),
            Stored::Stored
        );
        assert_eq!(
            cache.get(&key).await.expect("get"),
            Some(entry(3)),
            "{engine:?}"
        );

        cache.delete(&key).await.expect("delete");
        assert_eq!(cache.get(&key).await.expect("get"), None, "{engine:?}");
        cache
            .delete(&key)
            .await
            .expect("deleting a missing entry is fine");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_leave_the_newest_version() {
    for engine in ENGINES {
        let cache = shared(engine).await;
        let key = fresh_key();
        // Versions 1 to 40, interleaved so that newer ones often go first.
        let writers = (1..=40u64)
            .map(|n| if n % 2 == 0 { n } else { 41 - n })
            .map(|version| {
                let (cache, key) = (cache.clone(), key.clone());
                tokio::spawn(async move { cache.put_if_newer(&key, &entry(version)).await })
            });
        for writer in futures::future::join_all(writers).await {
            writer.expect("the writer ran").expect("the cache answered");
        }
        assert_eq!(
            cache.get(&key).await.expect("get"),
            Some(entry(40)),
            "{engine:?}: the newest version, whatever the order of the writes"
        );
    }
}

#[tokio::test]
async fn an_entry_expires_after_its_ttl() {
    for engine in ENGINES {
        let config = CacheConfig {
            ttl_secs: 1,
            timeout_ms: 500,
            ..CacheConfig::at(engine.shared_url())
        };
        let cache = Cache::new(&config).expect("a client").expect("a cache");
        let key = fresh_key();
        cache.put_if_newer(&key, &entry(1)).await.expect("put");
        assert_eq!(cache.get(&key).await.expect("get"), Some(entry(1)));
        let stored = Instant::now();
        eventually(Duration::from_secs(10), "the entry to expire", || {
            let (cache, key) = (cache.clone(), key.clone());
            async move { cache.get(&key).await.expect("get").is_none().then_some(()) }
        })
        .await;
        // Memcached's clock ticks in whole seconds: its 1 s may end sooner.
        if matches!(engine, Engine::Redis) {
            assert!(
                stored.elapsed() >= Duration::from_millis(900),
                "{engine:?}: gone after {:?}, before its TTL",
                stored.elapsed()
            );
        }
    }
}

/// An entry written behind eshop's back that does not decode is an error
/// on read, never a made-up version; a store replaces it.
#[tokio::test]
async fn an_entry_that_does_not_decode_is_an_error_and_is_replaced() {
    for engine in ENGINES {
        let cache = shared(engine).await;
        let key = fresh_key();
        match engine {
            Engine::Redis => redis_hset(&key, "not a number", b"{}").await,
            Engine::Memcached => memcached_set(&key, b"abc").await,
        }
        let read = cache.get(&key).await;
        assert!(
            matches!(read, Err(CacheError::Malformed(_))),
            "{engine:?}: {read:?}"
        );
        assert_eq!(
            cache.put_if_newer(&key, &entry(1)).await.expect("put"),
            Stored::Stored
        );
        assert_eq!(
            cache.get(&key).await.expect("get"),
            Some(entry(1)),
            "{engine:?}"
        );
    }
}

/// A server of the test's own, on a free port, stopped on drop.
struct OwnServer {
    engine: Engine,
    port: u16,
    child: Option<Child>,
}

impl OwnServer {
    fn start(engine: Engine) -> Self {
        let mut server = Self {
            engine,
            port: eshop_tests::free_port(),
            child: None,
        };
        server.restart();
        server
    }

    fn restart(&mut self) {
        let port = self.port.to_string();
        let mut command = match self.engine {
            Engine::Redis => {
                let mut command = Command::new("redis-server");
                command.args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]);
                command
            }
            Engine::Memcached => {
                let mut command = Command::new("memcached");
                // -u only matters when run as root (CI), where it is required.
                command.args([
                    "-l",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "0",
                    "-m",
                    "16",
                    "-u",
                    "root",
                ]);
                command
            }
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "{:?} cannot start (scripts/setup installs it): {error}",
                    self.engine
                )
            });
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_that_goes_away_fails_fast_and_is_used_again_when_it_returns() {
    const TIMEOUT_MS: u64 = 100;
    for engine in ENGINES {
        let mut server = OwnServer::start(engine);
        let cache = cache(engine.url_on(server.port), TIMEOUT_MS);
        let key = fresh_key();
        eventually(Duration::from_secs(10), "the server to answer", || {
            let cache = cache.clone();
            async move { cache.ping().await.ok() }
        })
        .await;
        cache.put_if_newer(&key, &entry(1)).await.expect("put");

        server.stop();
        for _ in 0..5 {
            let started = Instant::now();
            let read = cache.get(&key).await;
            assert!(
                read.is_err(),
                "{engine:?}: a stopped server answered {read:?}"
            );
            assert!(
                started.elapsed() < Duration::from_millis(TIMEOUT_MS * 5),
                "{engine:?}: failing took {:?}",
                started.elapsed()
            );
        }

        server.restart();
        eventually(
            Duration::from_secs(10),
            "the cache to be used again",
            || {
                let (cache, key) = (cache.clone(), key.clone());
                async move { cache.put_if_newer(&key, &entry(2)).await.ok() }
            },
        )
        .await;
        assert_eq!(
            cache.get(&key).await.expect("get"),
            Some(entry(2)),
            "{engine:?}"
        );
    }
}

/// A server that accepts connections and never answers: every operation
/// still ends within the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_that_never_answers_costs_one_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("an address").port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    for engine in ENGINES {
        let cache = cache(engine.url_on(port), 100);
        let key = fresh_key();
        let started = Instant::now();
        let read = cache.get(&key).await;
        assert!(
            matches!(read, Err(CacheError::Timeout(_))),
            "{engine:?}: {read:?}"
        );
        let put = cache.put_if_newer(&key, &entry(1)).await;
        assert!(
            matches!(put, Err(CacheError::Timeout(_))),
            "{engine:?}: {put:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1_000),
            "{engine:?}: two operations took {:?}",
            started.elapsed()
        );
    }
    held.abort();
}

/// Sets the Redis hash at `key` to `{v: version, d: bytes}` directly.
async fn redis_hset(key: &Key, version: &str, bytes: &[u8]) {
    let client = redis::Client::open(Engine::Redis.shared_url().to_string()).expect("a client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: i64 = redis::cmd("HSET")
        .arg(key.as_str())
        .arg("v")
        .arg(version)
        .arg("d")
        .arg(bytes)
        .query_async(&mut connection)
        .await
        .expect("write behind the cache's back");
}

/// Sets the Memcached item at `key` to `value` directly.
async fn memcached_set(key: &Key, value: &[u8]) {
    use async_memcached::AsciiProtocol;
    let CacheUrl::Memcached { host, port } = Engine::Memcached.shared_url() else {
        unreachable!("a Memcached URL")
    };
    let mut client = async_memcached::Client::new(format!("tcp://{host}:{port}"))
        .await
        .expect("connect");
    client
        .set(key.as_str(), value, None, None)
        .await
        .expect("write behind the cache's back");
}

/// Writes `entry` at `key` with no version check, as something other than
/// eshop could.
async fn overwrite(engine: Engine, key: &Key, entry: &Entry) {
    match engine {
        Engine::Redis => redis_hset(key, &entry.version.to_string(), &entry.bytes).await,
        Engine::Memcached => {
            let mut value = entry.version.to_be_bytes().to_vec();
            value.extend_from_slice(&entry.bytes);
            memcached_set(key, &value).await;
        }
    }
}

/// The cache is deliberately given an older basket behind eshop's back: the
/// next command decides on it, its append conflicts with the event it did
/// not know, and it reloads from the event store and decides again. Nothing
/// is lost, and the cache holds the true basket afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_basket_in_the_cache_is_caught_by_the_append_and_corrected() {
    use cqrs_es::Aggregate;
    use domain::basket::Basket;
    for engine in ENGINES {
        let app = eshop_tests::TestApp::spawn_with(|config| {
            config.cache = CacheConfig::at(engine.shared_url());
        })
        .await;
        let product = app
            .register_product(&format!("STALE-{engine:?}"), 500, 100)
            .await;
        let basket = app.open_basket().await;
        let key = Key::new(
            &format!("state.{}", Basket::TYPE),
            Basket::STATE_FORMAT,
            &basket.to_string(),
        )
        .expect("a basket id fits a key");
        let cache = cache(engine.shared_url(), 500);

        assert_eq!(app.add_item(basket, product, 1).await.status, 200);
        let stale = cache
            .get(&key)
            .await
            .expect("the cache answers")
            .expect("the command left its basket in the cache");
        assert_eq!(stale.version, 2, "{engine:?}: opened, one item added");
        assert_eq!(app.add_item(basket, product, 2).await.status, 200);
        assert_eq!(
            cache.get(&key).await.expect("get").map(|e| e.version),
            Some(3)
        );

        overwrite(engine, &key, &stale).await;
        assert_eq!(cache.get(&key).await.expect("get"), Some(stale.clone()));
        let answer = app.add_item(basket, product, 4).await;
        assert_eq!(answer.status, 200, "{engine:?}: {:?}", answer.body);

        let truth = event_store::EventStore::new(
            app.db.pool.clone(),
            event_schemas::upcasters(),
            event_store::SnapshotPolicy::default(),
        )
        .load::<Basket>(&basket.to_string())
        .await
        .expect("load from PostgreSQL");
        assert_eq!(truth.version, 4, "{engine:?}: three items added, none lost");
        assert_eq!(
            truth.aggregate.lines()[0].quantity,
            7,
            "{engine:?}: 1 + 2 + 4"
        );
        let corrected = cache.get(&key).await.expect("get").expect("cached again");
        assert_eq!(
            corrected.version, 4,
            "{engine:?}: the cache holds the truth again"
        );
        let state: Basket = serde_json::from_slice(&corrected.bytes).expect("a basket");
        assert_eq!(state, truth.aggregate, "{engine:?}");
    }
}

/// With its cache down, the command API is `degraded` but ready (it works
/// without it), and commands succeed from PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_cache_the_command_api_is_degraded_but_ready_and_commands_work() {
    for engine in ENGINES {
        // Nothing listens there.
        let url = engine.url_on(eshop_tests::free_port());
        let app = eshop_tests::TestApp::spawn_with(|config| {
            config.cache = CacheConfig::at(url);
        })
        .await;
        let response = app
            .client
            .get(format!("{}/health/ready", app.address))
            .send()
            .await
            .expect("the API answers");
        assert_eq!(response.status(), 200, "{engine:?}: still ready");
        let report: serde_json::Value = response.json().await.expect("a JSON report");
        assert_eq!(report["status"], "degraded", "{engine:?}: {report}");
        let checks = report["checks"].as_array().expect("checks");
        let cache = checks
            .iter()
            .find(|check| check["name"] == "cache")
            .expect("the cache is checked");
        assert_eq!(cache["status"], "degraded", "{engine:?}: {report}");
        assert!(
            checks
                .iter()
                .filter(|check| check["name"] != "cache")
                .all(|check| check["status"] == "up"),
            "{engine:?}: {report}"
        );

        let product = app
            .register_product(&format!("NOCACHE-{engine:?}"), 250, 10)
            .await;
        let basket = app.open_basket().await;
        for quantity in 1..=3 {
            let answer = app.add_item(basket, product, quantity).await;
            assert_eq!(answer.status, 200, "{engine:?}: {:?}", answer.body);
        }
    }
}

const BASKET_QUERY: &str = "query($id: ID!) { basket(id: $id) { itemCount version } }";

fn consistency_token(response: &eshop_tests::TestResponse) -> String {
    response.body["consistency_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no consistency token in {}", response.body))
        .to_owned()
}

/// The `basket_view` row's version as PostgreSQL has committed it (0 for
/// none yet).
async fn committed_version(app: &eshop_tests::TestApp, basket: Uuid) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT version FROM basket_view WHERE basket_id = $1")
        .bind(basket)
        .fetch_optional(&app.db.pool)
        .await
        .expect("read basket_view")
        .unwrap_or(0)
}

/// `basket(id)` with the cache on, 200 commands in a row on each engine:
/// with the command's token the query always shows the command; without
/// it the basket is never older than what `basket_view` had committed
/// before the request; and the same basket read again is served from the
/// cache (no SQL statement).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn basket_reads_from_the_cache_see_every_command_and_are_never_older_than_the_view() {
    const REPETITIONS: i64 = 200;
    for engine in ENGINES {
        let _ = shared(engine).await;
        let side = eshop_tests::graphql::ReadSide::start_cached(
            &format!("basket-cache-{engine:?}").to_lowercase(),
            CacheConfig::at(engine.shared_url()),
            |_| {},
        )
        .await;
        let (app, gql) = (&side.app, &side.graphql);
        // A line holds at most 99 units: three products hold 200.
        let mut products = Vec::new();
        for p in 0..3 {
            products.push(
                app.register_product(&format!("BCACHE-{engine:?}-{p}"), 100, 10_000)
                    .await,
            );
        }
        let basket = app.open_basket().await;
        let variables = serde_json::json!({ "id": basket });
        let mut from_cache = 0;
        for n in 1..=REPETITIONS {
            let product = products[usize::try_from((n - 1) / 99).expect("small")];
            let added = app.add_item(basket, product, 1).await;
            assert_eq!(added.status, 200, "{engine:?}: {:?}", added.body);

            let committed = committed_version(app, basket).await;
            let plain = gql.query(BASKET_QUERY, variables.clone()).await;
            if committed > 0 {
                let version = plain["data"]["basket"]["version"].as_i64();
                assert!(
                    version.is_some_and(|v| v >= committed),
                    "{engine:?}, repetition {n}: the view had committed version {committed}, \
                     the query answered {plain}"
                );
            }

            let seen = gql
                .query_after(&consistency_token(&added), BASKET_QUERY, variables.clone())
                .await;
            assert_eq!(
                seen["data"]["basket"]["itemCount"], n,
                "{engine:?}, repetition {n}: {seen}"
            );

            let statements = gql.api.read_models.statements();
            let again = gql.query(BASKET_QUERY, variables.clone()).await;
            assert_eq!(
                again["data"]["basket"]["itemCount"], n,
                "{engine:?}: {again}"
            );
            if gql.api.read_models.statements() == statements {
                from_cache += 1;
            }
        }
        // A read can miss when the cache is slower than its timeout on a
        // loaded machine; nearly all must hit.
        assert!(
            from_cache >= REPETITIONS * 9 / 10,
            "{engine:?}: {from_cache} of {REPETITIONS} repeated reads came from the cache"
        );
    }
}

/// `/health/ready`'s overall status on `url`, checking it stays 200.
async fn ready_status(client: &reqwest::Client, url: &str) -> String {
    let response = client.get(url).send().await.expect("the API answers");
    assert_eq!(response.status(), 200, "{url}: still ready");
    let report: serde_json::Value = response.json().await.expect("a JSON report");
    report["status"].as_str().unwrap_or_default().to_owned()
}

/// The cache is killed in the middle of a load of basket commands and
/// reads, and started again: no request fails, both APIs report
/// `degraded` (and stay ready) while it is away, the cache is filled and
/// hit again once it is back, and the views and event store hold every
/// command.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_killed_under_load_fails_no_request_and_is_used_again_when_it_returns() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const WORKERS: usize = 4;
    const ROUNDS: usize = 45;
    const TOTAL: usize = WORKERS * ROUNDS;
    for engine in ENGINES {
        let mut server = OwnServer::start(engine);
        let url = engine.url_on(server.port);
        let direct = cache(url.clone(), 500);
        eventually(Duration::from_secs(10), "the server to answer", || {
            let direct = direct.clone();
            async move { direct.ping().await.ok() }
        })
        .await;
        let side = Arc::new(
            eshop_tests::graphql::ReadSide::start_cached(
                &format!("cache-kill-{engine:?}").to_lowercase(),
                CacheConfig::at(url),
                |_| {},
            )
            .await,
        );
        let product = side
            .app
            .register_product(&format!("CKILL-{engine:?}"), 100, 100_000)
            .await;
        let done = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (side, done) = (side.clone(), done.clone());
                tokio::spawn(async move {
                    let (app, gql) = (&side.app, &side.graphql);
                    let basket = app.open_basket().await;
                    let variables = serde_json::json!({ "id": basket });
                    let mut failures = Vec::new();
                    for n in 1..=ROUNDS {
                        let added = app.add_item(basket, product, 1).await;
                        if added.status != 200 {
                            failures.push(format!("add-item {n}: {:?}", added.body));
                        } else {
                            let seen = gql
                                .query_after(
                                    &consistency_token(&added),
                                    BASKET_QUERY,
                                    variables.clone(),
                                )
                                .await;
                            if seen["data"]["basket"]["itemCount"] != n {
                                failures.push(format!("basket read {n}: {seen}"));
                            }
                        }
                        let plain = gql.query(BASKET_QUERY, variables.clone()).await;
                        if plain.get("errors").is_some() {
                            failures.push(format!("plain read {n}: {plain}"));
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    (basket, failures)
                })
            })
            .collect();
        let progress = |share: usize| {
            let done = done.clone();
            move || {
                let done = done.clone();
                async move { (done.load(Ordering::SeqCst) >= TOTAL * share / 3).then_some(()) }
            }
        };
        eventually(Duration::from_secs(120), "a third of the load", progress(1)).await;
        server.stop();
        let command_health = format!("{}/health/ready", side.app.address);
        let query_health = format!("{}/health/ready", side.graphql.base);
        for health in [&command_health, &query_health] {
            eventually(
                Duration::from_secs(10),
                "the API to report degraded",
                || {
                    let client = side.app.client.clone();
                    async move { (ready_status(&client, health).await == "degraded").then_some(()) }
                },
            )
            .await;
        }
        assert!(
            done.load(Ordering::SeqCst) < TOTAL,
            "{engine:?}: the load ended before the cache was away"
        );
        eventually(
            Duration::from_secs(120),
            "two thirds of the load",
            progress(2),
        )
        .await;
        server.restart();
        eventually(Duration::from_secs(10), "the server to answer", || {
            let direct = direct.clone();
            async move { direct.ping().await.ok() }
        })
        .await;

        let mut baskets = Vec::new();
        for worker in workers {
            let (basket, failures) = worker.await.expect("the worker ran");
            assert!(
                failures.is_empty(),
                "{engine:?}: failed requests: {failures:#?}"
            );
            baskets.push(basket);
        }
        for health in [&command_health, &query_health] {
            eventually(Duration::from_secs(10), "the API to report up", || {
                let client = side.app.client.clone();
                async move {
                    let status = ready_status(&client, health).await;
                    (status == "up" || status == "ok").then_some(())
                }
            })
            .await;
        }
        let store = event_store::EventStore::new(
            side.app.db.pool.clone(),
            event_schemas::upcasters(),
            event_store::SnapshotPolicy::default(),
        );
        let gql = &side.graphql;
        for basket in baskets {
            let loaded = store
                .load::<domain::basket::Basket>(&basket.to_string())
                .await
                .expect("load from PostgreSQL");
            assert_eq!(
                loaded.version,
                1 + ROUNDS,
                "{engine:?}: every item added once"
            );
            let variables = serde_json::json!({ "id": basket });
            // The cache is read and filled again: a basket read twice
            // comes from it the second time.
            eventually(Duration::from_secs(10), "a read from the cache", || {
                let variables = variables.clone();
                async move {
                    let first = gql.query(BASKET_QUERY, variables.clone()).await;
                    assert_eq!(first["data"]["basket"]["itemCount"], ROUNDS, "{first}");
                    let statements = gql.api.read_models.statements();
                    let again = gql.query(BASKET_QUERY, variables).await;
                    assert_eq!(again["data"]["basket"]["itemCount"], ROUNDS, "{again}");
                    (gql.api.read_models.statements() == statements).then_some(())
                }
            })
            .await;
        }
    }
}
