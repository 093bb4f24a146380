//! Hostile input against a real `eshop serve` process: no request may
//! stall the service, exhaust its memory or go unanswered with a clear
//! error, whatever route it calls. Each attack here was reproduced against
//! an earlier build (issue 11), where it froze the process for seconds,
//! crashed it, or grew it by gigabytes.
//!
//! This binary runs alone (.config/nextest.toml): it measures the latency
//! of a normal command beside each attack, and the process's memory.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use eshop_tests::{EshopProcess, ProcessStack};
use futures::future::join_all;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// How long a normal command may take while an attack is under way.
const COMMAND_BUDGET: Duration = Duration::from_millis(100);
/// How long a hostile request may take to be refused.
const REFUSAL_BUDGET: Duration = Duration::from_secs(2);
/// How many times a command's latency is measured before a slow one
/// counts: a stall that an attack causes comes back every time; a hiccup
/// of the shared machine the tests run on does not.
const ATTEMPTS: usize = 3;

/// `eshop serve --api-only` (REST and GraphQL on one listener) with
/// `vars` set, and a client.
struct Target {
    base: String,
    port: u16,
    http: reqwest::Client,
    process: EshopProcess,
    _stack: ProcessStack,
}

impl Target {
    async fn start(name: &str, vars: &[(&str, &str)]) -> Self {
        let stack = ProcessStack::new(name).await;
        let mut env = stack.env.clone();
        for (key, value) in vars {
            env = env.with(key, value);
        }
        let mut process = env.spawn(&["serve", "--api-only"]);
        let base = process.wait_live(stack.port).await;
        let target = Self {
            base,
            port: stack.port,
            http: eshop_tests::auth::client(eshop_tests::auth::Who::Ops).await,
            process,
            _stack: stack,
        };
        // Warm up both APIs, so that latencies measure steady state.
        for _ in 0..3 {
            target.command().await;
            target.graphql(json!({"query": "{__typename}"})).await;
        }
        target
    }

    /// Registers a product; returns how long the answer took.
    async fn command(&self) -> Duration {
        let started = Instant::now();
        let response = self
            .http
            .post(format!("{}/products", self.base))
            .json(
                &json!({"sku": format!("H-{}", Uuid::now_v7().simple()), "name": "Mug",
                          "initial_stock": 1, "price": {"amount_minor": 100, "currency": "EUR"}}),
            )
            .send()
            .await
            .expect("the command API answers");
        assert_eq!(response.status(), 201, "a normal command is refused");
        started.elapsed()
    }

    /// A normal command answers within [`COMMAND_BUDGET`], in one of
    /// [`ATTEMPTS`] tries.
    async fn answers_commands_promptly(&self, what: &str) {
        let mut took = Vec::new();
        for _ in 0..ATTEMPTS {
            let latency = self.command().await;
            if latency < COMMAND_BUDGET {
                return;
            }
            took.push(latency);
        }
        panic!("{what}: a normal command took {took:?}, over {COMMAND_BUDGET:?} each time");
    }

    async fn graphql(&self, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/graphql", self.base))
            .json(&body)
            .send()
            .await
            .expect("the GraphQL API answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    /// The process's resident memory, in MiB.
    fn rss_mib(&self) -> u64 {
        status_kib(self.process.pid(), "VmRSS:") / 1024
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("a memory figure")
}

fn codes(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["extensions"]["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `query{...F0}` and `levels` fragments, each spreading the next
/// `fan_out` times: `fan_out ^ levels` fields once expanded.
fn fragment_bomb(levels: usize, fan_out: usize) -> String {
    let mut query = String::from("query{...F0}");
    for level in 0..levels {
        write!(query, " fragment F{level} on Query{{").expect("write");
        for _ in 0..fan_out {
            write!(query, "...F{} ", level + 1).expect("write");
        }
        query.push('}');
    }
    write!(query, " fragment F{levels} on Query{{__typename}}").expect("write");
    query
}

/// The same bomb with every spread inside an inline fragment.
fn inline_fragment_bomb(levels: usize) -> String {
    let mut query = String::from("query{...on Query{...F0}}");
    for level in 0..levels {
        write!(
            query,
            " fragment F{level} on Query{{...on Query{{...F{next}}} ...on Query{{...F{next}}}}}",
            next = level + 1
        )
        .expect("write");
    }
    write!(query, " fragment F{levels} on Query{{__typename}}").expect("write");
    query
}

/// Each hostile document, and the code its refusal must carry.
fn bombs() -> Vec<(&'static str, Value, &'static str)> {
    let query = |text: String| json!({ "query": text });
    vec![
        (
            "fragment spread bomb (25 levels, 2 each)",
            query(fragment_bomb(25, 2)),
            "QUERY_TOO_COMPLEX",
        ),
        (
            "wide fragment bomb (8 levels, 10 each)",
            query(fragment_bomb(8, 10)),
            "QUERY_TOO_COMPLEX",
        ),
        (
            "fragment bomb through inline fragments",
            query(inline_fragment_bomb(25)),
            "QUERY_TOO_COMPLEX",
        ),
        (
            "fragment cycle",
            query("query{...A} fragment A on Query{...B} fragment B on Query{...A}".into()),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "directive flood",
            query(format!(
                "query{{__typename{}}}",
                " @include(if:true)".repeat(3_000)
            )),
            "QUERY_TOO_COMPLEX",
        ),
        (
            "lists nested 5,000 deep in an argument",
            query(format!(
                "query{{products(first:{}1{}){{totalCount}}}}",
                "[".repeat(5_000),
                "]".repeat(5_000)
            )),
            "QUERY_TOO_DEEP",
        ),
        (
            "inline fragments nested 3,000 deep",
            query(format!(
                "query{{{}__typename{}}}",
                "...on Query{".repeat(3_000),
                "}".repeat(3_000)
            )),
            "QUERY_TOO_DEEP",
        ),
        (
            "selections nested 10,000 deep",
            query(format!("{}{}", "{a".repeat(10_000), "}".repeat(10_000))),
            "QUERY_TOO_DEEP",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_documents_are_refused_fast_while_commands_keep_answering() {
    let target = Target::start("hostile-docs", &[]).await;
    for (name, body, code) in bombs() {
        let mut beside = Vec::new();
        while beside.len() < ATTEMPTS {
            // Eight copies at once, and a normal command at the same moment.
            let attacks = join_all((0..8).map(|_| {
                let (target, body) = (&target, body.clone());
                async move {
                    let started = Instant::now();
                    let answer = target.graphql(body).await;
                    (answer, started.elapsed())
                }
            }));
            let (answers, latency) = tokio::join!(attacks, target.command());
            eprintln!("{name}: a command beside it answered in {latency:?}");
            for ((status, answer), took) in answers {
                assert_eq!(status, 200, "{name}: {answer}");
                assert_eq!(codes(&answer), [code], "{name}: {answer}");
                assert_eq!(answer["data"], Value::Null, "{name}");
                assert!(took < REFUSAL_BUDGET, "{name}: refused after {took:?}");
            }
            beside.push(latency);
            if latency < COMMAND_BUDGET {
                break;
            }
        }
        assert!(
            beside.iter().any(|latency| *latency < COMMAND_BUDGET),
            "{name}: a command beside it took {beside:?}, over {COMMAND_BUDGET:?} each time"
        );
        target
            .answers_commands_promptly(&format!("{name}, afterwards"))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn variables_nested_too_deep_are_a_bad_request() {
    let target = Target::start("hostile-vars", &[]).await;
    let body = format!(
        "{{\"query\":\"query($v: [Int]){{__typename}}\",\"variables\":{{\"v\":{}1{}}}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let response = target
        .http
        .post(format!("{}/graphql", target.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(codes(&answer), ["BAD_REQUEST"], "{answer}");
    target
        .answers_commands_promptly("after variables nested too deep")
        .await;
}

/// Sends `POST /graphql` with a chunked body of `total` bytes, as fast as
/// the server reads it; returns the status line it answered, if any.
async fn stream_body(port: u16, total: usize) -> Option<String> {
    let mut socket = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    // Authenticated: the body is only read for a caller with a token.
    let token = eshop_tests::auth::bearer(eshop_tests::auth::Who::Ops).await;
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: eshop\r\nContent-Type: application/json\r\n\
         Authorization: {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.expect("headers");
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
    let (mut reader, mut writer) = socket.into_split();
    let write = async move {
        let mut sent = 0;
        while sent < total {
            if writer.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
            sent += 64 * 1024;
        }
        let _ = writer.write_all(b"0\r\n\r\n").await;
    };
    // The server may answer before it has read the body, or after
    // discarding the rest of it; either way the answer comes.
    let writer = tokio::spawn(write);
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(30), reader.read(&mut answer))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    writer.abort();
    String::from_utf8_lossy(&answer[..read])
        .lines()
        .next()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huge_graphql_bodies_are_cut_at_the_limit_and_memory_stays_flat() {
    let target = Target::start("hostile-memory", &[]).await;
    let baseline = target.rss_mib();

    // A body over the limit with its length declared: refused at once.
    let response = target
        .http
        .post(format!("{}/graphql", target.base))
        .header("content-type", "application/json")
        .body(vec![b' '; 1024 * 1024])
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 413);
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(codes(&answer), ["PAYLOAD_TOO_LARGE"]);

    // Four 100 MB bodies at once, chunked: each is cut at the limit.
    let streamed = join_all((0..4).map(|_| stream_body(target.port, 100 << 20))).await;
    for status in streamed {
        let status = status.expect("the server answers before the body ends");
        assert!(status.contains(" 413 "), "{status}");
    }
    let after_bodies = target.rss_mib();
    eprintln!("RSS: {baseline} MiB at rest, {after_bodies} MiB after 4 × 100 MB bodies");
    assert!(
        after_bodies < baseline + 64,
        "bodies: {baseline} MiB -> {after_bodies} MiB"
    );
    target
        .answers_commands_promptly("after four 100 MB bodies")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distinct_queries_do_not_pin_memory() {
    let target = Target::start("hostile-queries", &[]).await;
    let baseline = target.rss_mib();

    // 250 distinct queries of about 16 KB that fail validation, then 250
    // that pass: none of the first is kept, the second are kept within the
    // cache's budget.
    for valid in [false, true] {
        for n in 0..250 {
            let mut query = format!("query Q{n}{{");
            // Just under 16 KiB: the largest text the cache used to keep.
            while query.len() < 16 * 1024 - 40 {
                let field = if valid { "__typename" } else { "nope" };
                write!(query, " a{}: {field}", query.len()).expect("write");
            }
            query.push('}');
            let (_, answer) = target.graphql(json!({ "query": query })).await;
            let codes = codes(&answer);
            if valid {
                assert!(codes.is_empty(), "{answer}");
            } else {
                assert!(
                    codes.iter().all(|c| c == "GRAPHQL_VALIDATION_FAILED"),
                    "{answer}"
                );
                // 2,000 unknown fields are reported as 20 and a count.
                assert!(answer["errors"].as_array().is_some_and(|e| e.len() <= 21));
            }
        }
    }
    let after_queries = target.rss_mib();
    eprintln!("RSS: {baseline} MiB at rest, {after_queries} MiB after 500 distinct 16 KB queries");
    assert!(
        after_queries < baseline + 160,
        "queries: {baseline} MiB -> {after_queries} MiB"
    );
    target
        .answers_commands_promptly("after 500 distinct queries")
        .await;
}

/// Opens a connection and sends the start of a request, never its end.
async fn slow_headers(port: u16) -> TcpStream {
    let mut socket = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    socket
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: eshop\r\nX-Slow: ")
        .await
        .expect("partial headers");
    socket
}

/// Whether the server closes `socket` within `deadline`.
async fn closed_within(socket: &mut TcpStream, deadline: Duration) -> bool {
    let mut buffer = [0u8; 512];
    let until = Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(until.into(), socket.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_off_and_connections_are_capped() {
    let target = Target::start(
        "hostile-slow",
        &[
            ("HTTP_HEADER_TIMEOUT_MS", "1000"),
            ("HTTP_REQUEST_TIMEOUT_MS", "1500"),
            ("HTTP_MAX_CONNECTIONS", "50"),
        ],
    )
    .await;
    // 200 connections that never finish their headers: closed after the
    // header timeout, while a normal client still gets through.
    let mut sockets = join_all((0..200).map(|_| slow_headers(target.port))).await;
    let started = Instant::now();
    let live = target
        .http
        .get(format!("{}/health/live", target.base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("a normal request gets through");
    assert_eq!(live.status(), 200);
    eprintln!(
        "a request behind 200 slow clients answered in {:?}",
        started.elapsed()
    );
    for socket in &mut sockets {
        assert!(
            closed_within(socket, Duration::from_secs(8)).await,
            "a connection that never finished its headers is still open"
        );
    }

    // A body that stops coming: 408 once the request timeout is over.
    let mut socket = TcpStream::connect(("127.0.0.1", target.port))
        .await
        .expect("connect");
    let token = eshop_tests::auth::bearer(eshop_tests::auth::Who::Ops).await;
    socket
        .write_all(
            format!(
                "POST /products HTTP/1.1\r\nHost: eshop\r\nContent-Type: application/json\r\n\
                 Authorization: {token}\r\nContent-Length: 200\r\n\r\n{{\"sku\":"
            )
            .as_bytes(),
        )
        .await
        .expect("part of a body");
    let mut answer = vec![0u8; 2048];
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer))
        .await
        .expect("answered before 5 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_gets_the_common_layers() {
    let target = Target::start("hostile-layers", &[]).await;
    let http = &target.http;
    let url = |path: &str| format!("{}{path}", target.base);

    // Correlation ids and security headers on GraphQL, GraphiQL, the API
    // page and metrics alike.
    for (path, html) in [
        ("/graphql", true),
        ("/docs/", true),
        ("/health/live", false),
        ("/metrics", false),
    ] {
        let response = http
            .get(url(path))
            .header("accept", "text/html")
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert!(headers.contains_key("x-correlation-id"), "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let policy = headers["content-security-policy"].to_str().expect("ASCII");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        if html {
            assert!(policy.contains("script-src 'self'"), "{path}: {policy}");
        } else {
            assert!(policy.contains("default-src 'none'"), "{path}: {policy}");
        }
    }
    let (_, body) = target.graphql(json!({"query": "{__typename}"})).await;
    assert_eq!(body["data"]["__typename"], "Query");

    // Errors with no body of their own become problem+json.
    for (method, path, status) in [
        ("OPTIONS", "/graphql", 405),
        ("GET", "/docs/no-such-file.js", 404),
        ("DELETE", "/metrics-nope", 404),
    ] {
        let response = http
            .request(method.parse().expect("method"), url(path))
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), status, "{method} {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
        let problem: Value = response.json().await.expect("JSON");
        assert_eq!(problem["status"], status, "{method} {path}");
    }

    // A body-less command under a CORS-simple type is refused: a web page
    // could send it cross-site without asking.
    let product = target
        .http
        .post(url("/products"))
        .json(&json!({"sku": "CSRF-1", "name": "Mug", "initial_stock": 1,
                      "price": {"amount_minor": 100, "currency": "EUR"}}))
        .send()
        .await
        .expect("registered");
    let location = product.headers()["location"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let response = http
            .post(url(&format!("{location}/discontinue")))
            .header("content-type", content_type)
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 415, "{content_type}");
        let response = http
            .post(url("/graphql"))
            .header("content-type", content_type)
            .body(r#"{"query":"{__typename}"}"#)
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 415, "GraphQL under {content_type}");
    }

    // What the client sent is echoed back in part, never whole.
    let long = "x".repeat(60_000);
    let (_, answer) = target
        .graphql(json!({"query": "query($id: ID!){order(id: $id){id}}", "variables": {"id": long}}))
        .await;
    assert_eq!(codes(&answer), ["BAD_USER_INPUT"], "{answer}");
    assert!(
        answer.to_string().len() < 2_000,
        "{} bytes",
        answer.to_string().len()
    );
    let response = http
        .post(url("/products"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"{long}": 1}}"#))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 422);
    assert!(response.text().await.expect("body").len() < 2_000);
    let (_, answer) = target
        .graphql(json!({"query": format!("{{{}}}", "{".repeat(20_000))}))
        .await;
    assert!(
        answer.to_string().len() < 2_000,
        "{} bytes",
        answer.to_string().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn introspection_and_suggestions_can_be_switched_off() {
    let target = Target::start(
        "hostile-closed",
        &[
            ("GRAPHQL_INTROSPECTION", "false"),
            ("GRAPHQL_SUGGESTIONS", "false"),
        ],
    )
    .await;
    let (_, answer) = target
        .graphql(json!({"query": "{__schema{types{name}}}"}))
        .await;
    assert!(
        answer["data"]["__schema"].is_null(),
        "introspection answered: {answer}"
    );
    let (_, answer) = target
        .graphql(json!({"query": "{prodcts{totalCount}}"}))
        .await;
    assert_eq!(codes(&answer), ["GRAPHQL_VALIDATION_FAILED"]);
    assert!(!answer.to_string().contains("Did you mean"), "{answer}");

    // And on by default.
    let open = Target::start("hostile-open", &[]).await;
    let (_, answer) = open
        .graphql(json!({"query": "{__schema{queryType{name}}}"}))
        .await;
    assert_eq!(answer["data"]["__schema"]["queryType"]["name"], "Query");
    let (_, answer) = open
        .graphql(json!({"query": "{prodcts{totalCount}}"}))
        .await;
    assert!(answer.to_string().contains("Did you mean"), "{answer}");
}
