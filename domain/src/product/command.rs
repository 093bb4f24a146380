use crate::ids::OrderId;
use crate::money::Money;
use crate::text::{Description, ProductName, ShortText, Sku};

/// What may be asked of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductCommand {
    /// Adds a product to the catalog. SKU uniqueness across products is
    /// enforced by the event store when the event is appended.
    Register {
        sku: Sku,
        name: ProductName,
        description: Description,
        price: Money,
        initial_stock: u32,
    },
    /// Sets a new price, in the currency the product was registered with.
    ChangePrice { price: Money },
    /// Adds (positive) or removes (negative) units on hand, for example after
    /// a delivery or a stock count.
    AdjustStock { delta: i64, reason: ShortText },
    /// Takes the product off sale. Existing reservations still ship.
    Discontinue,
    /// Sets units aside for an order placed by a checkout.
    Reserve { order_id: OrderId, quantity: u32 },
    /// Gives back an order's reserved units (the order was cancelled).
    Release { order_id: OrderId },
    /// The order's reserved units left the warehouse.
    ShipReserved { order_id: OrderId },
}
