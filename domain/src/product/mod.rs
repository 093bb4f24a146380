//! The catalog's Product aggregate: price, stock on hand and reservations.

mod aggregate;
mod command;
mod error;
mod event;

pub use aggregate::{Product, ProductStatus};
pub use command::ProductCommand;
pub use error::ProductError;
pub use event::ProductEvent;

#[cfg(test)]
mod tests;
