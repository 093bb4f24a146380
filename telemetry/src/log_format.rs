//! `trace_id` and `span_id` on the JSON log lines written inside a traced
//! span.

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Wraps a JSON event format: a line written while a traced span is
/// entered starts with `"trace_id"` and `"span_id"` (the ids the tracing
/// backend shows); other lines are left exactly as the inner format
/// writes them.
pub struct WithTraceIds<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if !crate::enabled() {
            return self.0.format_event(ctx, writer, event);
        }
        // The subscriber's current span (whichever layer enabled it) and
        // its OpenTelemetry context; no extension of it is held here.
        let context = crate::DISPATCH
            .get()
            .and_then(tracing::dispatcher::WeakDispatch::upgrade)
            .and_then(|dispatch| {
                let current = dispatch.current_span();
                let id = current.id()?;
                tracing_opentelemetry::get_otel_context(id, &dispatch)
            });
        let Some(context) = context else {
            return self.0.format_event(ctx, writer, event);
        };
        let span = context.span();
        let ids = span.span_context();
        if !ids.is_valid() {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                ids.trace_id(),
                ids.span_id()
            ),
            // Not a JSON object: leave it alone.
            None => writer.write_str(&line),
        }
    }
}
