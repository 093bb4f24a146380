//! The GraphQL API on data produced by the real path: REST command → event
//! store → relay → broker → projector → PostgreSQL views and the search
//! index → GraphQL. Read-your-writes (`X-Consistency-Token`) is how these
//! tests wait for the projections; it is itself under test.

use std::time::{Duration, Instant};

use eshop_tests::graphql::{
    ReadSide, WsSocket, connect_socket, error_codes, next_message, send_message,
};
use eshop_tests::{TestApp, TestResponse};
use serde_json::{Value, json};
use uuid::Uuid;

fn token(response: &TestResponse) -> String {
    response.body["consistency_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no consistency token in {}", response.body))
        .to_owned()
}

/// A response's `data`, after checking it has no errors.
fn data(response: Value) -> Value {
    assert!(response.get("errors").is_none(), "errors: {response}");
    response["data"].clone()
}

/// The SKUs of a page of products, in order.
fn skus(page: &Value) -> Vec<String> {
    page["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["sku"].as_str().expect("sku").to_owned())
        .collect()
}

/// The statuses of an order's `statusHistory`, in order.
fn statuses(order: &Value) -> Vec<String> {
    order["statusHistory"]
        .as_array()
        .expect("statusHistory")
        .iter()
        .map(|change| change["status"].as_str().expect("status").to_owned())
        .collect()
}

/// Asserts that a read-your-writes query gave up waiting for `projection`.
fn assert_consistency_timeout(response: &Value, projection: &str) {
    assert_eq!(error_codes(response), ["CONSISTENCY_TIMEOUT"], "{response}");
    assert_eq!(
        response["errors"][0]["extensions"]["projection"],
        projection
    );
}

/// Pays `order` (accepted): `amount_minor` EUR under `reference`.
async fn pay(app: &TestApp, order: Uuid, reference: &str, amount_minor: i64) -> TestResponse {
    TestResponse::accepted(
        app.post(
            &format!("/orders/{order}/pay"),
            json!({"payment_reference": reference, "amount": {"amount_minor": amount_minor, "currency": "EUR"}}),
        )
        .await,
    )
}

/// Ships `order` (accepted) under `tracking_number`.
async fn ship(app: &TestApp, order: Uuid, tracking_number: &str) -> TestResponse {
    TestResponse::accepted(
        app.post(
            &format!("/orders/{order}/ship"),
            json!({"tracking_number": tracking_number}),
        )
        .await,
    )
}

async fn product(
    app: &TestApp,
    sku: &str,
    name: &str,
    description: &str,
    price: i64,
) -> (Uuid, String) {
    let response = TestResponse::accepted(
        app.post(
            "/products",
            json!({"sku": sku, "name": name, "description": description,
                   "price": {"amount_minor": price, "currency": "EUR"}, "initial_stock": 50}),
        )
        .await,
    );
    (response.id(), token(&response))
}

async fn basket_of(app: &TestApp, customer: Uuid) -> Uuid {
    TestResponse::accepted(app.post("/baskets", json!({"customer_id": customer})).await).id()
}

async fn order_of(app: &TestApp, customer: Uuid, product: Uuid, quantity: u32) -> (Uuid, String) {
    let basket = basket_of(app, customer).await;
    TestResponse::accepted(app.add_item(basket, product, quantity).await);
    let checkout = TestResponse::accepted(app.checkout(basket).await);
    (checkout.id(), token(&checkout))
}

/// A new product and a new customer's order of it, once `order_view`
/// holds the order: (product, customer, order).
async fn projected_order(
    side: &ReadSide,
    sku: &str,
    price: i64,
    quantity: u32,
) -> (Uuid, Uuid, Uuid) {
    let (product, _) = product(&side.app, sku, &format!("Mug {sku}"), "x", price).await;
    let customer = Uuid::now_v7();
    let (order, placed) = order_of(&side.app, customer, product, quantity).await;
    // The order and its product as the catalog shows it: with the token,
    // both order_view and product_catalog have caught up with the checkout
    // (it reserved the product's stock), so a client without the token
    // finds both.
    let seen = data(
        side.graphql
            .query_after(
                &placed,
                "query($id: ID!) { order(id: $id) { id lines { product { sku } } } }",
                json!({"id": order}),
            )
            .await,
    );
    assert_eq!(seen["order"]["lines"][0]["product"]["sku"], sku, "{seen}");
    (product, customer, order)
}

const ORDER_FIELDS: &str = "id customerId basketId status
    total { amount currency formatted }
    lines { productId sku name quantity unitPrice { amount currency formatted }
            lineTotal { amount formatted } product { id name price { amount } } }
    shippingAddress { recipient line1 line2 city postalCode country }
    paymentReference trackingNumber cancellationReason
    statusHistory { status at } placedAt updatedAt version";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_field_of_products_baskets_orders_and_sales_comes_from_the_real_path() {
    let side = ReadSide::start("gql-fields").await;
    let (app, gql) = (&side.app, &side.graphql);
    let (mug, _) = product(app, "MUG-1", "Stoneware mug", "Holds 350 ml", 1500).await;
    let repriced = TestResponse::accepted(
        app.post(
            &format!("/products/{mug}/price"),
            json!({"price": {"amount_minor": 1200, "currency": "EUR"}}),
        )
        .await,
    );
    let customer = Uuid::now_v7();
    let (delivered, _) = order_of(app, customer, mug, 2).await;
    pay(app, delivered, "PAY-1", 2400).await;
    ship(app, delivered, "TRACK-1").await;
    let deliver = TestResponse::accepted(
        app.post(&format!("/orders/{delivered}/deliver"), json!({}))
            .await,
    );
    let (cancelled, _) = order_of(app, customer, mug, 1).await;
    let cancel = TestResponse::accepted(
        app.post(
            &format!("/orders/{cancelled}/cancel"),
            json!({"reason": "changed my mind"}),
        )
        .await,
    );
    let open = basket_of(app, customer).await;
    let added = TestResponse::accepted(app.add_item(open, mug, 3).await);

    // The order, through every field, once its last command (and the
    // product's, for the nested product) is projected.
    let order = data(
        gql.query_after(
            &format!("{},{}", token(&deliver), token(&repriced)),
            &format!("query($id: ID!) {{ order(id: $id) {{ {ORDER_FIELDS} }} }}"),
            json!({"id": delivered}),
        )
        .await,
    )["order"]
        .clone();
    assert_eq!(order["id"], delivered.to_string());
    assert_eq!(order["customerId"], customer.to_string());
    assert_eq!(order["status"], "DELIVERED");
    assert_eq!(
        order["total"],
        json!({"amount": 2400, "currency": "EUR", "formatted": "24.00 EUR"})
    );
    assert_eq!(order["lines"][0]["sku"], "MUG-1");
    assert_eq!(order["lines"][0]["quantity"], 2);
    assert_eq!(order["lines"][0]["unitPrice"]["amount"], 1200);
    assert_eq!(
        order["lines"][0]["lineTotal"],
        json!({"amount": 2400, "formatted": "24.00 EUR"})
    );
    assert_eq!(order["lines"][0]["product"]["name"], "Stoneware mug");
    assert_eq!(order["shippingAddress"]["city"], "London");
    assert_eq!(order["shippingAddress"]["country"], "GB");
    assert_eq!(order["shippingAddress"]["line2"], Value::Null);
    assert_eq!(order["paymentReference"], "PAY-1");
    assert_eq!(order["trackingNumber"], "TRACK-1");
    assert_eq!(order["cancellationReason"], Value::Null);
    assert_eq!(statuses(&order), ["PLACED", "PAID", "SHIPPED", "DELIVERED"]);
    assert_eq!(order["version"], 4);
    let placed_at =
        chrono::DateTime::parse_from_rfc3339(order["placedAt"].as_str().expect("placedAt"))
            .expect("RFC 3339");
    assert_eq!(placed_at.offset().local_minus_utc(), 0, "UTC");

    // The cancellation released the stock: the product's own fields.
    let after_cancel = data(
        gql.query_after(
            &token(&cancel),
            "query($id: ID!) { product(id: $id) { id sku name description status version
               price { amount currency formatted } onHand reserved available updatedAt }
               order(id: $id2) { status cancellationReason } }"
                .replace("$id2", &format!("\"{cancelled}\""))
                .as_str(),
            json!({"id": mug}),
        )
        .await,
    );
    let product = &after_cancel["product"];
    assert_eq!(product["sku"], "MUG-1");
    assert_eq!(product["description"], "Holds 350 ml");
    assert_eq!(product["status"], "ACTIVE");
    assert_eq!(
        product["price"],
        json!({"amount": 1200, "currency": "EUR", "formatted": "12.00 EUR"})
    );
    // 50 registered, 2 shipped; 1 reserved and released.
    assert_eq!(product["onHand"], 48);
    assert_eq!(product["reserved"], 0);
    assert_eq!(product["available"], 48);
    assert_eq!(after_cancel["order"]["status"], "CANCELLED");
    assert_eq!(
        after_cancel["order"]["cancellationReason"],
        "changed my mind"
    );

    // The open basket, with its line and total.
    let basket = data(
        gql.query_after(
            &format!("{},{}", token(&added), token(&repriced)),
            "query($id: ID!) { basket(id: $id) { id customerId status itemCount orderId version
               total { amount formatted } openedAt updatedAt
               lines { productId sku name quantity unitPrice { amount } lineTotal { amount } product { sku } } } }",
            json!({"id": open}),
        )
        .await,
    )["basket"]
        .clone();
    assert_eq!(basket["status"], "OPEN");
    assert_eq!(basket["customerId"], customer.to_string());
    assert_eq!(basket["itemCount"], 3);
    assert_eq!(basket["orderId"], Value::Null);
    assert_eq!(
        basket["total"],
        json!({"amount": 3600, "formatted": "36.00 EUR"})
    );
    assert_eq!(basket["lines"][0]["lineTotal"]["amount"], 3600);
    assert_eq!(basket["lines"][0]["product"]["sku"], "MUG-1");

    // The customer's orders, newest first, and filtered by status.
    let orders = data(
        gql.query_after(
            &format!("{},{}", token(&cancel), token(&deliver)),
            "query($c: ID!) { all: orders(customerId: $c) { edges { node { id status } } }
               cancelled: orders(customerId: $c, status: CANCELLED) { edges { node { id } } }
               none: orders(customerId: $c, placedBefore: \"2000-01-01T00:00:00Z\") { edges { node { id } } pageInfo { hasNextPage } } }",
            json!({"c": customer}),
        )
        .await,
    );
    let ids: Vec<&str> = orders["all"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [cancelled.to_string(), delivered.to_string()]);
    assert_eq!(
        orders["cancelled"]["edges"][0]["node"]["id"],
        cancelled.to_string()
    );
    assert_eq!(
        orders["cancelled"]["edges"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(orders["none"]["edges"], json!([]));
    assert_eq!(orders["none"]["pageInfo"]["hasNextPage"], false);

    // Sales, net of the cancellation; and the operators' view.
    let today = chrono::Utc::now().date_naive().to_string();
    let sales = data(
        gql.query_after(
            &format!("{},{},{}", token(&cancel), token(&deliver), token(&repriced)),
            "query($from: Date!, $to: Date!, $p: ID) { salesDaily(from: $from, to: $to, productId: $p) {
               day productId sku units orders revenue { amount currency formatted } product { name } }
               projections { name position eventsBehind secondsBehind deadLetters lastEventAt
               partitions { topic partition nextOffset highWatermark lag } } }",
            json!({"from": today, "to": today, "p": mug}),
        )
        .await,
    );
    assert_eq!(
        sales["salesDaily"],
        json!([{"day": today, "productId": mug.to_string(), "sku": "MUG-1", "units": 2, "orders": 1,
                "revenue": {"amount": 2400, "currency": "EUR", "formatted": "24.00 EUR"},
                "product": {"name": "Stoneware mug"}}])
    );
    let names: Vec<&str> = sales["projections"]
        .as_array()
        .expect("projections")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    for name in projections::projector::names() {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(
        sales["projections"]
            .as_array()
            .expect("projections")
            .iter()
            .all(|p| p["deadLetters"] == 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_have_opaque_cursors_and_refuse_foreign_ones() {
    let side = ReadSide::start("gql-pages").await;
    let (app, gql) = (&side.app, &side.graphql);
    let mut tokens = Vec::new();
    for n in 1..=5 {
        tokens.push(
            product(
                app,
                &format!("P-{n}"),
                &format!("Product {n}"),
                "x",
                100 * n,
            )
            .await
            .1,
        );
    }
    let last = tokens.join(",");
    let page = |after: Option<String>| {
        let last = last.clone();
        async move {
            data(
                gql.query_after(
                    &last,
                    "query($after: String) { products(first: 2, after: $after) {
                       edges { cursor node { sku } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }",
                    json!({"after": after}),
                )
                .await,
            )["products"]
                .clone()
        }
    };
    let first = page(None).await;
    assert_eq!(skus(&first), ["P-1", "P-2"]);
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    assert_eq!(first["pageInfo"]["hasPreviousPage"], false);
    assert_eq!(first["pageInfo"]["endCursor"], first["edges"][1]["cursor"]);
    let second = page(first["pageInfo"]["endCursor"].as_str().map(str::to_owned)).await;
    assert_eq!(skus(&second), ["P-3", "P-4"]);
    assert_eq!(second["pageInfo"]["hasPreviousPage"], true);
    let third = page(second["pageInfo"]["endCursor"].as_str().map(str::to_owned)).await;
    assert_eq!(skus(&third), ["P-5"]);
    assert_eq!(third["pageInfo"]["hasNextPage"], false);

    // Filters, and an empty page.
    let filtered = data(
        gql.query(
            "{ cheap: products(filter: {maxPrice: 200}) { edges { node { sku } } }
               dear: products(filter: {minPrice: 400, currency: \"EUR\", status: ACTIVE}) { edges { node { sku } } }
               none: products(filter: {status: DISCONTINUED}) { edges { node { sku } } pageInfo { hasNextPage endCursor } } }",
            json!({}),
        )
        .await,
    );
    assert_eq!(skus(&filtered["cheap"]), ["P-1", "P-2"]);
    assert_eq!(skus(&filtered["dear"]), ["P-4", "P-5"]);
    assert_eq!(filtered["none"]["edges"], json!([]));
    assert_eq!(filtered["none"]["pageInfo"]["hasNextPage"], false);
    assert_eq!(filtered["none"]["pageInfo"]["endCursor"], Value::Null);

    // A cursor of another listing, of other filters, or no cursor at all.
    let cursor = first["pageInfo"]["endCursor"].as_str().expect("cursor");
    for (query, variables) in [
        (
            "query($a: String) { products(filter: {maxPrice: 200}, after: $a) { edges { cursor } } }",
            json!({"a": cursor}),
        ),
        (
            "query($a: String, $c: ID!) { orders(customerId: $c, after: $a) { edges { cursor } } }",
            json!({"a": cursor, "c": Uuid::now_v7()}),
        ),
        (
            "query($a: String) { products(after: $a) { edges { cursor } } }",
            json!({"a": "bm90IGEgY3Vyc29y"}),
        ),
        ("{ products(first: 101) { edges { cursor } } }", json!({})),
        ("{ products(first: -1) { edges { cursor } } }", json!({})),
        (
            "{ products(filter: {minPrice: 5, maxPrice: 1}) { edges { cursor } } }",
            json!({}),
        ),
        (
            "{ products(filter: {currency: \"EURO\"}) { edges { cursor } } }",
            json!({}),
        ),
    ] {
        let response = gql.query(query, variables).await;
        assert_eq!(
            error_codes(&response),
            ["BAD_USER_INPUT"],
            "{query}: {response}"
        );
    }

    // A customer's orders page by placing date.
    let customer = Uuid::now_v7();
    let (mug, _) = product(app, "MUG-P", "Mug", "x", 500).await;
    let mut placed = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let (order, token) = order_of(app, customer, mug, 1).await;
        placed.push(order.to_string());
        tokens.push(token);
    }
    // Each token covers its own command: the three together, all three.
    let query = "query($c: ID!, $a: String) { orders(customerId: $c, first: 2, after: $a) {
                   edges { node { id } } pageInfo { hasNextPage endCursor } } }";
    let one = data(
        gql.query_after(&tokens.join(", "), query, json!({"c": customer}))
            .await,
    )["orders"]
        .clone();
    let two = data(
        gql.query(
            query,
            json!({"c": customer, "a": one["pageInfo"]["endCursor"]}),
        )
        .await,
    )["orders"]
        .clone();
    let ids: Vec<String> = [&one, &two]
        .iter()
        .flat_map(|page| page["edges"].as_array().expect("edges").clone())
        .map(|e| e["node"]["id"].as_str().expect("id").to_owned())
        .collect();
    placed.reverse();
    assert_eq!(ids, placed, "newest first, each once");
    assert_eq!(one["pageInfo"]["hasNextPage"], true, "{one}");
    assert_eq!(two["pageInfo"]["hasNextPage"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_highlights_escape_the_documents_html_and_mark_only_the_matches() {
    let side = ReadSide::start("gql-highlight").await;
    let (app, gql) = (&side.app, &side.graphql);
    let (_, written) = product(
        app,
        "XSS-1",
        "<img src=x onerror=alert(document.domain)> zebramug",
        "Tom & \"Jerry's\" zebramug",
        1000,
    )
    .await;
    let found = data(
        gql.query_after(
            &written,
            "{ searchProducts(query: \"zebramug\") { edges { highlights { field fragments } } } }",
            json!({}),
        )
        .await,
    )["searchProducts"]["edges"][0]["highlights"]
        .clone();
    let fragment = |field: &str| -> String {
        found
            .as_array()
            .expect("highlights")
            .iter()
            .find(|h| h["field"] == field)
            .and_then(|h| h["fragments"][0].as_str())
            .unwrap_or_else(|| panic!("no {field} highlight in {found}"))
            .to_owned()
    };
    assert_eq!(
        fragment("name"),
        "&lt;img src=x onerror=alert(document.domain)&gt; <em>zebramug</em>"
    );
    assert_eq!(
        fragment("description"),
        "Tom &amp; &quot;Jerry&#x27;s&quot; <em>zebramug</em>"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_ranks_products_by_relevance_with_facets_and_highlights() {
    let side = ReadSide::start("gql-search").await;
    let (app, gql) = (&side.app, &side.graphql);
    let (merino, t1) = product(
        app,
        "SCARF-M",
        "Merino wool scarf",
        "A warm scarf of fine merino wool",
        4500,
    )
    .await;
    let (_, t2) = product(app, "SOCK-W", "Wool socks", "Thick socks for winter", 1200).await;
    let (_, t3) = product(app, "TEE-C", "Cotton t-shirt", "Soft organic cotton", 1900).await;
    let (_, t4) = product(app, "WALLET", "Leather wallet", "Full-grain leather", 8000).await;
    let (silk, _) = product(app, "SCARF-S", "Silk scarf", "Light and smooth", 12000).await;
    let t5 = token(&TestResponse::accepted(
        app.post(&format!("/products/{silk}/discontinue"), json!({}))
            .await,
    ));
    let last = [t1, t2, t3, t4, t5].join(",");

    let search = |query: &'static str, extra: &'static str| {
        let last = last.clone();
        async move {
            data(
                gql.query_after(
                    &last,
                    &format!(
                        "{{ searchProducts(query: \"{query}\"{extra}) {{ totalCount
                           facets {{ status {{ status count }} price {{ from to count }} }}
                           edges {{ score highlights {{ field fragments }} node {{ id sku name status price {{ amount }} }} }}
                           pageInfo {{ hasNextPage }} }} }}"
                    ),
                    json!({}),
                )
                .await,
            )["searchProducts"]
                .clone()
        }
    };

    // Both words beat one: the merino scarf before the silk one.
    let scarves = search("merino scarf", "").await;
    assert_eq!(skus(&scarves), ["SCARF-M", "SCARF-S"]);
    assert_eq!(scarves["edges"][0]["node"]["id"], merino.to_string());
    assert!(scarves["edges"][0]["score"].as_f64() > scarves["edges"][1]["score"].as_f64());
    let highlighted = scarves["edges"][0]["highlights"].to_string();
    assert!(
        highlighted.contains("<em>Merino</em>") || highlighted.contains("<em>merino</em>"),
        "{highlighted}"
    );

    // Wool finds the two woollen things and nothing else.
    let wool = search("wool", "").await;
    let mut found = skus(&wool);
    found.sort();
    assert_eq!(found, ["SCARF-M", "SOCK-W"]);
    assert_eq!(wool["totalCount"], 2);

    // Everything, with facets over the whole result.
    let all = search("", ", first: 2").await;
    assert_eq!(all["totalCount"], 5);
    assert_eq!(all["pageInfo"]["hasNextPage"], true);
    let mut status = all["facets"]["status"].as_array().expect("facets").clone();
    status.sort_by_key(|f| f["status"].as_str().map(str::to_owned));
    assert_eq!(
        status,
        [
            json!({"status": "ACTIVE", "count": 4}),
            json!({"status": "DISCONTINUED", "count": 1})
        ]
    );
    assert_eq!(
        all["facets"]["price"],
        json!([{"from": null, "to": 1000, "count": 0}, {"from": 1000, "to": 5000, "count": 3},
               {"from": 5000, "to": 10000, "count": 1}, {"from": 10000, "to": null, "count": 1}])
    );

    // Filters narrow the search; custom buckets.
    let active_scarves = search("scarf", ", filter: {status: ACTIVE}, priceBuckets: [5000]").await;
    assert_eq!(skus(&active_scarves), ["SCARF-M"]);
    assert_eq!(
        active_scarves["facets"]["price"],
        json!([{"from": null, "to": 5000, "count": 1}, {"from": 5000, "to": null, "count": 0}])
    );
    let dear = search("", ", filter: {minPrice: 5000}").await;
    let mut dear = skus(&dear);
    dear.sort();
    assert_eq!(dear, ["SCARF-S", "WALLET"]);

    // Orders: by SKU, by city, by customer.
    let customer = Uuid::now_v7();
    let socks = product(app, "SOCK-X", "Alpaca socks", "x", 900).await.0;
    let (order, placed) = order_of(app, customer, socks, 2).await;
    for text in ["SOCK-X", "London", "alpaca", &customer.to_string()] {
        let result = data(
            gql.query_after(
                &placed,
                "query($q: String!) { searchOrders(query: $q) { totalCount edges { node { id status total { amount } } } } }",
                json!({"q": text}),
            )
            .await,
        )["searchOrders"]
            .clone();
        assert_eq!(result["totalCount"], 1, "{text}: {result}");
        assert_eq!(
            result["edges"][0]["node"]["id"],
            order.to_string(),
            "{text}"
        );
        assert_eq!(result["edges"][0]["node"]["total"]["amount"], 1800);
    }
    let empty = gql
        .query("{ searchOrders(query: \"  \") { totalCount } }", json!({}))
        .await;
    assert_eq!(error_codes(&empty), ["BAD_USER_INPUT"]);
}

/// A graphql-transport-ws client: connects, subscribes, and returns the
/// socket once the server acknowledged.
async fn subscribe(url: &str, query: &str, variables: Value) -> WsSocket {
    let (mut socket, response) = connect_socket(url).await;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"graphql-transport-ws"[..])
    );
    let init = eshop_tests::auth::connection_init(eshop_tests::auth::Who::Ops).await;
    send_message(&mut socket, init).await;
    let ack = next_message(&mut socket).await;
    assert_eq!(ack["type"], "connection_ack");
    let payload = json!({"query": query, "variables": variables});
    send_message(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": payload}),
    )
    .await;
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_sees_its_order_change_within_a_second_of_the_command() {
    let side = ReadSide::start("gql-live").await;
    let (app, gql) = (&side.app, &side.graphql);
    // The order exists in the view before the subscription starts.
    let (mug, customer, order) = projected_order(&side, "MUG-L", 700, 1).await;

    let mut updates = subscribe(
        &gql.ws_url(),
        "subscription($id: ID!) { orderUpdated(orderId: $id) { id status paymentReference version } }",
        json!({"id": order}),
    )
    .await;
    let mut placements = subscribe(
        &gql.ws_url(),
        "subscription($c: ID!) { customerOrders(customerId: $c) { id status } }",
        json!({"c": customer}),
    )
    .await;

    for round in 0..3 {
        let started = Instant::now();
        match round {
            0 => pay(app, order, "PAY-L", 700).await,
            1 => ship(app, order, "T-L").await,
            _ => TestResponse::accepted(
                app.post(&format!("/orders/{order}/deliver"), json!({}))
                    .await,
            ),
        };
        let update = next_message(&mut updates).await;
        let elapsed = started.elapsed();
        assert_eq!(update["type"], "next", "{update}");
        let pushed = &update["payload"]["data"]["orderUpdated"];
        assert_eq!(pushed["id"], order.to_string());
        assert_eq!(pushed["status"], ["PAID", "SHIPPED", "DELIVERED"][round]);
        assert_eq!(pushed["version"], round + 2);
        assert!(
            elapsed < Duration::from_secs(1),
            "update {round} took {elapsed:?}"
        );
        eprintln!("update {round}: {elapsed:?} from the command to the pushed order");
    }

    // A new order of the customer reaches the customer's subscription;
    // the earlier changes reached it too, in order.
    let started = Instant::now();
    let (second, _) = order_of(app, customer, mug, 2).await;
    let mut seen = Vec::new();
    loop {
        let message = next_message(&mut placements).await;
        let order = &message["payload"]["data"]["customerOrders"];
        seen.push(format!(
            "{} {}",
            order["id"].as_str().unwrap_or(""),
            order["status"].as_str().unwrap_or("")
        ));
        if order["id"] == second.to_string() {
            assert_eq!(order["status"], "PLACED");
            break;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(seen.len(), 4, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_its_token_a_query_sees_the_command_every_time() {
    let side = ReadSide::start("gql-ryw").await;
    let (app, gql) = (&side.app, &side.graphql);
    let (product, _) = product(app, "RYW-1", "Lamp", "x", 1000).await;
    let query = "query($id: ID!) { product(id: $id) { price { amount } } }";
    let (mut stale_without, repetitions) = (0, 200);
    for n in 1..=repetitions {
        let price = 1000 + n;
        let changed = TestResponse::accepted(
            app.post(
                &format!("/products/{product}/price"),
                json!({"price": {"amount_minor": price, "currency": "EUR"}}),
            )
            .await,
        );
        // Without the token first: it may well read the price before.
        let plain = gql.query(query, json!({"id": product})).await;
        if plain["data"]["product"]["price"]["amount"] != price {
            stale_without += 1;
        }
        let seen = data(
            gql.query_after(&token(&changed), query, json!({"id": product}))
                .await,
        );
        assert_eq!(seen["product"]["price"]["amount"], price, "repetition {n}");
    }
    eprintln!("without the token, {stale_without} of {repetitions} reads were stale");
}

/// The command side and the GraphQL API (consistency timeout 300 ms), but
/// no relay or projectors: nothing ever reaches the views.
async fn without_projectors(name: &str) -> (TestApp, eshop_tests::graphql::TestGraphql) {
    let app = TestApp::spawn().await;
    let broker = eshop_tests::TestBroker::new();
    let search = eshop_tests::TestSearch::new(&broker.prefix).await;
    let gql = eshop_tests::graphql::TestGraphql::spawn(
        &app,
        &broker,
        &search,
        name,
        query_api::QueryConfig {
            consistency_timeout_ms: 300,
            ..query_api::QueryConfig::default()
        },
    )
    .await;
    (app, gql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_projection_times_out_with_its_name_and_bad_tokens_are_refused() {
    // The command side and the GraphQL API, but no relay or projectors:
    // nothing will ever reach the views.
    let (app, gql) = without_projectors("gql-timeout").await;
    let (id, registered) = product(&app, "LATE-1", "Late", "x", 100).await;
    let started = Instant::now();
    let response = gql
        .query_after(
            &registered,
            "query($id: ID!) { product(id: $id) { sku } }",
            json!({"id": id}),
        )
        .await;
    assert_consistency_timeout(&response, "product_catalog");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(3));

    for bad in ["not-a-token", "-4", "999999999"] {
        let response = gql
            .query_after(
                bad,
                "query($id: ID!) { product(id: $id) { sku } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(
            error_codes(&response),
            ["BAD_USER_INPUT"],
            "{bad}: {response}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bombs_bad_input_and_missing_objects_get_coded_errors() {
    let side = ReadSide::start("gql-errors").await;
    let gql = &side.graphql;
    let deep = format!(
        "{{ __schema {{ types {{ fields {{ type {{ {} name {} }} }} }} }} }}",
        "ofType { ".repeat(14),
        "} ".repeat(14)
    );
    let node = "edges { node { id sku name description status price { amount currency formatted } onHand reserved available } }";
    let wide = (0..10)
        .map(|n| format!("p{n}: products(first: 100) {{ {node} }}"))
        .collect::<Vec<_>>()
        .join(" ");
    let cases = [
        (deep, "QUERY_TOO_DEEP"),
        (format!("{{ {wide} }}"), "QUERY_TOO_COMPLEX"),
        (
            "{ products(first: 500) { edges { cursor } } }".to_owned(),
            "BAD_USER_INPUT",
        ),
        ("{ products(first: ".to_owned(), "GRAPHQL_PARSE_FAILED"),
        (
            "{ products { nope } }".to_owned(),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "{ products(first: \"ten\") { edges { cursor } } }".to_owned(),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "{ order(id: \"not-a-uuid\") { id } }".to_owned(),
            "BAD_USER_INPUT",
        ),
        (
            format!("{{ order(id: \"{}\") {{ id }} }}", Uuid::now_v7()),
            "NOT_FOUND",
        ),
        (
            format!("{{ product(id: \"{}\") {{ id }} }}", Uuid::now_v7()),
            "NOT_FOUND",
        ),
        (
            format!("{{ basket(id: \"{}\") {{ id }} }}", Uuid::now_v7()),
            "NOT_FOUND",
        ),
        (
            "{ salesDaily(from: \"2026-02-30\", to: \"2026-03-01\") { units } }".to_owned(),
            "BAD_USER_INPUT",
        ),
        (
            "{ salesDaily(from: \"2026-03-02\", to: \"2026-03-01\") { units } }".to_owned(),
            "BAD_USER_INPUT",
        ),
        (
            "{ salesDaily(from: \"2024-01-01\", to: \"2026-03-01\") { units } }".to_owned(),
            "BAD_USER_INPUT",
        ),
        (
            "{ searchProducts(query: \"x\", priceBuckets: [5, 1]) { totalCount } }".to_owned(),
            "BAD_USER_INPUT",
        ),
    ];
    for (query, code) in cases {
        let response = gql.query(&query, json!({})).await;
        let codes = error_codes(&response);
        assert!(
            !codes.is_empty() && codes.iter().all(|c| c == code),
            "{query}: expected {code}: {response}"
        );
        assert_eq!(response["data"], Value::Null, "{query}");
    }
    // A body that is not a GraphQL request at all.
    let response = eshop_tests::auth::client(eshop_tests::auth::Who::Ops)
        .await
        .post(format!("{}/graphql", gql.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(error_codes(&body), ["BAD_REQUEST"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nested_products_of_a_page_of_orders_load_in_one_statement() {
    let side = ReadSide::start("gql-n1").await;
    let (app, gql) = (&side.app, &side.graphql);
    let customer = Uuid::now_v7();
    let mut tokens = Vec::new();
    for n in 0..8 {
        let (mug, registered) =
            product(app, &format!("N1-{n}"), &format!("Mug {n}"), "x", 300).await;
        tokens.push(registered);
        tokens.push(order_of(app, customer, mug, 1).await.1);
    }
    let last = tokens.join(",");
    let query = "query($c: ID!, $first: Int) { orders(customerId: $c, first: $first) {
                   edges { node { id lines { sku product { name price { amount } } } } } } }";
    data(
        gql.query_after(&last, query, json!({"c": customer, "first": 8}))
            .await,
    );
    let count = |first: i32| {
        let query = query.to_owned();
        async move {
            let before = gql.statements();
            let response = data(
                gql.query(&query, json!({"c": customer, "first": first}))
                    .await,
            );
            let orders = response["orders"]["edges"].as_array().map_or(0, Vec::len);
            (orders, gql.statements() - before)
        }
    };
    let (one, for_one) = count(1).await;
    let (eight, for_eight) = count(8).await;
    assert_eq!((one, eight), (1, 8));
    // The page, then one batch of products, whatever the page size.
    assert_eq!(for_one, 2);
    assert_eq!(for_eight, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graphiql_is_served_from_the_binary_without_a_cdn() {
    let side = ReadSide::start("gql-graphiql").await;
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{}/graphql", side.graphql.base))
        .header("accept", "text/html")
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    let sources: Vec<&str> = html
        .split(['"', '\''])
        .filter(|part| part.ends_with(".js") || part.ends_with(".css"))
        .collect();
    assert_eq!(sources.len(), 4, "{sources:?}");
    for source in sources {
        assert!(source.starts_with("/graphiql/"), "{source} is not ours");
        let asset = http
            .get(format!("{}{source}", side.graphql.base))
            .send()
            .await
            .expect("asset");
        assert_eq!(asset.status(), 200, "{source}");
        assert!(asset.bytes().await.expect("bytes").len() > 1000, "{source}");
    }
    // GET with a query is a GraphQL request, not the page: it needs a
    // token like any other (the page and its assets need none).
    let url = format!("{}/graphql?query=%7B__typename%7D", side.graphql.base);
    let anonymous = http.get(&url).send().await.expect("GET query");
    assert_eq!(anonymous.status(), 401);
    let answer: Value = http
        .get(&url)
        .header(
            "authorization",
            eshop_tests::auth::bearer(eshop_tests::auth::Who::Alice).await,
        )
        .send()
        .await
        .expect("GET query")
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer["data"]["__typename"], "Query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_independent_python_client_queries_and_subscribes() {
    let side = ReadSide::start("gql-python").await;
    let (app, gql) = (&side.app, &side.graphql);
    let (mug, customer, order) = projected_order(&side, "PY-1", 1100, 3).await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/graphql_client.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&gql.base)
        .arg(order.to_string())
        .arg(customer.to_string())
        .env(
            "ESHOP_ACCESS_TOKEN",
            eshop_tests::auth::token(eshop_tests::auth::Who::Ops).await,
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    // The client says when its subscription is open; then the order is
    // paid, and the client prints what it received and exits.
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the client starts in 60 s")
        .expect("stdout");
    let Some(ready) = ready else {
        let output = child.wait_with_output().await.expect("exits");
        panic!(
            "the Python client failed (run scripts/setup, it installs gql): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let queried: Value = serde_json::from_str(&ready).expect("the client's query result");
    assert_eq!(queried["order"]["id"], order.to_string());
    assert_eq!(queried["order"]["total"]["amount"], 3300);
    assert_eq!(queried["order"]["lines"][0]["product"]["sku"], "PY-1");
    assert_eq!(
        queried["orders"]["edges"][0]["node"]["id"],
        order.to_string()
    );

    // Its subscription is open once it said so, but the server may take a
    // moment to start it: place orders until the client reports one.
    let mut placed_after = Vec::new();
    let pushed = loop {
        assert!(
            placed_after.len() < 10,
            "the client saw none of {placed_after:?}"
        );
        placed_after.push(order_of(app, customer, mug, 1).await.0.to_string());
        if let Ok(line) = tokio::time::timeout(Duration::from_secs(3), lines.next_line()).await {
            let line = line.expect("stdout").expect("a line from the client");
            break serde_json::from_str::<Value>(&line).expect("JSON");
        }
    };
    let id = pushed["customerOrders"]["id"]
        .as_str()
        .expect("an order id");
    assert!(
        placed_after.iter().any(|p| p == id),
        "{id} is not one of {placed_after:?}"
    );
    assert_eq!(pushed["customerOrders"]["status"], "PLACED");
    assert_eq!(pushed["customerOrders"]["total"]["amount"], 1100);
    let status = child.wait().await.expect("exits");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_as_of_rebuilds_the_order_as_it_stood_at_each_moment() {
    let side = ReadSide::start("gql-as-of").await;
    let (app, gql) = (&side.app, &side.graphql);
    let (mug, registered) = product(app, "ASOF-1", "Time mug", "x", 800).await;
    let customer = Uuid::now_v7();
    let basket = basket_of(app, customer).await;
    TestResponse::accepted(app.add_item(basket, mug, 2).await);

    // Each moment is taken between two commands: after the one before has
    // answered, before the next is sent.
    let before_placing = chrono::Utc::now();
    let checkout = TestResponse::accepted(app.checkout(basket).await);
    let order = checkout.id();
    let placed = chrono::Utc::now();
    let payment = pay(app, order, "PAY-T", 1600).await;
    let paid = chrono::Utc::now();
    let shipment = ship(app, order, "TRACK-T").await;
    let shipped = chrono::Utc::now();

    let as_of = |at: Value| async move {
        gql.query(
            &format!(
                "query($id: ID!, $at: DateTime!) {{ orderAsOf(id: $id, at: $at) {{ {ORDER_FIELDS} }} }}"
            ),
            json!({"id": order, "at": at}),
        )
        .await
    };
    let expected = [
        (placed, "PLACED", 1, None, None),
        (paid, "PAID", 2, Some("PAY-T"), None),
        (shipped, "SHIPPED", 3, Some("PAY-T"), Some("TRACK-T")),
    ];
    for (at, status, version, payment, tracking) in expected {
        let then = data(as_of(json!(at)).await)["orderAsOf"].clone();
        assert_eq!(then["id"], order.to_string());
        assert_eq!(then["status"], status, "at {at}: {then}");
        assert_eq!(then["version"], version, "at {at}");
        let history = statuses(&then);
        assert_eq!(history.len(), version, "at {at}: {history:?}");
        assert_eq!(history.last().map(String::as_str), Some(status));
        assert_eq!(then["paymentReference"], json!(payment), "at {at}");
        assert_eq!(then["trackingNumber"], json!(tracking), "at {at}");
        assert_eq!(
            then["total"],
            json!({"amount": 1600, "currency": "EUR", "formatted": "16.00 EUR"})
        );
        assert_eq!(then["lines"][0]["sku"], "ASOF-1");
        assert_eq!(then["lines"][0]["quantity"], 2);
        assert_eq!(then["shippingAddress"]["city"], "London");
        assert_eq!(then["customerId"], customer.to_string());
    }

    // An event counts from the moment it occurred, to the microsecond: at
    // the payment's own time the order is paid, a microsecond before it is
    // not.
    let history = data(as_of(json!(shipped)).await)["orderAsOf"]["statusHistory"].clone();
    let paid_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(history[1]["at"].clone()).expect("a time");
    let at_payment = data(as_of(json!(paid_at)).await)["orderAsOf"].clone();
    assert_eq!(
        (&at_payment["status"], &at_payment["version"]),
        (&json!("PAID"), &json!(2))
    );
    let just_before =
        data(as_of(json!(paid_at - chrono::TimeDelta::microseconds(1))).await)["orderAsOf"].clone();
    assert_eq!(
        (&just_before["status"], &just_before["version"]),
        (&json!("PLACED"), &json!(1))
    );

    // Before it was placed, and an order that never was: NOT_FOUND, null.
    // A malformed id or time: BAD_USER_INPUT.
    for (id, at, code) in [
        (json!(order), json!(before_placing), "NOT_FOUND"),
        (json!(Uuid::now_v7()), json!(shipped), "NOT_FOUND"),
        (json!("not-a-uuid"), json!(shipped), "BAD_USER_INPUT"),
        (json!(order), json!("yesterday"), "BAD_USER_INPUT"),
        (
            json!(order),
            json!("2026-13-01T00:00:00Z"),
            "BAD_USER_INPUT",
        ),
    ] {
        let response = gql
            .query(
                "query($id: ID!, $at: DateTime!) { orderAsOf(id: $id, at: $at) { id } }",
                json!({"id": id, "at": at}),
            )
            .await;
        assert_eq!(error_codes(&response), [code], "{id} at {at}: {response}");
        if code == "NOT_FOUND" {
            assert_eq!(response["data"]["orderAsOf"], Value::Null);
        }
    }
    let inline = gql
        .query(
            &format!("{{ orderAsOf(id: \"{order}\", at: \"last tuesday\") {{ id }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(error_codes(&inline), ["BAD_USER_INPUT"], "{inline}");

    // One statement per call, whatever the order's length; the nested
    // products one more, in one batch.
    let before = gql.statements();
    data(
        gql.query(
            "query($id: ID!, $at: DateTime!) { orderAsOf(id: $id, at: $at) {
               status statusHistory { at } lines { sku } } }",
            json!({"id": order, "at": shipped}),
        )
        .await,
    );
    assert_eq!(gql.statements() - before, 1);
    let before = gql.statements();
    data(as_of(json!(shipped)).await);
    assert_eq!(gql.statements() - before, 2);

    // Now, it is the order the view holds, field by field (with the
    // commands' tokens, once the view and the catalog caught up).
    let now = chrono::Utc::now();
    let both = data(
        gql.query_after(
            &[
                &registered,
                &token(&checkout),
                &token(&payment),
                &token(&shipment),
            ]
            .map(String::as_str)
            .join(","),
            &format!(
                "query($id: ID!, $at: DateTime!) {{
                   asOf: orderAsOf(id: $id, at: $at) {{ {ORDER_FIELDS} }}
                   view: order(id: $id) {{ {ORDER_FIELDS} }} }}"
            ),
            json!({"id": order, "at": now}),
        )
        .await,
    );
    assert_eq!(both["view"]["status"], "SHIPPED");
    assert_eq!(both["view"]["lines"][0]["product"]["name"], "Time mug");
    let (as_of_now, view) = (
        both["asOf"].as_object().expect("orderAsOf"),
        both["view"].as_object().expect("order"),
    );
    assert_eq!(
        as_of_now.keys().collect::<Vec<_>>(),
        view.keys().collect::<Vec<_>>()
    );
    for (field, value) in view {
        assert_eq!(&as_of_now[field], value, "{field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_as_of_reads_the_event_store_so_a_token_never_waits_for_a_projection() {
    // The command side and the GraphQL API, but no relay or projectors:
    // `order_view` never gets the order, the event store has it at once.
    let (app, gql) = without_projectors("gql-as-of-ryw").await;
    let (mug, _) = product(&app, "ASOF-2", "Mug", "x", 450).await;
    let (order, placed) = order_of(&app, Uuid::now_v7(), mug, 3).await;
    let paid = pay(&app, order, "PAY-R", 1350).await;

    let started = Instant::now();
    let response = gql
        .query_after(
            &format!("{placed},{}", token(&paid)),
            "query($id: ID!, $at: DateTime!) { orderAsOf(id: $id, at: $at) {
               status version paymentReference total { amount } } }",
            json!({"id": order, "at": chrono::Utc::now()}),
        )
        .await;
    assert_eq!(
        data(response)["orderAsOf"],
        json!({"status": "PAID", "version": 2, "paymentReference": "PAY-R", "total": {"amount": 1350}})
    );
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "waited {:?}",
        started.elapsed()
    );
    // The same token makes `order` wait for its view, in vain.
    let response = gql
        .query_after(
            &token(&paid),
            "query($id: ID!) { order(id: $id) { status } }",
            json!({"id": order}),
        )
        .await;
    assert_consistency_timeout(&response, "order_view");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_alias_of_projections_is_served_from_one_shared_snapshot() {
    // Each alias used to open its own Kafka consumers and queries: 300 of
    // them took seconds and hundreds of threads, and kept running after
    // the request's timeout.
    let side = ReadSide::start("gql-status").await;
    let gql = &side.graphql;
    let aliases: String = (0..300)
        .map(|n| format!(" p{n}: projections {{ name observedAt eventsBehind }}"))
        .collect();
    let query = format!("{{{aliases} }}");
    let started = std::time::Instant::now();
    let first = data(gql.query(&query, json!({})).await);
    let took = started.elapsed();
    let observed: std::collections::BTreeSet<String> = first
        .as_object()
        .expect("aliases")
        .values()
        .flat_map(|statuses| statuses.as_array().expect("a list").clone())
        .map(|status| {
            status["observedAt"]
                .as_str()
                .expect("observedAt")
                .to_owned()
        })
        .collect();
    assert_eq!(
        observed.len(),
        1,
        "one snapshot for every alias: {observed:?}"
    );
    assert!(took < Duration::from_secs(3), "300 aliases took {took:?}");
    // A second request within the refresh period reads the same snapshot.
    let second = data(gql.query("{ projections { observedAt } }", json!({})).await);
    assert_eq!(
        second["projections"][0]["observedAt"].as_str(),
        observed.iter().next().map(String::as_str)
    );
}
