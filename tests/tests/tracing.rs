//! Traces, exported over OTLP to a real Jaeger and read back from its query
//! API: one checkout followed from the client's REST call through the
//! commit, the relay, the `order_view` projection and the GraphQL read
//! that waited for it; and what happens without trace context, or with a
//! malformed one.

use std::time::Duration;

use eshop_tests::auth::{Who, client};
use eshop_tests::jaeger::{Span, TestJaeger};
use eshop_tests::{ProcessStack, TestDb, bodies, eventually};
use serde_json::{Value, json};
use uuid::Uuid;

/// A random trace id (32 hex digits) and span id (16).
fn ids() -> (String, String) {
    let trace = Uuid::new_v4().simple().to_string();
    let span = Uuid::new_v4().simple().to_string()[..16].to_owned();
    (trace, span)
}

/// A stack whose `eshop` processes export to Jaeger under a service name
/// of their own.
async fn traced_stack(jaeger: &TestJaeger, name: &str) -> (ProcessStack, String) {
    let service = format!("eshop-test-{}", Uuid::now_v7().simple());
    let stack = ProcessStack::new(name)
        .await
        .with("OTEL_EXPORTER_OTLP_ENDPOINT", &jaeger.otlp)
        .with("OTEL_SERVICE_NAME", &service)
        // Export every 100 ms rather than every 5 s.
        .with("OTEL_BSP_SCHEDULE_DELAY", "100");
    (stack, service)
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn new(base: String) -> Self {
        Self {
            base,
            http: client(Who::Ops).await,
        }
    }

    /// POSTs `body` to `path` with `headers`; the status and JSON reply.
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: Value) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        for (key, value) in headers {
            request = request.header(*key, *value);
        }
        let response = request.send().await.expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON reply"))
    }

    async fn created(&self, path: &str, headers: &[(&str, &str)], body: Value) -> Value {
        let (status, reply) = self.post(path, headers, body).await;
        assert!(
            (200..300).contains(&status),
            "POST {path}: {status} {reply}"
        );
        reply
    }

    /// A product and a basket holding one of it; the basket's id.
    async fn basket_with_an_item(&self) -> String {
        let product = self.created("/products", &[], bodies::new_product()).await["id"].clone();
        let basket = self.created("/baskets", &[], bodies::new_basket()).await["id"]
            .as_str()
            .expect("basket id")
            .to_owned();
        self.created(
            &format!("/baskets/{basket}/items"),
            &[],
            json!({"product_id": product, "quantity": 1}),
        )
        .await;
        basket
    }

    async fn checkout(&self, basket: &str, headers: &[(&str, &str)]) -> Value {
        self.created(
            &format!("/baskets/{basket}/checkout"),
            headers,
            bodies::checkout(),
        )
        .await
    }
}

fn one<'a>(spans: &'a [Span], what: &str, pick: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {what} among {:#?}",
        spans
            .iter()
            .map(|s| (&s.operation, &s.span_id, s.parent()))
            .collect::<Vec<_>>()
    );
    found[0]
}

fn named(spans: &[Span], operation: &str) -> bool {
    spans.iter().any(|s| s.operation == operation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_is_followed_from_the_rest_call_to_the_graphql_read_that_saw_it() {
    let jaeger = TestJaeger::new().await;
    let (stack, service) = traced_stack(&jaeger, "trace-e2e").await;
    // The access log (debug), to find the trace from a log line.
    let stack = stack.with("RUST_LOG", "warn,eshop_command_api::telemetry=debug");
    let (serve, base) = stack.serve(&["serve"]).await;
    let api = Api::new(base).await;
    let basket = api.basket_with_an_item().await;

    // The client's trace: the checkout, then the query that reads it.
    let (trace, checkout_parent) = ids();
    let (_, read_parent) = ids();
    let checkout = api
        .checkout(
            &basket,
            &[("traceparent", &format!("00-{trace}-{checkout_parent}-01"))],
        )
        .await;
    let order = checkout["order_id"].as_str().expect("order_id").to_owned();
    let token = checkout["consistency_token"]
        .as_str()
        .expect("consistency_token")
        .to_owned();
    let (status, read) = api
        .post(
            "/graphql",
            &[
                ("traceparent", &format!("00-{trace}-{read_parent}-01")),
                ("x-consistency-token", &token),
            ],
            json!({"query": "query($id: ID!) { order(id: $id) { id status } }",
                   "variables": {"id": order}}),
        )
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["data"]["order"]["id"], json!(order), "{read}");

    let spans = jaeger
        .trace_until(
            &trace,
            "the checkout's trace, projected and read",
            |spans| {
                [
                    "POST /baskets/{id}/checkout",
                    "command",
                    "commit",
                    "project order_view",
                    "POST /graphql",
                    "consistency.wait",
                ]
                .iter()
                .all(|op| named(spans, op))
            },
        )
        .await;
    assert!(spans.iter().all(|s| s.service == service));

    // REST: the request is the client's span's child; the command its
    // child; load, decide and commit the command's.
    let rest = one(&spans, "checkout request", |s| {
        s.operation == "POST /baskets/{id}/checkout"
    });
    assert_eq!(rest.parent(), Some(checkout_parent.as_str()));
    assert_eq!(
        rest.tag("http.response.status_code"),
        Some(&json!(201)),
        "{rest:?}"
    );
    let command = one(&spans, "command", |s| s.operation == "command");
    assert_eq!(command.parent(), Some(rest.span_id.as_str()));
    for step in ["load", "decide", "commit"] {
        assert!(
            spans
                .iter()
                .any(|s| s.operation == step && s.parent() == Some(command.span_id.as_str())),
            "no {step} under the command: {spans:#?}"
        );
    }

    // The projection of the order's events joined the command's trace: the
    // events carry the command's span, not the client's.
    let projected: Vec<&Span> = spans
        .iter()
        .filter(|s| s.operation == "project order_view")
        .collect();
    assert!(
        projected
            .iter()
            .all(|s| s.parent() == Some(command.span_id.as_str())),
        "{projected:#?}"
    );
    assert!(
        projected
            .iter()
            .any(|s| s.tag("aggregate.id") == Some(&json!(order))),
        "{projected:#?}"
    );

    // GraphQL: the read is the client's second span's child, and its wait
    // for order_view runs under it.
    let graphql = one(&spans, "GraphQL request", |s| {
        s.operation == "POST /graphql"
    });
    assert_eq!(graphql.parent(), Some(read_parent.as_str()));
    let execute = one(&spans, "GraphQL execution", |s| {
        s.operation == "graphql.execute"
    });
    assert_eq!(execute.parent(), Some(graphql.span_id.as_str()));
    let wait = one(&spans, "the wait for order_view", |s| {
        s.operation == "consistency.wait" && s.tag("read_model") == Some(&json!("order_view"))
    });
    assert_eq!(wait.parent(), Some(execute.span_id.as_str()));

    // The request's log line leads to its trace.
    let logged = std::fs::read_to_string(&serve.log).expect("the serve log");
    let line = logged
        .lines()
        .find(|line| line.contains("request completed") && line.contains("/checkout"))
        .unwrap_or_else(|| panic!("no access log line for the checkout in {logged}"));
    let line: Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(line["trace_id"], json!(trace), "{line}");
    assert_eq!(line["span_id"], json!(rest.span_id), "{line}");

    // The relay's batch and the projector's batch carry many traces: each
    // is a trace of its own, linked to the command.
    for (operation, what) in [
        ("relay.publish", "the relay's publish"),
        ("project.batch", "order_view's batch"),
    ] {
        eventually(
            Duration::from_secs(30),
            &format!("{what}, linked to the command"),
            || async {
                jaeger
                    .find(&service, operation, None)
                    .await
                    .into_iter()
                    .find(|s| {
                        s.links_to(&trace, &command.span_id)
                            && (operation != "project.batch"
                                || s.tag("projection") == Some(&json!("order_view")))
                    })
            },
        )
        .await;
    }
}

/// The traceparent stored with the last event of aggregate `id`.
async fn stored_traceparent(db: &TestDb, id: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT metadata->>'traceparent' FROM events WHERE aggregate_id = $1 ORDER BY sequence DESC LIMIT 1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .expect("events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trace_context_or_with_a_malformed_one_a_request_and_a_message_start_their_own_trace()
 {
    let jaeger = TestJaeger::new().await;
    let (stack, service) = traced_stack(&jaeger, "trace-roots").await;

    // An order written by an API that exports nothing and was sent no
    // trace context: its events, and so its messages, carry none.
    let untraced = stack.env.clone().with("OTEL_EXPORTER_OTLP_ENDPOINT", "");
    let mut api_only = untraced.spawn(&["serve", "--api-only"]);
    let base = api_only.wait_live(stack.port).await;
    let api = Api::new(base.clone()).await;
    let basket = api.basket_with_an_item().await;
    let order = api.checkout(&basket, &[]).await["order_id"]
        .as_str()
        .expect("order_id")
        .to_owned();
    assert_eq!(stored_traceparent(&stack.db, &order).await, None);
    api_only.kill();

    // The traced process relays and projects it: the projection's span is
    // a root of its own.
    let (_serve, base) = stack.serve(&["serve"]).await;
    let api = Api::new(base).await;
    let projected = eventually(
        Duration::from_secs(30),
        "the untraced order's projection span",
        || async {
            jaeger
                .find(
                    &service,
                    "project order_view",
                    Some(&json!({"aggregate.id": order})),
                )
                .await
                .into_iter()
                .next()
        },
    )
    .await;
    // Without a command to join, it stays in its batch's trace, whose root
    // is the batch: nothing remote is its parent.
    let batch_trace = jaeger
        .trace_until(&projected.trace_id, "the batch's trace", |spans| {
            named(spans, "project.batch")
        })
        .await;
    let root = one(&batch_trace, "the trace's root", |s| s.parent().is_none());
    assert_eq!(root.operation, "project.batch", "{batch_trace:#?}");
    assert!(
        batch_trace
            .iter()
            .filter(|s| s.span_id != root.span_id)
            .all(|s| s
                .references
                .iter()
                .any(|(kind, trace, _)| kind == "CHILD_OF" && *trace == projected.trace_id)),
        "{batch_trace:#?}"
    );

    // A request without a traceparent, or with a malformed one, is served
    // as usual and starts a trace: its events name its own command span.
    for traceparent in [
        None,
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("garbage"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"),
    ] {
        let basket = api.basket_with_an_item().await;
        let headers: Vec<(&str, &str)> = traceparent
            .map(|v| ("traceparent", v))
            .into_iter()
            .collect();
        let order = api.checkout(&basket, &headers).await["order_id"]
            .as_str()
            .expect("order_id")
            .to_owned();
        let stored = stored_traceparent(&stack.db, &order)
            .await
            .unwrap_or_else(|| panic!("no traceparent stored for {traceparent:?}"));
        let parts: Vec<&str> = stored.split('-').collect();
        assert_eq!(parts.len(), 4, "{stored}");
        let trace = parts[1];
        assert!(
            traceparent.is_none_or(|sent| !sent.contains(trace)),
            "{traceparent:?} was taken: {stored}"
        );
        let spans = jaeger
            .trace_until(trace, "the request's own trace", |spans| {
                named(spans, "POST /baskets/{id}/checkout") && named(spans, "command")
            })
            .await;
        let rest = one(&spans, "checkout request", |s| {
            s.operation == "POST /baskets/{id}/checkout"
        });
        assert_eq!(rest.parent(), None, "{traceparent:?}: {rest:?}");
        let command = one(&spans, "command", |s| s.operation == "command");
        assert_eq!(
            parts[2], command.span_id,
            "the events name the command's span"
        );
    }
}
