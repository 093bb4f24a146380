use crate::ids::{BasketId, CustomerId};
use crate::money::Money;
use crate::text::ShortText;

use super::{OrderLine, ShippingAddress};

/// What may be asked of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// Issued by a basket checkout, with unit prices captured at that moment.
    Place {
        customer_id: CustomerId,
        basket_id: BasketId,
        lines: Vec<OrderLine>,
        shipping_address: ShippingAddress,
    },
    Pay {
        payment_reference: ShortText,
        amount: Money,
    },
    Ship {
        tracking_number: ShortText,
    },
    Deliver,
    Cancel {
        reason: ShortText,
    },
}
