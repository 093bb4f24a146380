//! The HTTP server every eshop process runs, and the layers every route
//! gets: no client can hold the service with slow or idle connections,
//! oversized bodies or a panicking handler, whichever route it calls.
//!
//! - A connection must send a request's headers within
//!   `HTTP_HEADER_TIMEOUT_MS`, and at most `HTTP_MAX_CONNECTIONS` are
//!   served at once (more wait in the kernel's backlog).
//! - A request must arrive and be answered within
//!   `HTTP_REQUEST_TIMEOUT_MS` (`408` problem+json otherwise); a
//!   WebSocket lives on after its upgrade is answered.
//! - Bodies are limited per route (64 KiB for commands, see
//!   [`crate::extract::MAX_BODY_BYTES`]; the GraphQL route has its own).
//! - Panics become `500` problem+json; every response carries the
//!   correlation id and the security headers; an error answered with no
//!   body (an unknown file under `/docs`, a method a route lacks) becomes
//!   problem+json.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::ApiError;
use crate::extract::MAX_BODY_BYTES;
use crate::telemetry::correlate;

/// How long clients may take, how many may connect at once, and which
/// browser origins may call.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpLimits {
    /// Longest a connection may take to send a request's headers, in
    /// milliseconds; it is closed otherwise.
    #[arg(
        long = "http-header-timeout-ms",
        env = "HTTP_HEADER_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_timeout_ms: u64,

    /// Longest a request may take to arrive and be answered, in
    /// milliseconds (`408` otherwise).
    #[arg(
        long = "http-request-timeout-ms",
        env = "HTTP_REQUEST_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub request_timeout_ms: u64,

    /// Most connections served at once (WebSockets included).
    #[arg(
        id = "http_max_connections",
        long = "http-max-connections",
        env = "HTTP_MAX_CONNECTIONS",
        default_value_t = 4_096
    )]
    pub max_connections: usize,

    /// Browser origins allowed to call the API (CORS), comma-separated:
    /// `https://shop.example,http://localhost:5173`, or `*` for any. None
    /// by default: browsers then refuse cross-origin calls.
    #[arg(
        long = "cors-allowed-origins",
        env = "CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_parser = parse_origin
    )]
    pub cors_allowed_origins: Vec<String>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_connections: 4_096,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// An origin as browsers send it (`scheme://host[:port]`, nothing after),
/// or `*`.
fn parse_origin(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text == "*" {
        return Ok(text.to_owned());
    }
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| format!("{text}: an origin starts with https:// or http://"))?;
    let valid = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !valid {
        return Err(format!(
            "{text}: an origin is scheme://host[:port], with no path"
        ));
    }
    Ok(text.to_owned())
}

/// The CORS layer for `origins` (see [`HttpLimits::cors_allowed_origins`]):
/// preflights are answered for the methods and headers the API uses, and
/// answers expose the headers a frontend reads.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allowed = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| header::HeaderValue::from_str(o).ok()),
        )
    };
    let name = header::HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(allowed)
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::PUT,
            axum::http::Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            name(crate::extract::IDEMPOTENCY_KEY),
            name("x-correlation-id"),
            name("x-consistency-token"),
            name("traceparent"),
            name("tracestate"),
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::RETRY_AFTER,
            name("x-correlation-id"),
            name("x-consistency-token"),
        ])
        .max_age(Duration::from_secs(600))
}

/// `router` with the layers every route gets (see the module's text).
pub fn with_common_layers(router: Router, limits: &HttpLimits) -> Router {
    let timeout = Duration::from_millis(limits.request_timeout_ms);
    router
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(move |request, next| {
            within(timeout, request, next)
        }))
        .layer(axum::middleware::from_fn(empty_errors_as_problems))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal.into_response()
        }))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(tower::util::option_layer(
            (!limits.cors_allowed_origins.is_empty()).then(|| cors(&limits.cors_allowed_origins)),
        ))
        .layer(axum::middleware::from_fn(correlate))
}

async fn within(timeout: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("eshop_http_request_timeouts_total").increment(1);
            ApiError::RequestTimeout {
                limit_ms: timeout.as_millis(),
            }
            .into_response()
        }
    }
}

/// An error status answered with no body, or a plain-text one from a
/// library, becomes problem+json; JSON and HTML answers stay as they are.
async fn empty_errors_as_problems(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_none_or(|value| value.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::NotFound("no such route or file".into()),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        },
        status if status.is_server_error() => ApiError::Internal,
        status => ApiError::Other {
            status,
            detail: status
                .canonical_reason()
                .unwrap_or("the request was refused")
                .to_owned(),
        },
    };
    let (mut parts, _) = response.into_parts();
    let mut problem = error.into_response();
    // Keep what the original said beside its body (`Allow`, …).
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    for (name, value) in &parts.headers {
        problem.headers_mut().entry(name).or_insert(value.clone());
    }
    *problem.status_mut() = status;
    problem
}

/// The API's answers are data, never pages: nothing may frame, sniff or
/// run them. The two HTML pages (`/docs`, GraphiQL) load their own
/// scripts and styles and nothing else.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    let policy = if html {
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; \
         base-uri 'none'; form-action 'self'"
    } else {
        "default-src 'none'; frame-ancestors 'none'"
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Serves `router` (with [`with_common_layers`] already applied) on
/// `listener` until `shutdown` completes, then lets in-flight requests
/// finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms))
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(128)
        .max_header_list_size(64 * 1024);
    let builder = Arc::new(builder);
    // Connections hold a receiver; dropping the sender asks them to
    // finish, and `closed` resolves once every one has.
    let (stop_tx, stop_rx) = watch::channel(());
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait, retry.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(
            router
                .clone()
                .map_request(|request: Request<hyper::body::Incoming>| request.map(Body::new)),
        );
        let (builder, mut stop_rx, done_rx) = (builder.clone(), stop_rx.clone(), done_rx.clone());
        metrics::gauge!("eshop_http_connections").increment(1.0);
        tokio::spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop_rx.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            metrics::gauge!("eshop_http_connections").decrement(1.0);
            drop((permit, done_rx));
        });
    }
    drop(listener);
    drop(stop_rx);
    drop(stop_tx);
    drop(done_rx);
    done_tx.closed().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    async fn call(router: Router, request: Request) -> Response {
        router.oneshot(request).await.expect("infallible")
    }

    #[tokio::test]
    async fn empty_errors_become_problems_and_keep_their_headers() {
        let router = with_common_layers(
            Router::new().route("/only-get", get(|| async { "ok" })),
            &HttpLimits::default(),
        );
        let request = Request::builder()
            .method("OPTIONS")
            .uri("/only-get")
            .body(Body::empty())
            .expect("request");
        let response = call(router, request).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert!(response.headers().contains_key(header::ALLOW));
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
    }

    #[tokio::test]
    async fn a_request_that_takes_too_long_is_a_408_problem() {
        let router = with_common_layers(
            Router::new().route(
                "/slow",
                get(|| async {
                    std::future::pending::<()>().await;
                }),
            ),
            &HttpLimits {
                request_timeout_ms: 20,
                ..HttpLimits::default()
            },
        );
        let request = Request::builder()
            .uri("/slow")
            .body(Body::empty())
            .expect("request");
        let response = call(router, request).await;
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
