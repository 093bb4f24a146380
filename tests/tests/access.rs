//! Who may do what, with real tokens from the local Keycloak (`eshop`
//! realm): every REST command and every GraphQL field and subscription,
//! for anonymous, customer A (alice), customer B (bob), staff (sam) and
//! admin (ada). A refusal appends nothing; another customer's basket or
//! order answers exactly as one that does not exist.

use std::time::Duration;

use eshop_tests::auth::{self, Who};
use eshop_tests::graphql::{
    ReadSide, WsSocket, connect_socket, error_codes, next_message, send_message,
};
use eshop_tests::{TestApp, TestResponse};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// The columns of every matrix: anonymous, alice, bob, sam, ada.
const CALLERS: [Option<Who>; 5] = [
    None,
    Some(Who::Alice),
    Some(Who::Bob),
    Some(Who::Sam),
    Some(Who::Ada),
];

fn name(caller: Option<Who>) -> &'static str {
    caller.and_then(Who::username).unwrap_or("anonymous")
}

/// Sends a request as `caller` (no `Authorization` when anonymous).
async fn send(
    app: &TestApp,
    caller: Option<Who>,
    method: Method,
    path: &str,
    body: Value,
) -> TestResponse {
    let caller = match caller {
        Some(who) => app.as_(who).await,
        None => app.anonymous(),
    };
    caller.send(method, path, Some(body), &[]).await
}

/// Opens a basket with `authorization` as that header (none when `None`).
async fn open_basket_with(app: &TestApp, authorization: Option<&str>) -> TestResponse {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| ("authorization", value))
        .into_iter()
        .collect();
    app.anonymous()
        .send(Method::POST, "/baskets", Some(json!({})), &headers)
        .await
}

/// What an operation acts on, made fresh for each cell (as staff and
/// alice), so that every cell starts from the same state.
#[derive(Clone, Copy)]
enum Needs {
    Nothing,
    Product,
    /// Alice's basket holding one product.
    Basket,
    /// Alice's order, placed.
    Placed,
    /// Alice's order, paid.
    Paid,
    /// Alice's order, shipped.
    Shipped,
}

struct Fixture {
    product: Uuid,
    basket: Uuid,
    order: Uuid,
}

async fn fixture(app: &TestApp, needs: Needs, n: usize) -> Fixture {
    let sam = app.as_(Who::Sam).await;
    let alice = app.as_(Who::Alice).await;
    let product = if matches!(needs, Needs::Nothing) {
        Uuid::nil()
    } else {
        TestResponse::accepted(
            sam.post(
                "/products",
                json!({"sku": format!("ACL-{n}-{}", Uuid::now_v7().simple()), "name": "Mug",
                       "description": "for the matrix", "initial_stock": 50,
                       "price": {"amount_minor": 1000, "currency": "EUR"}}),
            )
            .await,
        )
        .id()
    };
    let mut fixture = Fixture {
        product,
        basket: Uuid::nil(),
        order: Uuid::nil(),
    };
    if matches!(needs, Needs::Nothing | Needs::Product) {
        return fixture;
    }
    fixture.basket = TestResponse::accepted(alice.post("/baskets", json!({})).await).id();
    let line = json!({"product_id": product, "quantity": 2});
    TestResponse::accepted(alice.post(&fixture.on_basket("items"), line).await);
    if matches!(needs, Needs::Basket) {
        return fixture;
    }
    let checkout = alice
        .post(&fixture.on_basket("checkout"), TestApp::address_json())
        .await;
    fixture.order = TestResponse::accepted(checkout).id();
    if matches!(needs, Needs::Paid | Needs::Shipped) {
        let paid = alice.post(&fixture.on_order("pay"), payment("PAY-1")).await;
        TestResponse::accepted(paid);
    }
    if matches!(needs, Needs::Shipped) {
        let shipped = sam
            .post(&fixture.on_order("ship"), json!({"tracking_number": "T-1"}))
            .await;
        TestResponse::accepted(shipped);
    }
    fixture
}

/// The payment of a fixture's order: two mugs at 10 EUR.
fn payment(reference: &str) -> Value {
    json!({"payment_reference": reference, "amount": {"amount_minor": 2000, "currency": "EUR"}})
}

impl Fixture {
    fn on_product(&self, action: &str) -> String {
        format!("/products/{}/{action}", self.product)
    }

    fn on_basket(&self, rest: &str) -> String {
        format!("/baskets/{}/{rest}", self.basket)
    }

    fn on_order(&self, action: &str) -> String {
        format!("/orders/{}/{action}", self.order)
    }
}

type Request = (Method, String, Value);

fn post(path: String, body: Value) -> Request {
    (Method::POST, path, body)
}

struct Operation {
    what: &'static str,
    needs: Needs,
    request: fn(&Fixture) -> Request,
    /// The status for anonymous, alice, bob, sam, ada.
    expected: [u16; 5],
}

/// Staff (and admins) only.
const STAFF: [u16; 5] = [401, 403, 403, 200, 200];
/// Alice's own, or an admin's: bob is told it does not exist, staff may
/// not.
const ALICES: [u16; 5] = [401, 200, 404, 403, 200];

fn operations() -> Vec<Operation> {
    vec![
        Operation {
            what: "register a product",
            needs: Needs::Nothing,
            request: |_| {
                post(
                    "/products".into(),
                    json!({"sku": format!("NEW-{}", Uuid::now_v7().simple()),
                    "name": "New", "description": "d", "initial_stock": 1,
                    "price": {"amount_minor": 100, "currency": "EUR"}}),
                )
            },
            expected: [401, 403, 403, 201, 201],
        },
        Operation {
            what: "change a price",
            needs: Needs::Product,
            request: |f| {
                let price = json!({"price": {"amount_minor": 900, "currency": "EUR"}});
                post(f.on_product("price"), price)
            },
            expected: STAFF,
        },
        Operation {
            what: "adjust stock",
            needs: Needs::Product,
            request: |f| {
                post(
                    f.on_product("stock"),
                    json!({"delta": 5, "reason": "delivery"}),
                )
            },
            expected: STAFF,
        },
        Operation {
            what: "discontinue a product",
            needs: Needs::Product,
            request: |f| post(f.on_product("discontinue"), json!({})),
            expected: STAFF,
        },
        Operation {
            what: "open a basket for oneself",
            needs: Needs::Nothing,
            request: |_| post("/baskets".into(), json!({})),
            expected: [401, 201, 201, 403, 201],
        },
        Operation {
            what: "open a basket naming another customer",
            needs: Needs::Nothing,
            request: |_| post("/baskets".into(), json!({"customer_id": Uuid::now_v7()})),
            expected: [401, 403, 403, 403, 201],
        },
        Operation {
            what: "add to alice's basket",
            needs: Needs::Basket,
            request: |f| {
                let line = json!({"product_id": f.product, "quantity": 1});
                post(f.on_basket("items"), line)
            },
            expected: ALICES,
        },
        Operation {
            what: "change a quantity in alice's basket",
            needs: Needs::Basket,
            request: |f| {
                let path = f.on_basket(&format!("items/{}", f.product));
                (Method::PUT, path, json!({"quantity": 3}))
            },
            expected: ALICES,
        },
        Operation {
            what: "remove from alice's basket",
            needs: Needs::Basket,
            request: |f| {
                let path = f.on_basket(&format!("items/{}", f.product));
                (Method::DELETE, path, json!({}))
            },
            expected: ALICES,
        },
        Operation {
            what: "clear alice's basket",
            needs: Needs::Basket,
            request: |f| (Method::DELETE, f.on_basket("items"), json!({})),
            expected: ALICES,
        },
        Operation {
            what: "check alice's basket out",
            needs: Needs::Basket,
            request: |f| post(f.on_basket("checkout"), TestApp::address_json()),
            expected: [401, 201, 404, 403, 201],
        },
        Operation {
            what: "pay alice's order",
            needs: Needs::Placed,
            request: |f| post(f.on_order("pay"), payment("PAY-2")),
            expected: ALICES,
        },
        Operation {
            what: "cancel alice's order",
            needs: Needs::Placed,
            request: |f| post(f.on_order("cancel"), json!({"reason": "changed my mind"})),
            expected: ALICES,
        },
        Operation {
            what: "ship alice's order",
            needs: Needs::Paid,
            request: |f| post(f.on_order("ship"), json!({"tracking_number": "T-2"})),
            expected: STAFF,
        },
        Operation {
            what: "deliver alice's order",
            needs: Needs::Shipped,
            request: |f| post(f.on_order("deliver"), json!({})),
            expected: STAFF,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rest_command_answers_each_caller_as_the_matrix_says() {
    let app = TestApp::spawn().await;
    let mut wrong = Vec::new();
    for (n, operation) in operations().into_iter().enumerate() {
        for (column, caller) in CALLERS.into_iter().enumerate() {
            let fixture = fixture(&app, operation.needs, n * 10 + column).await;
            let (method, path, body) = (operation.request)(&fixture);
            let before = app.event_count().await;
            let response = send(&app, caller, method.clone(), &path, body.clone()).await;
            let expected = operation.expected[column];
            if response.status != expected {
                wrong.push(format!(
                    "{} as {}: {} (expected {expected}) {}",
                    operation.what,
                    name(caller),
                    response.status,
                    response.body
                ));
                continue;
            }
            if expected >= 400 {
                assert_eq!(
                    app.event_count().await,
                    before,
                    "{} as {}: refused, yet events were appended",
                    operation.what,
                    name(caller)
                );
                let code = match expected {
                    401 => "unauthenticated",
                    403 => "forbidden",
                    _ => response.body["code"].as_str().unwrap_or_default(),
                };
                response.assert_problem(expected, code);
            }
            if expected == 401 {
                assert_eq!(
                    response.header("www-authenticate"),
                    Some(r#"Bearer realm="eshop""#)
                );
            }
            if expected == 404 {
                // Exactly as for an id that does not exist: nothing tells
                // bob that alice's basket or order is there.
                let missing = path
                    .replace(&fixture.basket.to_string(), &Uuid::now_v7().to_string())
                    .replace(&fixture.order.to_string(), &Uuid::now_v7().to_string());
                let unknown = send(&app, caller, method, &missing, body).await;
                assert_eq!(
                    (unknown.status, &unknown.body),
                    (response.status, &response.body),
                    "{}: another's answers unlike a missing one",
                    operation.what
                );
            }
        }
    }
    assert!(wrong.is_empty(), "cells that differ:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_the_openapi_document_and_the_api_page_need_no_token() {
    let app = TestApp::spawn().await;
    let anonymous = app.anonymous();
    let get = |path| anonymous.send(Method::GET, path, None, &[]);
    for path in ["/health/live", "/health/ready", "/openapi.json", "/docs/"] {
        assert_eq!(get(path).await.status, 200, "{path}");
    }
    let ready = get("/health/ready").await.body;
    assert!(
        ready.to_string().contains("identity"),
        "readiness checks the identity provider: {ready}"
    );
    // The document says how to authenticate, and that health needs none.
    let document = get("/openapi.json").await.body;
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(document["security"], json!([{"bearer": []}]));
    assert_eq!(
        document["paths"]["/health/ready"]["get"]["security"],
        json!([{}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_that_cannot_be_reached_makes_commands_503_and_readiness_say_so() {
    let closed = eshop_tests::free_port();
    let app = TestApp::spawn_with(|config| {
        config.identity =
            identity::IdentityConfig::for_issuer(&format!("http://127.0.0.1:{closed}/realms/x"));
        config.identity.timeout_ms = 1000;
    })
    .await;
    let token = auth::token(Who::Ops).await;
    let response = reqwest::Client::new()
        .post(format!("{}/products", app.address))
        .bearer_auth(token)
        .json(
            &json!({"sku": "X", "name": "X", "description": "x", "initial_stock": 1,
                      "price": {"amount_minor": 1, "currency": "EUR"}}),
        )
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: Value = response.json().await.expect("problem");
    assert_eq!(body["code"], "identity-provider-unavailable");
    assert_eq!(app.event_count().await, 0);
    let ready = reqwest::get(format!("{}/health/ready", app.address))
        .await
        .expect("answers");
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.expect("JSON");
    assert!(ready.to_string().contains("identity"), "{ready}");
}

/// Forged and broken tokens, minted by the test where Keycloak cannot make
/// them, against an eshop that trusts the test's own issuer: each is a
/// `401` naming its reason (never echoing the token), over REST and
/// GraphQL, and nothing is appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_broken_tokens_are_refused_with_401_and_nothing_is_appended() {
    let issuer = auth::TestIssuer::start().await;
    let config = issuer.config();
    let app = TestApp::spawn_with(|serve| serve.identity = config).await;
    let customer = Uuid::now_v7();
    let claims = issuer.claims(customer, &["customer"]);
    let with = |key: &str, value: Value| {
        let mut claims = claims.clone();
        claims[key] = value;
        claims
    };
    let now = auth::unix_now();
    let good = auth::TestIssuer::sign(&claims);
    let mut tampered = good.split('.').map(str::to_owned).collect::<Vec<_>>();
    tampered[1] = {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: Value =
            serde_json::from_slice(&engine.decode(&tampered[1]).expect("b64")).expect("claims");
        payload["realm_access"]["roles"] = json!(["admin"]);
        engine.encode(payload.to_string())
    };
    let tampered = tampered.join(".");
    let forged: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            auth::TestIssuer::sign(&with("exp", json!(now - 60))),
            "expired",
        ),
        (
            "not yet valid",
            auth::TestIssuer::sign(&with("nbf", json!(now + 600))),
            "not valid yet",
        ),
        (
            "wrong issuer",
            auth::TestIssuer::sign(&with("iss", json!("http://127.0.0.1:1/realms/other"))),
            "another issuer",
        ),
        (
            "wrong audience",
            auth::TestIssuer::sign(&with("aud", json!(["account"]))),
            "another audience",
        ),
        ("alg none", auth::TestIssuer::unsigned(&claims), "none"),
        (
            "HS256 with the public key",
            auth::TestIssuer::sign_hs256_with_public_key(&claims),
            "HS256",
        ),
        (
            "a key the issuer never published",
            auth::TestIssuer::sign_as_stranger(&claims),
            "signature",
        ),
        ("tampered payload", tampered, "signature"),
        ("garbage", "not-a-token".to_owned(), "malformed"),
    ];

    // The setup is sound: the issuer's own token is accepted.
    let accepted = open_basket_with(&app, Some(&format!("Bearer {good}"))).await;
    assert_eq!(accepted.status, 201, "{}", accepted.body);
    let events = app.event_count().await;

    for (what, token, reason) in &forged {
        let response = open_basket_with(&app, Some(&format!("Bearer {token}"))).await;
        assert_eq!(response.status, 401, "{what}");
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with(r#"Bearer realm="eshop", error="invalid_token""#),
            "{what}: {challenge}"
        );
        let body = &response.body;
        assert_eq!(body["code"], "invalid-token", "{what}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(reason), "{what}: {detail}");
        assert!(
            !body.to_string().contains(token.as_str()),
            "{what}: the token is echoed"
        );
    }
    // The wrong scheme, and no token at all.
    for (header, code) in [
        (Some("Basic YWxpY2U6c2VjcmV0"), "invalid-token"),
        (Some("Bearer"), "invalid-token"),
        (None, "unauthenticated"),
    ] {
        let response = open_basket_with(&app, header).await;
        assert_eq!(response.status, 401, "{header:?}");
        assert_eq!(response.body["code"], code, "{header:?}: {}", response.body);
    }
    assert_eq!(
        app.event_count().await,
        events,
        "a refused token appended events"
    );

    // The GraphQL API, trusting the same issuer: the same tokens are 401
    // UNAUTHENTICATED over HTTP, and close a WebSocket at init with 4403.
    let broker = eshop_tests::TestBroker::new();
    let search = eshop_tests::TestSearch::new(&broker.prefix).await;
    let verifier = identity::Verifier::new(issuer.config()).expect("a verifier");
    let graphql = eshop_tests::graphql::TestGraphql::spawn_trusting(
        &app,
        &broker,
        &search,
        "forged",
        query_api::QueryConfig::default(),
        verifier,
    )
    .await;
    let base = graphql.base.clone();
    let query = |token: String| {
        let url = format!("{base}/graphql");
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&json!({"query": "{ products(first: 1) { edges { node { id } } } }"}))
                .send()
                .await
                .expect("answers");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("JSON"))
        }
    };
    let (status, accepted) = query(good.clone()).await;
    assert_eq!(status, 200, "{accepted}");
    assert!(accepted["errors"].is_null(), "{accepted}");
    let ws_url = format!("{}/graphql/ws", base.replacen("http", "ws", 1));
    for (what, token, reason) in &forged {
        let (status, refused) = query(token.clone()).await;
        assert_eq!(status, 401, "{what}: {refused}");
        assert_eq!(
            error_codes(&refused),
            ["UNAUTHENTICATED"],
            "{what}: {refused}"
        );
        let message = refused["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{what}: {message}");
        let (_, answer) = connect_to(
            &ws_url,
            json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}),
        )
        .await;
        assert_eq!(answer, json!({"close": 4403}), "{what}");
    }
}

/// The GraphQL API of a read side, as `caller` (anonymous: no token).
async fn graphql(
    side: &ReadSide,
    caller: Option<Who>,
    query: &str,
    variables: Value,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/graphql", side.graphql.base))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(who) = caller {
        request = request.header("authorization", auth::bearer(who).await);
    }
    let response = request.send().await.expect("answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// Waits (30 s at most) until `query`, asked as ada, answers `expected` at
/// the JSON pointer `at`.
async fn until_ada_sees(
    side: &ReadSide,
    query: &str,
    variables: Value,
    (at, expected): (&str, Value),
) {
    let what = format!("{at} = {expected} for {query}");
    eshop_tests::eventually(Duration::from_secs(30), &what, || async {
        let found = side
            .graphql
            .query_as(Who::Ada, query, variables.clone())
            .await;
        (found.pointer(at) == Some(&expected)).then_some(())
    })
    .await;
}

/// What a cell of the GraphQL matrix expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Data,
    Code(&'static str),
}

use Answer::{Code, Data};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_graphql_field_answers_each_caller_as_the_matrix_says() {
    let side = ReadSide::start("gql-access").await;
    let fixture = fixture(&side.app, Needs::Paid, 0).await;
    let alice = auth::customer_id(Who::Alice).await;
    // Projected everywhere before the matrix reads it.
    let placed = side
        .graphql
        .query_as(
            Who::Ada,
            "query($id: ID!) { order(id: $id) { id status } }",
            json!({"id": fixture.order}),
        )
        .await;
    drop(placed);
    until_ada_sees(
        &side,
        "query($q: String!) { searchOrders(query: $q) { totalCount } }",
        json!({"q": fixture.order.to_string()}),
        ("/data/searchOrders/totalCount", json!(1)),
    )
    .await;
    until_ada_sees(
        &side,
        "query($id: ID!) { basket(id: $id) { id } }",
        json!({"id": fixture.basket}),
        ("/data/basket/id", json!(fixture.basket)),
    )
    .await;

    let today = chrono::Utc::now().date_naive().to_string();
    let fields: Vec<(&str, String, Value, [Answer; 5])> = vec![
        (
            "product",
            "query($id: ID!) { product(id: $id) { id } }".into(),
            json!({"id": fixture.product}),
            [Code("UNAUTHENTICATED"), Data, Data, Data, Data],
        ),
        (
            "products",
            "{ products(first: 5) { edges { node { id } } } }".into(),
            json!({}),
            [Code("UNAUTHENTICATED"), Data, Data, Data, Data],
        ),
        (
            "searchProducts",
            "{ searchProducts(query: \"mug\") { totalCount } }".into(),
            json!({}),
            [Code("UNAUTHENTICATED"), Data, Data, Data, Data],
        ),
        (
            "basket",
            "query($id: ID!) { basket(id: $id) { id } }".into(),
            json!({"id": fixture.basket}),
            [
                Code("UNAUTHENTICATED"),
                Data,
                Code("NOT_FOUND"),
                Code("FORBIDDEN"),
                Data,
            ],
        ),
        (
            "order",
            "query($id: ID!) { order(id: $id) { id } }".into(),
            json!({"id": fixture.order}),
            [Code("UNAUTHENTICATED"), Data, Code("NOT_FOUND"), Data, Data],
        ),
        (
            "orderAsOf",
            "query($id: ID!, $at: DateTime!) { orderAsOf(id: $id, at: $at) { id } }".into(),
            json!({"id": fixture.order, "at": "2999-01-01T00:00:00Z"}),
            [Code("UNAUTHENTICATED"), Data, Code("NOT_FOUND"), Data, Data],
        ),
        (
            "orders",
            "query($c: ID!) { orders(customerId: $c) { edges { node { id } } } }".into(),
            json!({"c": alice}),
            [Code("UNAUTHENTICATED"), Data, Code("FORBIDDEN"), Data, Data],
        ),
        (
            "searchOrders",
            "query($q: String!) { searchOrders(query: $q) { totalCount } }".into(),
            json!({"q": fixture.order.to_string()}),
            [Code("UNAUTHENTICATED"), Data, Data, Data, Data],
        ),
        (
            "salesDaily",
            "query($d: Date!) { salesDaily(from: $d, to: $d) { units } }".into(),
            json!({"d": today}),
            [
                Code("UNAUTHENTICATED"),
                Code("FORBIDDEN"),
                Code("FORBIDDEN"),
                Data,
                Data,
            ],
        ),
        (
            "projections",
            "{ projections { name } }".into(),
            json!({}),
            [
                Code("UNAUTHENTICATED"),
                Code("FORBIDDEN"),
                Code("FORBIDDEN"),
                Code("FORBIDDEN"),
                Data,
            ],
        ),
    ];
    let mut wrong = Vec::new();
    for (field, query, variables, expected) in &fields {
        for (column, caller) in CALLERS.into_iter().enumerate() {
            let (status, response) = graphql(&side, caller, query, variables.clone()).await;
            let answer = match error_codes(&response).first() {
                None => Data,
                Some(code) => Code(match code.as_str() {
                    "UNAUTHENTICATED" => "UNAUTHENTICATED",
                    "NOT_FOUND" => "NOT_FOUND",
                    "FORBIDDEN" => "FORBIDDEN",
                    _ => "<other>",
                }),
            };
            if answer != expected[column] {
                wrong.push(format!("{field} as {}: {response}", name(caller)));
            }
            let expected_status = if caller.is_none() { 401 } else { 200 };
            assert_eq!(status, expected_status, "{field} as {}", name(caller));
        }
    }
    assert!(wrong.is_empty(), "cells that differ:\n{}", wrong.join("\n"));

    // Search never shows a customer another's order: bob finds nothing by
    // alice's order id, customer id or city; alice finds hers.
    for query in [
        fixture.order.to_string(),
        alice.to_string(),
        "London".to_owned(),
    ] {
        let (_, bob) = graphql(
            &side,
            Some(Who::Bob),
            "query($q: String!) { searchOrders(query: $q) { totalCount edges { node { id customerId } } } }",
            json!({"q": query}),
        )
        .await;
        assert_eq!(
            bob["data"]["searchOrders"]["totalCount"], 0,
            "{query}: {bob}"
        );
        let (_, alice_found) = graphql(
            &side,
            Some(Who::Alice),
            "query($q: String!) { searchOrders(query: $q) { edges { node { customerId } } } }",
            json!({"q": query}),
        )
        .await;
        let edges = alice_found["data"]["searchOrders"]["edges"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(!edges.is_empty(), "{query}: {alice_found}");
        assert!(
            edges
                .iter()
                .all(|e| e["node"]["customerId"] == alice.to_string()),
            "{alice_found}"
        );
    }
}

/// A graphql-transport-ws connection initialised with `init`.
async fn connect(side: &ReadSide, init: Value) -> (WsSocket, Value) {
    connect_to(&side.graphql.ws_url(), init).await
}

/// A graphql-transport-ws connection to `url` initialised with `init`, and
/// the server's first answer.
async fn connect_to(url: &str, init: Value) -> (WsSocket, Value) {
    let (mut socket, _) = connect_socket(url).await;
    send_message(&mut socket, init).await;
    let answer = next_or_close(&mut socket).await;
    (socket, answer)
}

/// The next protocol message, or `{"close": code}` when the server closed.
async fn next_or_close(socket: &mut WsSocket) -> Value {
    use futures::StreamExt;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an answer within 10 s");
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).expect("JSON");
                if value["type"] != "ping" && value["type"] != "pong" {
                    return value;
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return json!({"close": frame.map(|f| u16::from(f.code))});
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return json!({"close": null}),
        }
    }
}

async fn subscribe(socket: &mut WsSocket, query: &str, variables: Value) {
    let payload = json!({"query": query, "variables": variables});
    send_message(
        socket,
        json!({"id": "1", "type": "subscribe", "payload": payload}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriptions_authenticate_at_init_and_show_each_customer_only_their_own_orders() {
    let side = ReadSide::start("gql-access-live").await;
    let fixture = fixture(&side.app, Needs::Placed, 0).await;
    let alice = auth::customer_id(Who::Alice).await;
    // In the view before anyone subscribes: the first change pushed is
    // the payment below.
    until_ada_sees(
        &side,
        "query($id: ID!) { order(id: $id) { id } }",
        json!({"id": fixture.order}),
        ("/data/order/id", json!(fixture.order)),
    )
    .await;

    // No token, or a bad one: the connection is closed with 4403.
    for init in [
        json!({"type": "connection_init"}),
        json!({"type": "connection_init", "payload": {"Authorization": "Bearer not-a-token"}}),
    ] {
        let (_, answer) = connect(&side, init.clone()).await;
        assert_eq!(answer, json!({"close": 4403}), "{init}");
    }

    let order_updated = "subscription($id: ID!) { orderUpdated(orderId: $id) { id status } }";
    let customer_orders = "subscription($c: ID!) { customerOrders(customerId: $c) { id status } }";
    // Per subscription: bob gets an error for alice's order and her
    // customer id, and nothing else; the others subscribe.
    let mut open = Vec::new();
    for who in [Who::Alice, Who::Bob, Who::Sam, Who::Ada] {
        for (query, variables) in [
            (order_updated, json!({"id": fixture.order})),
            (customer_orders, json!({"c": alice})),
        ] {
            let (mut socket, ack) = connect(&side, auth::connection_init(who).await).await;
            assert_eq!(ack["type"], "connection_ack", "{who:?}");
            subscribe(&mut socket, query, variables).await;
            if who == Who::Bob {
                // One error, no data, and the subscription is over.
                let answer = next_message(&mut socket).await;
                assert_eq!(answer["type"], "next", "{answer}");
                assert_eq!(answer["payload"]["data"], Value::Null, "{answer}");
                let code = &answer["payload"]["errors"][0]["extensions"]["code"];
                let expected = if query == order_updated {
                    "NOT_FOUND"
                } else {
                    "FORBIDDEN"
                };
                assert_eq!(code, expected, "{answer}");
                assert_eq!(next_message(&mut socket).await["type"], "complete");
            } else {
                open.push((who, query, socket));
            }
        }
    }
    // A subscription is running once a query on the same connection has
    // answered after it: the server handles a connection's messages in
    // order.
    for (_, _, socket) in &mut open {
        send_message(
            socket,
            json!({"id": "probe", "type": "subscribe", "payload": {"query": "{ __typename }"}}),
        )
        .await;
        let answer = next_message(socket).await;
        assert_eq!(answer["id"], "probe", "{answer}");
        let _complete = next_message(socket).await;
    }
    let alice_client = side.app.as_(Who::Alice).await;
    let paid = alice_client
        .post(&fixture.on_order("pay"), payment("PAY-3"))
        .await;
    TestResponse::accepted(paid);
    for (who, query, socket) in &mut open {
        let pushed = next_message(socket).await;
        assert_eq!(pushed["type"], "next", "{who:?} {query}: {pushed}");
        let data = &pushed["payload"]["data"];
        let order = if data["orderUpdated"].is_null() {
            &data["customerOrders"]
        } else {
            &data["orderUpdated"]
        };
        assert_eq!(order["id"], fixture.order.to_string());
        assert_eq!(order["status"], "PAID");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_ends_when_its_token_expires() {
    let side = ReadSide::start("gql-access-expiry").await;
    // A client of the realm whose tokens live 5 seconds (made through the
    // admin API, removed at the end), acting as a customer.
    let client = auth::ShortLivedClient::create(5, "customer").await;
    let token = client.token().await;
    let customer = auth::subject(&token);
    let (mut socket, ack) = connect(
        &side,
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}),
    )
    .await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    subscribe(
        &mut socket,
        "subscription($c: ID!) { customerOrders(customerId: $c) { id } }",
        json!({"c": customer}),
    )
    .await;
    let expires = auth::claims_of(&token)["exp"].as_i64().expect("exp");
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        let first = next_or_close(&mut socket).await;
        let second = next_or_close(&mut socket).await;
        (first, second)
    })
    .await
    .expect("the subscription ends within 30 s");
    let now = auth::unix_now();
    assert!(
        now >= expires,
        "ended at {now}, before the token expired at {expires}"
    );
    assert_eq!(ended.0["type"], "next", "{}", ended.0);
    assert_eq!(
        ended.0["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{}",
        ended.0
    );
    assert_eq!(ended.1["type"], "complete", "{}", ended.1);
    client.delete().await;
}

/// Idempotency keys are the caller's own: another customer who sends
/// alice's request with alice's key gets no replay of her outcome (her
/// order's id), only what his own request deserves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_only_to_the_caller_who_used_it() {
    let app = TestApp::spawn().await;
    let fixture = fixture(&app, Needs::Basket, 0).await;
    let path = format!("/baskets/{}/checkout", fixture.basket);
    let key = [("idempotency-key", "checkout-1")];
    let alice = app.as_(Who::Alice).await;
    let first = alice
        .send(Method::POST, &path, Some(TestApp::address_json()), &key)
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let replayed = alice
        .send(Method::POST, &path, Some(TestApp::address_json()), &key)
        .await;
    assert_eq!(
        replayed.body, first.body,
        "alice's retry replays her outcome"
    );
    let bob = app
        .as_(Who::Bob)
        .await
        .send(Method::POST, &path, Some(TestApp::address_json()), &key)
        .await;
    assert_eq!(bob.status, 404, "{}", bob.body);
    assert!(
        !bob.body.to_string().contains(&first.id().to_string()),
        "bob got alice's order id: {}",
        bob.body
    );
}
