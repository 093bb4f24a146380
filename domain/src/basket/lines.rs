//! How a basket's line events change its lines, written once for every
//! state that keeps them: the aggregate's [`BasketLine`]s and any read
//! model's own line type.

use crate::ids::ProductId;
use crate::money::Money;
use crate::text::{ProductName, Sku};

use super::{BasketEvent, BasketLine};

/// A line of a basket, as some state keeps it.
pub trait LineItem {
    /// The line `ItemAdded` adds.
    fn added(
        product_id: &ProductId,
        sku: &Sku,
        name: &ProductName,
        unit_price: &Money,
        quantity: u32,
    ) -> Self;
    /// Whether it is the line of `product_id`.
    fn is_for(&self, product_id: &ProductId) -> bool;
    fn set_quantity(&mut self, quantity: u32);
}

/// Applies a line event (`ItemAdded`, `ItemQuantityChanged`, `ItemRemoved`,
/// `BasketCleared`) to `lines`; every other event leaves them as they are.
pub fn edit_lines<L: LineItem>(lines: &mut Vec<L>, event: &BasketEvent) {
    match event {
        BasketEvent::ItemAdded {
            product_id,
            sku,
            name,
            unit_price,
            quantity,
        } => lines.push(L::added(product_id, sku, name, unit_price, *quantity)),
        BasketEvent::ItemQuantityChanged {
            product_id,
            quantity,
        } => {
            if let Some(line) = lines.iter_mut().find(|line| line.is_for(product_id)) {
                line.set_quantity(*quantity);
            }
        }
        BasketEvent::ItemRemoved { product_id } => lines.retain(|line| !line.is_for(product_id)),
        BasketEvent::BasketCleared {} => lines.clear(),
        BasketEvent::BasketOpened { .. } | BasketEvent::BasketCheckedOut { .. } => {}
    }
}

impl LineItem for BasketLine {
    fn added(
        product_id: &ProductId,
        sku: &Sku,
        name: &ProductName,
        unit_price: &Money,
        quantity: u32,
    ) -> Self {
        Self {
            product_id: *product_id,
            sku: sku.clone(),
            name: name.clone(),
            unit_price: *unit_price,
            quantity,
        }
    }

    fn is_for(&self, product_id: &ProductId) -> bool {
        self.product_id == *product_id
    }

    fn set_quantity(&mut self, quantity: u32) {
        self.quantity = quantity;
    }
}
