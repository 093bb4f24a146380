//! Every SQL statement the GraphQL API runs, over the projections' tables
//! (and, for `orderAsOf`, over the event store's `events`). Resolvers call
//! these and never write SQL themselves. Each statement is counted
//! (`eshop_graphql_sql_statements_total`, and [`ReadModels::statements`]
//! for tests that check a nested query stays a fixed number of them).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, NaiveDate, Utc};
use event_store::StoreError;
use event_store::feed::RecordedEvent;
use read_models::OrderRecord;
use read_models::basket_cache::BasketCache;
use read_models::basket_view::BasketRow;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

/// A product as the catalog lists it: the `product_catalog` row with the
/// units still available (a generated column), or the same from the
/// search index.
#[derive(Debug, Clone, FromRow)]
pub struct ProductRow {
    #[sqlx(flatten)]
    pub row: read_models::product_catalog::ProductRow,
    pub available: i64,
}

pub use read_models::sales_daily::DayRow as SalesRow;

/// Filters of the product listing.
#[derive(Debug, Clone, Default)]
pub struct ProductQuery {
    pub status: Option<&'static str>,
    pub currency: Option<String>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
}

/// Filters of a customer's order listing.
#[derive(Debug, Clone)]
pub struct OrderQuery {
    pub customer_id: Uuid,
    pub status: Option<&'static str>,
    pub placed_after: Option<DateTime<Utc>>,
    pub placed_before: Option<DateTime<Utc>>,
}

const PRODUCT_COLUMNS: &str = "product_id, sku, name, description, price_minor, currency, on_hand, reserved, \
     available, status, version, updated_at";
const ORDER_COLUMNS: &str = "order_id, customer_id, basket_id, status, total_minor, currency, lines, \
     shipping_address, payment_reference, tracking_number, cancellation_reason, status_history, placed_at, \
     updated_at, version";

/// The read models' tables, through one pool.
#[derive(Clone)]
pub struct ReadModels {
    pool: PgPool,
    statements: Arc<AtomicU64>,
    basket_cache: Option<BasketCache>,
}

impl ReadModels {
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            statements: Arc::default(),
            basket_cache: None,
        }
    }

    /// Serves `basket(id)` from `cache` when it holds the row, filling it
    /// from `basket_view` when it does not (see
    /// [`read_models::basket_cache`] for why a hit is never older than what
    /// the view had committed).
    #[must_use]
    pub fn with_basket_cache(mut self, cache: Option<BasketCache>) -> Self {
        self.basket_cache = cache;
        self
    }

    /// The cache of `basket_view` rows, if any.
    #[must_use]
    pub const fn basket_cache(&self) -> Option<&BasketCache> {
        self.basket_cache.as_ref()
    }

    #[must_use]
    pub const fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// How many SQL statements this API has run.
    #[must_use]
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("eshop_graphql_sql_statements_total").increment(1);
    }

    pub async fn products_by_id(&self, ids: &[Uuid]) -> Result<Vec<ProductRow>, sqlx::Error> {
        self.count();
        sqlx::query_as(&format!(
            "SELECT {PRODUCT_COLUMNS} FROM product_catalog WHERE product_id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await
    }

    /// A page of products by name, after the `(name, product_id)` key.
    pub async fn products(
        &self,
        filter: &ProductQuery,
        after: Option<(String, Uuid)>,
        limit: i64,
    ) -> Result<Vec<ProductRow>, sqlx::Error> {
        self.count();
        let (after_name, after_id) = after.unzip();
        sqlx::query_as(&format!(
            "SELECT {PRODUCT_COLUMNS} FROM product_catalog \
             WHERE ($1::text IS NULL OR status = $1) \
               AND ($2::text IS NULL OR currency = $2) \
               AND ($3::bigint IS NULL OR price_minor >= $3) \
               AND ($4::bigint IS NULL OR price_minor <= $4) \
               AND ($5::text IS NULL OR (name, product_id) > ($5, $6)) \
             ORDER BY name, product_id LIMIT $7"
        ))
        .bind(filter.status)
        .bind(filter.currency.as_deref())
        .bind(filter.min_price)
        .bind(filter.max_price)
        .bind(after_name)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// One basket's row: from the cache when it holds it (no SQL), else
    /// from `basket_view`, then offered to the cache.
    pub async fn basket(&self, id: Uuid) -> Result<Option<BasketRow>, sqlx::Error> {
        if let Some(cache) = &self.basket_cache
            && let Some(row) = cache.get(id).await
        {
            return Ok(Some(row));
        }
        self.count();
        let row: Option<BasketRow> = sqlx::query_as(
            "SELECT basket_id, customer_id, status, currency, lines, total_minor, item_count, order_id, \
               opened_at, updated_at, version FROM basket_view WHERE basket_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        if let (Some(cache), Some(row)) = (&self.basket_cache, &row) {
            cache.fill(row).await;
        }
        Ok(row)
    }

    pub async fn orders_by_id(&self, ids: &[Uuid]) -> Result<Vec<OrderRecord>, sqlx::Error> {
        self.count();
        sqlx::query_as(&format!(
            "SELECT {ORDER_COLUMNS} FROM order_view WHERE order_id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn order(&self, id: Uuid) -> Result<Option<OrderRecord>, sqlx::Error> {
        self.count();
        sqlx::query_as(&format!(
            "SELECT {ORDER_COLUMNS} FROM order_view WHERE order_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Every event of one order, in sequence order, from the event store
    /// itself rather than a projection: what `orderAsOf` folds. A command's
    /// events are committed before it answers, so they are all here as soon
    /// as its response is (no projection to wait for).
    pub async fn order_events(&self, id: Uuid) -> Result<Vec<RecordedEvent>, StoreError> {
        self.count();
        event_store::feed::read_aggregate(&self.pool, "Order", &id.to_string(), 0, i64::MAX).await
    }

    /// A page of a customer's orders, newest first, after the `(placed_at,
    /// order_id)` key.
    pub async fn orders(
        &self,
        filter: &OrderQuery,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<OrderRecord>, sqlx::Error> {
        self.count();
        let (after_at, after_id) = after.unzip();
        sqlx::query_as(&format!(
            "SELECT {ORDER_COLUMNS} FROM order_view \
             WHERE customer_id = $1 \
               AND ($2::text IS NULL OR status = $2) \
               AND ($3::timestamptz IS NULL OR placed_at >= $3) \
               AND ($4::timestamptz IS NULL OR placed_at < $4) \
               AND ($5::timestamptz IS NULL OR (placed_at, order_id) < ($5, $6)) \
             ORDER BY placed_at DESC, order_id DESC LIMIT $7"
        ))
        .bind(filter.customer_id)
        .bind(filter.status)
        .bind(filter.placed_after)
        .bind(filter.placed_before)
        .bind(after_at)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Sales per day and product, `from` to `to` inclusive.
    pub async fn sales_daily(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        product_id: Option<Uuid>,
    ) -> Result<Vec<SalesRow>, sqlx::Error> {
        self.count();
        sqlx::query_as(
            "SELECT day, product_id, currency, sku, units, revenue_minor, orders FROM sales_daily \
             WHERE day BETWEEN $1 AND $2 AND ($3::uuid IS NULL OR product_id = $3) \
             ORDER BY day, sku, product_id, currency",
        )
        .bind(from)
        .bind(to)
        .bind(product_id)
        .fetch_all(&self.pool)
        .await
    }

    /// How many of the given `(aggregate id, sequence)` pairs `projection`
    /// has not applied yet.
    pub async fn not_yet_applied(
        &self,
        projection: &str,
        aggregates: &[(String, i64)],
    ) -> Result<i64, sqlx::Error> {
        self.count();
        let (ids, sequences): (Vec<&str>, Vec<i64>) =
            aggregates.iter().map(|(id, s)| (id.as_str(), *s)).unzip();
        sqlx::query_scalar(
            "SELECT count(*) FROM unnest($2::text[], $3::bigint[]) AS written (aggregate_id, sequence) \
             LEFT JOIN projection_progress AS p \
               ON p.projection = $1 AND p.aggregate_id = written.aggregate_id \
             WHERE coalesce(p.sequence, 0) < written.sequence",
        )
        .bind(projection)
        .bind(ids)
        .bind(sequences)
        .fetch_one(&self.pool)
        .await
    }

    /// The aggregates (type, id, last sequence) that the transaction of the
    /// event at `global_position` wrote: what a command with that
    /// consistency token changed.
    pub async fn written_with(
        &self,
        global_position: i64,
    ) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
        self.count();
        sqlx::query_as(
            "SELECT aggregate_type, aggregate_id, max(sequence) FROM events \
             WHERE transaction_id = (SELECT transaction_id FROM events WHERE global_position = $1) \
             GROUP BY aggregate_type, aggregate_id",
        )
        .bind(global_position)
        .fetch_all(&self.pool)
        .await
    }
}
