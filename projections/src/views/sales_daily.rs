use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::NaiveDate;
use domain::order::{OrderEvent, OrderLine};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::exact_sum::ExactSum;
use crate::event::{Event, Payload};
use crate::projector::Projection;
use crate::replay::{Fold, Rows, Table};

const TABLES: &[Table] = &[
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

/// `sales_daily`: units sold and revenue per UTC day and product, net of
/// cancellations, for analysts. A cancelled order is taken off the day it
/// was placed, so a day's figures are its net sales.
pub struct SalesDaily;

/// Adds `sign` times the order's lines to their day.
///
/// PostgreSQL does the arithmetic: `bigint` products and sums are checked
/// there, so a figure that would overflow fails the statement (SQLSTATE
/// 22003) and the event is dead-lettered with the whole transaction rolled
/// back, never stored wrapped or saturated. The domain bounds prices and
/// quantities so that a row holds more than 93,000 order lines of the
/// largest amount (`domain::MAX_UNIT_PRICE_MINOR`); only events stored
/// before those bounds can get there.
async fn book(
    db: &mut PgConnection,
    day: chrono::NaiveDate,
    lines: &[OrderLine],
    sign: i64,
) -> Result<(), sqlx::Error> {
    for line in lines {
        let units = sign * i64::from(line.quantity);
        sqlx::query(
            "INSERT INTO sales_daily (day, product_id, currency, sku, units, revenue_minor, orders) \
             VALUES ($1, $2, $3, $4, $5, $5::bigint * $6::bigint, $7) \
             ON CONFLICT (day, product_id, currency) DO UPDATE SET \
               units = sales_daily.units + EXCLUDED.units, \
               revenue_minor = sales_daily.revenue_minor + EXCLUDED.revenue_minor, \
               orders = sales_daily.orders + EXCLUDED.orders, sku = EXCLUDED.sku",
        )
        .bind(day)
        .bind(line.product_id.as_uuid())
        .bind(line.unit_price.currency.as_str())
        .bind(line.sku.as_str())
        .bind(units)
        .bind(line.unit_price.minor)
        .bind(sign)
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl Projection for SalesDaily {
    fn name(&self) -> &'static str {
        "sales_daily"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Order"]
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    fn fold(&self) -> Box<dyn Fold> {
        Box::<SalesFold>::default()
    }

    async fn apply(&self, db: &mut PgConnection, event: &Event) -> Result<(), sqlx::Error> {
        let Payload::Order(change) = &event.payload else {
            return Ok(());
        };
        let order_id = event.aggregate_uuid();
        match change {
            OrderEvent::OrderPlaced { lines, .. } => {
                let day = event.envelope.time.date_naive();
                sqlx::query(
                    "INSERT INTO sales_daily_orders (order_id, day, lines) VALUES ($1, $2, $3)",
                )
                .bind(order_id)
                .bind(day)
                .bind(serde_json::to_value(lines).unwrap_or_default())
                .execute(&mut *db)
                .await?;
                book(db, day, lines, 1).await
            }
            OrderEvent::OrderCancelled { .. } => {
                let Some(row) =
                    sqlx::query("SELECT day, lines FROM sales_daily_orders WHERE order_id = $1")
                        .bind(order_id)
                        .fetch_optional(&mut *db)
                        .await?
                else {
                    return Ok(());
                };
                let lines: Vec<OrderLine> =
                    serde_json::from_value(row.try_get("lines")?).unwrap_or_default();
                book(db, row.try_get("day")?, &lines, -1).await
            }
            OrderEvent::OrderPaid { .. }
            | OrderEvent::OrderShipped { .. }
            | OrderEvent::OrderDelivered {} => Ok(()),
        }
    }
}

/// One `sales_daily` row's figures, exact: one beyond `bigint` fails the
/// rebuild's COPY rather than being written wrapped.
#[derive(Debug, Default)]
struct Totals {
    sku: String,
    units: ExactSum,
    revenue_minor: ExactSum,
    orders: ExactSum,
}

/// Holds the totals per day, product and currency (as many as the view
/// has rows, however many events there are) and the current order.
#[derive(Default)]
struct SalesFold {
    totals: BTreeMap<(NaiveDate, Uuid, String), Totals>,
    /// The current order's id, day and lines, once placed.
    placed: Option<(Uuid, NaiveDate, Vec<OrderLine>)>,
}

impl SalesFold {
    fn book(&mut self, day: NaiveDate, lines: &[OrderLine], sign: i64) {
        for line in lines {
            let units = sign * i64::from(line.quantity);
            let totals = self
                .totals
                .entry((
                    day,
                    *line.product_id.as_uuid(),
                    line.unit_price.currency.as_str().to_owned(),
                ))
                .or_default();
            totals.units.add(i128::from(units));
            totals
                .revenue_minor
                .add_product(units, line.unit_price.minor);
            totals.orders.add(i128::from(sign));
            line.sku.as_str().clone_into(&mut totals.sku);
        }
    }
}

impl Fold for SalesFold {
    fn apply(&mut self, event: &Event) {
        let Payload::Order(change) = &event.payload else {
            return;
        };
        match change {
            OrderEvent::OrderPlaced { lines, .. } if self.placed.is_none() => {
                let day = event.envelope.time.date_naive();
                self.book(day, lines, 1);
                self.placed = Some((event.aggregate_uuid(), day, lines.clone()));
            }
            // Each cancellation takes the order off again, as the
            // incremental statements do.
            OrderEvent::OrderCancelled { .. } => {
                if let Some((id, day, lines)) = self.placed.take() {
                    self.book(day, &lines, -1);
                    self.placed = Some((id, day, lines));
                }
            }
            _ => {}
        }
    }

    fn end_aggregate(&mut self, out: &mut Rows) {
        if let Some((order_id, day, lines)) = self.placed.take() {
            let lines = serde_json::to_value(lines).unwrap_or_default();
            out.row(1, &[&order_id, &day, &lines]);
        }
    }

    fn end(&mut self, out: &mut Rows) {
        for ((day, product_id, currency), totals) in std::mem::take(&mut self.totals) {
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
}
