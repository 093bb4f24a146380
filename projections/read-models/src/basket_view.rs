//! `basket_view`: one row per basket with its lines, line totals and
//! total. Its table is created by the migration
//! `projections/read-models/migrations/20261122100002_basket_and_sales_views.sql`; the query side
//! reads it in `query-api/src/read_models.rs`.

use chrono::{DateTime, Utc};
use domain::basket::{BasketEvent, BasketStatus, LineItem, edit_lines};
use domain::ids::ProductId;
use domain::money::Money;
use domain::text::{ProductName, Sku};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::contract::{FoldError, NoTotals, ReadModel};
use crate::event::{Event, Payload};
use crate::rows::{Json, Rows, Table};

/// The read model.
pub struct BasketView;

impl ReadModel for BasketView {
    const NAME: &'static str = "basket_view";
    const AGGREGATE_TYPES: &'static [&'static str] = &["Basket"];
    const TABLES: &'static [Table] = &[Table {
        name: "basket_view",
        columns: &[
            "basket_id",
            "customer_id",
            "status",
            "currency",
            "lines",
            "total_minor",
            "item_count",
            "order_id",
            "opened_at",
            "updated_at",
            "version",
        ],
        key: &["basket_id"],
        in_snapshot: true,
    }];

    type Row = BasketRow;
    type Delta = NoTotals;
    type Totals = ();

    fn fold(
        row: &mut Option<BasketRow>,
        event: &Event,
        _: &mut Vec<NoTotals>,
    ) -> Result<(), FoldError> {
        BasketRow::apply(row, event)
    }

    fn copy(b: &BasketRow, out: &mut Rows) {
        out.row(
            0,
            &[
                &b.basket_id,
                &b.customer_id,
                &b.status.as_str(),
                &b.currency,
                &Json(&b.lines),
                &b.total_minor,
                &b.item_count,
                &b.order_id,
                &b.opened_at,
                &b.updated_at,
                &b.version,
            ],
        );
    }
}

/// A line as the view stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub unit_price_minor: i64,
    pub quantity: i64,
    pub line_total_minor: i64,
}

impl LineItem for Line {
    fn added(
        product_id: &ProductId,
        sku: &Sku,
        name: &ProductName,
        unit_price: &Money,
        quantity: u32,
    ) -> Self {
        Self {
            product_id: *product_id.as_uuid(),
            sku: sku.to_string(),
            name: name.to_string(),
            unit_price_minor: unit_price.minor,
            quantity: i64::from(quantity),
            // Set with the basket's total, by `priced`.
            line_total_minor: 0,
        }
    }

    fn is_for(&self, product_id: &ProductId) -> bool {
        self.product_id == *product_id.as_uuid()
    }

    fn set_quantity(&mut self, quantity: u32) {
        self.quantity = i64::from(quantity);
    }
}

/// A `basket_view` row: what the projector and a rebuild write, and what
/// the GraphQL API reads. A stored row that does not decode into it is an
/// error, never a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct BasketRow {
    pub basket_id: Uuid,
    pub customer_id: Uuid,
    #[sqlx(try_from = "String")]
    pub status: BasketStatus,
    pub currency: Option<String>,
    #[sqlx(json)]
    pub lines: Vec<Line>,
    pub total_minor: i64,
    pub item_count: i64,
    pub order_id: Option<Uuid>,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl BasketRow {
    /// Applies one event of the basket to its row (none before it was
    /// opened), pricing its lines again. Figures are checked: a line total,
    /// total or item count beyond a `bigint` is an error, never stored
    /// wrapped or saturated. The domain bounds prices, quantities and lines
    /// so that a basket total stays below 4.95 × 10^15 minor units; only
    /// events stored before those bounds can get there.
    pub fn apply(row: &mut Option<Self>, event: &Event) -> Result<(), FoldError> {
        let Payload::Basket(change) = &event.payload else {
            return Ok(());
        };
        let (version, at) = (event.envelope.aggregatesequence, event.time());
        if let BasketEvent::BasketOpened { customer_id } = change {
            if row.is_none() {
                *row = Some(Self {
                    basket_id: event.aggregate_uuid(),
                    customer_id: *customer_id.as_uuid(),
                    status: BasketStatus::Open,
                    currency: None,
                    lines: Vec::new(),
                    total_minor: 0,
                    item_count: 0,
                    order_id: None,
                    opened_at: at,
                    updated_at: at,
                    version,
                });
            }
            return Ok(());
        }
        let Some(basket) = row else {
            return Ok(());
        };
        let (status, order_id) = edit(&mut basket.lines, &mut basket.currency, change);
        let (total, items) = priced(&mut basket.lines)?;
        basket.total_minor = total;
        basket.item_count = items;
        basket.status = status;
        basket.order_id = order_id.or(basket.order_id);
        basket.version = version;
        basket.updated_at = at;
        Ok(())
    }
}

/// What a change other than opening does to the lines and currency; the
/// basket's status and order after it.
fn edit(
    lines: &mut Vec<Line>,
    currency: &mut Option<String>,
    change: &BasketEvent,
) -> (BasketStatus, Option<uuid::Uuid>) {
    let mut status = BasketStatus::Open;
    let mut order_id = None;
    if let BasketEvent::ItemAdded { unit_price, .. } = change {
        currency.get_or_insert_with(|| unit_price.currency.to_string());
    }
    if let BasketEvent::BasketCheckedOut { order_id: placed } = change {
        status = BasketStatus::CheckedOut;
        order_id = Some(*placed.as_uuid());
    }
    edit_lines(lines, change);
    if lines.is_empty() && status == BasketStatus::Open {
        *currency = None;
    }
    (status, order_id)
}

/// Sets each line's total; returns the basket's total and item count.
fn priced(lines: &mut [Line]) -> Result<(i64, i64), FoldError> {
    let (mut total, mut items) = (0_i64, 0_i64);
    for line in lines {
        line.line_total_minor =
            line.unit_price_minor
                .checked_mul(line.quantity)
                .ok_or(FoldError::OutOfRange {
                    what: "a basket line's total",
                })?;
        total = total
            .checked_add(line.line_total_minor)
            .ok_or(FoldError::OutOfRange {
                what: "a basket's total",
            })?;
        items = items
            .checked_add(line.quantity)
            .ok_or(FoldError::OutOfRange {
                what: "a basket's item count",
            })?;
    }
    Ok((total, items))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{History, money};

    fn fold(events: &[Event]) -> Result<Option<BasketRow>, FoldError> {
        let mut row = None;
        for event in events {
            BasketRow::apply(&mut row, event)?;
        }
        Ok(row)
    }

    fn added(basket: &mut History, product: Uuid, price: i64, quantity: u32) -> Event {
        basket.next(
            "ItemAdded",
            json!({"product_id": product, "sku": "SKU-1", "name": "Thing",
                   "unit_price": money(price, "EUR"), "quantity": quantity}),
        )
    }

    #[test]
    fn lines_are_priced_and_totalled_after_every_change() {
        let (mut basket, a, b) = (History::new("Basket"), Uuid::now_v7(), Uuid::now_v7());
        let mut events = vec![
            basket.next("BasketOpened", json!({"customer_id": Uuid::now_v7()})),
            added(&mut basket, a, 250, 2),
            added(&mut basket, b, 100, 1),
            basket.next(
                "ItemQuantityChanged",
                json!({"product_id": a, "quantity": 3}),
            ),
        ];
        let row = fold(&events).expect("folds").expect("a row");
        let totals: Vec<(i64, i64)> = row
            .lines
            .iter()
            .map(|l| (l.quantity, l.line_total_minor))
            .collect();
        assert_eq!(totals, [(3, 750), (1, 100)]);
        assert_eq!((row.total_minor, row.item_count), (850, 4));
        assert_eq!(row.currency.as_deref(), Some("EUR"));
        assert_eq!((row.status, row.version), (BasketStatus::Open, 4));

        events.push(basket.next("ItemRemoved", json!({"product_id": a})));
        events.push(basket.next("ItemRemoved", json!({"product_id": b})));
        let row = fold(&events).expect("folds").expect("a row");
        assert!(row.lines.is_empty());
        assert_eq!((row.total_minor, row.item_count), (0, 0));
        assert_eq!(row.currency, None, "an empty open basket has no currency");
    }

    #[test]
    fn a_checked_out_basket_names_its_order_and_keeps_its_lines() {
        let (mut basket, order) = (History::new("Basket"), Uuid::now_v7());
        let events = [
            basket.next("BasketOpened", json!({"customer_id": Uuid::now_v7()})),
            added(&mut basket, Uuid::now_v7(), 500, 1),
            basket.next("BasketCheckedOut", json!({"order_id": order})),
        ];
        let row = fold(&events).expect("folds").expect("a row");
        assert_eq!(row.status, BasketStatus::CheckedOut);
        assert_eq!(row.order_id, Some(order));
        assert_eq!(row.total_minor, 500);
    }

    #[test]
    fn clearing_empties_the_basket() {
        let mut basket = History::new("Basket");
        let events = [
            basket.next("BasketOpened", json!({"customer_id": Uuid::now_v7()})),
            added(&mut basket, Uuid::now_v7(), 500, 2),
            basket.next("BasketCleared", json!({})),
        ];
        let row = fold(&events).expect("folds").expect("a row");
        assert!(row.lines.is_empty());
        assert_eq!(
            (row.total_minor, row.item_count, row.currency),
            (0, 0, None)
        );
    }

    #[test]
    fn a_line_total_beyond_a_bigint_is_an_error_not_a_wrapped_figure() {
        let mut basket = History::new("Basket");
        let events = [
            basket.next("BasketOpened", json!({"customer_id": Uuid::now_v7()})),
            added(&mut basket, Uuid::now_v7(), i64::MAX / 2, 3),
        ];
        let error = fold(&events).expect_err("out of range");
        assert!(error.to_string().contains("out of range"), "{error}");
    }

    #[test]
    fn a_basket_total_beyond_a_bigint_is_an_error() {
        let mut basket = History::new("Basket");
        let events = [
            basket.next("BasketOpened", json!({"customer_id": Uuid::now_v7()})),
            added(&mut basket, Uuid::now_v7(), i64::MAX / 2, 1),
            added(&mut basket, Uuid::now_v7(), i64::MAX / 2, 1),
            added(&mut basket, Uuid::now_v7(), i64::MAX / 2, 1),
        ];
        assert!(matches!(
            fold(&events),
            Err(FoldError::OutOfRange {
                what: "a basket's total"
            })
        ));
    }

    #[test]
    fn nothing_before_the_basket_is_opened() {
        let mut basket = History::new("Basket");
        let early = added(&mut basket, Uuid::now_v7(), 500, 2);
        assert_eq!(fold(&[early]).expect("folds"), None);
    }
}
