use async_trait::async_trait;
use domain::order::{OrderEvent, OrderLine};
use sqlx::{PgConnection, Row};

use crate::event::{Event, Payload};
use crate::projector::Projection;

/// `sales_daily`: units sold and revenue per UTC day and product, net of
/// cancellations, for analysts. A cancelled order is taken off the day it
/// was placed, so a day's figures are its net sales.
pub struct SalesDaily;

/// Adds `sign` times the order's lines to their day.
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
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
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
        .bind(units.saturating_mul(line.unit_price.minor))
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
