//! HTTP: `POST /graphql` and `GET /graphql` (queries; a browser asking for
//! HTML gets GraphiQL), `GET /graphql/ws` for subscriptions
//! (graphql-transport-ws, and the older graphql-ws protocol), and the
//! GraphiQL assets. A request's `X-Consistency-Token` makes its resolvers
//! wait for their projections (see [`crate::consistency`]); every request
//! is bounded by `GRAPHQL_TIMEOUT_MS`.

use std::sync::Arc;

use async_graphql::{Executor, Response, ServerError};
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tracing::Instrument;

use crate::config::QueryConfig;
use crate::consistency::{self, Consistency};
use crate::error::with_code;
use crate::graphiql;
use crate::limits::{CodedSchema, Limits};
use crate::schema::EshopSchema;

#[derive(Clone)]
struct QueryState {
    executor: CodedSchema,
    config: Arc<QueryConfig>,
    verifier: identity::Verifier,
}

/// The GraphQL routes over `schema`; `verifier` checks every request's
/// token.
pub fn router(schema: EshopSchema, config: QueryConfig, verifier: identity::Verifier) -> Router {
    let executor = CodedSchema::new(
        schema,
        Limits {
            max_depth: config.max_depth,
            max_complexity: config.max_complexity,
            max_query_bytes: config.max_body_bytes,
        },
    );
    let subscriptions = crate::ws::router(executor.clone(), &config, verifier.clone());
    let state = QueryState {
        executor,
        config: Arc::new(config),
        verifier,
    };
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .with_state(state)
        .merge(subscriptions)
        .merge(graphiql::assets())
}

/// A request body or query string that is not a GraphQL request at all:
/// answered 400 in the GraphQL response shape, with a code.
pub struct Rejection(async_graphql::ParseRequestError);

impl From<async_graphql::ParseRequestError> for Rejection {
    fn from(error: async_graphql::ParseRequestError) -> Self {
        Self(error)
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> axum::response::Response {
        let body = json!({ "errors": [{
            "message": format!("not a GraphQL request: {}", self.0),
            "extensions": { "code": "BAD_REQUEST" }
        }]});
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

/// A GraphQL error response with `code` and an HTTP status of its own
/// (the request never reached the schema).
fn refused(status: StatusCode, code: &str, message: String) -> axum::response::Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, Json(body)).into_response()
}

/// The caller of a request, from its `Authorization: Bearer` header; or
/// the refusal: `401` with `UNAUTHENTICATED` and an RFC 6750 challenge,
/// `503` when the issuer's keys cannot be had. Checked before the body is
/// read.
async fn authenticate(
    verifier: &identity::Verifier,
    headers: &HeaderMap,
) -> Result<identity::Caller, axum::response::Response> {
    use identity::{Rejection, VerifyError};
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let token = match (values.next(), values.next()) {
        (None, _) => Err(Rejection::Missing),
        (Some(_), Some(_)) => Err(Rejection::Malformed),
        (Some(value), None) => value
            .to_str()
            .map_err(|_| Rejection::Malformed)
            .and_then(identity::bearer),
    };
    let verified = match token {
        Ok(token) => verifier.verify(token).await,
        Err(rejection) => Err(rejection.into()),
    };
    verified.map_err(|error| match error {
        VerifyError::Rejected(rejection) => {
            metrics::counter!("eshop_graphql_requests_total", "outcome" => "unauthenticated")
                .increment(1);
            let mut response = refused(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                rejection.to_string(),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_str(&identity::challenge(&rejection)).unwrap_or_else(
                    |_| header::HeaderValue::from_static(r#"Bearer realm="eshop""#),
                ),
            );
            response
        }
        VerifyError::Unavailable(unavailable) => {
            tracing::warn!(error = %unavailable, "a token could not be checked");
            let mut response = refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "the identity provider is unavailable; try again".to_owned(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            response
        }
    })
}

/// `POST /graphql`: a JSON body of at most `GRAPHQL_MAX_BODY_BYTES`. Any
/// other content type is refused (415): the CORS-simple ones would let
/// any web page send queries with a visitor's credentials.
async fn graphql_post(
    State(state): State<QueryState>,
    request: Request,
) -> axum::response::Response {
    let caller = match authenticate(&state.verifier, request.headers()).await {
        Ok(caller) => caller,
        Err(refusal) => return refusal,
    };
    let limit = state.config.max_body_bytes;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        // None, or not text: either way not JSON, refused below.
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let essence = content_type
        .split_once(';')
        .map_or(content_type, |(essence, _)| essence)
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" && essence != "application/graphql+json" {
        return refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "a GraphQL POST body must be application/json".to_owned(),
        );
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let too_large = || {
        refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the body is larger than {limit} bytes, the most allowed"),
        )
    };
    if declared.is_some_and(|length| length > limit as u64) {
        return too_large();
    }
    let headers = request.headers().clone();
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(error) => {
            let over = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if over {
                return too_large();
            }
            return refused(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "the body could not be read".to_owned(),
            );
        }
    };
    let request = Request::from_parts(parts, axum::body::Body::from(bytes));
    match GraphQLRequest::<Rejection>::from_request(request, &()).await {
        Ok(request) => execute(&state, &headers, request.into_inner().data(caller))
            .await
            .into_response(),
        Err(rejection) => rejection.into_response(),
    }
}

async fn graphql_get(
    State(state): State<QueryState>,
    request: Request,
) -> axum::response::Response {
    let headers = request.headers().clone();
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    let has_query = request.uri().query().is_some_and(|q| q.contains("query="));
    if wants_html && !has_query {
        return graphiql::page().into_response();
    }
    let caller = match authenticate(&state.verifier, &headers).await {
        Ok(caller) => caller,
        Err(refusal) => return refusal,
    };
    match GraphQLRequest::<Rejection>::from_request(request, &()).await {
        Ok(request) => execute(&state, &headers, request.into_inner().data(caller))
            .await
            .into_response(),
        Err(rejection) => rejection.into_response(),
    }
}

async fn execute(
    state: &QueryState,
    headers: &HeaderMap,
    request: async_graphql::Request,
) -> GraphQLResponse {
    let token = headers
        .get(consistency::HEADER)
        .map(|value| value.to_str().unwrap_or("").to_owned());
    let request = request.data(Consistency::new(token, state.config.consistency_timeout()));
    let timeout = state.config.timeout();
    // Under the request's span: the operation, as the client named it
    // (bounded: a span attribute, never a metric label).
    let span = telemetry::span!(
        "graphql.execute",
        graphql.operation.name = request
            .operation_name
            .as_deref()
            .map(|name| name.chars().take(64).collect::<String>()),
    );
    let started = std::time::Instant::now();
    let executed = tokio::time::timeout(timeout, state.executor.execute(request))
        .instrument(span)
        .await;
    let response = match executed {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("eshop_graphql_timeouts_total").increment(1);
            Response::from_errors(vec![with_code(
                ServerError::new(
                    format!("the request took longer than {} ms", timeout.as_millis()),
                    None,
                ),
                "TIMEOUT",
            )])
        }
    };
    let outcome = if response.errors.is_empty() {
        "ok"
    } else {
        "error"
    };
    metrics::counter!("eshop_graphql_requests_total", "outcome" => outcome).increment(1);
    metrics::histogram!("eshop_graphql_request_duration_seconds", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    response.into()
}

/// `/health/live` (the process answers) and `/health/ready` (PostgreSQL
/// and the search engine answer, the issuer's keys are at hand; 503
/// naming the failing one otherwise).
pub fn health(
    read_models: crate::read_models::ReadModels,
    search: crate::SearchIndex,
    verifier: identity::Verifier,
) -> Router {
    Router::new()
        .route(
            "/health/live",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route(
            "/health/ready",
            get(move || {
                let (read_models, search, verifier) =
                    (read_models.clone(), search.clone(), verifier.clone());
                async move {
                    let postgres = sqlx::query("SELECT 1")
                        .execute(read_models.pool())
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string());
                    let engine = search.info().await.map(drop).map_err(|e| e.to_string());
                    let check = |result: &Result<(), String>| match result {
                        Ok(()) => json!({ "status": "ok" }),
                        Err(error) => json!({ "status": "failing", "error": error }),
                    };
                    let identity = verifier.ready().await;
                    let ready = postgres.is_ok() && engine.is_ok() && identity.is_ok();
                    let mut checks = json!({
                        "postgres": check(&postgres),
                        "search": check(&engine),
                        "identity": check(&identity)
                    });
                    // The cache is optional: down, it degrades the API
                    // (every read goes to PostgreSQL) and leaves it ready.
                    let mut degraded = false;
                    if let Some(cache) = read_models.basket_cache() {
                        checks["cache"] = match cache.ping().await {
                            Ok(()) => json!({ "status": "ok", "engine": cache.kind() }),
                            Err(error) => {
                                degraded = true;
                                json!({ "status": "degraded", "engine": cache.kind(), "error": error.to_string() })
                            }
                        };
                    }
                    let body = json!({
                        "status": match (ready, degraded) {
                            (false, _) => "failing",
                            (true, true) => "degraded",
                            (true, false) => "ok",
                        },
                        "checks": checks
                    });
                    let status = if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, Json(body))
                }
            }),
        )
}
