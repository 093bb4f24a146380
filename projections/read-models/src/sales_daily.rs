//! `sales_daily`: units sold and revenue per UTC day and product, net of
//! cancellations, for analysts. A cancelled order is taken off the day it
//! was placed, so a day's figures are its net sales. Its tables are created
//! by the migration `projections/read-models/migrations/20261122100002_basket_and_sales_views.sql`;
//! the query side reads it in `query-api/src/read_models.rs`.
//!
//! The row per aggregate is the order's booking in `sales_daily_orders`
//! (what a cancellation takes off again). The day rows are shared by every
//! order of the day: the fold emits additive changes to them, which
//! PostgreSQL adds up on the live path (so that concurrent batches of two
//! projectors add up, and a sum beyond `bigint` fails the statement with
//! SQLSTATE 22003, dead-lettering the event) and [`ExactSum`]s add up in a
//! rebuild (a sum beyond `bigint` then fails its COPY).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use domain::order::{OrderEvent, OrderLine};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::contract::{FoldError, ReadModel};
use crate::event::{Event, Payload};
use crate::exact_sum::ExactSum;
use crate::rows::{Json, Rows, Table};

/// The read model.
pub struct SalesDaily;

impl ReadModel for SalesDaily {
    const NAME: &'static str = "sales_daily";
    const AGGREGATE_TYPES: &'static [&'static str] = &["Order"];
    const TABLES: &'static [Table] = &[
        Table {
            name: "sales_daily",
            columns: &[
                "day",
                "product_id",
                "currency",
                "sku",
                "units",
                "revenue_minor",
                "orders",
            ],
            key: &["day", "product_id", "currency"],
            in_snapshot: true,
        },
        Table {
            name: "sales_daily_orders",
            columns: &["order_id", "day", "lines"],
            key: &["order_id"],
            in_snapshot: false,
        },
    ];
    const ROW_TABLE: usize = 1;

    type Row = Booking;
    type Delta = DayChange;
    type Totals = BTreeMap<(NaiveDate, Uuid, String), Totals>;

    fn fold(
        row: &mut Option<Booking>,
        event: &Event,
        deltas: &mut Vec<DayChange>,
    ) -> Result<(), FoldError> {
        let Payload::Order(change) = &event.payload else {
            return Ok(());
        };
        match change {
            OrderEvent::OrderPlaced { lines, .. } if row.is_none() => {
                let booking = Booking {
                    order_id: event.aggregate_uuid(),
                    day: event.time().date_naive(),
                    lines: lines.clone(),
                };
                booking.book(1, deltas)?;
                *row = Some(booking);
            }
            // Each cancellation takes the order off its day again.
            OrderEvent::OrderCancelled { .. } => {
                if let Some(booking) = row {
                    booking.book(-1, deltas)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn copy(booking: &Booking, out: &mut Rows) {
        out.row(1, &[&booking.order_id, &booking.day, &Json(&booking.lines)]);
    }

    fn total(totals: &mut Self::Totals, DayChange { row: change, .. }: DayChange) {
        let entry = totals
            .entry((change.day, change.product_id, change.currency))
            .or_default();
        entry.units.add(i128::from(change.units));
        entry.revenue_minor.add(i128::from(change.revenue_minor));
        entry.orders.add(i128::from(change.orders));
        entry.sku = change.sku;
    }

    fn copy_totals(totals: Self::Totals, out: &mut Rows) {
        for ((day, product_id, currency), totals) in totals {
            out.row(
                0,
                &[
                    &day,
                    &product_id,
                    &currency,
                    &totals.sku,
                    &totals.units,
                    &totals.revenue_minor,
                    &totals.orders,
                ],
            );
        }
    }

    async fn book(db: &mut PgConnection, changes: Vec<DayChange>) -> Result<(), sqlx::Error> {
        // One statement for the batch: its changes summed per row (a row
        // may change only once in an INSERT … ON CONFLICT), in key order,
        // the last change's SKU kept.
        let changes =
            serde_json::to_value(&changes).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
        sqlx::query(
            "INSERT INTO sales_daily (day, product_id, currency, sku, units, revenue_minor, orders) \
             SELECT day, product_id, currency, (array_agg(sku ORDER BY n DESC))[1], \
                    sum(units)::bigint, sum(revenue_minor)::bigint, sum(orders)::bigint \
             FROM jsonb_to_recordset($1) AS d(n bigint, day date, product_id uuid, currency text, \
                    sku text, units bigint, revenue_minor bigint, orders bigint) \
             GROUP BY day, product_id, currency ORDER BY day, product_id, currency \
             ON CONFLICT (day, product_id, currency) DO UPDATE SET \
               units = sales_daily.units + EXCLUDED.units, \
               revenue_minor = sales_daily.revenue_minor + EXCLUDED.revenue_minor, \
               orders = sales_daily.orders + EXCLUDED.orders, sku = EXCLUDED.sku",
        )
        .bind(changes)
        .execute(db)
        .await?;
        Ok(())
    }
}

/// An order's booking: its day and lines (a `sales_daily_orders` row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Booking {
    pub order_id: Uuid,
    pub day: NaiveDate,
    pub lines: Vec<OrderLine>,
}

impl Booking {
    /// Adds `sign` times the order's lines to their day.
    fn book(&self, sign: i64, changes: &mut Vec<DayChange>) -> Result<(), FoldError> {
        for line in &self.lines {
            let units = sign * i64::from(line.quantity);
            let revenue_minor =
                units
                    .checked_mul(line.unit_price.minor)
                    .ok_or(FoldError::OutOfRange {
                        what: "a sales line's revenue",
                    })?;
            changes.push(DayChange {
                n: changes.len(),
                row: DayRow {
                    day: self.day,
                    product_id: *line.product_id.as_uuid(),
                    currency: line.unit_price.currency.as_str().to_owned(),
                    sku: line.sku.as_str().to_owned(),
                    units,
                    revenue_minor,
                    orders: sign,
                },
            });
        }
        Ok(())
    }
}

/// A `sales_daily` row: one product's sales in one currency on one day.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DayRow {
    pub day: NaiveDate,
    pub product_id: Uuid,
    pub currency: String,
    /// The SKU of the product's latest booking.
    pub sku: String,
    pub units: i64,
    pub revenue_minor: i64,
    pub orders: i64,
}

/// A change to one day's row, added to it: its figures are the change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayChange {
    /// Its place in the batch: the last change's SKU is the row's.
    n: usize,
    #[serde(flatten)]
    pub row: DayRow,
}

/// One `sales_daily` row's figures in a rebuild, exact: one beyond
/// `bigint` fails the rebuild's COPY rather than being written wrapped.
#[derive(Debug, Default)]
pub struct Totals {
    sku: String,
    units: ExactSum,
    revenue_minor: ExactSum,
    orders: ExactSum,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::contract::{Projection, View};
    use crate::testing::{History, money, start};

    fn placed(order: &mut History, lines: &[(Uuid, i64, u32)]) -> Event {
        let lines: Vec<_> = lines
            .iter()
            .map(|(product, price, quantity)| {
                json!({"product_id": product, "sku": "SKU-1", "name": "Thing",
                       "unit_price": money(*price, "EUR"), "quantity": quantity})
            })
            .collect();
        order.next(
            "OrderPlaced",
            json!({
                "customer_id": Uuid::now_v7(), "basket_id": Uuid::now_v7(),
                "lines": lines, "total": money(0, "EUR"),
                "shipping_address": {"recipient": "Ada", "line1": "1 Main St", "city": "Paris",
                                     "postal_code": "75001", "country": "FR"},
            }),
        )
    }

    fn figures(changes: &[DayChange]) -> Vec<(i64, i64, i64)> {
        changes
            .iter()
            .map(|c| (c.row.units, c.row.revenue_minor, c.row.orders))
            .collect()
    }

    #[test]
    fn an_order_is_booked_on_its_day_and_each_cancellation_takes_it_off() {
        let (mut order, a, b) = (History::new("Order"), Uuid::now_v7(), Uuid::now_v7());
        let (mut row, mut changes) = (None, Vec::new());
        let place = placed(&mut order, &[(a, 250, 2), (b, 100, 1)]);
        SalesDaily::fold(&mut row, &place, &mut changes).expect("folds");
        assert_eq!(figures(&changes), [(2, 500, 1), (1, 100, 1)]);
        let booking = row.clone().expect("booked");
        assert_eq!(booking.day, start().date_naive());

        changes.clear();
        let paid = order.next(
            "OrderPaid",
            json!({"payment_reference": "P", "amount": money(600, "EUR")}),
        );
        SalesDaily::fold(&mut row, &paid, &mut changes).expect("folds");
        assert!(changes.is_empty(), "payment changes no figure");
        let cancel = order.next("OrderCancelled", json!({"reason": "r"}));
        SalesDaily::fold(&mut row, &cancel, &mut changes).expect("folds");
        assert_eq!(figures(&changes), [(-2, -500, -1), (-1, -100, -1)]);
        assert_ne!(cancel.time().date_naive(), booking.day);
        assert!(
            changes.iter().all(|c| c.row.day == booking.day),
            "taken off the day it was placed"
        );
        assert_eq!(row, Some(booking), "the booking stays");
    }

    #[test]
    fn a_line_revenue_beyond_a_bigint_is_an_error() {
        let mut order = History::new("Order");
        let place = placed(&mut order, &[(Uuid::now_v7(), i64::MAX / 2, 3)]);
        let error = SalesDaily::fold(&mut None, &place, &mut Vec::new()).expect_err("overflow");
        assert!(error.to_string().contains("out of range"), "{error}");
    }

    #[test]
    fn a_rebuild_adds_the_days_up_across_orders_exactly() {
        let product = Uuid::now_v7();
        let view = View::<SalesDaily>::new();
        let mut fold = view.fold();
        let mut rows = Rows::new(2);
        for cancel in [false, true, false] {
            let mut order = History::new("Order");
            fold.apply(&placed(&mut order, &[(product, 1 << 62, 1)]))
                .expect("folds");
            if cancel {
                fold.apply(&order.next("OrderCancelled", json!({"reason": "r"})))
                    .expect("folds");
            }
            fold.end_aggregate(&mut rows);
        }
        fold.end(&mut rows);
        let (days, count) = rows.take(0);
        assert_eq!(count, 1);
        let day = String::from_utf8(days).expect("text");
        assert!(
            day.ends_with("\tSKU-1\t2\t9223372036854775808\t2\n"),
            "two orders net, their revenue exact beyond a bigint (COPY refuses it): {day}"
        );
        assert_eq!(rows.take(1).1, 3, "every order's booking");
    }
}
