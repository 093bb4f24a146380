use std::ops::Deref;

use command_api::{Application, ServeConfig};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::db::TestDb;

/// The command API served on an ephemeral port over a fresh database. It
/// derefs to the [`Caller`] of the operator client (an admin), so that
/// `app.send(…)` and `app.post(…)` act as the operator; [`TestApp::as_`]
/// gives one acting as another caller.
pub struct TestApp {
    operator: Caller,
    pub db: TestDb,
}

impl Deref for TestApp {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.operator
    }
}

/// The command API, as one caller: its requests carry that caller's token.
pub struct Caller {
    pub address: String,
    pub client: reqwest::Client,
}

/// A response, read whole.
#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestResponse {
    /// Reads `response` whole; a body that is not JSON reads as null.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("read response body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Self {
            status,
            headers,
            body,
        }
    }

    /// The response, after checking it is a 2xx.
    pub fn accepted(self) -> Self {
        assert!(
            (200..300).contains(&self.status),
            "{} {}",
            self.status,
            self.body
        );
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `id` (or `order_id`) of an accepted command.
    pub fn id(&self) -> Uuid {
        let id = self.body.get("id").or_else(|| self.body.get("order_id"));
        id.and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no id in response {} {}", self.status, self.body))
    }

    pub fn version(&self) -> u64 {
        self.body["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("no version in {}", self.body))
    }

    /// The `field` of every entry of a problem's `errors`, in order.
    pub fn error_fields(&self) -> Vec<&str> {
        self.body["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect()
    }

    /// Asserts a problem+json answer with this status and code.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(
            self.status, status,
            "unexpected status, body: {}",
            self.body
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.body
        );
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status);
        assert_eq!(self.body["type"], format!("/problems/{code}"));
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns with an adjusted configuration.
    pub async fn spawn_with(configure: impl FnOnce(&mut ServeConfig)) -> Self {
        let db = TestDb::new().await;
        let mut config = ServeConfig::for_database(&db.url);
        config.cache = crate::cache::test_cache();
        configure(&mut config);
        let app = Application::build(&config)
            .await
            .expect("build the application");
        let address = format!("http://{}", app.local_addr().expect("bound address"));
        tokio::spawn(app.run_until(std::future::pending()));
        Self {
            operator: Caller {
                address,
                client: crate::auth::client(crate::auth::Who::Ops).await,
            },
            db,
        }
    }

    /// The same application, its requests made without a token.
    pub fn anonymous(&self) -> Caller {
        Caller {
            address: self.address.clone(),
            client: reqwest::Client::new(),
        }
    }

    /// The same application, its requests made as `who`.
    pub async fn as_(&self, who: crate::auth::Who) -> Caller {
        Caller {
            address: self.address.clone(),
            client: crate::auth::client(who).await,
        }
    }

    pub async fn register_product(&self, sku: &str, price_minor: i64, stock: u32) -> Uuid {
        let response = self
            .post(
                "/products",
                json!({
                    "sku": sku,
                    "name": format!("Product {sku}"),
                    "description": "for tests",
                    "price": {"amount_minor": price_minor, "currency": "EUR"},
                    "initial_stock": stock,
                }),
            )
            .await;
        assert_eq!(response.status, 201, "register product: {}", response.body);
        response.id()
    }

    pub async fn open_basket(&self) -> Uuid {
        let response = self
            .post("/baskets", json!({"customer_id": Uuid::now_v7()}))
            .await;
        assert_eq!(response.status, 201, "open basket: {}", response.body);
        response.id()
    }

    pub async fn add_item(&self, basket: Uuid, product: Uuid, quantity: u32) -> TestResponse {
        self.post(
            &format!("/baskets/{basket}/items"),
            json!({"product_id": product, "quantity": quantity}),
        )
        .await
    }

    pub fn address_json() -> Value {
        json!({"shipping_address": {
            "recipient": "Ada Lovelace", "line1": "12 St James's Square", "city": "London",
            "postal_code": "SW1Y 4JH", "country": "GB"
        }})
    }

    pub async fn checkout(&self, basket: Uuid) -> TestResponse {
        self.post(&format!("/baskets/{basket}/checkout"), Self::address_json())
            .await
    }

    /// A placed order of `quantity` units of a new product priced `price`.
    pub async fn placed_order(&self, sku: &str, price_minor: i64, quantity: u32) -> (Uuid, Uuid) {
        let product = self.register_product(sku, price_minor, 10).await;
        let basket = self.open_basket().await;
        assert_eq!(self.add_item(basket, product, quantity).await.status, 200);
        let checkout = self.checkout(basket).await;
        assert_eq!(checkout.status, 201, "checkout: {}", checkout.body);
        (checkout.id(), product)
    }

    pub async fn event_count(&self) -> i64 {
        self.db.event_count().await
    }
}

impl Caller {
    /// Sends a request as this caller; `body` of `None` sends none.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        TestResponse::read(request.send().await.expect("request reaches the server")).await
    }

    /// Sends a raw body with an optional `Content-Type`.
    pub async fn send_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> TestResponse {
        let mut request = self
            .client
            .post(format!("{}{path}", self.address))
            .body(body.to_owned());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        TestResponse::read(request.send().await.expect("request reaches the server")).await
    }

    pub async fn post(&self, path: &str, body: Value) -> TestResponse {
        self.send(Method::POST, path, Some(body), &[]).await
    }
}
