//! Full-text search over the search index: products (with facets on
//! status and price) and orders. Pages are by relevance, then id.

use async_graphql::connection::{Connection, ConnectionNameType, Edge, EdgeNameType};
use async_graphql::{Context, Object, OutputType, SimpleObject};
use chrono::{DateTime, Utc};
use search_index::{Hit, IndexKind, SearchReply};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::order::{Order, orders_in_order};
use super::product::{Product, ProductFilter, ProductStatus};
use super::scalars::MinorUnits;
use super::{count, read};
use crate::access::Sees;
use crate::consistency::ReadModel;
use crate::cursor::{Cursor, Listing, page_size};
use crate::error::{Coded, QueryError, QueryResult};
use crate::read_models::ProductRow;

/// The longest search text accepted.
const MAX_QUERY_CHARS: usize = 256;
/// How deep a search may page (the engines' default result window).
const MAX_WINDOW: usize = 10_000;
/// Default price bucket bounds, in minor units: under 10, 10–50, 50–100,
/// 100 and over.
const DEFAULT_BUCKETS: [i64; 3] = [1_000, 5_000, 10_000];

/// Matched fragments of one field, as HTML: everything the document holds
/// is escaped (`&lt;`, `&gt;`, `&amp;`, `&quot;`, `&#x27;`, `&#x2F;`), and
/// the only markup is `<em>` around the matches.
#[derive(Debug, Clone, SimpleObject)]
pub struct Highlight {
    pub field: String,
    pub fragments: Vec<String>,
}

/// Why a result matched.
#[derive(Debug, Clone, SimpleObject)]
pub struct SearchHit {
    /// Relevance as the engine scored it (higher is better).
    pub score: f64,
    pub highlights: Vec<Highlight>,
}

/// A facet value and how many results have it.
#[derive(Debug, Clone, SimpleObject)]
pub struct StatusFacet {
    pub status: ProductStatus,
    pub count: i64,
}

/// Results priced from `from` (inclusive) to `to` (exclusive); an open end
/// is null.
#[derive(Debug, Clone, SimpleObject)]
pub struct PriceBucket {
    pub from: Option<MinorUnits>,
    pub to: Option<MinorUnits>,
    pub count: i64,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct ProductFacets {
    pub status: Vec<StatusFacet>,
    pub price: Vec<PriceBucket>,
}

/// The whole result set, beyond the page.
#[derive(Debug, Clone, SimpleObject)]
pub struct ProductSearchFields {
    pub total_count: i64,
    pub facets: ProductFacets,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct OrderSearchFields {
    pub total_count: i64,
}

pub struct ProductSearchName;
impl ConnectionNameType for ProductSearchName {
    fn type_name<T: OutputType>() -> String {
        "ProductSearchConnection".to_owned()
    }
}
impl EdgeNameType for ProductSearchName {
    fn type_name<T: OutputType>() -> String {
        "ProductSearchEdge".to_owned()
    }
}

pub struct OrderSearchName;
impl ConnectionNameType for OrderSearchName {
    fn type_name<T: OutputType>() -> String {
        "OrderSearchConnection".to_owned()
    }
}
impl EdgeNameType for OrderSearchName {
    fn type_name<T: OutputType>() -> String {
        "OrderSearchEdge".to_owned()
    }
}

type ProductSearch = Connection<
    Cursor,
    Product,
    ProductSearchFields,
    SearchHit,
    ProductSearchName,
    ProductSearchName,
>;
type OrderSearch =
    Connection<Cursor, Order, OrderSearchFields, SearchHit, OrderSearchName, OrderSearchName>;

/// A product document as the index holds it.
#[derive(Debug, Deserialize)]
struct ProductSource {
    product_id: Uuid,
    sku: String,
    name: String,
    description: String,
    price_minor: i64,
    currency: String,
    status: domain::product::ProductStatus,
    on_hand: i64,
    reserved: i64,
    available: i64,
    updated_at: DateTime<Utc>,
}

fn checked_text(query: &str) -> Result<&str, QueryError> {
    let query = query.trim();
    if query.chars().count() > MAX_QUERY_CHARS {
        return Err(QueryError::bad_input(format!(
            "a search text of at most {MAX_QUERY_CHARS} characters"
        )));
    }
    Ok(query)
}

/// `from` of the page after `after`. The request asks for `first + 1`
/// hits (the one more says whether a next page exists), and the engine
/// refuses any `from + size` past its result window.
fn window(listing: &Listing, after: Option<&str>, first: usize) -> Result<usize, QueryError> {
    let from = listing.decode::<usize>(after)?.map_or(0, |last| last + 1);
    if from + first + 1 > MAX_WINDOW {
        return Err(QueryError::bad_input(format!(
            "search pages reach at most {MAX_WINDOW} results deep; narrow the search"
        )));
    }
    Ok(from)
}

fn total(reply: &SearchReply) -> i64 {
    i64::try_from(reply.hits.total.value()).unwrap_or(i64::MAX)
}

fn search_hit(hit: &Hit) -> SearchHit {
    SearchHit {
        // Every search here sorts by score first, so the engine sends one.
        score: hit.score.unwrap_or(0.0),
        highlights: hit
            .highlight
            .iter()
            .map(|(field, fragments)| Highlight {
                field: field.clone(),
                fragments: fragments.clone(),
            })
            .collect(),
    }
}

fn bucket_bounds(bounds: Option<Vec<MinorUnits>>) -> Result<Vec<i64>, QueryError> {
    let bounds: Vec<i64> = bounds.map_or_else(
        || DEFAULT_BUCKETS.to_vec(),
        |b| b.into_iter().map(|m| m.0).collect(),
    );
    if bounds.len() > 20 || bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err(QueryError::bad_input(
            "priceBuckets must be at most 20 increasing bounds",
        ));
    }
    Ok(bounds)
}

fn price_ranges(bounds: &[i64]) -> Value {
    let mut ranges = Vec::new();
    let mut from: Option<i64> = None;
    for bound in bounds {
        ranges.push(match from {
            None => json!({ "to": bound }),
            Some(from) => json!({ "from": from, "to": bound }),
        });
        from = Some(*bound);
    }
    ranges.push(from.map_or_else(|| json!({}), |from| json!({ "from": from })));
    Value::Array(ranges)
}

/// The aggregations a product search asks for.
#[derive(Deserialize)]
struct ProductAggregations {
    status: Buckets<TermBucket>,
    price: Buckets<RangeBucket>,
}

#[derive(Deserialize)]
struct Buckets<B> {
    buckets: Vec<B>,
}

#[derive(Deserialize)]
struct TermBucket {
    key: String,
    doc_count: i64,
}

#[derive(Deserialize)]
struct RangeBucket {
    from: Option<f64>,
    to: Option<f64>,
    doc_count: i64,
}

/// The facets of a product search; aggregations that do not read, or a
/// status no product can have, are stored data gone wrong.
fn facets(reply: &SearchReply) -> QueryResult<ProductFacets> {
    let aggregations = ProductAggregations::deserialize(&reply.aggregations)
        .map_err(|error| {
            QueryError::stored(format!("the product search's facets do not read: {error}"))
        })
        .coded()?;
    let status = aggregations
        .status
        .buckets
        .into_iter()
        .map(|bucket| {
            let stored = bucket
                .key
                .parse::<domain::product::ProductStatus>()
                .map_err(|error| QueryError::stored(format!("a status facet: {error}")))
                .coded()?;
            let status = match stored {
                domain::product::ProductStatus::Active => ProductStatus::Active,
                domain::product::ProductStatus::Discontinued => ProductStatus::Discontinued,
                domain::product::ProductStatus::Unregistered => {
                    return Err(QueryError::stored(
                        "a product document is indexed as unregistered",
                    ))
                    .coded();
                }
            };
            Ok(StatusFacet {
                status,
                count: bucket.doc_count,
            })
        })
        .collect::<QueryResult<_>>()?;
    // Bounds are whole minor units sent back as floats.
    #[allow(clippy::cast_possible_truncation)]
    let bound = |value: Option<f64>| value.map(|f| MinorUnits(f.round() as i64));
    let price = aggregations
        .price
        .buckets
        .into_iter()
        .map(|bucket| PriceBucket {
            from: bound(bucket.from),
            to: bound(bucket.to),
            count: bucket.doc_count,
        })
        .collect();
    Ok(ProductFacets { status, price })
}

#[derive(Default)]
pub struct SearchQueries;

#[Object]
impl SearchQueries {
    /// Products whose name, description or SKU match `query` (all
    /// products when it is empty), best match first, with the filters of
    /// `products`, highlights, and facets on status and price over the
    /// whole result. `priceBuckets` are the bucket bounds in minor units
    /// (default 1000, 5000, 10000).
    #[graphql(complexity = "count(first) * child_complexity")]
    async fn search_products(
        &self,
        ctx: &Context<'_>,
        query: String,
        filter: Option<ProductFilter>,
        price_buckets: Option<Vec<MinorUnits>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> QueryResult<ProductSearch> {
        let text = checked_text(&query).coded()?;
        let filter = filter.unwrap_or_default();
        let checked = filter.query().coded()?;
        let bounds = bucket_bounds(price_buckets).coded()?;
        let services = read(ctx, &[ReadModel::Search]).await?;
        let first = page_size(first, services.config.max_page_size).coded()?;
        let listing = Listing::new(
            "searchProducts",
            &json!([text, filter.fingerprint(), bounds]),
        );
        let from = window(&listing, after.as_deref(), first).coded()?;

        let mut filters = Vec::new();
        if let Some(status) = checked.status {
            filters.push(json!({ "term": { "status": status } }));
        }
        if let Some(currency) = &checked.currency {
            filters.push(json!({ "term": { "currency": currency } }));
        }
        if checked.min_price.is_some() || checked.max_price.is_some() {
            let mut range = serde_json::Map::new();
            if let Some(min) = checked.min_price {
                range.insert("gte".into(), json!(min));
            }
            if let Some(max) = checked.max_price {
                range.insert("lte".into(), json!(max));
            }
            filters.push(json!({ "range": { "price_minor": range } }));
        }
        let must = if text.is_empty() {
            json!({ "match_all": {} })
        } else {
            json!({ "multi_match": { "query": text, "fields": ["name^3", "description", "sku^2"] } })
        };
        let body = json!({
            "from": from,
            "size": first + 1,
            "version": true,
            "track_total_hits": true,
            "query": { "bool": { "must": [must], "filter": filters } },
            "highlight": { "encoder": "html", "fields": { "name": {}, "description": {} } },
            "aggs": {
                "status": { "terms": { "field": "status" } },
                "price": { "range": { "field": "price_minor", "ranges": price_ranges(&bounds) } }
            },
            "sort": [{ "_score": "desc" }, { "product_id": "asc" }]
        });
        let reply = services
            .search
            .search(IndexKind::Products, &body)
            .await
            .coded()?;
        let found = &reply.hits.hits;
        let mut connection = ProductSearch::with_additional_fields(
            from > 0,
            found.len() > first,
            ProductSearchFields {
                total_count: total(&reply),
                facets: facets(&reply)?,
            },
        );
        for (at, hit) in found.iter().take(first).enumerate() {
            let source = ProductSource::deserialize(&hit.source)
                .map_err(|error| {
                    QueryError::stored(format!(
                        "the product document {} does not decode: {error}",
                        hit.id
                    ))
                })
                .coded()?;
            let version = hit.version().coded()?;
            let row = ProductRow {
                row: read_models::product_catalog::ProductRow {
                    product_id: source.product_id,
                    sku: source.sku,
                    name: source.name,
                    description: source.description,
                    price_minor: source.price_minor,
                    currency: source.currency,
                    on_hand: source.on_hand,
                    reserved: source.reserved,
                    status: source.status,
                    version,
                    updated_at: source.updated_at,
                },
                available: source.available,
            };
            connection.edges.push(Edge::with_additional_fields(
                listing.cursor(&(from + at)),
                Product(row),
                search_hit(hit),
            ));
        }
        Ok(connection)
    }

    /// Orders matching `query`: an order or customer id, a SKU or a status
    /// exactly, or words of product names, the recipient or the city. Best
    /// match first, newest first among equals.
    #[graphql(complexity = "count(first) * child_complexity")]
    async fn search_orders(
        &self,
        ctx: &Context<'_>,
        query: String,
        first: Option<i32>,
        after: Option<String>,
    ) -> QueryResult<OrderSearch> {
        let sees = crate::access::orders(ctx)?;
        let text = checked_text(&query).coded()?;
        if text.is_empty() {
            return Err(QueryError::bad_input("`query` must not be empty")).coded();
        }
        let services = read(ctx, &[ReadModel::Search, ReadModel::OrderView]).await?;
        let first = page_size(first, services.config.max_page_size).coded()?;
        let listing = Listing::new("searchOrders", &json!([text]));
        let from = window(&listing, after.as_deref(), first).coded()?;
        let exact = text.to_lowercase();
        let body = json!({
            "from": from,
            "size": first + 1,
            "track_total_hits": true,
            "query": { "bool": {
                "should": [
                    { "multi_match": { "query": text, "fields": ["product_names", "recipient", "city"] } },
                    { "term": { "order_id": { "value": exact, "boost": 10 } } },
                    { "term": { "customer_id": { "value": exact, "boost": 5 } } },
                    { "term": { "skus": { "value": text, "boost": 3 } } },
                    { "term": { "status": { "value": exact, "boost": 2 } } }
                ],
                "minimum_should_match": 1,
                // A customer finds only their own orders: the engine
                // filters, so counts and pages hold nothing else either.
                "filter": match sees {
                    Sees::Everyone => json!([]),
                    Sees::Own(customer) => json!([{ "term": { "customer_id": customer.to_string() } }]),
                }
            } },
            "highlight": { "encoder": "html", "fields": { "product_names": {}, "recipient": {}, "city": {} } },
            "sort": [{ "_score": "desc" }, { "placed_at": "desc" }, { "order_id": "asc" }]
        });
        let reply = services
            .search
            .search(IndexKind::Orders, &body)
            .await
            .coded()?;
        let found: Vec<&Hit> = reply.hits.hits.iter().take(first).collect();
        let ids: Vec<Uuid> = found
            .iter()
            .map(|hit| {
                hit.id.parse().map_err(|_| {
                    QueryError::stored(format!("the order document {:?} is not a UUID", hit.id))
                })
            })
            .collect::<Result<_, _>>()
            .coded()?;
        let mut orders = orders_in_order(services, &ids).await?;
        orders.retain(|order| sees.sees(order.0.customer_id));
        let mut connection = OrderSearch::with_additional_fields(
            from > 0,
            reply.hits.hits.len() > first,
            OrderSearchFields {
                total_count: total(&reply),
            },
        );
        let mut orders = orders.into_iter().peekable();
        for (at, hit) in found.iter().enumerate() {
            // An order indexed but not yet in order_view is left out.
            let Some(order) = orders.next_if(|o| o.0.order_id.to_string() == hit.id) else {
                continue;
            };
            connection.edges.push(Edge::with_additional_fields(
                listing.cursor(&(from + at)),
                order,
                search_hit(hit),
            ));
        }
        Ok(connection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_whose_one_more_hit_would_pass_the_result_window_is_refused() {
        let listing = Listing::new("searchProducts", &serde_json::json!({}));
        let last = |index: usize| listing.cursor(&index).0;
        // Hits from 9,950 to 9,998 and the one more: 9,999 = the window's last.
        assert_eq!(window(&listing, Some(&last(9_949)), 49).ok(), Some(9_950));
        // 9,950 to 9,999, and the one more would be the 10,001st hit.
        let error = window(&listing, Some(&last(9_949)), 50).expect_err("past the window");
        assert!(error.to_string().contains("narrow the search"), "{error}");
    }
}
