//! The search documents, and how each event changes them. Pure: the runner
//! fetches the current documents, folds a batch of events into them here,
//! and writes them back in one bulk request.

use chrono::{DateTime, Utc};
use domain::order::OrderEvent;
use domain::product::ProductEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::contract::FoldError;
use crate::event::{Event, Payload};
use crate::product_catalog::ProductRow;

/// A product as the search index holds it: full text on name and
/// description, filters and facets on price and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDocument {
    pub product_id: String,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_minor: i64,
    pub currency: String,
    pub status: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One line of an order document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLineDocument {
    pub product_id: String,
    pub sku: String,
    pub name: String,
    pub unit_price_minor: i64,
    pub quantity: i64,
}

/// An order as the search index holds it: found by customer, SKU, status
/// and date, with the product names as full text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDocument {
    pub order_id: String,
    pub customer_id: String,
    pub status: String,
    pub skus: Vec<String>,
    pub product_names: Vec<String>,
    pub lines: Vec<OrderLineDocument>,
    pub total_minor: i64,
    pub currency: String,
    pub recipient: String,
    pub city: String,
    pub country: String,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why an event could not change its document: it will not apply on a
/// retry either, so it is dead-lettered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    #[error("{event_type} for {id}, which the index does not hold")]
    Missing { event_type: String, id: String },
    #[error("{event_type} for {id}, which the index already holds")]
    Exists { event_type: String, id: String },
    #[error("the search index does not take {0} events")]
    Unsupported(String),
    #[error("the stored document does not decode: {0}")]
    Stored(String),
    /// The event does not fold into the product's catalog row.
    #[error("{0}")]
    Fold(String),
}

/// Which index an aggregate's events go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexKind {
    Products,
    Orders,
}

impl IndexKind {
    pub const ALL: [Self; 2] = [Self::Products, Self::Orders];

    /// The index of an aggregate type, if it has one.
    #[must_use]
    pub fn of(aggregate_type: &str) -> Option<Self> {
        match aggregate_type {
            "Product" => Some(Self::Products),
            "Order" => Some(Self::Orders),
            _ => None,
        }
    }

    /// The alias name's suffix: `{prefix}-products`, `{prefix}-orders`.
    #[must_use]
    pub const fn suffix(self) -> &'static str {
        match self {
            Self::Products => "products",
            Self::Orders => "orders",
        }
    }

    /// Mappings shared by Elasticsearch 8/9 and OpenSearch 2/3. Dynamic
    /// mapping is strict, so a document that does not match is refused
    /// rather than silently widening the index.
    #[must_use]
    pub fn mappings(self) -> Value {
        let text_with_keyword = json!({
            "type": "text",
            "fields": { "keyword": { "type": "keyword", "ignore_above": 256 } }
        });
        match self {
            Self::Products => json!({
                "dynamic": "strict",
                "properties": {
                    "product_id": { "type": "keyword" },
                    "sku": { "type": "keyword" },
                    "name": text_with_keyword,
                    "description": { "type": "text" },
                    "price_minor": { "type": "long" },
                    "currency": { "type": "keyword" },
                    "status": { "type": "keyword" },
                    "on_hand": { "type": "long" },
                    "reserved": { "type": "long" },
                    "available": { "type": "long" },
                    "registered_at": { "type": "date" },
                    "updated_at": { "type": "date" }
                }
            }),
            Self::Orders => json!({
                "dynamic": "strict",
                "properties": {
                    "order_id": { "type": "keyword" },
                    "customer_id": { "type": "keyword" },
                    "status": { "type": "keyword" },
                    "skus": { "type": "keyword" },
                    "product_names": { "type": "text" },
                    "lines": {
                        "properties": {
                            "product_id": { "type": "keyword" },
                            "sku": { "type": "keyword" },
                            "name": { "type": "text" },
                            "unit_price_minor": { "type": "long" },
                            "quantity": { "type": "long" }
                        }
                    },
                    "total_minor": { "type": "long" },
                    "currency": { "type": "keyword" },
                    "recipient": { "type": "text" },
                    "city": text_with_keyword,
                    "country": { "type": "keyword" },
                    "placed_at": { "type": "date" },
                    "updated_at": { "type": "date" }
                }
            }),
        }
    }
}

/// A document of either index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Product(ProductDocument),
    Order(OrderDocument),
}

impl Document {
    /// Decodes a stored `_source`.
    pub fn decode(kind: IndexKind, source: Value) -> Result<Self, DocumentError> {
        let stored = |error: serde_json::Error| DocumentError::Stored(error.to_string());
        Ok(match kind {
            IndexKind::Products => Self::Product(serde_json::from_value(source).map_err(stored)?),
            IndexKind::Orders => Self::Order(serde_json::from_value(source).map_err(stored)?),
        })
    }

    /// The `_source` to index.
    #[must_use]
    pub fn source(&self) -> Value {
        match self {
            Self::Product(product) => serde_json::to_value(product),
            Self::Order(order) => serde_json::to_value(order),
        }
        .expect("a search document is plain data: it always serialises")
    }
}

/// The catalog's fold of a product event: the document's figures come
/// from [`ProductRow::apply`], as the catalog's do.
fn catalog_row(
    row: Option<ProductRow>,
    event: &Event,
) -> Result<Option<ProductRow>, DocumentError> {
    let mut row = row;
    ProductRow::apply(&mut row, event).map_err(|error| DocumentError::Fold(error.to_string()))?;
    Ok(row)
}

impl ProductDocument {
    /// The document of a catalog row, registered at `registered_at`.
    fn of(row: ProductRow, registered_at: DateTime<Utc>) -> Result<Self, DocumentError> {
        let available = row.on_hand.checked_sub(row.reserved).ok_or_else(|| {
            DocumentError::Fold(
                FoldError::OutOfRange {
                    what: "available stock",
                }
                .to_string(),
            )
        })?;
        Ok(Self {
            product_id: row.product_id.to_string(),
            available,
            sku: row.sku,
            name: row.name,
            description: row.description,
            price_minor: row.price_minor,
            currency: row.currency,
            status: row.status.as_str().to_owned(),
            on_hand: row.on_hand,
            reserved: row.reserved,
            registered_at,
            updated_at: row.updated_at,
        })
    }

    /// The catalog row this document holds, to fold `event` into.
    fn row(self, event: &Event) -> Result<ProductRow, DocumentError> {
        let status = self
            .status
            .parse()
            .map_err(|error: domain::UnknownStatus| DocumentError::Stored(error.to_string()))?;
        Ok(ProductRow {
            product_id: event.aggregate_uuid(),
            sku: self.sku,
            name: self.name,
            description: self.description,
            price_minor: self.price_minor,
            currency: self.currency,
            on_hand: self.on_hand,
            reserved: self.reserved,
            status,
            version: event.envelope.aggregatesequence - 1,
            updated_at: self.updated_at,
        })
    }
}

/// Folds one event into the document it changes (`None`: not indexed yet).
pub fn apply(document: Option<Document>, event: &Event) -> Result<Document, DocumentError> {
    let envelope = &event.envelope;
    let (id, at) = (envelope.aggregateid.clone(), envelope.time);
    let event_type = || envelope.event_name().to_owned();
    let missing = || DocumentError::Missing {
        event_type: event_type(),
        id: id.clone(),
    };
    match (&event.payload, document) {
        (Payload::Product(ProductEvent::ProductRegistered { .. }), None) => {
            let row = catalog_row(None, event)?.ok_or_else(missing)?;
            Ok(Document::Product(ProductDocument::of(row, at)?))
        }
        (Payload::Product(ProductEvent::ProductRegistered { .. }), Some(_))
        | (Payload::Order(OrderEvent::OrderPlaced { .. }), Some(_)) => Err(DocumentError::Exists {
            event_type: event_type(),
            id,
        }),
        (Payload::Product(_), Some(Document::Product(product))) => {
            let registered_at = product.registered_at;
            let row = catalog_row(Some(product.row(event)?), event)?.ok_or_else(missing)?;
            Ok(Document::Product(ProductDocument::of(row, registered_at)?))
        }
        (
            Payload::Order(OrderEvent::OrderPlaced {
                customer_id,
                lines,
                total,
                shipping_address,
                ..
            }),
            None,
        ) => Ok(Document::Order(OrderDocument {
            order_id: id.clone(),
            customer_id: customer_id.to_string(),
            status: "placed".to_owned(),
            skus: lines
                .iter()
                .map(|line| line.sku.as_str().to_owned())
                .collect(),
            product_names: lines
                .iter()
                .map(|line| line.name.as_str().to_owned())
                .collect(),
            lines: lines
                .iter()
                .map(|line| OrderLineDocument {
                    product_id: line.product_id.to_string(),
                    sku: line.sku.as_str().to_owned(),
                    name: line.name.as_str().to_owned(),
                    unit_price_minor: line.unit_price.minor,
                    quantity: i64::from(line.quantity),
                })
                .collect(),
            total_minor: total.minor,
            currency: total.currency.as_str().to_owned(),
            recipient: shipping_address.recipient.as_str().to_owned(),
            city: shipping_address.city.as_str().to_owned(),
            country: shipping_address.country.as_str().to_owned(),
            placed_at: at,
            updated_at: at,
        })),
        (Payload::Order(change), Some(Document::Order(mut order))) => {
            let status = match change {
                OrderEvent::OrderPlaced { .. } => unreachable!("matched above"),
                OrderEvent::OrderPaid { .. } => "paid",
                OrderEvent::OrderShipped { .. } => "shipped",
                OrderEvent::OrderDelivered {} => "delivered",
                OrderEvent::OrderCancelled { .. } => "cancelled",
            };
            status.clone_into(&mut order.status);
            order.updated_at = at;
            Ok(Document::Order(order))
        }
        (Payload::Basket(_), _) => Err(DocumentError::Unsupported(event_type())),
        (Payload::Product(_) | Payload::Order(_), _) => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{History, money};

    fn fold(events: &[Event]) -> Result<Option<Document>, DocumentError> {
        events
            .iter()
            .try_fold(None, |document, event| apply(document, event).map(Some))
    }

    #[test]
    fn a_product_document_has_the_catalog_rows_figures() {
        let (mut product, order) = (History::new("Product"), uuid::Uuid::now_v7());
        let events = [
            product.next(
                "ProductRegistered",
                json!({"sku": "MUG-1", "name": "Mug", "description": "A mug",
                       "price": money(1250, "EUR"), "initial_stock": 10}),
            ),
            product.next("StockReserved", json!({"order_id": order, "quantity": 4})),
            product.next(
                "ReservedStockShipped",
                json!({"order_id": order, "quantity": 1}),
            ),
            product.next("ProductDiscontinued", json!({})),
        ];
        let Some(Document::Product(document)) = fold(&events).expect("folds") else {
            panic!("a product document");
        };
        let mut row = None;
        for event in &events {
            ProductRow::apply(&mut row, event).expect("folds");
        }
        let row = row.expect("a row");
        assert_eq!(
            (document.on_hand, document.reserved, document.available),
            (row.on_hand, row.reserved, 6)
        );
        assert_eq!(document.status, "discontinued");
        assert_eq!(document.registered_at, events[0].envelope.time);
        assert_eq!(document.updated_at, row.updated_at);
    }

    #[test]
    fn an_order_document_follows_its_status_and_refuses_what_it_cannot_hold() {
        let mut order = History::new("Order");
        let placed = order.next(
            "OrderPlaced",
            json!({
                "customer_id": uuid::Uuid::now_v7(), "basket_id": uuid::Uuid::now_v7(),
                "lines": [{"product_id": uuid::Uuid::now_v7(), "sku": "MUG-1", "name": "Mug",
                           "unit_price": money(1250, "EUR"), "quantity": 2}],
                "total": money(2500, "EUR"),
                "shipping_address": {"recipient": "Ada", "line1": "1 Main St", "city": "Paris",
                                     "postal_code": "75001", "country": "FR"},
            }),
        );
        let cancelled = order.next("OrderCancelled", json!({"reason": "r"}));
        let Some(Document::Order(document)) =
            fold(&[placed.clone(), cancelled.clone()]).expect("folds")
        else {
            panic!("an order document");
        };
        assert_eq!(
            (document.status.as_str(), document.skus.len()),
            ("cancelled", 1)
        );
        assert!(matches!(
            apply(None, &cancelled),
            Err(DocumentError::Missing { .. })
        ));
        let again = apply(Some(Document::Order(document)), &placed);
        assert!(matches!(again, Err(DocumentError::Exists { .. })));
        let basket = History::new("Basket").next("BasketCleared", json!({}));
        assert!(matches!(
            apply(None, &basket),
            Err(DocumentError::Unsupported(_))
        ));
    }
}
