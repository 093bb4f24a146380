//! `product_catalog`: one row per product with price, stock and status.
//! Its table is created by the migration
//! `projections/read-models/migrations/20261122100001_views.sql`; the query side reads it in
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
/// generates): what the projector and a rebuild write, and what the
/// GraphQL API reads. A stored row that does not decode into it is an
/// error, never a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ProductRow {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_minor: i64,
    pub currency: String,
    pub on_hand: i64,
    pub reserved: i64,
    #[sqlx(try_from = "String")]
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;
    use crate::contract::fold_batch;
    use crate::testing::{History, money};

    fn registered(product: &mut History, stock: u32) -> Event {
        product.next(
            "ProductRegistered",
            json!({"sku": "MUG-1", "name": "Mug", "description": "A mug",
                   "price": money(1250, "EUR"), "initial_stock": stock}),
        )
    }

    fn fold(events: &[Event]) -> Option<ProductRow> {
        let mut row = None;
        for event in events {
            ProductRow::apply(&mut row, event).expect("folds");
        }
        row
    }

    #[test]
    fn reservations_releases_and_shipments_move_stock() {
        let (mut product, order) = (History::new("Product"), Uuid::now_v7());
        let reserve = |p: &mut History, kind: &str, quantity: u32| {
            p.next(kind, json!({"order_id": order, "quantity": quantity}))
        };
        let events = [
            registered(&mut product, 10),
            reserve(&mut product, "StockReserved", 3),
            reserve(&mut product, "StockReserved", 2),
            reserve(&mut product, "StockReleased", 2),
            reserve(&mut product, "ReservedStockShipped", 3),
        ];
        let row = fold(&events).expect("a row");
        assert_eq!((row.on_hand, row.reserved), (7, 0));
        assert_eq!((row.version, row.updated_at), (5, events[4].time()));
        let reserved = fold(&events[..3]).expect("a row");
        assert_eq!((reserved.on_hand, reserved.reserved), (10, 5));
    }

    #[test]
    fn price_stock_count_and_discontinuation_are_kept() {
        let mut product = History::new("Product");
        let events = [
            registered(&mut product, 10),
            product.next(
                "PriceChanged",
                json!({"old_price": money(1250, "EUR"), "new_price": money(990, "USD")}),
            ),
            product.next(
                "StockAdjusted",
                json!({"delta": -4, "reason": "breakage", "on_hand": 6}),
            ),
            product.next("ProductDiscontinued", json!({})),
        ];
        let row = fold(&events).expect("a row");
        assert_eq!((row.price_minor, row.currency.as_str()), (990, "USD"));
        assert_eq!(row.on_hand, 6);
        assert_eq!(row.status, ProductStatus::Discontinued);
        assert_eq!(
            fold(&events[..1]).expect("a row").status,
            ProductStatus::Active
        );
    }

    #[test]
    fn a_reservation_beyond_a_bigint_on_a_stored_row_is_an_error() {
        let mut product = History::new("Product");
        let stored = fold(&[registered(&mut product, 1)]).expect("a row");
        let stored = ProductRow {
            reserved: i64::MAX,
            ..stored
        };
        let reserve = product.next(
            "StockReserved",
            json!({"order_id": Uuid::now_v7(), "quantity": 1}),
        );
        let rows = HashMap::from([(product.id, stored)]);
        assert!(matches!(
            fold_batch::<ProductCatalog>(rows, &[&reserve]),
            Err(FoldError::OutOfRange {
                what: "reserved stock"
            })
        ));
    }
}
