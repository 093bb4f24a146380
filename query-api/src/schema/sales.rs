use async_graphql::{Context, ID, Object};

use super::product::{Product, catalog_product};
use super::scalars::{Date, Money};
use super::{parse_id, read};
use crate::consistency::ReadModel;
use crate::error::{Coded, QueryError, QueryResult};
use crate::read_models::SalesRow;

/// The longest range `salesDaily` answers at once.
const MAX_DAYS: i64 = 366;

/// Units sold and revenue of one product on one UTC day, net of
/// cancellations (a cancellation counts against the day the order was
/// placed).
pub struct SalesDay(SalesRow);

#[Object]
impl SalesDay {
    async fn day(&self) -> Date {
        Date(self.0.day)
    }
    async fn product_id(&self) -> ID {
        ID(self.0.product_id.to_string())
    }
    async fn sku(&self) -> &str {
        &self.0.sku
    }
    async fn units(&self) -> i64 {
        self.0.units
    }
    async fn revenue(&self) -> Money {
        Money::new(self.0.revenue_minor, &self.0.currency)
    }
    /// Orders that bought the product that day and were not cancelled.
    async fn orders(&self) -> i64 {
        self.0.orders
    }
    async fn product(&self, ctx: &Context<'_>) -> QueryResult<Option<Product>> {
        catalog_product(ctx, self.0.product_id).await
    }
}

#[derive(Default)]
pub struct SalesQueries;

#[Object]
impl SalesQueries {
    /// Sales per day and product from `from` to `to` (inclusive, at most
    /// 366 days), optionally of one product; by day, then SKU.
    #[graphql(complexity = "MAX_DAYS as usize * child_complexity")]
    async fn sales_daily(
        &self,
        ctx: &Context<'_>,
        from: Date,
        to: Date,
        product_id: Option<ID>,
    ) -> QueryResult<Vec<SalesDay>> {
        crate::access::staff(ctx, "sales")?;
        if from.0 > to.0 {
            return Err(QueryError::bad_input("`from` must not be after `to`")).coded();
        }
        if (to.0 - from.0).num_days() >= MAX_DAYS {
            return Err(QueryError::bad_input(format!(
                "a range of at most {MAX_DAYS} days"
            )))
            .coded();
        }
        let product = product_id
            .as_ref()
            .map(|id| parse_id(id, "product"))
            .transpose()?;
        let services = read(ctx, &[ReadModel::SalesDaily]).await?;
        let rows = services
            .read_models
            .sales_daily(from.0, to.0, product)
            .await
            .coded()?;
        Ok(rows.into_iter().map(SalesDay).collect())
    }
}
