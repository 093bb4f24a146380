use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::product::{Product, catalog_product};
use super::scalars::Money;
use super::{Services, count, not_found, parse_id, read};
use crate::consistency::ReadModel;
use crate::cursor::{Cursor, Listing, page_size};
use crate::error::{Coded, QueryError, QueryResult};
use crate::read_models::{OrderQuery, OrderRow};

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
        match self {
            Self::Placed => "placed",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }

    pub(crate) fn of(status: &str) -> Self {
        match status {
            "paid" => Self::Paid,
            "shipped" => Self::Shipped,
            "delivered" => Self::Delivered,
            "cancelled" => Self::Cancelled,
            _ => Self::Placed,
        }
    }
}

/// A line as `order_view` stores it (the domain's order line).
#[derive(Debug, Clone, Deserialize)]
struct StoredLine {
    product_id: Uuid,
    sku: String,
    name: String,
    unit_price: StoredMoney,
    quantity: i64,
}

#[derive(Debug, Clone, Deserialize)]
struct StoredMoney {
    amount_minor: i64,
    currency: String,
}

/// One line of an order, at the price of the moment it was placed.
pub struct OrderLine(StoredLine);

#[Object]
impl OrderLine {
    async fn product_id(&self) -> ID {
        ID(self.0.product_id.to_string())
    }
    async fn sku(&self) -> &str {
        &self.0.sku
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn unit_price(&self) -> Money {
        Money::new(self.0.unit_price.amount_minor, &self.0.unit_price.currency)
    }
    async fn quantity(&self) -> i64 {
        self.0.quantity
    }
    async fn line_total(&self) -> Money {
        Money::new(
            self.0
                .unit_price
                .amount_minor
                .saturating_mul(self.0.quantity),
            &self.0.unit_price.currency,
        )
    }
    /// The product as the catalog shows it now (null if it is not in the
    /// catalog view).
    async fn product(&self, ctx: &Context<'_>) -> QueryResult<Option<Product>> {
        catalog_product(ctx, self.0.product_id).await
    }
}

/// Where an order goes.
#[derive(Debug, Clone, Deserialize, SimpleObject)]
pub struct ShippingAddress {
    pub recipient: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

/// A status the order reached, and when.
#[derive(Debug, Clone, Deserialize)]
struct StoredStatusChange {
    status: String,
    at: DateTime<Utc>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct StatusChange {
    pub status: OrderStatus,
    pub at: DateTime<Utc>,
}

/// An order with its lines, total, address and status history.
pub struct Order(pub OrderRow);

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
    async fn status(&self) -> OrderStatus {
        OrderStatus::of(&self.0.status)
    }
    async fn total(&self) -> Money {
        Money::new(self.0.total_minor, &self.0.currency)
    }
    async fn lines(&self) -> Vec<OrderLine> {
        serde_json::from_value::<Vec<StoredLine>>(self.0.lines.clone())
            .unwrap_or_default()
            .into_iter()
            .map(OrderLine)
            .collect()
    }
    async fn shipping_address(&self) -> Option<ShippingAddress> {
        serde_json::from_value(self.0.shipping_address.clone()).ok()
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
    async fn status_history(&self) -> Vec<StatusChange> {
        serde_json::from_value::<Vec<StoredStatusChange>>(self.0.status_history.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|change| StatusChange {
                status: OrderStatus::of(&change.status),
                at: change.at,
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
        let id = parse_id(&id, "order")?;
        let services = read(ctx, &[ReadModel::OrderView]).await?;
        let order = services.read_models.order(id).await.coded()?;
        order
            .map(Order)
            .map(Some)
            .ok_or_else(|| not_found("order", id))
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
        let customer = parse_id(&customer_id, "customer")?;
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
