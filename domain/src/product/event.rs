use cqrs_es::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::OrderId;
use crate::money::Money;
use crate::text::{Description, ProductName, ShortText, Sku};

/// What happened to a product. The JSON shape of each variant is part of the
/// public event contract (`event-schemas/`): change it only with a new
/// version and an upcaster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProductEvent {
    /// Version 2.0: the price is a `Money` object. Version 1.0 stored
    /// `price_cents`, `currency` and `stock` as flat fields.
    ProductRegistered {
        sku: Sku,
        name: ProductName,
        description: Description,
        price: Money,
        initial_stock: u32,
    },
    PriceChanged {
        old_price: Money,
        new_price: Money,
    },
    StockAdjusted {
        delta: i64,
        reason: ShortText,
        on_hand: u32,
    },
    ProductDiscontinued {},
    StockReserved {
        order_id: OrderId,
        quantity: u32,
    },
    StockReleased {
        order_id: OrderId,
        quantity: u32,
    },
    ReservedStockShipped {
        order_id: OrderId,
        quantity: u32,
    },
}

impl ProductEvent {
    /// The current schema version of each event type.
    #[must_use]
    pub fn version_of(event_type: &str) -> &'static str {
        match event_type {
            "ProductRegistered" => "2.0",
            _ => "1.0",
        }
    }
}

impl DomainEvent for ProductEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ProductRegistered { .. } => "ProductRegistered",
            Self::PriceChanged { .. } => "PriceChanged",
            Self::StockAdjusted { .. } => "StockAdjusted",
            Self::ProductDiscontinued {} => "ProductDiscontinued",
            Self::StockReserved { .. } => "StockReserved",
            Self::StockReleased { .. } => "StockReleased",
            Self::ReservedStockShipped { .. } => "ReservedStockShipped",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        Self::version_of(&self.event_type()).to_owned()
    }
}
