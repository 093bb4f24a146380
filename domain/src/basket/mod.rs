//! The Basket aggregate: what a customer is about to buy.

mod aggregate;
mod command;
mod error;
mod event;

pub use aggregate::{Basket, BasketLine, BasketStatus, MAX_LINES, MAX_QUANTITY};
pub use command::{BasketCommand, ProductOffer};
pub use error::BasketError;
pub use event::BasketEvent;

#[cfg(test)]
mod tests;
