//! Basket commands.

use domain::ErrorKind;
use domain::basket::{Basket, BasketCommand, ProductOffer};
use domain::product::{Product, ProductStatus};
use domain::{BasketId, CustomerId, ProductId};

use super::{CommandContext, CommandError, CommandService, Outcome, Resource, decide};

impl CommandService {
    pub async fn open_basket(
        &self,
        ctx: &CommandContext,
        customer_id: CustomerId,
    ) -> Result<Outcome, CommandError> {
        let id = BasketId::generate();
        self.single::<Basket>(
            ctx,
            Resource::Basket,
            *id.as_uuid(),
            BasketCommand::Open { customer_id },
        )
        .await
    }

    /// Adds a product to a basket, with the catalog's current name and
    /// price.
    pub async fn add_item(
        &self,
        ctx: &CommandContext,
        basket_id: BasketId,
        product_id: ProductId,
        quantity: u32,
    ) -> Result<Outcome, CommandError> {
        let aggregate_id = basket_id.to_string();
        self.run(ctx, Resource::Basket, || async {
            let (product, mut basket) = self
                .store
                .load_both::<Product, Basket>(&product_id.to_string(), &aggregate_id)
                .await?;
            let details = product
                .aggregate
                .details()
                .ok_or_else(|| CommandError::Rejected {
                    kind: ErrorKind::Validation,
                    code: "unknown-product",
                    message: format!("product {product_id} does not exist"),
                })?;
            let offer = ProductOffer {
                product_id,
                sku: details.sku.clone(),
                name: details.name.clone(),
                unit_price: details.price,
                discontinued: product.aggregate.status() == ProductStatus::Discontinued,
            };
            Self::check_version(ctx, &basket)?;
            let events = decide(
                &mut basket,
                BasketCommand::AddItem {
                    product: offer,
                    quantity,
                },
            )
            .await?;
            self.plan_single(
                ctx,
                Resource::Basket,
                *basket_id.as_uuid(),
                false,
                &basket,
                events,
            )
            .await
        })
        .await
    }

    pub async fn change_quantity(
        &self,
        ctx: &CommandContext,
        basket_id: BasketId,
        product_id: ProductId,
        quantity: u32,
    ) -> Result<Outcome, CommandError> {
        let command = BasketCommand::ChangeQuantity {
            product_id,
            quantity,
        };
        self.single::<Basket>(ctx, Resource::Basket, *basket_id.as_uuid(), command)
            .await
    }

    pub async fn remove_item(
        &self,
        ctx: &CommandContext,
        basket_id: BasketId,
        product_id: ProductId,
    ) -> Result<Outcome, CommandError> {
        let command = BasketCommand::RemoveItem { product_id };
        self.single::<Basket>(ctx, Resource::Basket, *basket_id.as_uuid(), command)
            .await
    }

    pub async fn clear_basket(
        &self,
        ctx: &CommandContext,
        basket_id: BasketId,
    ) -> Result<Outcome, CommandError> {
        self.single::<Basket>(
            ctx,
            Resource::Basket,
            *basket_id.as_uuid(),
            BasketCommand::Clear,
        )
        .await
    }
}
