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
