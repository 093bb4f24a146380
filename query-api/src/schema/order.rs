use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};
use event_store::feed::RecordedEvent;
use read_models::OrderRecord;
use read_models::event::Event;
use serde_json::json;
use uuid::Uuid;

use super::product::{Product, catalog_product};
use super::scalars::Money;
use super::{Services, count, not_found, not_found_at, parse_id, read};
use crate::consistency::ReadModel;
use crate::cursor::{Cursor, Listing, page_size};
use crate::error::{Coded, QueryError, QueryResult};
use crate::read_models::OrderQuery;

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum OrderStatus {
    Placed,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub(crate) const fn as_str(self) -> &'static str {
        self.domain().as_str()
    }

    const fn domain(self) -> domain::order::OrderStatus {
        use domain::order::OrderStatus as Stored;
        match self {
            Self::Placed => Stored::Placed,
            Self::Paid => Stored::Paid,
            Self::Shipped => Stored::Shipped,
            Self::Delivered => Stored::Delivered,
            Self::Cancelled => Stored::Cancelled,
        }
    }

    /// The status of a stored order: one never placed is not one.
    fn stored(status: domain::order::OrderStatus, order: Uuid) -> QueryResult<Self> {
        use domain::order::OrderStatus as Stored;
        match status {
            Stored::Placed => Ok(Self::Placed),
            Stored::Paid => Ok(Self::Paid),
            Stored::Shipped => Ok(Self::Shipped),
            Stored::Delivered => Ok(Self::Delivered),
            Stored::Cancelled => Ok(Self::Cancelled),
            Stored::NotPlaced => Err(QueryError::stored(format!(
                "order {order} is stored as not placed"
            )))
            .coded(),
        }
    }
}

/// One line of an order, at the price of the moment it was placed.
pub struct OrderLine(domain::order::OrderLine);

#[Object]
impl OrderLine {
    async fn product_id(&self) -> ID {
        ID(self.0.product_id.as_uuid().to_string())
    }
    async fn sku(&self) -> &str {
        self.0.sku.as_str()
    }
    async fn name(&self) -> &str {
        self.0.name.as_str()
    }
    async fn unit_price(&self) -> Money {
        Money::new(self.0.unit_price.minor, self.0.unit_price.currency.as_str())
    }
    async fn quantity(&self) -> i64 {
        i64::from(self.0.quantity)
    }
    async fn line_total(&self) -> QueryResult<Money> {
        let price = &self.0.unit_price;
        match price.minor.checked_mul(i64::from(self.0.quantity)) {
            Some(total) => Ok(Money::new(total, price.currency.as_str())),
            None => Err(QueryError::stored(format!(
                "the total of {} units at {} {} is out of range",
                self.0.quantity,
                price.minor,
                price.currency.as_str()
            )))
            .coded(),
        }
    }
    /// The product as the catalog shows it now (null if it is not in the
    /// catalog view).
    async fn product(&self, ctx: &Context<'_>) -> QueryResult<Option<Product>> {
        catalog_product(ctx, *self.0.product_id.as_uuid()).await
    }
}

/// Where an order goes.
#[derive(Debug, Clone, SimpleObject)]
pub struct ShippingAddress {
    pub recipient: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

impl From<&domain::order::ShippingAddress> for ShippingAddress {
    fn from(address: &domain::order::ShippingAddress) -> Self {
        Self {
            recipient: address.recipient.as_str().to_owned(),
            line1: address.line1.as_str().to_owned(),
            line2: address.line2.as_ref().map(|l| l.as_str().to_owned()),
            city: address.city.as_str().to_owned(),
            postal_code: address.postal_code.as_str().to_owned(),
            country: address.country.as_str().to_owned(),
        }
    }
}

#[derive(Debug, Clone, SimpleObject)]
pub struct StatusChange {
    pub status: OrderStatus,
    pub at: DateTime<Utc>,
}

/// An order with its lines, total, address and status history.
pub struct Order(pub OrderRecord);

#[Object]
impl Order {
    async fn id(&self) -> ID {
        ID(self.0.order_id.to_string())
    }
    async fn customer_id(&self) -> ID {
        ID(self.0.customer_id.to_string())
    }
    async fn basket_id(&self) -> ID {
        ID(self.0.basket_id.to_string())
    }
    async fn status(&self) -> QueryResult<OrderStatus> {
        OrderStatus::stored(self.0.status, self.0.order_id)
    }
    async fn total(&self) -> Money {
        Money::new(self.0.total_minor, &self.0.currency)
    }
    async fn lines(&self) -> Vec<OrderLine> {
        self.0.lines.iter().cloned().map(OrderLine).collect()
    }
    async fn shipping_address(&self) -> Option<ShippingAddress> {
        Some(ShippingAddress::from(&self.0.shipping_address))
    }
    async fn payment_reference(&self) -> Option<&str> {
        self.0.payment_reference.as_deref()
    }
    async fn tracking_number(&self) -> Option<&str> {
        self.0.tracking_number.as_deref()
    }
    async fn cancellation_reason(&self) -> Option<&str> {
        self.0.cancellation_reason.as_deref()
    }
    /// Every status the order reached, oldest first.
    async fn status_history(&self) -> QueryResult<Vec<StatusChange>> {
        let order = self.0.order_id;
        self.0
            .status_history
            .iter()
            .map(|change| {
                let at = DateTime::parse_from_rfc3339(&change.at)
                    .map_err(|error| {
                        QueryError::stored(format!(
                            "order {order}: status time {:?}: {error}",
                            change.at
                        ))
                    })
                    .coded()?;
                Ok(StatusChange {
                    status: OrderStatus::stored(change.status, order)?,
                    at: at.with_timezone(&Utc),
                })
            })
            .collect()
    }
    async fn placed_at(&self) -> DateTime<Utc> {
        self.0.placed_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// The order's event sequence this state reflects.
    async fn version(&self) -> i64 {
        self.0.version
    }
}

#[derive(Default)]
pub struct OrderQueries;

#[Object]
impl OrderQueries {
    /// One order; null with a `NOT_FOUND` error when there is none with
    /// this id.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> QueryResult<Option<Order>> {
        let sees = crate::access::orders(ctx)?;
        let id = parse_id(&id, "order")?;
        let services = read(ctx, &[ReadModel::OrderView]).await?;
        let order = services.read_models.order(id).await.coded()?;
        order
            .filter(|order| sees.sees(order.customer_id))
            .map(Order)
            .map(Some)
            .ok_or_else(|| not_found("order", id))
    }

    /// The order as it stood at `at`, rebuilt from its own events in the
    /// event store rather than read from `order_view`: its events in
    /// sequence order up to the first that occurred after `at` (an event
    /// occurs when its command is handled), folded exactly as the
    /// `order_view` projection folds them. Every field reads as `order`
    /// would have then, except `lines.product`, which is the catalog's
    /// product now. An `at` in the future gives the order as it stands now.
    /// Null with a `NOT_FOUND` error when there is no order with this id or
    /// it had not been placed by `at`. It reads no projection, so
    /// `X-Consistency-Token` never makes it wait: a command's events are in
    /// the store by the time the command answers.
    async fn order_as_of(
        &self,
        ctx: &Context<'_>,
        id: ID,
        at: DateTime<Utc>,
    ) -> QueryResult<Option<Order>> {
        let sees = crate::access::orders(ctx)?;
        let id = parse_id(&id, "order")?;
        // The event store is no projection: nothing to wait for.
        let services = read(ctx, &[]).await?;
        let events = services.read_models.order_events(id).await.coded()?;
        let order = order_as_of(&events, at).coded()?;
        order
            .filter(|row| sees.sees(row.customer_id))
            .map(|row| Some(Order(row)))
            .ok_or_else(|| not_found_at("order", id, at))
    }

    /// A customer's orders, newest first; optionally of one status and
    /// placed in `[placedAfter, placedBefore)`.
    #[graphql(complexity = "count(first) * child_complexity")]
    #[allow(clippy::too_many_arguments)]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
        status: Option<OrderStatus>,
        placed_after: Option<DateTime<Utc>>,
        placed_before: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> QueryResult<Connection<Cursor, Order>> {
        let sees = crate::access::orders(ctx)?;
        let customer = parse_id(&customer_id, "customer")?;
        if !sees.sees(customer) {
            return Err(QueryError::Forbidden(
                "a customer reads only their own orders: customerId must be yours".into(),
            ))
            .coded();
        }
        if let (Some(from), Some(to)) = (placed_after, placed_before)
            && from >= to
        {
            return Err(QueryError::bad_input(
                "placedAfter must be before placedBefore",
            ))
            .coded();
        }
        let services = read(ctx, &[ReadModel::OrderView]).await?;
        let first = page_size(first, services.config.max_page_size).coded()?;
        let listing = Listing::new(
            "orders",
            &json!([
                customer,
                status.map(OrderStatus::as_str),
                placed_after,
                placed_before
            ]),
        );
        let after = listing
            .decode::<(DateTime<Utc>, Uuid)>(after.as_deref())
            .coded()?;
        let has_previous = after.is_some();
        let filter = OrderQuery {
            customer_id: customer,
            status: status.map(OrderStatus::as_str),
            placed_after,
            placed_before,
        };
        let mut rows = services
            .read_models
            .orders(&filter, after, first as i64 + 1)
            .await
            .coded()?;
        let has_next = rows.len() > first;
        rows.truncate(first);
        let mut connection = Connection::new(has_previous, has_next);
        connection.edges.extend(
            rows.into_iter()
                .map(|row| Edge::new(listing.cursor(&(row.placed_at, row.order_id)), Order(row))),
        );
        Ok(connection)
    }
}

/// Orders by id in the given order, through one statement.
pub(crate) async fn orders_in_order(services: &Services, ids: &[Uuid]) -> QueryResult<Vec<Order>> {
    let mut rows = services.read_models.orders_by_id(ids).await.coded()?;
    let mut ordered = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(at) = rows.iter().position(|row| row.order_id == *id) {
            ordered.push(Order(rows.swap_remove(at)));
        }
    }
    Ok(ordered)
}

/// The `order_view` row that an order's events up to `at` make: those in
/// sequence order until the first that occurred after `at`. A prefix, never
/// a selection: should two command processes' clocks disagree, a later
/// event may carry an earlier time, and skipping the one between would fold
/// a state the order never had (shipped, but not paid). None before the
/// order was placed.
pub(crate) fn order_as_of(
    recorded: &[RecordedEvent],
    at: DateTime<Utc>,
) -> Result<Option<OrderRecord>, QueryError> {
    let upcasters = event_schemas::upcasters();
    let mut events = Vec::with_capacity(recorded.len());
    for recorded in recorded {
        let event = Event::from_recorded(recorded, &upcasters)?;
        if event.envelope.time > at {
            break;
        }
        events.push(event);
    }
    Ok(OrderRecord::from_events(&events)?)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use event_store::feed::{GlobalPosition, RecordedEvent};
    use serde_json::{Value, json};

    use super::order_as_of;

    const ORDER: &str = "0193a0b0-0000-7000-8000-0000000000aa";

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("RFC 3339")
            .with_timezone(&Utc)
    }

    fn recorded(sequence: i64, occurred_at: &str, event_type: &str, data: Value) -> RecordedEvent {
        RecordedEvent {
            global: GlobalPosition {
                transaction_id: 1,
                position: sequence,
            },
            aggregate_type: "Order".into(),
            aggregate_id: ORDER.into(),
            sequence,
            event_type: event_type.into(),
            event_version: "1.0".into(),
            payload: json!({ event_type: data }),
            metadata: json!({ "occurred_at": occurred_at }),
            recorded_at: at(occurred_at),
        }
    }

    /// Placed at :01, paid at :03, shipped at :02: the shipment's process
    /// ran on a clock behind the payment's.
    fn skewed() -> Vec<RecordedEvent> {
        vec![
            recorded(
                1,
                "2026-03-01T10:00:01Z",
                "OrderPlaced",
                json!({
                    "customer_id": "0193a0b0-0000-7000-8000-000000000001",
                    "basket_id": "0193a0b0-0000-7000-8000-000000000002",
                    "lines": [{"product_id": "0193a0b0-0000-7000-8000-000000000003", "sku": "MUG-1",
                               "name": "Mug", "unit_price": {"amount_minor": 500, "currency": "EUR"},
                               "quantity": 2}],
                    "total": {"amount_minor": 1000, "currency": "EUR"},
                    "shipping_address": {"recipient": "Ada", "line1": "1 Road", "city": "London",
                                         "postal_code": "N1", "country": "GB"}
                }),
            ),
            recorded(
                2,
                "2026-03-01T10:00:03Z",
                "OrderPaid",
                json!({"payment_reference": "PAY-1", "amount": {"amount_minor": 1000, "currency": "EUR"}}),
            ),
            recorded(
                3,
                "2026-03-01T10:00:02Z",
                "OrderShipped",
                json!({"tracking_number": "T-1"}),
            ),
        ]
    }

    #[test]
    fn before_it_was_placed_there_is_no_order() {
        let order = order_as_of(&skewed(), at("2026-03-01T10:00:00.999999Z")).expect("decodes");
        assert!(order.is_none());
    }

    #[test]
    fn an_event_counts_from_the_moment_it_occurred() {
        let placed = order_as_of(&skewed(), at("2026-03-01T10:00:01Z"))
            .expect("decodes")
            .expect("placed");
        assert_eq!((placed.status.as_str(), placed.version), ("placed", 1));
        assert_eq!(placed.total_minor, 1000);
        assert_eq!(placed.placed_at, at("2026-03-01T10:00:01Z"));
    }

    #[test]
    fn a_later_event_with_an_earlier_time_never_skips_the_one_between() {
        // At :02 the shipment had occurred by its own clock, but the payment
        // before it had not: the order stands as placed, not shipped unpaid.
        let order = order_as_of(&skewed(), at("2026-03-01T10:00:02.5Z"))
            .expect("decodes")
            .expect("placed");
        assert_eq!((order.status.as_str(), order.version), ("placed", 1));
        assert_eq!(order.tracking_number, None);
        let shipped = order_as_of(&skewed(), at("2026-03-01T10:00:03Z"))
            .expect("decodes")
            .expect("placed");
        assert_eq!((shipped.status.as_str(), shipped.version), ("shipped", 3));
        assert_eq!(shipped.payment_reference.as_deref(), Some("PAY-1"));
        assert_eq!(shipped.tracking_number.as_deref(), Some("T-1"));
        assert_eq!(shipped.status_history.len(), 3);
    }
}
