//! `order_view`: one row per order with its lines, total, address, current
//! status and status history. Its table is created by the migration
//! `projections/read-models/migrations/20261122100001_views.sql`; the query side reads it in
//! `query-api/src/read_models.rs`.

use chrono::{DateTime, Utc};
use domain::order::{OrderEvent, OrderLine, OrderStatus, ShippingAddress};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::contract::{FoldError, NoTotals, ReadModel};
use crate::event::{Event, Payload};
use crate::rows::{Json, Rows, Table, pg_json_time};

/// The read model.
pub struct OrderView;

impl ReadModel for OrderView {
    const NAME: &'static str = "order_view";
    const AGGREGATE_TYPES: &'static [&'static str] = &["Order"];
    const TABLES: &'static [Table] = &[Table {
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

    type Row = OrderRecord;
    type Delta = NoTotals;
    type Totals = ();

    fn fold(
        row: &mut Option<OrderRecord>,
        event: &Event,
        _: &mut Vec<NoTotals>,
    ) -> Result<(), FoldError> {
        OrderRecord::apply(row, event)
    }

    fn copy(row: &OrderRecord, out: &mut Rows) {
        row.write(out);
    }
}

/// An `order_view` row, computed from the order's events: what the
/// projector and a rebuild write, what the GraphQL API reads, and what
/// `orderAsOf` answers. A stored row that does not decode into it (an
/// unknown status, lines that are not order lines) is an error, never a
/// default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct OrderRecord {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub basket_id: Uuid,
    #[sqlx(try_from = "String")]
    pub status: OrderStatus,
    pub total_minor: i64,
    pub currency: String,
    #[sqlx(json)]
    pub lines: Vec<OrderLine>,
    #[sqlx(json)]
    pub shipping_address: ShippingAddress,
    pub payment_reference: Option<String>,
    pub tracking_number: Option<String>,
    pub cancellation_reason: Option<String>,
    #[sqlx(json)]
    pub status_history: Vec<StatusChange>,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// A status the order reached, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: OrderStatus,
    /// The first entry's time as serde spells it, the later ones as
    /// PostgreSQL does (`to_jsonb(timestamptz)`), as the view has always
    /// stored them: kept as spelled, so that a rebuild writes exactly what
    /// the live projector did.
    pub at: String,
}

/// A time as serde spells it (what the first status change has always
/// held).
fn serde_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl OrderRecord {
    /// Applies one event of the order to the row (none before it was
    /// placed).
    pub fn apply(row: &mut Option<Self>, event: &Event) -> Result<(), FoldError> {
        let Payload::Order(change) = &event.payload else {
            return Ok(());
        };
        let (version, at) = (event.envelope.aggregatesequence, event.time());
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
                    status: OrderStatus::Placed,
                    total_minor: total.minor,
                    currency: total.currency.as_str().to_owned(),
                    lines: lines.clone(),
                    shipping_address: shipping_address.clone(),
                    payment_reference: None,
                    tracking_number: None,
                    cancellation_reason: None,
                    status_history: vec![StatusChange {
                        status: OrderStatus::Placed,
                        at: serde_time(at),
                    }],
                    placed_at: at,
                    updated_at: at,
                    version,
                });
            }
            return Ok(());
        }
        let Some(order) = row else {
            return Ok(());
        };
        let status = match change {
            OrderEvent::OrderPlaced { .. } => return Ok(()),
            OrderEvent::OrderPaid {
                payment_reference, ..
            } => {
                order.payment_reference = Some(payment_reference.as_str().to_owned());
                OrderStatus::Paid
            }
            OrderEvent::OrderShipped { tracking_number } => {
                order.tracking_number = Some(tracking_number.as_str().to_owned());
                OrderStatus::Shipped
            }
            OrderEvent::OrderDelivered {} => OrderStatus::Delivered,
            OrderEvent::OrderCancelled { reason } => {
                order.cancellation_reason = Some(reason.as_str().to_owned());
                OrderStatus::Cancelled
            }
        };
        order.status = status;
        order.status_history.push(StatusChange {
            status,
            at: pg_json_time(at),
        });
        order.version = version;
        order.updated_at = at;
        Ok(())
    }

    /// The order from its events, in sequence order.
    pub fn from_events<'a>(
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<Option<Self>, FoldError> {
        let mut row = None;
        for event in events {
            Self::apply(&mut row, event)?;
        }
        Ok(row)
    }

    fn write(&self, out: &mut Rows) {
        out.row(
            0,
            &[
                &self.order_id,
                &self.customer_id,
                &self.basket_id,
                &self.status.as_str(),
                &self.total_minor,
                &self.currency,
                &Json(&self.lines),
                &Json(&self.shipping_address),
                &self.payment_reference,
                &self.tracking_number,
                &self.cancellation_reason,
                &Json(&self.status_history),
                &self.placed_at,
                &self.updated_at,
                &self.version,
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{History, money, start};

    fn placed(order: &mut History) -> Event {
        let product = Uuid::now_v7();
        order.next(
            "OrderPlaced",
            json!({
                "customer_id": Uuid::now_v7(), "basket_id": Uuid::now_v7(),
                "lines": [{"product_id": product, "sku": "MUG-1", "name": "Mug",
                           "unit_price": money(1250, "EUR"), "quantity": 2}],
                "total": money(2500, "EUR"),
                "shipping_address": {"recipient": "Ada", "line1": "1 Main St", "city": "Paris",
                                     "postal_code": "75001", "country": "FR"},
            }),
        )
    }

    fn fold(events: &[Event]) -> Option<OrderRecord> {
        OrderRecord::from_events(events).expect("the events fold")
    }

    #[test]
    fn an_order_is_placed_paid_shipped_and_delivered_with_its_history() {
        let mut order = History::new("Order");
        let events = [
            placed(&mut order),
            order.next(
                "OrderPaid",
                json!({"payment_reference": "PAY-1", "amount": money(2500, "EUR")}),
            ),
            order.next("OrderShipped", json!({"tracking_number": "TRACK-1"})),
            order.next("OrderDelivered", json!({})),
        ];
        let row = fold(&events).expect("a row once placed");
        assert_eq!(row.order_id, order.id);
        assert_eq!(row.status, OrderStatus::Delivered);
        assert_eq!((row.total_minor, row.currency.as_str()), (2500, "EUR"));
        assert_eq!(row.lines[0].sku.as_str(), "MUG-1");
        assert_eq!(row.shipping_address.city.as_str(), "Paris");
        assert_eq!(row.payment_reference.as_deref(), Some("PAY-1"));
        assert_eq!(row.tracking_number.as_deref(), Some("TRACK-1"));
        assert_eq!(row.cancellation_reason, None);
        assert_eq!(row.version, 4);
        assert_eq!(row.placed_at, events[0].time());
        assert_eq!(row.updated_at, events[3].time());
        assert_eq!(
            serde_json::to_value(&row.status_history).expect("JSON"),
            json!([
                {"status": "placed", "at": "2026-11-28T23:59:59.123456Z"},
                {"status": "paid", "at": "2026-11-29T00:00:00.123456+00:00"},
                {"status": "shipped", "at": "2026-11-29T00:00:01.123456+00:00"},
                {"status": "delivered", "at": "2026-11-29T00:00:02.123456+00:00"},
            ])
        );
        assert_eq!(row.placed_at.date_naive(), start().date_naive());
    }

    #[test]
    fn the_first_status_change_is_spelled_as_serde_spells_a_time() {
        for at in [
            "2026-11-28T23:59:59Z",
            "2026-11-28T23:59:59.120Z",
            "2026-11-28T23:59:59.123456Z",
        ] {
            let at: DateTime<Utc> = at.parse().expect("a time");
            assert_eq!(json!(serde_time(at)), json!(at));
        }
    }

    #[test]
    fn a_cancelled_order_keeps_its_reason_and_status() {
        let mut order = History::new("Order");
        let events = [
            placed(&mut order),
            order.next("OrderCancelled", json!({"reason": "changed my mind"})),
        ];
        let row = fold(&events).expect("a row");
        assert_eq!(row.status, OrderStatus::Cancelled);
        assert_eq!(row.cancellation_reason.as_deref(), Some("changed my mind"));
        assert_eq!(row.status_history.len(), 2);
    }

    #[test]
    fn nothing_before_the_order_is_placed_and_a_second_placing_changes_nothing() {
        let mut order = History::new("Order");
        let early = order.next("OrderDelivered", json!({}));
        assert_eq!(fold(std::slice::from_ref(&early)), None);
        let first = placed(&mut order);
        let again = placed(&mut order);
        let row = fold(&[early, first.clone(), again]).expect("a row");
        assert_eq!(Some(row), fold(&[first]));
    }
}
