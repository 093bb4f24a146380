use crate::ids::{CustomerId, OrderId, ProductId};
use crate::money::Money;
use crate::text::{ProductName, Sku};

/// What the catalog says about a product at the moment it is added to a
/// basket. The application layer looks it up; the basket decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductOffer {
    pub product_id: ProductId,
    pub sku: Sku,
    pub name: ProductName,
    pub unit_price: Money,
    pub discontinued: bool,
}

/// What may be asked of a basket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BasketCommand {
    Open {
        customer_id: CustomerId,
    },
    /// Adds a product, or more of a product already in the basket.
    AddItem {
        product: ProductOffer,
        quantity: u32,
    },
    ChangeQuantity {
        product_id: ProductId,
        quantity: u32,
    },
    RemoveItem {
        product_id: ProductId,
    },
    Clear,
    /// Closes the basket for the order the checkout placed.
    CheckOut {
        order_id: OrderId,
    },
}
