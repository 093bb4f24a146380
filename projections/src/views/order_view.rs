use async_trait::async_trait;
use domain::order::OrderEvent;
use serde_json::json;
use sqlx::PgConnection;

use crate::event::{Event, Payload};
use crate::projector::Projection;

/// `order_view`: one row per order with its lines, total, address, current
/// status and status history.
pub struct OrderView;

#[async_trait]
impl Projection for OrderView {
    fn name(&self) -> &'static str {
        "order_view"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Order"]
    }

    async fn apply(&self, db: &mut PgConnection, event: &Event) -> Result<(), sqlx::Error> {
        let Payload::Order(change) = &event.payload else {
            return Ok(());
        };
        let (id, version, at) = (
            event.aggregate_uuid(),
            event.envelope.aggregatesequence,
            event.envelope.time,
        );
        // A status change: the new status joins the history; the change's
        // own value, if any, is $4.
        macro_rules! transition {
            ($status:literal, $set:literal) => {
                sqlx::query(concat!(
                    "UPDATE order_view SET status = '",
                    $status,
                    "', ",
                    $set,
                    " status_history = status_history || jsonb_build_array(jsonb_build_object(",
                    "'status', '",
                    $status,
                    "', 'at', $3::timestamptz)), version = $2, updated_at = $3 ",
                    "WHERE order_id = $1"
                ))
                .bind(id)
                .bind(version)
                .bind(at)
            };
        }
        match change {
            OrderEvent::OrderPlaced {
                customer_id,
                basket_id,
                lines,
                total,
                shipping_address,
            } => {
                sqlx::query(
                    "INSERT INTO order_view (order_id, customer_id, basket_id, status, total_minor, currency, lines, \
                       shipping_address, status_history, placed_at, updated_at, version) \
                     VALUES ($1, $2, $3, 'placed', $4, $5, $6, $7, $8, $9, $9, $10)",
                )
                .bind(id)
                .bind(customer_id.as_uuid())
                .bind(basket_id.as_uuid())
                .bind(total.minor)
                .bind(total.currency.as_str())
                .bind(serde_json::to_value(lines).unwrap_or_default())
                .bind(serde_json::to_value(shipping_address).unwrap_or_default())
                .bind(json!([{ "status": "placed", "at": at }]))
                .bind(at)
                .bind(version)
                .execute(db)
                .await?;
            }
            OrderEvent::OrderPaid {
                payment_reference, ..
            } => {
                transition!("paid", "payment_reference = $4,")
                    .bind(payment_reference.as_str())
                    .execute(db)
                    .await?;
            }
            OrderEvent::OrderShipped { tracking_number } => {
                transition!("shipped", "tracking_number = $4,")
                    .bind(tracking_number.as_str())
                    .execute(db)
                    .await?;
            }
            OrderEvent::OrderDelivered {} => {
                transition!("delivered", "").execute(db).await?;
            }
            OrderEvent::OrderCancelled { reason } => {
                transition!("cancelled", "cancellation_reason = $4,")
                    .bind(reason.as_str())
                    .execute(db)
                    .await?;
            }
        }
        Ok(())
    }
}
