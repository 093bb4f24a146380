use async_graphql::{Context, Enum, ID, Object};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::product::{Product, catalog_product};
use super::scalars::Money;
use super::{not_found, parse_id, read};
use crate::consistency::ReadModel;
use crate::error::{Coded, QueryResult};
use crate::read_models::BasketRow;

/// Whether a basket still takes items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum BasketStatus {
    Open,
    CheckedOut,
}

/// A line as `basket_view` stores it.
#[derive(Debug, Clone, Deserialize)]
struct StoredLine {
    product_id: Uuid,
    sku: String,
    name: String,
    unit_price_minor: i64,
    quantity: i64,
    line_total_minor: i64,
}

/// One line of a basket, at the price of the moment the item was added.
pub struct BasketLine {
    line: StoredLine,
    currency: String,
}

#[Object]
impl BasketLine {
    async fn product_id(&self) -> ID {
        ID(self.line.product_id.to_string())
    }
    async fn sku(&self) -> &str {
        &self.line.sku
    }
    async fn name(&self) -> &str {
        &self.line.name
    }
    async fn unit_price(&self) -> Money {
        Money::new(self.line.unit_price_minor, &self.currency)
    }
    async fn quantity(&self) -> i64 {
        self.line.quantity
    }
    async fn line_total(&self) -> Money {
        Money::new(self.line.line_total_minor, &self.currency)
    }
    /// The product as the catalog shows it now.
    async fn product(&self, ctx: &Context<'_>) -> QueryResult<Option<Product>> {
        catalog_product(ctx, self.line.product_id).await
    }
}

/// A customer's basket.
pub struct Basket(pub BasketRow);

#[Object]
impl Basket {
    async fn id(&self) -> ID {
        ID(self.0.basket_id.to_string())
    }
    async fn customer_id(&self) -> ID {
        ID(self.0.customer_id.to_string())
    }
    async fn status(&self) -> BasketStatus {
        if self.0.status == "checked_out" {
            BasketStatus::CheckedOut
        } else {
            BasketStatus::Open
        }
    }
    async fn lines(&self) -> Vec<BasketLine> {
        let currency = self.0.currency.clone().unwrap_or_default();
        serde_json::from_value::<Vec<StoredLine>>(self.0.lines.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|line| BasketLine {
                line,
                currency: currency.clone(),
            })
            .collect()
    }
    /// Null while the basket is empty (it has no currency yet).
    async fn total(&self) -> Option<Money> {
        self.0
            .currency
            .as_deref()
            .map(|currency| Money::new(self.0.total_minor, currency))
    }
    /// Units over all lines.
    async fn item_count(&self) -> i64 {
        self.0.item_count
    }
    /// The order it became, once checked out.
    async fn order_id(&self) -> Option<ID> {
        self.0.order_id.map(|id| ID(id.to_string()))
    }
    async fn opened_at(&self) -> DateTime<Utc> {
        self.0.opened_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// The basket's event sequence this state reflects.
    async fn version(&self) -> i64 {
        self.0.version
    }
}

#[derive(Default)]
pub struct BasketQueries;

#[Object]
impl BasketQueries {
    /// One basket; null with a `NOT_FOUND` error when there is none with
    /// this id.
    async fn basket(&self, ctx: &Context<'_>, id: ID) -> QueryResult<Option<Basket>> {
        let sees = crate::access::baskets(ctx)?;
        let id = parse_id(&id, "basket")?;
        let services = read(ctx, &[ReadModel::BasketView]).await?;
        let basket = services.read_models.basket(id).await.coded()?;
        basket
            .filter(|basket| sees.sees(basket.customer_id))
            .map(Basket)
            .map(Some)
            .ok_or_else(|| not_found("basket", id))
    }
}
