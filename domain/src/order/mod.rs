//! The Order aggregate: placed by a basket checkout, then paid, shipped and
//! delivered, or cancelled before it ships.

mod aggregate;
mod command;
mod error;
mod event;

pub use aggregate::{MAX_ORDER_TOTAL_MINOR, Order, OrderLine, OrderStatus, ShippingAddress};
pub use command::OrderCommand;
pub use error::OrderError;
pub use event::OrderEvent;

#[cfg(test)]
mod tests;
