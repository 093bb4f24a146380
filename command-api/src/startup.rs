use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use cqrs_es::Aggregate;
use domain::basket::Basket;
use event_store::{EventStore, StateCache};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::commands::CommandService;
use crate::config::ServeConfig;
use crate::routes::{self, Readiness, ReadinessCheck};
use crate::server::{self, HttpLimits};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub commands: CommandService,
    pub readiness: Readiness,
    /// Checks the bearer tokens of requests.
    pub verifier: identity::Verifier,
}

/// The command API, connected and bound to its port, ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    store: EventStore,
    metrics: Option<PrometheusHandle>,
    extra: Option<axum::Router>,
    http: HttpLimits,
}

impl Application {
    /// Connects and binds the listener. The database must be migrated
    /// (`eshop migrate`, which `eshop serve` runs first).
    pub async fn build(config: &ServeConfig) -> anyhow::Result<Self> {
        let pool = event_store::connect(&config.database).context("invalid DATABASE_URL")?;
        let mut store = EventStore::new(
            pool.clone(),
            event_schemas::upcasters(),
            config.snapshot_every.clone(),
        )
        .with_idempotency_ttl(config.idempotency_ttl());
        let verifier = identity::Verifier::new(config.identity.clone())
            .context("failed to set up token verification")?;
        let mut readiness = Readiness::default()
            .with("postgres", Readiness::postgres(pool))
            .with("identity", Readiness::identity(verifier.clone()));
        if let Some(cache) = cache::Cache::new(&config.cache).context("invalid CACHE_URL")? {
            // Baskets only: the hottest aggregate, loaded by every basket
            // command (see event_store::state_cache).
            store = store.with_state_cache(
                StateCache::new(cache.clone()).with(Basket::TYPE, Basket::STATE_FORMAT),
            );
            readiness = readiness.with_optional("cache", Readiness::cache(cache));
        }
        let state = AppState {
            commands: CommandService::new(store.clone(), config.retry_policy()),
            readiness,
            verifier,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("failed to listen on {}", config.listen))?;
        Ok(Self {
            listener,
            state,
            store,
            metrics: None,
            extra: None,
            http: config.http.clone(),
        })
    }

    /// Adds a backing service to `/health/ready`.
    #[must_use]
    pub fn with_readiness(mut self, name: &'static str, check: ReadinessCheck) -> Self {
        self.state.readiness = self.state.readiness.with(name, check);
        self
    }

    /// Serves the process's metrics at `/metrics` in the Prometheus text
    /// format.
    #[must_use]
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// Serves `router` beside the REST API on the same listener (the
    /// GraphQL API in `eshop serve`). Its paths must not clash.
    #[must_use]
    pub fn with_router(mut self, router: axum::Router) -> Self {
        self.extra = Some(router);
        self
    }

    /// The token verifier of the command API, to share with the GraphQL
    /// API served beside it (one key cache).
    #[must_use]
    pub fn verifier(&self) -> identity::Verifier {
        self.state.verifier.clone()
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let store = self.store.clone();
        let purge = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            loop {
                every.tick().await;
                match store.purge_expired_idempotency_keys().await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "expired idempotency keys purged"),
                    Err(error) => tracing::warn!(%error, "idempotency key purge failed"),
                }
            }
        });
        // The issuer's keys, fetched now rather than by the first request.
        let verifier = self.state.verifier.clone();
        tokio::spawn(async move {
            if let Err(error) = verifier.ready().await {
                tracing::warn!(%error, "the identity provider's keys could not be fetched yet");
            }
        });
        tracing::info!(addr = %self.local_addr()?, "command API listening");
        let mut router = routes::router(self.state);
        if let Some(handle) = self.metrics {
            router = router.merge(metrics_router(handle));
        }
        if let Some(extra) = self.extra {
            router = router.merge(extra);
        }
        let router = server::with_common_layers(router, &self.http);
        let served = server::serve(self.listener, router, &self.http, shutdown).await;
        purge.abort();
        served.context("HTTP server failed")
    }
}

/// `GET /metrics`: the Prometheus text exposition of `handle`.
pub fn metrics_router(handle: PrometheusHandle) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    )
}

/// Serves `/metrics` (and `/health/live`) alone, for processes without the
/// command API (`eshop relay`, `eshop project`).
pub async fn serve_metrics(
    listen: SocketAddr,
    handle: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("failed to listen on {listen}"))?;
    let router = metrics_router(handle).route(
        "/health/live",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "up"})) }),
    );
    let limits = HttpLimits::default();
    let router = server::with_common_layers(router, &limits);
    tracing::info!(addr = %listen, "metrics listening");
    server::serve(listener, router, &limits, shutdown)
        .await
        .context("metrics server failed")
}
