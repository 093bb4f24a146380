use async_graphql::{Context, Enum, ID, Object};
use chrono::{DateTime, Utc};
use read_models::basket_view::{BasketRow, Line};

use super::product::{Product, catalog_product};
use super::scalars::Money;
use super::{not_found, parse_id, read};
use crate::consistency::ReadModel;
use crate::error::{Coded, QueryError, QueryResult};

/// Whether a basket still takes items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum BasketStatus {
    Open,
    CheckedOut,
}

/// One line of a basket, at the price of the moment the item was added.
pub struct BasketLine {
    line: Line,
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
    async fn status(&self) -> QueryResult<BasketStatus> {
        match self.0.status {
            domain::basket::BasketStatus::Open => Ok(BasketStatus::Open),
            domain::basket::BasketStatus::CheckedOut => Ok(BasketStatus::CheckedOut),
            other => Err(QueryError::stored(format!(
                "basket {} is stored as {}",
                self.0.basket_id,
                other.as_str()
            )))
            .coded(),
        }
    }
    async fn lines(&self) -> QueryResult<Vec<BasketLine>> {
        let Some(currency) = &self.0.currency else {
            return if self.0.lines.is_empty() {
                Ok(Vec::new())
            } else {
                Err(QueryError::stored(format!(
                    "basket {} has lines and no currency",
                    self.0.basket_id
                )))
                .coded()
            };
        };
        Ok(self
            .0
            .lines
            .iter()
            .map(|line| BasketLine {
                line: line.clone(),
                currency: currency.clone(),
            })
            .collect())
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
