//! `eshop serve` as one real process (the quick start): the API, the relay
//! and the projectors together; then the same as separate processes, with
//! the projection status and lag they report.

use std::time::Duration;

use eshop_tests::{EshopEnv, ProcessStack, TestBus, TestDb, bodies, eventually};
use serde_json::{Value, json};
use uuid::Uuid;

/// A client of an `eshop` process's HTTP API.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn new(port: u16) -> Self {
        Self {
            base: format!("http://127.0.0.1:{port}"),
            http: eshop_tests::auth::client(eshop_tests::auth::Who::Ops).await,
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        (
            response.status().as_u16(),
            response.text().await.expect("body"),
        )
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    /// Registers a product and places an order for it; returns the order.
    async fn place_order(&self) -> Uuid {
        let product = self.post("/products", bodies::new_product()).await["id"].clone();
        let basket = self.post("/baskets", bodies::new_basket()).await["id"]
            .as_str()
            .expect("basket id")
            .to_owned();
        self.post(
            &format!("/baskets/{basket}/items"),
            json!({"product_id": product, "quantity": 1}),
        )
        .await;
        let order = self
            .post(&format!("/baskets/{basket}/checkout"), bodies::checkout())
            .await;
        order["order_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no order_id in {order}"))
            .parse()
            .expect("uuid")
    }
}

async fn order_status(db: &TestDb, order: Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM order_view WHERE order_id = $1")
        .bind(order)
        .fetch_optional(&db.pool)
        .await
        .expect("order_view")
}

fn status(env: &EshopEnv) -> Vec<Value> {
    let out = env.run(&["projections", "status", "--json"]);
    serde_json::from_str::<Value>(&out)
        .expect("status is JSON")
        .as_array()
        .cloned()
        .expect("an array")
}

fn find<'a>(statuses: &'a [Value], name: &str) -> &'a Value {
    statuses
        .iter()
        .find(|s| s["projection"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {statuses:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_serves_commands_and_projects_them() {
    let ProcessStack {
        db,
        broker,
        search,
        port,
        env,
    } = ProcessStack::new("serve").await;
    let mut serve = env.spawn(&["serve"]);
    let api = Api::new(port).await;
    serve.wait_live(port).await;

    let ready = eventually(
        Duration::from_secs(30),
        "every backing service up",
        || async {
            let (code, body) = api.get("/health/ready").await;
            (code == 200).then_some(body)
        },
    )
    .await;
    let ready: Value = serde_json::from_str(&ready).expect("json");
    let mut checks: Vec<&str> = ready["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    checks.sort_unstable();
    // The bus in use is named: its broker, or the event store's feed.
    let bus = match broker.bus {
        TestBus::Kafka => "kafka",
        TestBus::RabbitMq => "rabbitmq",
        TestBus::None => "event_store_feed",
    };
    let mut expected = [bus, "identity", "postgres", "projections", "search"];
    expected.sort_unstable();
    assert_eq!(checks, expected);

    let order = api.place_order().await;
    eventually(
        Duration::from_secs(30),
        "the order in order_view",
        || async { order_status(&db, order).await },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the order in the index",
        || async { search.document("orders", &order.to_string()).await },
    )
    .await;

    // /metrics: request counts, and every projection's gauges caught up.
    let metrics = eventually(Duration::from_secs(30), "lag gauges at 0", || async {
        let (code, body) = api.get("/metrics").await;
        assert_eq!(code, 200);
        let caught_up = [
            "product_catalog",
            "basket_view",
            "order_view",
            "sales_daily",
            "search",
        ]
        .iter()
        .all(|p| {
            body.contains(&format!(
                "eshop_projection_lag_events{{projection=\"{p}\"}} 0\n"
            ))
        });
        caught_up.then_some(body)
    })
    .await;
    assert!(
        metrics.contains("eshop_http_requests_total{method=\"POST\",route=\"/baskets/{id}/checkout\",status=\"201\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("eshop_projection_dead_letters{projection=\"order_view\"} 0"));
    // A relay runs only where there is a broker to publish to.
    assert_eq!(
        metrics.contains("eshop_relay_events_published_total"),
        broker.bus != TestBus::None,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_lag_while_projectors_are_down_and_drains_after() {
    let ProcessStack {
        db,
        broker,
        port,
        env,
        ..
    } = ProcessStack::new("status").await;
    let mut api_process = env.spawn(&["serve", "--api-only"]);
    let api = Api::new(port).await;
    api_process.wait_live(port).await;

    // Nothing published yet: every order event is behind, none is lost.
    let first = api.place_order().await;
    let statuses = status(&env);
    assert_eq!(statuses.len(), 5);
    let orders = find(&statuses, "order_view");
    assert_eq!(orders["events_behind"], 1, "{orders}");
    assert!(
        orders["seconds_behind"].as_f64().unwrap_or(0.0) > 0.0,
        "{orders}"
    );
    assert_eq!(find(&statuses, "product_catalog")["events_behind"], 2);
    assert_eq!(find(&statuses, "basket_view")["events_behind"], 3);
    let unpublished: Vec<(String, Value)> = statuses
        .iter()
        .map(|s| {
            (
                s["projection"].as_str().unwrap_or_default().to_owned(),
                s["events_behind"].clone(),
            )
        })
        .collect();

    // Published but not projected: the lag moves to the broker, every
    // event of it, though the relay sent an aggregate's events in one
    // record batch. With no broker, nothing is relayed (`eshop relay`
    // refuses to run): the lag is in each projection's feed of the event
    // store from the start.
    let mut relay = match broker.bus {
        TestBus::None => {
            let refused = env
                .try_run(&["relay"])
                .expect_err("no relay without a broker");
            assert!(
                refused.contains("there is no broker to relay to"),
                "{refused}"
            );
            None
        }
        TestBus::Kafka | TestBus::RabbitMq => Some(env.spawn(&["relay"])),
    };
    eventually(Duration::from_secs(30), "the relay to publish", || async {
        let statuses = status(&env);
        unpublished
            .iter()
            .all(|(name, behind)| {
                let status = find(&statuses, name);
                let on_broker: i64 = status["partitions"]
                    .as_array()
                    .expect("partitions")
                    .iter()
                    .map(|p| p["lag"].as_i64().unwrap_or(0))
                    .sum();
                behind.as_i64() == Some(on_broker) && status["events_behind"] == *behind
            })
            .then_some(())
    })
    .await;

    let _projectors = env.spawn(&["project"]);
    eventually(
        Duration::from_secs(60),
        "every projection caught up",
        || async {
            let statuses = status(&env);
            statuses
                .iter()
                .all(|s| s["events_behind"] == 0 && s["seconds_behind"] == 0.0)
                .then_some(())
        },
    )
    .await;
    let statuses = status(&env);
    let orders = find(&statuses, "order_view");
    assert!(orders["position"].as_i64().unwrap_or(0) > 0);
    assert_eq!(orders["dead_letters"], 0);
    assert_eq!(order_status(&db, first).await.as_deref(), Some("placed"));

    // The human table names every projection.
    let table = env.run(&["projections", "status"]);
    for name in [
        "product_catalog",
        "basket_view",
        "order_view",
        "sales_daily",
        "search",
    ] {
        assert!(table.contains(name), "{table}");
    }
    if let Some(relay) = &mut relay {
        assert!(
            relay.running(),
            "the relay exited; see {}",
            relay.log.display()
        );
        relay.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_served_to_operators_on_an_address_of_their_own() {
    let ProcessStack { port, env, .. } = ProcessStack::new("metrics-addr").await;
    let metrics_port = eshop_tests::free_port();
    let env = env.with("METRICS_ADDR", &format!("127.0.0.1:{metrics_port}"));
    let mut serve = env.spawn(&["serve", "--api-only"]);
    serve.wait_live(port).await;
    let api = Api::new(port).await;
    api.place_order().await;
    // Not beside the API any more: only on the operators' address.
    assert_eq!(api.get("/metrics").await.0, 404);
    let metrics = eventually(
        Duration::from_secs(30),
        "metrics on their address",
        || async {
            let response = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
                .await
                .ok()?;
            (response.status() == 200).then_some(())?;
            response.text().await.ok()
        },
    )
    .await;
    assert!(
        metrics.contains("eshop_http_requests_total{method=\"POST\",route=\"/baskets/{id}/checkout\",status=\"201\"} 1"),
        "{metrics}"
    );
}

/// With a cache that does not answer, `eshop serve` still takes basket
/// commands, and `/metrics` counts each read it took to PostgreSQL instead
/// and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_fall_back_from_the_cache_are_counted() {
    let ProcessStack { port, env, .. } = ProcessStack::new("cache-fallback").await;
    // Nothing listens there.
    let env = env.with("CACHE_URL", &format!("redis://127.0.0.1:{}", free_port()));
    let mut serve = env.spawn(&["serve", "--api-only"]);
    serve.wait_live(port).await;
    let api = Api::new(port).await;
    api.place_order().await;
    let (status, metrics) = api.get("/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    let fallbacks = metrics
        .lines()
        .find(|line| {
            line.starts_with("eshop_cache_fallbacks_total{")
                && line.contains("what=\"aggregate_state\"")
                && line.contains("reason=\"unavailable\"")
        })
        .unwrap_or_else(|| panic!("no fallback counted: {metrics}"));
    let count: f64 = fallbacks
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(count >= 1.0, "{fallbacks}");
}

/// A port free at the moment (the process under test binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graphql_process_runs_in_process_and_stops_when_asked() {
    use clap::Parser;
    let db = TestDb::new().await;
    let broker = eshop_tests::TestBroker::new();
    let search = eshop_tests::TestSearch::new(&broker.prefix).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let cli = eshop::cli::Cli::try_parse_from([
        "eshop",
        "query-api",
        "--database-url",
        &db.url,
        "--kafka-brokers",
        &broker.brokers,
        "--search-url",
        &search.url,
        "--search-index-prefix",
        &search.prefix,
        "--listen",
        &listen,
    ])
    .expect("the arguments parse");
    let (handle, stop) = eshop::Stop::new();
    let live = format!("http://{listen}/health/live");
    // Polled beside the checks on this task: the command's future is the
    // binary's, which need not be Send.
    let checks = async {
        let status = eventually(Duration::from_secs(30), "the GraphQL API answers", || {
            let live = live.clone();
            async move {
                let response = reqwest::get(&live).await.ok()?;
                Some(response.status())
            }
        })
        .await;
        handle.stop();
        status
    };
    let (stopped, status) = tokio::time::timeout(
        Duration::from_secs(60),
        futures::future::join(eshop::run(cli.command, stop), checks),
    )
    .await
    .expect("it answers, then stops when asked");
    assert_eq!(status, 200);
    assert!(stopped.is_ok(), "{stopped:?}");
    assert!(
        reqwest::get(&live).await.is_err(),
        "nothing listens once it has stopped"
    );
}
