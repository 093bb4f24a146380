use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, ID, InputObject, Object};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::scalars::{MinorUnits, Money};
use super::{count, not_found, parse_id, read};
use crate::consistency::ReadModel;
use crate::cursor::{Cursor, Listing, page_size};
use crate::error::{Coded, QueryError, QueryResult};
use crate::read_models::{ProductQuery, ProductRow};

/// Whether a product can be ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ProductStatus {
    Active,
    Discontinued,
}

impl ProductStatus {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Active => domain::product::ProductStatus::Active.as_str(),
            Self::Discontinued => domain::product::ProductStatus::Discontinued.as_str(),
        }
    }

    /// The status of a stored product: one never registered is not one.
    pub(crate) fn stored(
        status: domain::product::ProductStatus,
        product: uuid::Uuid,
    ) -> QueryResult<Self> {
        use domain::product::ProductStatus as Stored;
        match status {
            Stored::Active => Ok(Self::Active),
            Stored::Discontinued => Ok(Self::Discontinued),
            Stored::Unregistered => Err(QueryError::stored(format!(
                "product {product} is stored as unregistered"
            )))
            .coded(),
        }
    }
}

/// Filters of product listings and searches. Prices are in minor units of
/// `currency` (when given).
#[derive(Debug, Clone, Default, InputObject)]
pub struct ProductFilter {
    pub status: Option<ProductStatus>,
    pub currency: Option<String>,
    /// At least this price.
    pub min_price: Option<MinorUnits>,
    /// At most this price.
    pub max_price: Option<MinorUnits>,
}

impl ProductFilter {
    pub(crate) fn query(&self) -> Result<ProductQuery, QueryError> {
        if let Some(currency) = &self.currency
            && currency.parse::<domain::money::Currency>().is_err()
        {
            return Err(QueryError::bad_input(format!(
                "currency '{}' is not an ISO 4217 code",
                crate::error::echo(currency)
            )));
        }
        let (min, max) = (self.min_price.map(|p| p.0), self.max_price.map(|p| p.0));
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            return Err(QueryError::bad_input("minPrice must not exceed maxPrice"));
        }
        Ok(ProductQuery {
            status: self.status.map(ProductStatus::as_str),
            currency: self.currency.clone(),
            min_price: min,
            max_price: max,
        })
    }

    pub(crate) fn fingerprint(&self) -> serde_json::Value {
        json!([
            self.status.map(ProductStatus::as_str),
            self.currency,
            self.min_price.map(|p| p.0),
            self.max_price.map(|p| p.0)
        ])
    }
}

/// A product of the catalog, with its stock.
pub struct Product(pub ProductRow);

#[Object]
impl Product {
    async fn id(&self) -> ID {
        ID(self.0.row.product_id.to_string())
    }
    async fn sku(&self) -> &str {
        &self.0.row.sku
    }
    async fn name(&self) -> &str {
        &self.0.row.name
    }
    async fn description(&self) -> &str {
        &self.0.row.description
    }
    async fn price(&self) -> Money {
        Money::new(self.0.row.price_minor, &self.0.row.currency)
    }
    /// Units in the warehouse, reserved ones included.
    async fn on_hand(&self) -> i64 {
        self.0.row.on_hand
    }
    /// Units reserved for placed orders not yet shipped.
    async fn reserved(&self) -> i64 {
        self.0.row.reserved
    }
    /// Units that can still be ordered.
    async fn available(&self) -> i64 {
        self.0.available
    }
    async fn status(&self) -> QueryResult<ProductStatus> {
        ProductStatus::stored(self.0.row.status, self.0.row.product_id)
    }
    /// The product's event sequence this state reflects.
    async fn version(&self) -> i64 {
        self.0.row.version
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.row.updated_at
    }
}

/// The product as `product_catalog` holds it (after the request's
/// consistency wait), through the batch loader: the products of a page's
/// lines come in one statement.
pub(crate) async fn catalog_product(
    ctx: &Context<'_>,
    id: uuid::Uuid,
) -> QueryResult<Option<Product>> {
    let services = read(ctx, &[ReadModel::ProductCatalog]).await?;
    Ok(services
        .products
        .load_one(id)
        .await
        .map_err(|_| QueryError::Unavailable)
        .coded()?
        .map(Product))
}

#[derive(Default)]
pub struct ProductQueries;

#[Object]
impl ProductQueries {
    /// One product; null with a `NOT_FOUND` error when there is none with
    /// this id.
    async fn product(&self, ctx: &Context<'_>, id: ID) -> QueryResult<Option<Product>> {
        let id = parse_id(&id, "product")?;
        let product = catalog_product(ctx, id).await?;
        product.map(Some).ok_or_else(|| not_found("product", id))
    }

    /// Products by name, with optional filters.
    #[graphql(complexity = "count(first) * child_complexity")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        filter: Option<ProductFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> QueryResult<Connection<Cursor, Product>> {
        let filter = filter.unwrap_or_default();
        let services = read(ctx, &[ReadModel::ProductCatalog]).await?;
        let first = page_size(first, services.config.max_page_size).coded()?;
        let query = filter.query().coded()?;
        let listing = Listing::new("products", &filter.fingerprint());
        let after = listing
            .decode::<(String, uuid::Uuid)>(after.as_deref())
            .coded()?;
        let has_previous = after.is_some();
        let mut rows = services
            .read_models
            .products(&query, after, first as i64 + 1)
            .await
            .coded()?;
        let has_next = rows.len() > first;
        rows.truncate(first);
        let mut connection = Connection::new(has_previous, has_next);
        connection.edges.extend(rows.into_iter().map(|row| {
            Edge::new(
                listing.cursor(&(&row.row.name, row.row.product_id)),
                Product(row),
            )
        }));
        Ok(connection)
    }
}
