//! A randomised shop history, made through the real REST API: every kind
//! of command, in random order and amounts, from concurrent shoppers and
//! a shop keeper, reproducible from its seed.

use std::sync::Arc;

use crate::process::{EshopProcess, ProcessStack};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// What a history did.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// Commands answered 2xx.
    pub accepted: u64,
    /// Commands the domain refused (4xx: a discontinued product, stock
    /// run out, …): expected in a random history, and they append nothing.
    pub refused: u64,
    /// Anything else: transport errors and 5xx. A test asserts it is empty.
    pub failures: Vec<String>,
}

impl History {
    /// Asserts that no command failed and some were accepted.
    pub fn assert_ok(&self) {
        crate::fault::assert_no_failures("commands failed", &self.failures);
        assert!(self.accepted > 0, "no command was accepted");
    }

    fn merge(&mut self, other: Self) {
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.failures.extend(other.failures);
    }
}

/// A process stack whose `eshop serve` has taken a random history.
pub struct Served {
    pub stack: ProcessStack,
    pub serve: EshopProcess,
    /// The API's base URL.
    pub base: String,
    /// The history's seed.
    pub seed: u64,
}

impl Served {
    /// A stack named `name` with `eshop serve` running on it, and a
    /// random history of `(products, shoppers, baskets)` (as
    /// [`random_history`]) made through it from `seed`, which it prints;
    /// asserts that no command failed. Projections may lag behind.
    pub async fn with_history(
        name: &str,
        seed: u64,
        (products, shoppers, baskets): (usize, usize, usize),
    ) -> Self {
        let stack = ProcessStack::new(name).await;
        let (serve, base) = stack.serve(&["serve"]).await;
        eprintln!("history seed: {seed}");
        random_history(&base, &stack.db.pool, seed, products, shoppers, baskets)
            .await
            .assert_ok();
        Self {
            stack,
            serve,
            base,
            seed,
        }
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    history: History,
}

impl Client {
    async fn send(&mut self, method: reqwest::Method, path: &str, body: Value) -> Option<Value> {
        let answer = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await;
        match answer {
            Ok(response) if response.status().is_success() => {
                self.history.accepted += 1;
                Some(response.json::<Value>().await.unwrap_or(Value::Null))
            }
            Ok(response) if response.status().is_client_error() => {
                self.history.refused += 1;
                None
            }
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                self.history
                    .failures
                    .push(format!("{method} {path}: {status} {text}"));
                None
            }
            Err(error) => {
                self.history
                    .failures
                    .push(format!("{method} {path}: {error}"));
                None
            }
        }
    }

    async fn post(&mut self, path: &str, body: Value) -> Option<Value> {
        self.send(reqwest::Method::POST, path, body).await
    }
}

/// Registers `products` products, then runs `shoppers` concurrent
/// shoppers of `baskets` baskets each, while a shop keeper changes prices
/// and stock and discontinues a product now and then. Seeded by `seed`.
pub async fn random_history(
    base: &str,
    db: &PgPool,
    seed: u64,
    products: usize,
    shoppers: usize,
    baskets: usize,
) -> History {
    let http = crate::auth::client(crate::auth::Who::Ops).await;
    let mut keeper = Client {
        http: http.clone(),
        base: base.to_owned(),
        history: History::default(),
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut catalogue = Vec::new();
    for i in 0..products {
        let currency = if i % 4 == 3 { "USD" } else { "EUR" };
        let body = json!({"sku": format!("R{seed}-{i}"), "name": format!("Random product {i}"),
            "description": format!("Seeded product {i}: \"quoted\", back\\slash"),
            "initial_stock": rng.random_range(20..200),
            "price": {"amount_minor": rng.random_range(50..5_000), "currency": currency}});
        if let Some(answer) = keeper.post("/products", body).await {
            catalogue.push(answer["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert!(
        !catalogue.is_empty(),
        "no product could be registered: {:?}",
        keeper.history
    );
    let catalogue = Arc::new(catalogue);
    let shoppers: Vec<_> = (0..shoppers)
        .map(|s| {
            let client = Client {
                http: http.clone(),
                base: base.to_owned(),
                history: History::default(),
            };
            let catalogue = catalogue.clone();
            let db = db.clone();
            tokio::spawn(shop(
                client,
                catalogue,
                db,
                seed ^ (s as u64 + 1) << 32,
                baskets,
            ))
        })
        .collect();
    let keeper_catalogue = catalogue.clone();
    let keeper_rounds = baskets * 2;
    let keeper = tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(31));
        for round in 0..keeper_rounds {
            let product = &keeper_catalogue[rng.random_range(0..keeper_catalogue.len())];
            match rng.random_range(0..10) {
                0..=3 => {
                    let currency = if rng.random_bool(0.9) { "EUR" } else { "USD" };
                    keeper
                        .post(
                            &format!("/products/{product}/price"),
                            json!({"price": {"amount_minor": rng.random_range(50..5_000), "currency": currency}}),
                        )
                        .await;
                }
                4..=8 => {
                    keeper
                        .post(
                            &format!("/products/{product}/stock"),
                            json!({"delta": rng.random_range(-5..50), "reason": format!("count {round}")}),
                        )
                        .await;
                }
                _ => {
                    keeper
                        .post(&format!("/products/{product}/discontinue"), json!({}))
                        .await;
                }
            }
        }
        keeper.history
    });
    let mut history = History::default();
    for shopper in shoppers {
        history.merge(shopper.await.expect("shopper task"));
    }
    history.merge(keeper.await.expect("keeper task"));
    history
}

async fn shop(
    mut client: Client,
    catalogue: Arc<Vec<String>>,
    db: PgPool,
    seed: u64,
    baskets: usize,
) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let pick = |rng: &mut StdRng| catalogue[rng.random_range(0..catalogue.len())].clone();
    for _ in 0..baskets {
        let Some(basket) = client
            .post("/baskets", json!({"customer_id": Uuid::now_v7()}))
            .await
        else {
            continue;
        };
        let basket = basket["id"].as_str().unwrap_or_default().to_owned();
        let mut lines: Vec<String> = Vec::new();
        for _ in 0..rng.random_range(1..5) {
            let product = pick(&mut rng);
            if client
                .post(
                    &format!("/baskets/{basket}/items"),
                    json!({"product_id": product, "quantity": rng.random_range(1..4)}),
                )
                .await
                .is_some()
            {
                lines.push(product);
            }
        }
        if !lines.is_empty() && rng.random_bool(0.3) {
            let product = lines[rng.random_range(0..lines.len())].clone();
            client
                .send(
                    reqwest::Method::PUT,
                    &format!("/baskets/{basket}/items/{product}"),
                    json!({"quantity": rng.random_range(1..6)}),
                )
                .await;
        }
        if !lines.is_empty() && rng.random_bool(0.2) {
            let product = lines.swap_remove(rng.random_range(0..lines.len()));
            client
                .send(
                    reqwest::Method::DELETE,
                    &format!("/baskets/{basket}/items/{product}"),
                    json!({}),
                )
                .await;
        }
        if rng.random_bool(0.1) {
            client
                .send(
                    reqwest::Method::DELETE,
                    &format!("/baskets/{basket}/items"),
                    json!({}),
                )
                .await;
            continue;
        }
        if rng.random_bool(0.15) {
            continue;
        }
        let Some(placed) = client
            .post(
                &format!("/baskets/{basket}/checkout"),
                json!({"shipping_address": {"recipient": "Ada Lovelace", "line1": "1 Road",
                       "city": "London", "postal_code": "N1", "country": "GB"}}),
            )
            .await
        else {
            continue;
        };
        let order = placed["order_id"].as_str().unwrap_or_default().to_owned();
        match rng.random_range(0..10) {
            0..=1 => {
                client
                    .post(
                        &format!("/orders/{order}/cancel"),
                        json!({"reason": "changed my mind"}),
                    )
                    .await;
            }
            2 => {}
            stage => {
                let total: Option<Value> = sqlx::query_scalar(
                    "SELECT payload->'OrderPlaced'->'total' FROM events \
                     WHERE aggregate_type = 'Order' AND aggregate_id = $1 AND sequence = 1",
                )
                .bind(&order)
                .fetch_optional(&db)
                .await
                .expect("read the order's total");
                let Some(total) = total else { continue };
                if client
                    .post(
                        &format!("/orders/{order}/pay"),
                        json!({"payment_reference": format!("psp-{}", rng.random_range(0..1_000_000)),
                               "amount": total}),
                    )
                    .await
                    .is_none()
                {
                    continue;
                }
                if stage == 3 {
                    client
                        .post(
                            &format!("/orders/{order}/cancel"),
                            json!({"reason": "refund"}),
                        )
                        .await;
                    continue;
                }
                if stage >= 5 {
                    client
                        .post(
                            &format!("/orders/{order}/ship"),
                            json!({"tracking_number": format!("TRK{}", rng.random_range(0..1_000_000))}),
                        )
                        .await;
                }
                if stage >= 7 {
                    client
                        .post(&format!("/orders/{order}/deliver"), json!({}))
                        .await;
                }
            }
        }
    }
    client.history
}
