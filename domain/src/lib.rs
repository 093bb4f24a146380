//! eshop's pure domain: the Product, Basket and Order aggregates, their
//! commands, events and errors, and the value types they share.
//!
//! Nothing in this crate does I/O. Facts an aggregate needs from another one
//! (a product's price when it is added to a basket, the current prices at
//! checkout) are looked up by the application layer and passed in the command.

pub mod basket;
pub mod error;
pub mod ids;
pub mod money;
pub mod order;
pub mod product;
pub mod text;

pub use error::ErrorKind;

/// A stored status that is none of its type's: the store holds something
/// eshop never wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);
pub use ids::{BasketId, CustomerId, OrderId, ProductId};
pub use money::{Currency, MAX_UNIT_PRICE_MINOR, Money, MoneyError};
