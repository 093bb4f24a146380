//! The caps on `/graphql/ws` (issue 11, defect 7): connections per
//! process, subscriptions per connection, the `connection_init` deadline,
//! the `Origin` check, and one SQL read per order change however many
//! subscribers it reaches.

use std::collections::HashSet;
use std::time::Duration;

use eshop_tests::graphql::{ReadSide, TestGraphql, WsSocket as Socket, next_message};
use eshop_tests::{TestApp, TestBroker, TestResponse, TestSearch, eventually};
use futures::{SinkExt, StreamExt};
use query_api::QueryConfig;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use uuid::Uuid;

/// The longest any awaited message may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// The GraphQL API alone (no relay, no projectors) with `configure`d
/// limits: enough for the tests that need no order to change.
async fn graphql_only(
    name: &str,
    configure: impl FnOnce(&mut QueryConfig),
) -> (TestApp, TestGraphql) {
    let app = TestApp::spawn().await;
    let broker = TestBroker::new();
    let search = TestSearch::new(&broker.prefix).await;
    let mut config = QueryConfig::default();
    configure(&mut config);
    let graphql = TestGraphql::spawn(&app, &broker, &search, name, config).await;
    (app, graphql)
}

/// Opens a graphql-transport-ws connection, with `origin` if given.
async fn connect(url: &str, origin: Option<&str>) -> Result<Socket, tungstenite::Error> {
    let mut request = url.into_client_request().expect("ws request");
    let headers = request.headers_mut();
    headers.insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    if let Some(origin) = origin {
        headers.insert("origin", origin.parse().expect("header"));
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// The status and JSON body of a refused upgrade.
fn refusal(error: tungstenite::Error) -> (u16, Value) {
    match error {
        tungstenite::Error::Http(response) => {
            let body = response.body().clone().unwrap_or_default();
            (
                response.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            )
        }
        other => panic!("not an HTTP refusal: {other}"),
    }
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .expect("the socket takes a message");
}

/// A connection that the server acknowledged.
async fn initialised(url: &str) -> Socket {
    let mut socket = connect(url, None).await.expect("the WebSocket connects");
    send(
        &mut socket,
        eshop_tests::auth::connection_init(eshop_tests::auth::Who::Ops).await,
    )
    .await;
    let ack = next_message(&mut socket).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
}

async fn subscribe(socket: &mut Socket, id: &str, query: &str, variables: Value) {
    send(
        socket,
        json!({"id": id, "type": "subscribe",
               "payload": {"query": query, "variables": variables}}),
    )
    .await;
}

const ORDER_UPDATED: &str = "subscription($id: ID!) { orderUpdated(orderId: $id) { id status } }";
const CUSTOMER_ORDERS: &str =
    "subscription($c: ID!) { customerOrders(customerId: $c) { id status } }";

/// A new product and a new customer's order of it, once `order_view`
/// holds the order: (customer, order).
async fn projected_order(side: &ReadSide, sku: &str) -> (Uuid, Uuid) {
    let product = TestResponse::accepted(
        side.app
            .post(
                "/products",
                json!({"sku": sku, "name": format!("Mug {sku}"), "description": "x",
                       "price": {"amount_minor": 700, "currency": "EUR"}, "initial_stock": 50}),
            )
            .await,
    )
    .id();
    let customer = Uuid::now_v7();
    let order = place_order(&side.app, customer, product).await;
    let placed = side
        .graphql
        .query_after(
            &order.1,
            "query($id: ID!) { order(id: $id) { id } }",
            json!({"id": order.0}),
        )
        .await;
    assert!(placed.get("errors").is_none(), "{placed}");
    (customer, order.0)
}

/// Checks out a basket of one `product` for `customer`: (order, token).
async fn place_order(app: &TestApp, customer: Uuid, product: Uuid) -> (Uuid, String) {
    let basket =
        TestResponse::accepted(app.post("/baskets", json!({"customer_id": customer})).await).id();
    TestResponse::accepted(app.add_item(basket, product, 1).await);
    let checkout = TestResponse::accepted(app.checkout(basket).await);
    let token = checkout.body["consistency_token"]
        .as_str()
        .expect("a consistency token")
        .to_owned();
    (checkout.id(), token)
}

async fn pay(app: &TestApp, order: Uuid) {
    TestResponse::accepted(
        app.post(
            &format!("/orders/{order}/pay"),
            json!({"payment_reference": "PAY-CAP", "amount": {"amount_minor": 700, "currency": "EUR"}}),
        )
        .await,
    );
}

/// The next message that is not the placement of the order. The GraphQL
/// process hears of a change from PostgreSQL's notification a moment after
/// the change commits, so a subscription made just after the order became
/// readable may still be sent its placement.
async fn past_the_placement(socket: &mut Socket) -> Value {
    loop {
        let message = next_message(socket).await;
        if message["payload"]["data"]["orderUpdated"]["status"] != "PLACED" {
            return message;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_past_the_connections_cap_is_refused_and_the_connection_keeps_working() {
    let side = ReadSide::start_with("ws-sub-cap", |config| config.ws_max_subscriptions = 3).await;
    let (_, order) = projected_order(&side, "MUG-CAP").await;
    let mut socket = initialised(&side.graphql.ws_url()).await;
    for id in ["1", "2", "3", "4"] {
        subscribe(&mut socket, id, ORDER_UPDATED, json!({"id": order})).await;
    }

    let refused = past_the_placement(&mut socket).await;
    assert_eq!(refused["type"], "next", "{refused}");
    assert_eq!(refused["id"], "4", "{refused}");
    assert_eq!(
        code(&refused["payload"]),
        "TOO_MANY_SUBSCRIPTIONS",
        "{refused}"
    );
    let complete = next_message(&mut socket).await;
    assert_eq!(complete, json!({"id": "4", "type": "complete"}));

    // Completing one frees its place for another.
    send(&mut socket, json!({"id": "1", "type": "complete"})).await;
    let complete = next_message(&mut socket).await;
    assert_eq!(complete, json!({"id": "1", "type": "complete"}));
    subscribe(&mut socket, "5", ORDER_UPDATED, json!({"id": order})).await;

    pay(&side.app, order).await;
    let mut updated = HashSet::new();
    while updated.len() < 3 {
        let message = past_the_placement(&mut socket).await;
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(
            message["payload"]["data"]["orderUpdated"]["status"], "PAID",
            "{message}"
        );
        updated.insert(message["id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(updated, HashSet::from(["2".into(), "3".into(), "5".into()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_connection_cap_an_upgrade_is_refused_with_503_until_one_closes() {
    let (_app, gql) = graphql_only("ws-conn-cap", |config| config.ws_max_connections = 2).await;
    let url = gql.ws_url();
    let mut first = initialised(&url).await;
    let _second = initialised(&url).await;

    let (status, body) = refusal(
        connect(&url, None)
            .await
            .expect_err("a third connection is refused"),
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(code(&body), "TOO_MANY_CONNECTIONS", "{body}");

    first
        .close(None)
        .await
        .expect("the first connection closes");
    drop(first);
    let mut third = eventually(DEADLINE, "a place for a new connection", || {
        let url = url.clone();
        async move { connect(&url, None).await.ok() }
    })
    .await;
    send(
        &mut third,
        eshop_tests::auth::connection_init(eshop_tests::auth::Who::Ops).await,
    )
    .await;
    assert_eq!(next_message(&mut third).await["type"], "connection_ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_without_connection_init_in_time_is_closed_with_4408() {
    let (_app, gql) = graphql_only("ws-init", |config| config.ws_init_timeout_ms = 300).await;
    let url = gql.ws_url();
    let mut silent = connect(&url, None).await.expect("the WebSocket connects");
    let mut prompt = initialised(&url).await;

    let frame = loop {
        let message = tokio::time::timeout(DEADLINE, silent.next())
            .await
            .expect("the silent connection is closed within the deadline");
        match message {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close frame with a code"),
            Some(Ok(_)) => {}
            other => panic!("closed without a close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(frame.code), 4408);
    assert_eq!(frame.reason.as_str(), "Connection initialisation timeout");

    // The connection that sent `connection_init` in time outlives the
    // deadline and still answers.
    subscribe(&mut prompt, "1", "{ __typename }", json!({})).await;
    let answer = next_message(&mut prompt).await;
    assert_eq!(answer["payload"]["data"]["__typename"], "Query", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_foreign_origin_is_refused_with_403_and_the_apis_own_or_none_is_let_in() {
    let (_app, gql) = graphql_only("ws-origin", |config| {
        config.ws_allowed_origins = vec!["https://shop.example".to_owned()];
    })
    .await;
    let url = gql.ws_url();
    let own = gql.base.clone();
    let other_port = format!("{}1", gql.base);
    for origin in [
        "https://evil.example",
        "null",
        other_port.as_str(),
        "https://shop.example.evil",
    ] {
        let (status, body) = refusal(
            connect(&url, Some(origin))
                .await
                .err()
                .unwrap_or_else(|| panic!("{origin} is refused")),
        );
        assert_eq!(status, 403, "{origin}: {body}");
        assert_eq!(code(&body), "FORBIDDEN_ORIGIN", "{origin}: {body}");
    }
    for origin in [None, Some(own.as_str()), Some("https://shop.example")] {
        let mut socket = connect(&url, origin)
            .await
            .unwrap_or_else(|error| panic!("{origin:?} is let in: {error}"));
        send(
            &mut socket,
            eshop_tests::auth::connection_init(eshop_tests::auth::Who::Ops).await,
        )
        .await;
        assert_eq!(next_message(&mut socket).await["type"], "connection_ack");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_order_change_reaches_every_subscriber_from_one_sql_read() {
    const CONNECTIONS: usize = 4;
    const PER_CONNECTION: usize = 25;
    let side = ReadSide::start("ws-fan-out").await;
    let (app, gql) = (&side.app, &side.graphql);
    let product = TestResponse::accepted(
        app.post(
            "/products",
            json!({"sku": "MUG-FAN", "name": "Mug", "description": "x",
                   "price": {"amount_minor": 700, "currency": "EUR"}, "initial_stock": 50}),
        )
        .await,
    )
    .id();
    // Subscribed before the customer has any order, so the placement is
    // the first change every subscription sees.
    let customer = Uuid::now_v7();
    let mut sockets = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut socket = initialised(&gql.ws_url()).await;
        for id in 0..PER_CONNECTION {
            subscribe(
                &mut socket,
                &id.to_string(),
                CUSTOMER_ORDERS,
                json!({"c": customer}),
            )
            .await;
        }
        sockets.push(socket);
    }

    let (order, _) = place_order(app, customer, product).await;
    for socket in &mut sockets {
        expect_status(socket, PER_CONNECTION, order, "PLACED").await;
    }

    let before = gql.statements();
    pay(app, order).await;
    for socket in &mut sockets {
        expect_status(socket, PER_CONNECTION, order, "PAID").await;
    }
    let reads = gql.statements() - before;
    assert_eq!(
        reads,
        1,
        "{} subscribers of one change cost {reads} SQL statements",
        CONNECTIONS * PER_CONNECTION
    );
}

/// Waits until each of `subscriptions` on `socket` pushed `order` in
/// `status`, as its next message.
async fn expect_status(socket: &mut Socket, subscriptions: usize, order: Uuid, status: &str) {
    let mut seen = HashSet::new();
    while seen.len() < subscriptions {
        let message = next_message(socket).await;
        let pushed = &message["payload"]["data"]["customerOrders"];
        assert_eq!(pushed["id"], order.to_string(), "{message}");
        assert_eq!(pushed["status"], status, "{message}");
        assert!(
            seen.insert(message["id"].as_str().unwrap_or_default().to_owned()),
            "a second message for one subscription: {message}"
        );
    }
}
