//! The per-layer filter wrapper the subscriber needs.

/// A per-layer filter that is asked about every span and event rather than
/// caching "always" for a callsite.
///
/// With two per-layer filters (the logs' and the exporter's), a callsite
/// both enable for good is no longer asked before each span; the span is
/// then handed to each layer on the strength of whatever the last filtering
/// pass on the thread left behind (`tracing-subscriber` 0.3's per-layer
/// filter state), and spans were lost from the export at random. Asking
/// every time keeps each span's filtering its own. "Never" is still cached.
pub struct AskEachTime<F>(pub F, pub bool);

impl<F> AskEachTime<F> {
    /// `filter`, asked about every span and event when `ask` (that is,
    /// when the subscriber has a second per-layer filter), and otherwise
    /// as it is.
    pub const fn when(ask: bool, filter: F) -> Self {
        Self(filter, ask)
    }
}

impl<S, F: tracing_subscriber::layer::Filter<S>> tracing_subscriber::layer::Filter<S>
    for AskEachTime<F>
{
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        self.0.enabled(meta, cx)
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        let interest = self.0.callsite_enabled(meta);
        if !self.1 || interest.is_never() {
            interest
        } else {
            tracing::subscriber::Interest::sometimes()
        }
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_new_span(attrs, id, ctx);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_record(id, values, ctx);
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_exit(id, ctx);
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_close(id, ctx);
    }
}
