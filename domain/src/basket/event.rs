use cqrs_es::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{CustomerId, OrderId, ProductId};
use crate::money::Money;
use crate::text::{ProductName, Sku};

/// What happened to a basket (public contract, see `event-schemas/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BasketEvent {
    BasketOpened {
        customer_id: CustomerId,
    },
    /// A product entered the basket; name and price are the catalog's at
    /// that moment (the order captures prices again at checkout).
    ItemAdded {
        product_id: ProductId,
        sku: Sku,
        name: ProductName,
        unit_price: Money,
        quantity: u32,
    },
    ItemQuantityChanged {
        product_id: ProductId,
        quantity: u32,
    },
    ItemRemoved {
        product_id: ProductId,
    },
    BasketCleared {},
    BasketCheckedOut {
        order_id: OrderId,
    },
}

impl DomainEvent for BasketEvent {
    fn event_type(&self) -> String {
        match self {
            Self::BasketOpened { .. } => "BasketOpened",
            Self::ItemAdded { .. } => "ItemAdded",
            Self::ItemQuantityChanged { .. } => "ItemQuantityChanged",
            Self::ItemRemoved { .. } => "ItemRemoved",
            Self::BasketCleared {} => "BasketCleared",
            Self::BasketCheckedOut { .. } => "BasketCheckedOut",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
