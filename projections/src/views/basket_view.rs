use async_trait::async_trait;
use domain::basket::BasketEvent;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};

use crate::event::{Event, Payload};
use crate::projector::Projection;

/// `basket_view`: one row per basket with its lines, line totals and total.
pub struct BasketView;

/// A line as the view stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    product_id: uuid::Uuid,
    sku: String,
    name: String,
    unit_price_minor: i64,
    quantity: i64,
    line_total_minor: i64,
}

impl Line {
    fn set_quantity(&mut self, quantity: i64) {
        self.quantity = quantity;
        self.line_total_minor = self.unit_price_minor.saturating_mul(quantity);
    }
}

#[async_trait]
impl Projection for BasketView {
    fn name(&self) -> &'static str {
        "basket_view"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Basket"]
    }

    async fn apply(&self, db: &mut PgConnection, event: &Event) -> Result<(), sqlx::Error> {
        let Payload::Basket(change) = &event.payload else {
            return Ok(());
        };
        let (id, version, at) = (
            event.aggregate_uuid(),
            event.envelope.aggregatesequence,
            event.envelope.time,
        );
        if let BasketEvent::BasketOpened { customer_id } = change {
            sqlx::query(
                "INSERT INTO basket_view (basket_id, customer_id, status, lines, total_minor, item_count, \
                   opened_at, updated_at, version) VALUES ($1, $2, 'open', '[]', 0, 0, $3, $3, $4)",
            )
            .bind(id)
            .bind(customer_id.as_uuid())
            .bind(at)
            .bind(version)
            .execute(db)
            .await?;
            return Ok(());
        }
        // The other changes edit the lines: read them, change them, write
        // them back with the totals (the row is locked for the transaction).
        let row =
            sqlx::query("SELECT lines, currency FROM basket_view WHERE basket_id = $1 FOR UPDATE")
                .bind(id)
                .fetch_one(&mut *db)
                .await?;
        let mut lines: Vec<Line> =
            serde_json::from_value(row.try_get("lines")?).unwrap_or_default();
        let mut currency: Option<String> = row.try_get("currency")?;
        let mut status = "open";
        let mut order_id = None;
        match change {
            BasketEvent::BasketOpened { .. } => {}
            BasketEvent::ItemAdded {
                product_id,
                sku,
                name,
                unit_price,
                quantity,
            } => {
                let mut line = Line {
                    product_id: *product_id.as_uuid(),
                    sku: sku.to_string(),
                    name: name.to_string(),
                    unit_price_minor: unit_price.minor,
                    quantity: 0,
                    line_total_minor: 0,
                };
                line.set_quantity(i64::from(*quantity));
                lines.push(line);
                currency.get_or_insert_with(|| unit_price.currency.to_string());
            }
            BasketEvent::ItemQuantityChanged {
                product_id,
                quantity,
            } => {
                if let Some(line) = lines
                    .iter_mut()
                    .find(|l| l.product_id == *product_id.as_uuid())
                {
                    line.set_quantity(i64::from(*quantity));
                }
            }
            BasketEvent::ItemRemoved { product_id } => {
                lines.retain(|l| l.product_id != *product_id.as_uuid())
            }
            BasketEvent::BasketCleared {} => lines.clear(),
            BasketEvent::BasketCheckedOut { order_id: placed } => {
                status = "checked_out";
                order_id = Some(*placed.as_uuid());
            }
        }
        if lines.is_empty() && status == "open" {
            currency = None;
        }
        let total: i64 = lines.iter().map(|l| l.line_total_minor).sum();
        let items: i64 = lines.iter().map(|l| l.quantity).sum();
        sqlx::query(
            "UPDATE basket_view SET lines = $2, currency = $3, total_minor = $4, item_count = $5, status = $6, \
               order_id = coalesce($7, order_id), version = $8, updated_at = $9 WHERE basket_id = $1",
        )
        .bind(id)
        .bind(serde_json::to_value(&lines).unwrap_or_default())
        .bind(currency)
        .bind(total)
        .bind(items)
        .bind(status)
        .bind(order_id)
        .bind(version)
        .bind(at)
        .execute(db)
        .await?;
        Ok(())
    }
}
