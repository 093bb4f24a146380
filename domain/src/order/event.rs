use cqrs_es::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{BasketId, CustomerId};
use crate::money::Money;
use crate::text::ShortText;

use super::{OrderLine, ShippingAddress};

/// What happened to an order (public contract, see `event-schemas/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OrderEvent {
    OrderPlaced {
        customer_id: CustomerId,
        basket_id: BasketId,
        lines: Vec<OrderLine>,
        total: Money,
        shipping_address: ShippingAddress,
    },
    OrderPaid {
        payment_reference: ShortText,
        amount: Money,
    },
    OrderShipped {
        tracking_number: ShortText,
    },
    OrderDelivered {},
    OrderCancelled {
        reason: ShortText,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OrderPlaced { .. } => "OrderPlaced",
            Self::OrderPaid { .. } => "OrderPaid",
            Self::OrderShipped { .. } => "OrderShipped",
            Self::OrderDelivered {} => "OrderDelivered",
            Self::OrderCancelled { .. } => "OrderCancelled",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
