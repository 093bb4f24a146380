use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::order::OrderEvent;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::event::{Event, Payload};
use crate::projector::Projection;
use crate::replay::{Fold, Rows, Table, pg_json_time};

const TABLES: &[Table] = &[Table {
    name: "order_view",
    columns: &[
        "order_id",
        "customer_id",
        "basket_id",
        "status",
        "total_minor",
        "currency",
        "lines",
        "shipping_address",
        "payment_reference",
        "tracking_number",
        "cancellation_reason",
        "status_history",
        "placed_at",
        "updated_at",
        "version",
    ],
    key: &["order_id"],
    in_snapshot: true,
}];

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

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    fn fold(&self) -> Box<dyn Fold> {
        Box::<OrderFold>::default()
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

/// An `order_view` row, computed from the order's events: what a rebuild
/// writes, and what `orderAsOf` answers.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRecord {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub basket_id: Uuid,
    pub status: &'static str,
    pub total_minor: i64,
    pub currency: String,
    pub lines: Value,
    pub shipping_address: Value,
    pub payment_reference: Option<String>,
    pub tracking_number: Option<String>,
    pub cancellation_reason: Option<String>,
    /// `[{status, at}]`, with the times spelled as the incremental
    /// projection's statements store them.
    pub status_history: Vec<Value>,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl OrderRecord {
    /// Applies one event of the order to the row (none before it was
    /// placed), exactly as [`OrderView::apply`]'s statements do.
    pub fn apply(row: &mut Option<Self>, event: &Event) {
        let Payload::Order(change) = &event.payload else {
            return;
        };
        let (version, at) = (event.envelope.aggregatesequence, event.envelope.time);
        if let OrderEvent::OrderPlaced {
            customer_id,
            basket_id,
            lines,
            total,
            shipping_address,
        } = change
        {
            if row.is_none() {
                *row = Some(Self {
                    order_id: event.aggregate_uuid(),
                    customer_id: *customer_id.as_uuid(),
                    basket_id: *basket_id.as_uuid(),
                    status: "placed",
                    total_minor: total.minor,
                    currency: total.currency.as_str().to_owned(),
                    lines: serde_json::to_value(lines).unwrap_or_default(),
                    shipping_address: serde_json::to_value(shipping_address).unwrap_or_default(),
                    payment_reference: None,
                    tracking_number: None,
                    cancellation_reason: None,
                    // Serialized by serde on insert, not by PostgreSQL.
                    status_history: vec![json!({ "status": "placed", "at": at })],
                    placed_at: at,
                    updated_at: at,
                    version,
                });
            }
            return;
        }
        let Some(order) = row else {
            return;
        };
        let status = match change {
            OrderEvent::OrderPlaced { .. } => return,
            OrderEvent::OrderPaid {
                payment_reference, ..
            } => {
                order.payment_reference = Some(payment_reference.as_str().to_owned());
                "paid"
            }
            OrderEvent::OrderShipped { tracking_number } => {
                order.tracking_number = Some(tracking_number.as_str().to_owned());
                "shipped"
            }
            OrderEvent::OrderDelivered {} => "delivered",
            OrderEvent::OrderCancelled { reason } => {
                order.cancellation_reason = Some(reason.as_str().to_owned());
                "cancelled"
            }
        };
        order.status = status;
        order
            .status_history
            .push(json!({ "status": status, "at": pg_json_time(at) }));
        order.version = version;
        order.updated_at = at;
    }

    /// The order from its events, in sequence order.
    #[must_use]
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Option<Self> {
        let mut row = None;
        for event in events {
            Self::apply(&mut row, event);
        }
        row
    }

    fn write(&self, out: &mut Rows) {
        out.row(
            0,
            &[
                &self.order_id,
                &self.customer_id,
                &self.basket_id,
                &self.status,
                &self.total_minor,
                &self.currency,
                &self.lines,
                &self.shipping_address,
                &self.payment_reference,
                &self.tracking_number,
                &self.cancellation_reason,
                &Value::Array(self.status_history.clone()),
                &self.placed_at,
                &self.updated_at,
                &self.version,
            ],
        );
    }
}

#[derive(Default)]
struct OrderFold {
    order: Option<OrderRecord>,
}

impl Fold for OrderFold {
    fn apply(&mut self, event: &Event) {
        OrderRecord::apply(&mut self.order, event);
    }

    fn end_aggregate(&mut self, out: &mut Rows) {
        if let Some(order) = self.order.take() {
            order.write(out);
        }
    }
}
