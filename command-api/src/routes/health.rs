use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use futures::future::{BoxFuture, join_all};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::startup::AppState;

/// A check of one backing service: `Ok` when it answers.
pub type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The backing services this process uses, each checked by name. A
/// required one that is down makes the process not ready (503); an
/// optional one (the cache) that is down makes it `degraded`, still ready:
/// the process works without it.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, bool, ReadinessCheck)>,
}

impl Readiness {
    /// A service the process cannot work without.
    #[must_use]
    pub fn with(mut self, name: &'static str, check: ReadinessCheck) -> Self {
        self.checks.push((name, true, check));
        self
    }

    /// A service the process works without, more slowly.
    #[must_use]
    pub fn with_optional(mut self, name: &'static str, check: ReadinessCheck) -> Self {
        self.checks.push((name, false, check));
        self
    }

    /// The cache answers.
    #[must_use]
    pub fn cache(cache: cache::Cache) -> ReadinessCheck {
        Arc::new(move || {
            let cache = cache.clone();
            Box::pin(async move { cache.ping().await.map_err(|error| error.to_string()) })
        })
    }

    /// PostgreSQL answers a trivial query.
    #[must_use]
    pub fn postgres(pool: sqlx::PgPool) -> ReadinessCheck {
        Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move {
                sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map(drop)
                    .map_err(|error| error.to_string())
            })
        })
    }

    /// The identity provider's signing keys are at hand (fetched when
    /// there are none yet), so tokens can be checked.
    #[must_use]
    pub fn identity(verifier: identity::Verifier) -> ReadinessCheck {
        Arc::new(move || {
            let verifier = verifier.clone();
            Box::pin(async move { verifier.ready().await })
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    /// Always `up` while the process serves requests.
    status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessReport {
    /// `up` when every backing service is; `degraded` when only optional
    /// ones (the cache) are down: still ready; else `down`.
    status: &'static str,
    checks: Vec<ServiceCheck>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceCheck {
    /// The backing service, for example `postgres`.
    name: &'static str,
    /// `up`, `down`, or `degraded` for an optional service that is down.
    status: &'static str,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
}

/// The process is running.
#[utoipa::path(get, path = "/health/live", tag = "health", security(()),
    responses((status = 200, description = "Alive", body = Liveness)))]
async fn live() -> Json<Liveness> {
    Json(Liveness { status: "up" })
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Every backing service this process needs answers.
#[utoipa::path(get, path = "/health/ready", tag = "health", security(()),
    responses((status = 200, description = "Ready", body = ReadinessReport),
        (status = 503, description = "A backing service is down", body = ReadinessReport)))]
async fn ready(State(app): State<AppState>) -> (StatusCode, Json<ReadinessReport>) {
    let checks = join_all(
        app.readiness
            .checks
            .iter()
            .map(|(name, required, check)| async move {
                let started = Instant::now();
                let result = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
                };
                if let Err(error) = &result {
                    tracing::warn!(service = name, required, %error, "backing service not ready");
                }
                ServiceCheck {
                    name,
                    status: match (&result, required) {
                        (Ok(()), _) => "up",
                        (Err(_), true) => "down",
                        (Err(_), false) => "degraded",
                    },
                    latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                    error: result.err(),
                }
            }),
    )
    .await;
    let down = checks.iter().any(|check| check.status == "down");
    let degraded = checks.iter().any(|check| check.status == "degraded");
    let status = if down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(ReadinessReport {
            status: match (down, degraded) {
                (true, _) => "down",
                (false, true) => "degraded",
                (false, false) => "up",
            },
            checks,
        }),
    )
}
