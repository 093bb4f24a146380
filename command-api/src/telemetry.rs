//! Request correlation and the per-request span.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use uuid::Uuid;

pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// The correlation id of the current request: the client's
/// `X-Correlation-Id` when well-formed, a new UUID v7 otherwise.
#[derive(Debug, Clone)]
pub struct CorrelationId(pub String);

fn acceptable(value: &str) -> bool {
    (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic())
}

/// Honours or generates the correlation id, echoes it in the response and
/// runs the request inside one span that carries it.
pub async fn correlate(mut req: Request, next: Next) -> Response {
    let correlation_id = req
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned);
    req.extensions_mut()
        .insert(CorrelationId(correlation_id.clone()));
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let route = matched
        .clone()
        .unwrap_or_else(|| req.uri().path().to_owned());
    let method = req.method().to_string();
    // OpenTelemetry's HTTP server conventions; the client's `traceparent`
    // (if well-formed) is its parent, otherwise it starts a trace.
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{} {route}", req.method()),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %req.method(),
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        correlation_id = %correlation_id,
    );
    telemetry::set_parent_from_headers(&span, req.headers());
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = response.status().as_u16();
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    // Every request's outcome at debug (`RUST_LOG=eshop_command_api=debug`
    // for an access log); failures are logged once, at error level, where
    // they are handled.
    span.in_scope(|| tracing::debug!(http.status = status, latency_ms, "request completed"));
    // Labelled by route template, never by raw path (unbounded).
    let labels = [
        ("method", method),
        ("route", matched.unwrap_or_else(|| "unmatched".to_owned())),
        ("status", status.to_string()),
    ];
    metrics::counter!("eshop_http_requests_total", &labels).increment(1);
    metrics::histogram!("eshop_http_request_duration_seconds", &labels).record(latency_ms / 1000.0);
    if let Ok(value) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    response
}
