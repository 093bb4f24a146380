//! The REST command API: one module per resource, merged here with the
//! OpenAPI document and the interactive API page.

mod baskets;
mod health;
mod orders;
mod products;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use serde::Deserialize;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use health::{Readiness, ReadinessCheck};

use crate::error::ApiError;
use crate::extract::MAX_BODY_BYTES;
use crate::startup::AppState;
use crate::telemetry::correlate;

/// The headers every command accepts (documented for OpenAPI; read by
/// [`crate::extract::CommandHeaders`]).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct CommandHeaderParams {
    /// Apply the command only if the aggregate is at this version (the
    /// `ETag` of an earlier response), else `412`.
    #[serde(rename = "If-Match")]
    if_match: Option<String>,
    /// Makes a retried request return the original response without
    /// appending anything (kept at least 24 hours). 1 to 255 visible ASCII
    /// characters.
    #[serde(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
    /// Ties the request to others; generated when absent, echoed back and
    /// stored with the events.
    #[serde(rename = "X-Correlation-Id")]
    correlation_id: Option<String>,
    /// W3C trace context; stored with the events when well-formed.
    traceparent: Option<String>,
}

/// A body for commands that carry no data: empty, or `{}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoBody {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "eshop command API",
        description = "Commands on products, baskets and orders. Every success returns the aggregate's new \
                       version (also as ETag) and a consistency token; every error is RFC 9457 problem+json."
    ),
    tags(
        (name = "products", description = "The catalog: prices and stock"),
        (name = "baskets", description = "Customers' baskets and checkout"),
        (name = "orders", description = "Payment, shipping, delivery and cancellation"),
        (name = "health", description = "Liveness and readiness")
    )
)]
struct ApiDoc;

/// The OpenAPI document of the command API.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(products::router())
        .merge(baskets::router())
        .merge(orders::router())
        .merge(health::router())
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let (api, document) = api_router().split_for_parts();
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal.into_response()
        }))
        .layer(axum::middleware::from_fn(correlate))
        .with_state(state)
}
