//! Catalog commands.

use domain::product::{Product, ProductCommand};
use domain::text::{Description, ProductName, ShortText, Sku};
use domain::{Money, ProductId};
use event_store::UnitOfWork;
use std::sync::Arc;

use super::{CommandContext, CommandError, CommandService, Outcome, Plan, Resource, decide, token};

/// A new product for the catalog.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub sku: Sku,
    pub name: ProductName,
    pub description: Description,
    pub price: Money,
    pub initial_stock: u32,
}

impl CommandService {
    /// Registers a product under a new id, claiming its SKU in the same
    /// transaction.
    pub async fn register_product(
        &self,
        ctx: &CommandContext,
        product: NewProduct,
    ) -> Result<Outcome, CommandError> {
        let id = ProductId::generate();
        let aggregate_id = id.to_string();
        self.run(ctx, Resource::Product, || async {
            let mut loaded = self.store.load::<Product>(&aggregate_id).await?;
            let command = ProductCommand::Register {
                sku: product.sku.clone(),
                name: product.name.clone(),
                description: product.description.clone(),
                price: product.price,
                initial_stock: product.initial_stock,
            };
            let events = decide(&mut loaded, command).await?;
            let version = loaded.version + events.len();
            let mut uow = UnitOfWork::new();
            uow.claim_unique("sku", product.sku.as_str(), &aggregate_id);
            uow.append(&aggregate_id, &loaded, events, |event| {
                ctx.metadata_for(event)
            })?;
            Ok(Plan {
                uow,
                outcome: Arc::new(move |commit| Outcome::Accepted {
                    resource: Resource::Product,
                    id: *id.as_uuid(),
                    version,
                    consistency_token: token(commit.last_global_position),
                    created: true,
                }),
            })
        })
        .await
    }

    pub async fn change_price(
        &self,
        ctx: &CommandContext,
        id: ProductId,
        price: Money,
    ) -> Result<Outcome, CommandError> {
        self.single::<Product>(
            ctx,
            Resource::Product,
            *id.as_uuid(),
            ProductCommand::ChangePrice { price },
        )
        .await
    }

    pub async fn adjust_stock(
        &self,
        ctx: &CommandContext,
        id: ProductId,
        delta: i64,
        reason: ShortText,
    ) -> Result<Outcome, CommandError> {
        self.single::<Product>(
            ctx,
            Resource::Product,
            *id.as_uuid(),
            ProductCommand::AdjustStock { delta, reason },
        )
        .await
    }

    pub async fn discontinue(
        &self,
        ctx: &CommandContext,
        id: ProductId,
    ) -> Result<Outcome, CommandError> {
        self.single::<Product>(
            ctx,
            Resource::Product,
            *id.as_uuid(),
            ProductCommand::Discontinue,
        )
        .await
    }
}
