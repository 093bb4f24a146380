use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::product::ProductEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::event::{Event, Payload};
use crate::projector::Projection;
use crate::replay::{Fold, Rows, Table};

const TABLES: &[Table] = &[Table {
    name: "product_catalog",
    // `available` is generated from on_hand and reserved.
    columns: &[
        "product_id",
        "sku",
        "name",
        "description",
        "price_minor",
        "currency",
        "on_hand",
        "reserved",
        "status",
        "version",
        "updated_at",
    ],
    key: &["product_id"],
    in_snapshot: true,
}];

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

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    fn fold(&self) -> Box<dyn Fold> {
        Box::<ProductFold>::default()
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

/// A `product_catalog` row.
struct ProductRow {
    product_id: Uuid,
    sku: String,
    name: String,
    description: String,
    price_minor: i64,
    currency: String,
    on_hand: i64,
    reserved: i64,
    status: &'static str,
    version: i64,
    updated_at: DateTime<Utc>,
}

#[derive(Default)]
struct ProductFold {
    product: Option<ProductRow>,
}

impl Fold for ProductFold {
    fn apply(&mut self, event: &Event) {
        let Payload::Product(change) = &event.payload else {
            return;
        };
        let (version, at) = (event.envelope.aggregatesequence, event.envelope.time);
        if let ProductEvent::ProductRegistered {
            sku,
            name,
            description,
            price,
            initial_stock,
        } = change
        {
            if self.product.is_none() {
                self.product = Some(ProductRow {
                    product_id: event.aggregate_uuid(),
                    sku: sku.as_str().to_owned(),
                    name: name.as_str().to_owned(),
                    description: description.as_str().to_owned(),
                    price_minor: price.minor,
                    currency: price.currency.as_str().to_owned(),
                    on_hand: i64::from(*initial_stock),
                    reserved: 0,
                    status: "active",
                    version,
                    updated_at: at,
                });
            }
            return;
        }
        let Some(product) = &mut self.product else {
            return;
        };
        match change {
            ProductEvent::ProductRegistered { .. } => return,
            ProductEvent::PriceChanged { new_price, .. } => {
                product.price_minor = new_price.minor;
                new_price
                    .currency
                    .as_str()
                    .clone_into(&mut product.currency);
            }
            ProductEvent::StockAdjusted { on_hand, .. } => product.on_hand = i64::from(*on_hand),
            ProductEvent::ProductDiscontinued {} => product.status = "discontinued",
            ProductEvent::StockReserved { quantity, .. } => {
                product.reserved += i64::from(*quantity);
            }
            ProductEvent::StockReleased { quantity, .. } => {
                product.reserved -= i64::from(*quantity);
            }
            ProductEvent::ReservedStockShipped { quantity, .. } => {
                product.reserved -= i64::from(*quantity);
                product.on_hand -= i64::from(*quantity);
            }
        }
        product.version = version;
        product.updated_at = at;
    }

    fn end_aggregate(&mut self, out: &mut Rows) {
        if let Some(p) = self.product.take() {
            out.row(
                0,
                &[
                    &p.product_id,
                    &p.sku,
                    &p.name,
                    &p.description,
                    &p.price_minor,
                    &p.currency,
                    &p.on_hand,
                    &p.reserved,
                    &p.status,
                    &p.version,
                    &p.updated_at,
                ],
            );
        }
    }
}
