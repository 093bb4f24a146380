//! The search documents, and how each event changes them. Pure: the runner
//! fetches the current documents, folds a batch of events into them here,
//! and writes them back in one bulk request.

use chrono::{DateTime, Utc};
use domain::order::OrderEvent;
use domain::product::ProductEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::event::{Event, Payload};

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
        .unwrap_or_default()
    }
}

/// Folds one event into the document it changes (`None`: not indexed yet).
pub fn apply(document: Option<Document>, event: &Event) -> Result<Document, DocumentError> {
    let envelope = &event.envelope;
    let (id, at) = (envelope.aggregateid.clone(), envelope.time);
    let event_type = || {
        envelope
            .event_type
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let missing = || DocumentError::Missing {
        event_type: event_type(),
        id: id.clone(),
    };
    match (&event.payload, document) {
        (
            Payload::Product(ProductEvent::ProductRegistered {
                sku,
                name,
                description,
                price,
                initial_stock,
            }),
            None,
        ) => Ok(Document::Product(ProductDocument {
            product_id: id.clone(),
            sku: sku.as_str().to_owned(),
            name: name.as_str().to_owned(),
            description: description.as_str().to_owned(),
            price_minor: price.minor,
            currency: price.currency.as_str().to_owned(),
            status: "active".to_owned(),
            on_hand: i64::from(*initial_stock),
            reserved: 0,
            available: i64::from(*initial_stock),
            registered_at: at,
            updated_at: at,
        })),
        (Payload::Product(ProductEvent::ProductRegistered { .. }), Some(_))
        | (Payload::Order(OrderEvent::OrderPlaced { .. }), Some(_)) => Err(DocumentError::Exists {
            event_type: event_type(),
            id,
        }),
        (Payload::Product(change), Some(Document::Product(mut product))) => {
            match change {
                ProductEvent::ProductRegistered { .. } => unreachable!("matched above"),
                ProductEvent::PriceChanged { new_price, .. } => {
                    product.price_minor = new_price.minor;
                    new_price
                        .currency
                        .as_str()
                        .clone_into(&mut product.currency);
                }
                ProductEvent::StockAdjusted { on_hand, .. } => {
                    product.on_hand = i64::from(*on_hand);
                }
                ProductEvent::ProductDiscontinued {} => {
                    "discontinued".clone_into(&mut product.status)
                }
                ProductEvent::StockReserved { quantity, .. } => {
                    product.reserved += i64::from(*quantity);
                }
                ProductEvent::StockReleased { quantity, .. } => {
                    product.reserved -= i64::from(*quantity);
                }
                ProductEvent::ReservedStockShipped { quantity, .. } => {
                    product.reserved -= i64::from(*quantity);
                    product.on_hand -= i64::from(*quantity);
                }
            }
            product.available = product.on_hand - product.reserved;
            product.updated_at = at;
            Ok(Document::Product(product))
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
