use async_trait::async_trait;
use domain::product::ProductEvent;
use sqlx::PgConnection;

use crate::event::{Event, Payload};
use crate::projector::Projection;

/// `product_catalog`: one row per product with price, stock and status.
pub struct ProductCatalog;

#[async_trait]
impl Projection for ProductCatalog {
    fn name(&self) -> &'static str {
        "product_catalog"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Product"]
    }

    async fn apply(&self, db: &mut PgConnection, event: &Event) -> Result<(), sqlx::Error> {
        let Payload::Product(change) = &event.payload else {
            return Ok(());
        };
        let (id, version, at) = (
            event.aggregate_uuid(),
            event.envelope.aggregatesequence,
            event.envelope.time,
        );
        // Every change after registration: the product's row, its version
        // and time, then the change's own values from $4.
        macro_rules! update {
            ($set:literal) => {
                sqlx::query(concat!(
                    "UPDATE product_catalog SET ",
                    $set,
                    ", version = $2, updated_at = $3 WHERE product_id = $1"
                ))
                .bind(id)
                .bind(version)
                .bind(at)
            };
        }
        match change {
            ProductEvent::ProductRegistered {
                sku,
                name,
                description,
                price,
                initial_stock,
            } => {
                sqlx::query(
                    "INSERT INTO product_catalog (product_id, sku, name, description, price_minor, currency, \
                       on_hand, reserved, status, version, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 'active', $8, $9)",
                )
                .bind(id)
                .bind(sku.as_str())
                .bind(name.as_str())
                .bind(description.as_str())
                .bind(price.minor)
                .bind(price.currency.as_str())
                .bind(i64::from(*initial_stock))
                .bind(version)
                .bind(at)
                .execute(db)
                .await?;
            }
            ProductEvent::PriceChanged { new_price, .. } => {
                update!("price_minor = $4, currency = $5")
                    .bind(new_price.minor)
                    .bind(new_price.currency.as_str())
                    .execute(db)
                    .await?;
            }
            ProductEvent::StockAdjusted { on_hand, .. } => {
                update!("on_hand = $4")
                    .bind(i64::from(*on_hand))
                    .execute(db)
                    .await?;
            }
            ProductEvent::ProductDiscontinued {} => {
                update!("status = 'discontinued'").execute(db).await?;
            }
            ProductEvent::StockReserved { quantity, .. } => {
                update!("reserved = reserved + $4")
                    .bind(i64::from(*quantity))
                    .execute(db)
                    .await?;
            }
            ProductEvent::StockReleased { quantity, .. } => {
                update!("reserved = reserved - $4")
                    .bind(i64::from(*quantity))
                    .execute(db)
                    .await?;
            }
            ProductEvent::ReservedStockShipped { quantity, .. } => {
                update!("reserved = reserved - $4, on_hand = on_hand - $4")
                    .bind(i64::from(*quantity))
                    .execute(db)
                    .await?;
            }
        }
        Ok(())
    }
}
