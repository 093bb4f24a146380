//! The REST command API: one module per resource, merged here with the
//! OpenAPI document and the interactive API page.

mod baskets;
mod health;
mod orders;
mod products;

use axum::Router;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use health::{Readiness, ReadinessCheck};

use crate::error::{ApiError, FieldError, Problem};
use crate::startup::AppState;

/// The headers every command accepts (documented for OpenAPI; read by
/// [`crate::extract::CommandHeaders`]).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct CommandHeaderParams {
    /// Apply the command only if the aggregate is at this version (the
    /// `ETag` of an earlier response), else `412`.
    #[serde(rename = "If-Match")]
    #[param(
        pattern = r#"^(\*|(W/)?"[0-9]{1,18}"|[0-9]{1,18})$"#,
        example = "\"3\""
    )]
    if_match: Option<String>,
    /// Makes a retried request return the original response without
    /// appending anything (kept at least 24 hours); a retry while the first
    /// request is still running waits for its outcome, or after a while gets
    /// a retryable `409 idempotency-key-in-progress`. 1 to 255 visible ASCII
    /// characters. Keys are the caller's own: the same key from another
    /// caller is another key.
    #[serde(rename = "Idempotency-Key")]
    #[param(pattern = "^[!-~]{1,255}$", example = "checkout-7f3a9c")]
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
    components(schemas(Problem, FieldError)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "products", description = "The catalog: prices and stock"),
        (name = "baskets", description = "Customers' baskets and checkout"),
        (name = "orders", description = "Payment, shipping, delivery and cancellation"),
        (name = "health", description = "Liveness and readiness")
    )
)]
struct ApiDoc;

/// Every command needs an access token from the OpenID Connect issuer
/// (`OIDC_ISSUER_URL`); the health endpoints do not.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .description(Some(
                            "An access token from the OpenID Connect issuer eshop trusts \
                             (OIDC_ISSUER_URL), naming the audience OIDC_AUDIENCE; roles \
                             customer, staff or admin",
                        ))
                        .build(),
                ),
            );
    }
}

/// The OpenAPI document of the command API, as served at `/openapi.json`.
#[must_use]
pub fn openapi() -> serde_json::Value {
    render(&api_router().split_for_parts().1)
}

/// Renders the document as JSON. utoipa 5.5 writes a link's target as
/// `operation_id`/`operation_ref`; OpenAPI spells them `operationId` and
/// `operationRef`, so they are renamed here.
fn render(document: &utoipa::openapi::OpenApi) -> serde_json::Value {
    fn fix_links(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Object(links)) = map.get_mut("links") {
                    for link in links.values_mut() {
                        if let serde_json::Value::Object(link) = link {
                            for (from, to) in [
                                ("operation_id", "operationId"),
                                ("operation_ref", "operationRef"),
                            ] {
                                if let Some(target) = link.remove(from) {
                                    link.insert(to.to_owned(), target);
                                }
                            }
                        }
                    }
                }
                map.values_mut().for_each(fix_links);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(fix_links),
            _ => {}
        }
    }
    let mut json = serde_json::to_value(document).expect("the OpenAPI document serialises");
    fix_links(&mut json);
    json
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

/// The REST API, the OpenAPI document and the API page, without the
/// layers every route gets ([`crate::server::with_common_layers`]).
pub fn router(state: AppState) -> Router {
    let (api, document) = api_router().split_for_parts();
    api.merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", render(&document)))
        .fallback(not_found)
        .with_state(state)
}
