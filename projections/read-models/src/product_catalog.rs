//! `product_catalog`: one row per product with price, stock and status.
//! Its table is created by the migration
//! `migrations/20261122100001_views.sql`; the query side reads it in
//! `query-api/src/read_models.rs`.

use chrono::{DateTime, Utc};
use domain::product::{ProductEvent, ProductStatus};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::contract::{FoldError, NoTotals, ReadModel};
use crate::event::{Event, Payload};
use crate::rows::{Rows, Table};

/// The read model.
pub struct ProductCatalog;

impl ReadModel for ProductCatalog {
    const NAME: &'static str = "product_catalog";
    const AGGREGATE_TYPES: &'static [&'static str] = &["Product"];
    const TABLES: &'static [Table] = &[Table {
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

    type Row = ProductRow;
    type Delta = NoTotals;
    type Totals = ();

    fn fold(
        row: &mut Option<ProductRow>,
        event: &Event,
        _: &mut Vec<NoTotals>,
    ) -> Result<(), FoldError> {
        ProductRow::apply(row, event)
    }

    fn copy(p: &ProductRow, out: &mut Rows) {
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
                &p.status.as_str(),
                &p.version,
                &p.updated_at,
            ],
        );
    }
}

/// A `product_catalog` row (without `available`, which PostgreSQL
/// generates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductRow {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_minor: i64,
    pub currency: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub status: ProductStatus,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

impl ProductRow {
    /// Applies one event of the product to its row (none before it was
    /// registered). Stock figures are checked: one beyond a `bigint` is an
    /// error, never a wrapped figure.
    pub fn apply(row: &mut Option<Self>, event: &Event) -> Result<(), FoldError> {
        let Payload::Product(change) = &event.payload else {
            return Ok(());
        };
        let (version, at) = (event.envelope.aggregatesequence, event.time());
        if let ProductEvent::ProductRegistered {
            sku,
            name,
            description,
            price,
            initial_stock,
        } = change
        {
            if row.is_none() {
                *row = Some(Self {
                    product_id: event.aggregate_uuid(),
                    sku: sku.as_str().to_owned(),
                    name: name.as_str().to_owned(),
                    description: description.as_str().to_owned(),
                    price_minor: price.minor,
                    currency: price.currency.as_str().to_owned(),
                    on_hand: i64::from(*initial_stock),
                    reserved: 0,
                    status: ProductStatus::Active,
                    version,
                    updated_at: at,
                });
            }
            return Ok(());
        }
        let Some(product) = row else {
            return Ok(());
        };
        let checked = |figure: Option<i64>, what| figure.ok_or(FoldError::OutOfRange { what });
        match change {
            ProductEvent::ProductRegistered { .. } => return Ok(()),
            ProductEvent::PriceChanged { new_price, .. } => {
                product.price_minor = new_price.minor;
                new_price
                    .currency
                    .as_str()
                    .clone_into(&mut product.currency);
            }
            ProductEvent::StockAdjusted { on_hand, .. } => product.on_hand = i64::from(*on_hand),
            ProductEvent::ProductDiscontinued {} => product.status = ProductStatus::Discontinued,
            ProductEvent::StockReserved { quantity, .. } => {
                product.reserved = checked(
                    product.reserved.checked_add(i64::from(*quantity)),
                    "reserved stock",
                )?;
            }
            ProductEvent::StockReleased { quantity, .. } => {
                product.reserved = checked(
                    product.reserved.checked_sub(i64::from(*quantity)),
                    "reserved stock",
                )?;
            }
            ProductEvent::ReservedStockShipped { quantity, .. } => {
                product.reserved = checked(
                    product.reserved.checked_sub(i64::from(*quantity)),
                    "reserved stock",
                )?;
                product.on_hand = checked(
                    product.on_hand.checked_sub(i64::from(*quantity)),
                    "stock on hand",
                )?;
            }
        }
        product.version = version;
        product.updated_at = at;
        Ok(())
    }
}
