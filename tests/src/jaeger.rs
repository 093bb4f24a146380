//! The tracing backend the tests read traces from: Jaeger (v2), started by
//! `scripts/setup` (`services/jaeger`), or the one `JAEGER_URL` and
//! `OTEL_EXPORTER_OTLP_ENDPOINT` name.

use std::time::Duration;

use serde_json::Value;

use crate::eventually;

/// A Jaeger query API, and the OTLP endpoint that feeds it.
pub struct TestJaeger {
    /// The query API (`/api/traces/{id}`).
    pub url: String,
    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` is set to for an `eshop` process.
    pub otlp: String,
    http: reqwest::Client,
}

/// One span as Jaeger's query API returns it.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub operation: String,
    /// `(refType, traceID, spanID)`: `CHILD_OF` for the parent,
    /// `FOLLOWS_FROM` for a link.
    pub references: Vec<(String, String, String)>,
    pub tags: Vec<(String, Value)>,
    pub service: String,
}

impl Span {
    /// Its parent span (`CHILD_OF`), if any.
    #[must_use]
    pub fn parent(&self) -> Option<&str> {
        self.references
            .iter()
            .find(|(kind, _, _)| kind == "CHILD_OF")
            .map(|(_, _, span)| span.as_str())
    }

    /// Whether it links to (`FOLLOWS_FROM`) the span `span_id` of trace
    /// `trace_id`.
    #[must_use]
    pub fn links_to(&self, trace_id: &str, span_id: &str) -> bool {
        self.references
            .iter()
            .any(|(kind, t, s)| kind == "FOLLOWS_FROM" && t == trace_id && s == span_id)
    }

    /// The value of tag `key`, if set.
    #[must_use]
    pub fn tag(&self, key: &str) -> Option<&Value> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl TestJaeger {
    /// The running backend; fails loudly when it does not answer.
    pub async fn new() -> Self {
        let url = std::env::var("JAEGER_URL").unwrap_or_else(|_| "http://127.0.0.1:16686".into());
        let otlp =
            std::env::var("TEST_OTLP_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4318".into());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        let services = http.get(format!("{url}/api/services")).send().await;
        assert!(
            services.as_ref().is_ok_and(|r| r.status().is_success()),
            "Jaeger's query API does not answer at {url} ({services:?}): start it with `scripts/setup` (services/jaeger/setup)"
        );
        Self { url, otlp, http }
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("Jaeger answers");
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        Some(response.json().await.expect("Jaeger answers JSON"))
    }

    /// The spans of trace `trace_id` as stored so far (none while it is
    /// unknown).
    pub async fn trace(&self, trace_id: &str) -> Vec<Span> {
        match self.get(&format!("/api/traces/{trace_id}")).await {
            Some(reply) => spans(&reply),
            None => Vec::new(),
        }
    }

    /// Waits until trace `trace_id` has spans that satisfy `complete`, and
    /// returns them.
    pub async fn trace_until(
        &self,
        trace_id: &str,
        what: &str,
        complete: impl Fn(&[Span]) -> bool,
    ) -> Vec<Span> {
        eventually(Duration::from_secs(30), what, || async {
            let spans = self.trace(trace_id).await;
            complete(&spans).then_some(spans)
        })
        .await
    }

    /// The spans named `operation` of `service` in the last hour (the
    /// traces that contain them, reduced to them).
    pub async fn find(&self, service: &str, operation: &str, tags: Option<&Value>) -> Vec<Span> {
        let mut path = format!(
            "/api/traces?service={}&operation={}&limit=200&lookback=1h",
            urlencode(service),
            urlencode(operation)
        );
        if let Some(tags) = tags {
            path.push_str(&format!("&tags={}", urlencode(&tags.to_string())));
        }
        self.get(&path)
            .await
            .map(|reply| spans(&reply))
            .unwrap_or_default()
            .into_iter()
            .filter(|span| span.operation == operation && span.service == service)
            .collect()
    }
}

fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Every span of a `/api/traces…` reply.
fn spans(reply: &Value) -> Vec<Span> {
    let mut all = Vec::new();
    for trace in reply["data"].as_array().into_iter().flatten() {
        for span in trace["spans"].as_array().into_iter().flatten() {
            let process = span["processID"].as_str().unwrap_or_default();
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            all.push(Span {
                trace_id: text(&span["traceID"]),
                span_id: text(&span["spanID"]),
                operation: text(&span["operationName"]),
                references: span["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| (text(&r["refType"]), text(&r["traceID"]), text(&r["spanID"])))
                    .collect(),
                tags: span["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| (text(&t["key"]), t["value"].clone()))
                    .collect(),
                service: text(&trace["processes"][process]["serviceName"]),
            });
        }
    }
    all
}
