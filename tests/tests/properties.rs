//! Property: random command sequences, executed through the real store,
//! rebuild exactly the state a pure in-memory model reaches, whether the
//! aggregate is replayed from all its events, loaded through a snapshot, or
//! loaded by cqrs-es through our repository.

use command_api::commands::catalog::NewProduct;
use command_api::commands::{CommandContext, CommandService, Outcome, RetryPolicy};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateContext, EventStore as _};
use domain::basket::{Basket, BasketCommand, ProductOffer};
use domain::order::{Order, OrderCommand, OrderLine, ShippingAddress};
use domain::product::{Product, ProductCommand, ProductStatus};
use domain::text::{CountryCode, Description, ProductName, ShortText, Sku};
use domain::{BasketId, Currency, CustomerId, Money, OrderId, ProductId};
use eshop_tests::TestDb;
use event_store::{EventStore, PgEventRepository, SnapshotPolicy};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const PRODUCTS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    AddItem { product: usize, quantity: u32 },
    ChangeQuantity { product: usize, quantity: u32 },
    Remove { product: usize },
    Clear,
    AdjustStock { product: usize, delta: i64 },
    ChangePrice { product: usize, price: i64 },
    Discontinue { product: usize },
    Checkout,
}

fn op() -> impl Strategy<Value = Op> {
    let product = 0..PRODUCTS;
    prop_oneof![
        6 => (product.clone(), 0u32..=60).prop_map(|(product, quantity)| Op::AddItem { product, quantity }),
        2 => (product.clone(), 0u32..=110).prop_map(|(product, quantity)| Op::ChangeQuantity { product, quantity }),
        1 => product.clone().prop_map(|product| Op::Remove { product }),
        1 => Just(Op::Clear),
        3 => (product.clone(), -30i64..=30).prop_map(|(product, delta)| Op::AdjustStock { product, delta }),
        2 => (product.clone(), -5i64..=3000).prop_map(|(product, price)| Op::ChangePrice { product, price }),
        1 => product.prop_map(|product| Op::Discontinue { product }),
        1 => Just(Op::Checkout),
    ]
}

fn eur(minor: i64) -> Money {
    Money::new(minor, "EUR".parse::<Currency>().expect("EUR"))
}

fn address() -> ShippingAddress {
    let text = |s: &str| ShortText::parse(s).expect("valid text");
    ShippingAddress {
        recipient: text("Grace Hopper"),
        line1: text("1 Navy Way"),
        line2: None,
        city: text("Arlington"),
        postal_code: text("22202"),
        country: CountryCode::parse("US").expect("country"),
    }
}

/// Runs a command on the in-memory model; returns the events it decided.
async fn decide<A: Aggregate<Services = ()>>(
    aggregate: &mut A,
    command: A::Command,
) -> Result<Vec<A::Event>, A::Error> {
    let sink = EventSink::default();
    let mut trial =
        serde_json::from_value::<A>(serde_json::to_value(&*aggregate).expect("state serialises"))
            .expect("state deserialises");
    trial.handle(command, &(), &sink).await?;
    *aggregate = trial;
    Ok(sink.collect().await)
}

struct Model {
    products: Vec<(ProductId, Product)>,
    basket: (BasketId, Basket),
    orders: Vec<(OrderId, Order)>,
}

impl Model {
    fn offer(&self, index: usize) -> ProductOffer {
        let (id, product) = &self.products[index];
        let details = product.details().expect("registered");
        ProductOffer {
            product_id: *id,
            sku: details.sku.clone(),
            name: details.name.clone(),
            unit_price: details.price,
            discontinued: product.status() == ProductStatus::Discontinued,
        }
    }

    /// The model's checkout: all or nothing, as the service promises.
    async fn checkout(&mut self, order_id: OrderId) -> bool {
        let mut basket = self.basket.1.clone();
        let mut lines = basket.lines().to_vec();
        let customer_id = basket.customer_id();
        if decide(&mut basket, BasketCommand::CheckOut { order_id })
            .await
            .is_err()
        {
            return false;
        }
        lines.sort_by_key(|line| line.product_id);
        let mut products = self.products.clone();
        let mut order_lines = Vec::new();
        for line in &lines {
            let Some((_, product)) = products.iter_mut().find(|(id, _)| *id == line.product_id)
            else {
                return false;
            };
            if decide(
                product,
                ProductCommand::Reserve {
                    order_id,
                    quantity: line.quantity,
                },
            )
            .await
            .is_err()
            {
                return false;
            }
            let details = product.details().expect("registered");
            order_lines.push(OrderLine {
                product_id: line.product_id,
                sku: details.sku.clone(),
                name: details.name.clone(),
                unit_price: details.price,
                quantity: line.quantity,
            });
        }
        let mut order = Order::default();
        let place = OrderCommand::Place {
            customer_id: customer_id.expect("opened"),
            basket_id: self.basket.0,
            lines: order_lines,
            shipping_address: address(),
        };
        if decide(&mut order, place).await.is_err() {
            return false;
        }
        self.basket.1 = basket;
        self.products = products;
        self.orders.push((order_id, order));
        true
    }
}

async fn check(db: &TestDb, ops: Vec<Op>) -> Result<(), TestCaseError> {
    // Snapshots every 3 events, so that most loads go through one.
    let snapshots = SnapshotPolicy::default()
        .with("Product", 3)
        .with("Basket", 3)
        .with("Order", 3);
    let snapshotting = EventStore::new(db.pool.clone(), event_schemas::upcasters(), snapshots);
    let replaying = EventStore::new(
        db.pool.clone(),
        event_schemas::upcasters(),
        SnapshotPolicy::default(),
    );
    let service = CommandService::new(snapshotting.clone(), RetryPolicy::default());
    let ctx = || CommandContext::new("property");

    let mut products = Vec::new();
    for n in 0..PRODUCTS {
        let sku = Sku::parse(&format!("P{}", uuid::Uuid::now_v7().simple())).expect("sku");
        let new = NewProduct {
            sku: sku.clone(),
            name: ProductName::parse(&format!("Product {n}")).expect("name"),
            description: Description::parse("").expect("description"),
            price: eur(100 * (n as i64 + 1)),
            initial_stock: 40,
        };
        let Outcome::Accepted { id, .. } = service
            .register_product(&ctx(), new.clone())
            .await
            .expect("register")
        else {
            return Err(TestCaseError::fail("unexpected outcome"));
        };
        let mut model = Product::default();
        decide(
            &mut model,
            ProductCommand::Register {
                sku: new.sku,
                name: new.name,
                description: new.description,
                price: new.price,
                initial_stock: new.initial_stock,
            },
        )
        .await
        .expect("model registers");
        products.push((ProductId::from_uuid(id), model));
    }
    let customer = CustomerId::generate();
    let Outcome::Accepted { id: basket_id, .. } =
        service.open_basket(&ctx(), customer).await.expect("open")
    else {
        return Err(TestCaseError::fail("unexpected outcome"));
    };
    let basket_id = BasketId::from_uuid(basket_id);
    let mut basket = Basket::default();
    decide(
        &mut basket,
        BasketCommand::Open {
            customer_id: customer,
        },
    )
    .await
    .expect("model opens");
    let mut model = Model {
        products,
        basket: (basket_id, basket),
        orders: Vec::new(),
    };

    for op in ops {
        let (stored, modelled) = match op {
            Op::AddItem { product, quantity } => {
                let offer = model.offer(product);
                let stored = service
                    .add_item(&ctx(), basket_id, offer.product_id, quantity)
                    .await
                    .is_ok();
                (
                    stored,
                    decide(
                        &mut model.basket.1,
                        BasketCommand::AddItem {
                            product: offer,
                            quantity,
                        },
                    )
                    .await
                    .is_ok(),
                )
            }
            Op::ChangeQuantity { product, quantity } => {
                let product_id = model.products[product].0;
                let stored = service
                    .change_quantity(&ctx(), basket_id, product_id, quantity)
                    .await
                    .is_ok();
                (
                    stored,
                    decide(
                        &mut model.basket.1,
                        BasketCommand::ChangeQuantity {
                            product_id,
                            quantity,
                        },
                    )
                    .await
                    .is_ok(),
                )
            }
            Op::Remove { product } => {
                let product_id = model.products[product].0;
                let stored = service
                    .remove_item(&ctx(), basket_id, product_id)
                    .await
                    .is_ok();
                (
                    stored,
                    decide(
                        &mut model.basket.1,
                        BasketCommand::RemoveItem { product_id },
                    )
                    .await
                    .is_ok(),
                )
            }
            Op::Clear => {
                let stored = service.clear_basket(&ctx(), basket_id).await.is_ok();
                (
                    stored,
                    decide(&mut model.basket.1, BasketCommand::Clear)
                        .await
                        .is_ok(),
                )
            }
            Op::AdjustStock { product, delta } => {
                let (id, state) = &mut model.products[product];
                let reason = ShortText::parse("count").expect("reason");
                let stored = service
                    .adjust_stock(&ctx(), *id, delta, reason.clone())
                    .await
                    .is_ok();
                (
                    stored,
                    decide(state, ProductCommand::AdjustStock { delta, reason })
                        .await
                        .is_ok(),
                )
            }
            Op::ChangePrice { product, price } => {
                let (id, state) = &mut model.products[product];
                let stored = service.change_price(&ctx(), *id, eur(price)).await.is_ok();
                (
                    stored,
                    decide(state, ProductCommand::ChangePrice { price: eur(price) })
                        .await
                        .is_ok(),
                )
            }
            Op::Discontinue { product } => {
                let (id, state) = &mut model.products[product];
                let stored = service.discontinue(&ctx(), *id).await.is_ok();
                (
                    stored,
                    decide(state, ProductCommand::Discontinue).await.is_ok(),
                )
            }
            Op::Checkout => match service.checkout(&ctx(), basket_id, address()).await {
                Ok(Outcome::CheckedOut { order_id, .. }) => {
                    (true, model.checkout(OrderId::from_uuid(order_id)).await)
                }
                _ => (false, model.checkout(OrderId::generate()).await),
            },
        };
        prop_assert_eq!(
            stored,
            modelled,
            "the service and the model disagree on {:?}",
            op
        );
    }

    async fn same<A>(
        snapshotting: &EventStore,
        replaying: &EventStore,
        id: &str,
        model: &A,
    ) -> Result<(), TestCaseError>
    where
        A: Aggregate + PartialEq + std::fmt::Debug,
    {
        let replayed = replaying.load::<A>(id).await.expect("replay");
        let through_snapshot = snapshotting.load::<A>(id).await.expect("snapshot load");
        prop_assert_eq!(
            &replayed.aggregate,
            model,
            "full replay differs from the model"
        );
        prop_assert_eq!(
            &through_snapshot.aggregate,
            model,
            "snapshot load differs from a full replay"
        );
        prop_assert_eq!(replayed.version, through_snapshot.version);
        let repo = PgEventRepository::new(snapshotting.pool().clone());
        let cqrs = PersistedEventStore::<_, A>::new_event_store(repo)
            .with_upcasters(event_schemas::upcasters());
        let mut context = cqrs
            .load_aggregate(id)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(
            context.aggregate(),
            model,
            "cqrs-es through our repository differs"
        );
        Ok(())
    }

    same(
        &snapshotting,
        &replaying,
        &basket_id.to_string(),
        &model.basket.1,
    )
    .await?;
    for (id, product) in &model.products {
        same(&snapshotting, &replaying, &id.to_string(), product).await?;
    }
    for (id, order) in &model.orders {
        same(&snapshotting, &replaying, &id.to_string(), order).await?;
    }
    Ok(())
}

#[test]
fn random_command_sequences_replay_to_the_modelled_state() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let db = runtime.block_on(TestDb::new());
    let mut runner = TestRunner::new(Config {
        cases: 40,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..70), |ops| {
        runtime.block_on(check(&db, ops))
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let snapshots: i64 = runtime
        .block_on(sqlx::query_scalar("SELECT count(*) FROM snapshots").fetch_one(&db.pool))
        .expect("count snapshots");
    assert!(snapshots > 0, "the property never went through a snapshot");
}
