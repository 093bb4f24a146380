//! Commands that span aggregates: checkout, and the order transitions that
//! move reserved stock.
//!
//! Checkout reads the basket, every product in it and a new order, lets
//! each aggregate decide (the basket closes, each product reserves its
//! quantity, the order is placed with the prices of that moment) and
//! commits all of their events in ONE PostgreSQL transaction, each
//! aggregate appended at the version it was read at.
//!
//! So there is no moment at which some lines are reserved and the order is
//! not placed: if any product lacks stock, nothing is appended at all (no
//! order, no reservation, the basket stays open). If two checkouts race for
//! the last unit, both decide against the same product version; the first
//! commit wins and the second fails on the product's version, is retried
//! from scratch, and then sees no stock. If the commit fails for any other
//! reason, PostgreSQL rolls back the reservations with the rest, which is
//! the "release" of a failed placement.

use std::sync::Arc;

use domain::basket::{Basket, BasketCommand};
use domain::order::{Order, OrderCommand, OrderLine, ShippingAddress};
use domain::product::{Product, ProductCommand};
use domain::{BasketId, ErrorKind, OrderId};
use event_store::UnitOfWork;

use super::{CommandContext, CommandError, CommandService, Outcome, Plan, Resource, decide, token};

impl CommandService {
    /// Checks a basket out into a new order, reserving stock for every line.
    pub async fn checkout(
        &self,
        ctx: &CommandContext,
        basket_id: BasketId,
        shipping_address: ShippingAddress,
    ) -> Result<Outcome, CommandError> {
        let order_id = OrderId::generate();
        let basket_key = basket_id.to_string();
        let order_key = order_id.to_string();
        self.run(ctx, Resource::Basket, || async {
            let mut basket = self.store.load::<Basket>(&basket_key).await?;
            Self::check_version(ctx, &basket)?;
            let mut items = basket.aggregate.lines().to_vec();
            let customer_id = basket.aggregate.customer_id();
            let basket_events = decide(&mut basket, BasketCommand::CheckOut { order_id }).await?;
            let customer_id = customer_id.ok_or(CommandError::Rejected {
                kind: ErrorKind::NotFound,
                code: "basket-not-found",
                message: "basket does not exist".into(),
            })?;

            let mut uow = UnitOfWork::new();
            uow.append(&basket_key, &basket, basket_events, |event| {
                ctx.metadata_for(event)
            })?;

            // A fixed order of products keeps the outcome of a checkout
            // independent of the order lines were added in.
            items.sort_by_key(|item| item.product_id);
            let mut lines = Vec::with_capacity(items.len());
            for item in &items {
                let product_key = item.product_id.to_string();
                let mut product = self.store.load::<Product>(&product_key).await?;
                let reserve = ProductCommand::Reserve {
                    order_id,
                    quantity: item.quantity,
                };
                let events = decide(&mut product, reserve).await.map_err(|error| {
                    CommandError::from(error).about(format!("product {}", item.product_id))
                })?;
                let details = product.aggregate.details().ok_or(CommandError::Rejected {
                    kind: ErrorKind::Validation,
                    code: "unknown-product",
                    message: format!("product {} does not exist", item.product_id),
                })?;
                lines.push(OrderLine {
                    product_id: item.product_id,
                    sku: details.sku.clone(),
                    name: details.name.clone(),
                    unit_price: details.price,
                    quantity: item.quantity,
                });
                uow.append(&product_key, &product, events, |event| {
                    ctx.metadata_for(event)
                })?;
            }

            let mut order = self.store.load::<Order>(&order_key).await?;
            let place = OrderCommand::Place {
                customer_id,
                basket_id,
                lines,
                shipping_address: shipping_address.clone(),
            };
            let order_events = decide(&mut order, place).await?;
            let order_version = order.version + order_events.len();
            let basket_version = basket.version + 1;
            uow.append(&order_key, &order, order_events, |event| {
                ctx.metadata_for(event)
            })?;

            Ok(Plan {
                uow,
                outcome: Arc::new(move |commit| Outcome::CheckedOut {
                    order_id: *order_id.as_uuid(),
                    order_version,
                    basket_id: *basket_id.as_uuid(),
                    basket_version,
                    consistency_token: token(commit.last_global_position),
                }),
            })
        })
        .await
    }

    /// An order transition that also changes every reserved product: the
    /// order's event and the products' events commit together.
    pub(crate) async fn order_with_stock(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        command: OrderCommand,
        stock: fn(OrderId) -> ProductCommand,
    ) -> Result<Outcome, CommandError> {
        let order_key = order_id.to_string();
        self.run(ctx, Resource::Order, || async {
            let mut order = self.store.load::<Order>(&order_key).await?;
            Self::check_version(ctx, &order)?;
            let events = decide(&mut order, command.clone()).await?;
            let version = order.version + events.len();
            let mut uow = UnitOfWork::new();
            uow.append(&order_key, &order, events, |event| ctx.metadata_for(event))?;
            let mut product_ids: Vec<_> = order
                .aggregate
                .lines()
                .iter()
                .map(|line| line.product_id)
                .collect();
            product_ids.sort();
            for product_id in product_ids {
                let product_key = product_id.to_string();
                let mut product = self.store.load::<Product>(&product_key).await?;
                let events = decide(&mut product, stock(order_id))
                    .await
                    .map_err(|error| {
                        CommandError::from(error).about(format!("product {product_id}"))
                    })?;
                uow.append(&product_key, &product, events, |event| {
                    ctx.metadata_for(event)
                })?;
            }
            Ok(Plan {
                uow,
                outcome: Arc::new(move |commit| Outcome::Accepted {
                    resource: Resource::Order,
                    id: *order_id.as_uuid(),
                    version,
                    consistency_token: token(commit.last_global_position),
                    created: false,
                }),
            })
        })
        .await
    }
}
