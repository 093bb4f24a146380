//! eshop's traces.
//!
//! - **Export** ([`init`]): when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) names a collector, every span of
//!   the process is exported over OTLP/HTTP (protobuf) from the SDK's own
//!   batch thread. The other standard variables apply as the OpenTelemetry
//!   SDK reads them: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_TRACES_SAMPLER` (default `parentbased_always_on`) and its
//!   `_ARG`, `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`, `OTEL_BSP_*`,
//!   `OTEL_SPAN_LINK_COUNT_LIMIT`. Unset, nothing is built: no exporter, no
//!   OpenTelemetry layer, no thread, and the helpers below return at once.
//! - **Propagation** ([`set_parent_from_headers`], [`follow`],
//!   [`link_all`], [`traceparent`]): W3C trace context, from HTTP headers, into the
//!   events' metadata (a command's own span, so that whoever handles the
//!   event later is linked to the command that wrote it), and from the
//!   events (bus headers or the store's metadata) into the spans of the
//!   relay and the projectors.
//! - **Cost** ([`span!`]): the spans that exist for the traces only are
//!   created in sampled traces only.
//! - **Logs** ([`WithTraceIds`]): a JSON log line written inside a traced
//!   span starts with its `trace_id` and `span_id`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;

pub use filter::AskEachTime;
pub use log_format::WithTraceIds;

mod filter;
mod log_format;

const TRACEPARENT: &str = "traceparent";

/// The target of spans that exist for the traces only (a command's load,
/// decide and commit, a relay or projector batch, a bulk request, a wait):
/// they are created at debug level under this target, which the exporter
/// enables and the logs do not, so that they cost nothing when nothing is
/// exported.
pub const SPANS: &str = "eshop::trace";

/// The exporter's filter: info spans and events, the trace-only spans, and
/// nothing of the exporter's own HTTP client (which would trace itself).
/// Static targets only (no per-span bookkeeping on each poll).
#[must_use]
pub fn export_filter() -> tracing_subscriber::filter::Targets {
    use tracing::level_filters::LevelFilter;
    tracing_subscriber::filter::Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target(SPANS, LevelFilter::DEBUG)
        .with_targets(
            [
                "hyper",
                "h2",
                "reqwest",
                "opentelemetry",
                "opentelemetry_sdk",
                "opentelemetry_otlp",
                "opentelemetry-otlp",
            ]
            .map(|target| (target, LevelFilter::OFF)),
        )
}

/// The subscriber, for the log format to find a span's trace ids from
/// within the subscriber (see [`remember_dispatch`]).
static DISPATCH: std::sync::OnceLock<tracing::dispatcher::WeakDispatch> =
    std::sync::OnceLock::new();

/// Remembers the global subscriber once it is installed: the log format
/// reads the current span's trace ids through it.
pub fn remember_dispatch() {
    tracing::dispatcher::get_default(|dispatch| {
        let _ = DISPATCH.set(dispatch.downgrade());
    });
}

/// Set once a tracer is installed: spans then carry OpenTelemetry contexts.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (a collector was named at start-up).
#[must_use]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the environment names an OTLP collector for traces. The
/// exporter itself would fall back to `localhost:4318`; unset means off.
#[must_use]
pub fn endpoint_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|key| std::env::var(key).is_ok_and(|v| !v.trim().is_empty()))
}

/// The installed tracer: flushes what is left when dropped.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        // Bounded by OTEL_BSP_EXPORT_TIMEOUT and the exporter's timeout.
        if let Err(error) = self.provider.shutdown() {
            eprintln!("eshop: failed to flush the last spans: {error}");
        }
    }
}

/// The OpenTelemetry layer of the subscriber, and the guard that flushes
/// it, when the environment names a collector; `None` otherwise.
///
/// # Errors
/// The exporter's settings (`OTEL_EXPORTER_OTLP_*`) are invalid.
pub fn init<S>(
    service: &'static str,
) -> anyhow::Result<Option<(impl tracing_subscriber::Layer<S>, Tracing)>>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    if !endpoint_configured() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|error| anyhow::anyhow!("invalid OTEL_EXPORTER_OTLP_* settings: {error}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    // The sampler, limits and batch settings come from OTEL_* variables
    // (the SDK's defaults read them).
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service))
        .with_threads(false)
        .with_location(false)
        // No busy/idle timings (two clock reads per poll of every span),
        // and no OpenTelemetry context attached on each poll: the spans
        // find their parents through tracing's own tree, and the logs
        // their ids through the subscriber (`WithTraceIds`).
        .with_tracked_inactivity(false)
        .with_context_activation(false);
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some((layer, Tracing { provider })))
}

fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

/// `value`, trimmed, if it is a well-formed W3C `traceparent` (version
/// 00: exactly four lowercase hex fields of 2, 32, 16 and 2 digits, the
/// ids not all zero). The SDK's parser alone lets shorter ids through.
#[must_use]
pub fn well_formed(value: &str) -> Option<&str> {
    let value = value.trim();
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    let valid = parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2);
    valid.then_some(value)
}

/// The context a W3C `traceparent` names; an empty one when it is
/// malformed (it is then ignored: the span starts a trace of its own).
fn context_of(traceparent: &str) -> opentelemetry::Context {
    let Some(traceparent) = well_formed(traceparent) else {
        return opentelemetry::Context::new();
    };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    propagator().extract(&carrier)
}

/// The span context a W3C `traceparent` names, if well-formed.
#[must_use]
pub fn span_context(traceparent: &str) -> Option<SpanContext> {
    let context = context_of(traceparent);
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| span_context.clone())
}

/// Makes `span` a child of the context in `headers` (`traceparent`,
/// `tracestate`). A missing or malformed header leaves it a root. Call it
/// before the span is first entered.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    if !enabled() {
        return;
    }
    struct Headers<'a>(&'a http::HeaderMap);
    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }
    let well_formed = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(well_formed)
        .is_some();
    let parent = propagator().extract(&Headers(headers));
    if well_formed && parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Makes `span` a child of the span `traceparent` names, when it names one
/// (an event's command, for the span that handles the event). Call it
/// before the span is first entered.
pub fn follow(span: &tracing::Span, traceparent: Option<&str>) {
    if !enabled() {
        return;
    }
    if let Some(parent) = traceparent.map(context_of)
        && parent.span().span_context().is_valid()
    {
        let _ = span.set_parent(parent);
    }
}

/// Whether `span` belongs to a trace that is sampled (recorded and
/// exported).
#[must_use]
pub fn is_sampled(span: &tracing::Span) -> bool {
    enabled() && span.context().span().span_context().is_sampled()
}

/// Whether the current span belongs to a sampled trace: only then are the
/// trace-only spans under it worth creating (see [`span!`](crate::span)).
#[must_use]
pub fn sampling() -> bool {
    enabled() && is_sampled(&tracing::Span::current())
}

/// Whether the W3C `traceparent` names a span of a sampled trace.
#[must_use]
pub fn is_sampled_parent(traceparent: &str) -> bool {
    well_formed(traceparent)
        .and_then(|tp| tp.rsplit('-').next())
        .and_then(|flags| u8::from_str_radix(flags, 16).ok())
        .is_some_and(|flags| flags & 1 == 1)
}

/// A trace-only span (debug level, target [`SPANS`]) under the current
/// one, when the current trace is sampled; `Span::none()` otherwise, so
/// that the traces not sampled (and every request when nothing is
/// exported) pay nothing for it.
#[macro_export]
macro_rules! span {
    ($($arg:tt)*) => {
        if $crate::sampling() {
            ::tracing::debug_span!(target: "eshop::trace", $($arg)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// Links `span` to each span `traceparents` name, if `span` is sampled
/// (links on a span nobody records are not worth parsing).
pub fn link_all<'a>(span: &tracing::Span, traceparents: impl IntoIterator<Item = Option<&'a str>>) {
    if !is_sampled(span) {
        return;
    }
    for traceparent in traceparents {
        if let Some(context) = traceparent.and_then(span_context) {
            span.add_link(context);
        }
    }
}

/// The W3C `traceparent` of `span`, when it is traced.
#[must_use]
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut carrier = HashMap::new();
    propagator().inject_context(&span.context(), &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The trace id of `span` (32 hex digits), when it is traced.
#[must_use]
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = span.context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_traceparent_names_its_span() {
        let context =
            span_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_sampled());
        assert!(context.is_remote());
    }

    #[test]
    fn the_sampled_flag_is_read_from_a_well_formed_traceparent_only() {
        assert!(is_sampled_parent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(is_sampled_parent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"
        ));
        assert!(!is_sampled_parent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        ));
        assert!(!is_sampled_parent("00-4bf92f-00f067aa0ba902b7-01"));
    }

    #[test]
    fn a_malformed_traceparent_names_nothing() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
        ] {
            assert!(span_context(bad).is_none(), "{bad:?} was accepted");
        }
    }
}
