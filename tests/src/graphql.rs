//! The read side in one test: the command API, a relay, every projector
//! and the GraphQL API, over the test's own database, topics and indices.

use std::sync::Arc;

use projections::status::{BusStatus, StatusSource};
use query_api::{QueryApi, QueryConfig};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::{TestApp, TestBroker, TestSearch, start_projectors_cached, start_relay};

/// The whole path from REST command to GraphQL answer.
pub struct ReadSide {
    pub app: TestApp,
    pub broker: TestBroker,
    pub search: TestSearch,
    pub graphql: TestGraphql,
    _relay: oneshot::Sender<()>,
    _projectors: oneshot::Sender<()>,
}

impl ReadSide {
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, |_| {}).await
    }

    /// With adjusted GraphQL limits.
    pub async fn start_with(name: &str, configure: impl FnOnce(&mut QueryConfig)) -> Self {
        Self::start_cached(name, crate::cache::test_cache(), configure).await
    }

    /// With `cache` on every part (the command API, the projectors and the
    /// GraphQL API) rather than the one `TEST_CACHE` names.
    pub async fn start_cached(
        name: &str,
        cache: cache::CacheConfig,
        configure: impl FnOnce(&mut QueryConfig),
    ) -> Self {
        let app = TestApp::spawn_with(|config| config.cache = cache.clone()).await;
        let broker = TestBroker::new();
        let search = TestSearch::new(&broker.prefix).await;
        let relay = start_relay(&app.db, &broker, name);
        let projectors = start_projectors_cached(&app.db, &broker, &search, name, cache.clone());
        let mut config = QueryConfig {
            // The pipeline (relay, Kafka, projector processes, the index's
            // refresh) runs beside the whole suite: give read-your-writes
            // the time a loaded machine needs. The timeout itself has its
            // own test, with its own setting.
            consistency_timeout_ms: 30_000,
            ..QueryConfig::default()
        };
        configure(&mut config);
        let verifier =
            identity::Verifier::new(identity::IdentityConfig::default()).expect("a token verifier");
        let graphql =
            TestGraphql::spawn_cached(&app, &broker, &search, name, (config, verifier), &cache)
                .await;
        Self {
            app,
            broker,
            search,
            graphql,
            _relay: relay,
            _projectors: projectors,
        }
    }
}

/// A GraphQL API served on an ephemeral port, with a client.
pub struct TestGraphql {
    pub base: String,
    pub api: Arc<QueryApi>,
    http: reqwest::Client,
}

impl TestGraphql {
    pub async fn spawn(
        app: &TestApp,
        broker: &TestBroker,
        search: &TestSearch,
        relay_name: &str,
        config: QueryConfig,
    ) -> Self {
        let verifier =
            identity::Verifier::new(identity::IdentityConfig::default()).expect("a token verifier");
        Self::spawn_trusting(app, broker, search, relay_name, config, verifier).await
    }

    /// [`TestGraphql::spawn`], checking tokens with `verifier` (one that
    /// trusts a test issuer, for instance).
    pub async fn spawn_trusting(
        app: &TestApp,
        broker: &TestBroker,
        search: &TestSearch,
        relay_name: &str,
        config: QueryConfig,
        verifier: identity::Verifier,
    ) -> Self {
        let cache = crate::cache::test_cache();
        Self::spawn_cached(app, broker, search, relay_name, (config, verifier), &cache).await
    }

    /// [`TestGraphql::spawn_trusting`], serving `basket(id)` from `cache`.
    pub async fn spawn_cached(
        app: &TestApp,
        broker: &TestBroker,
        search: &TestSearch,
        relay_name: &str,
        (config, verifier): (QueryConfig, identity::Verifier),
        cache: &cache::CacheConfig,
    ) -> Self {
        let status = Arc::new(BusStatus::new(
            app.db.pool.clone(),
            StatusSource {
                bus: broker.event_bus(),
                relay_name: relay_name.to_owned(),
            },
        ));
        let api = QueryApi::new(
            app.db.pool.clone(),
            &search.config(),
            status,
            config,
            verifier,
            cache::Cache::new(cache)
                .expect("the test cache's settings")
                .map(read_models::basket_cache::BasketCache::new),
        )
        .expect("the GraphQL API builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let router = api.router_with_health();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            base,
            api: Arc::new(api),
            http: crate::auth::client(crate::auth::Who::Ops).await,
        }
    }

    /// The WebSocket URL for subscriptions.
    #[must_use]
    pub fn ws_url(&self) -> String {
        format!("{}/graphql/ws", self.base.replacen("http", "ws", 1))
    }

    /// POSTs a query; returns the whole response (`data` and `errors`).
    pub async fn query(&self, query: &str, variables: Value) -> Value {
        self.send(query, variables, None).await
    }

    /// POSTs a query with `X-Consistency-Token`.
    pub async fn query_after(&self, token: &str, query: &str, variables: Value) -> Value {
        self.send(query, variables, Some(token)).await
    }

    /// POSTs a query as `who`; returns the whole response.
    pub async fn query_as(&self, who: crate::auth::Who, query: &str, variables: Value) -> Value {
        let response = reqwest::Client::new()
            .post(format!("{}/graphql", self.base))
            .header("authorization", crate::auth::bearer(who).await)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("the GraphQL API answers");
        assert!(response.status().is_success(), "HTTP {}", response.status());
        response.json().await.expect("a JSON response")
    }

    async fn send(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.header("x-consistency-token", token);
        }
        let response = request.send().await.expect("the GraphQL API answers");
        assert!(response.status().is_success(), "HTTP {}", response.status());
        response.json().await.expect("a JSON response")
    }

    /// The SQL statements the API has run so far.
    #[must_use]
    pub fn statements(&self) -> u64 {
        self.api.read_models.statements()
    }
}

/// The `extensions.code` of every error of a response.
#[must_use]
pub fn error_codes(response: &Value) -> Vec<String> {
    response["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            e["extensions"]["code"]
                .as_str()
                .unwrap_or("<none>")
                .to_owned()
        })
        .collect()
}

/// A graphql-transport-ws connection of a test.
pub type WsSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to `url` that asks for graphql-transport-ws, not yet
/// initialised; and the server's answer to the handshake.
pub async fn connect_socket(
    url: &str,
) -> (
    WsSocket,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("ws request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .expect("the WebSocket connects")
}

/// Sends `message` (a protocol message, as JSON) over `socket`.
pub async fn send_message(socket: &mut WsSocket, message: Value) {
    use futures::SinkExt;
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            message.to_string().into(),
        ))
        .await
        .unwrap_or_else(|error| panic!("the socket takes {message}: {error}"));
}

/// The next protocol message other than ping and pong, within 10 s.
pub async fn next_message(socket: &mut WsSocket) -> Value {
    use futures::StreamExt;
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket stays open")
            .expect("a readable message");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).expect("JSON");
            if value["type"] != "ping" && value["type"] != "pong" {
                return value;
            }
        }
    }
}
