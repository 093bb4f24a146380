//! The Basket aggregate: what a customer is about to buy.

mod aggregate;
mod command;
mod error;
mod event;
mod lines;

pub use aggregate::{Basket, BasketLine, BasketStatus, MAX_LINES, MAX_QUANTITY};
pub use command::{BasketCommand, ProductOffer};
pub use error::BasketError;
pub use event::BasketEvent;
pub use lines::{LineItem, edit_lines};

#[cfg(test)]
mod tests;
