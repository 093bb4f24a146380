use crate::basket::{MAX_LINES, MAX_QUANTITY};
use crate::error::ErrorKind;
use crate::ids::ProductId;
use crate::money::{MAX_UNIT_PRICE_MINOR, Money, MoneyError};

use super::OrderStatus;

/// Why an order command was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order is already placed")]
    AlreadyPlaced,
    #[error("order does not exist")]
    NotPlaced,
    #[error("cannot {action} an order that is {status}")]
    InvalidTransition {
        action: &'static str,
        status: OrderStatus,
    },
    #[error("an order needs at least one line")]
    NoLines,
    #[error("line quantities must be at least 1")]
    ZeroQuantity,
    #[error("line quantities must be at most {MAX_QUANTITY}, got {quantity}")]
    QuantityOutOfRange { quantity: u32 },
    #[error("an order holds at most {MAX_LINES} lines")]
    TooManyLines,
    #[error(
        "product {product_id} is priced outside 0 to {MAX_UNIT_PRICE_MINOR} minor units and cannot be sold"
    )]
    PriceOutOfRange { product_id: ProductId },
    #[error("order lines must share one currency and stay within range: {0}")]
    Total(MoneyError),
    #[error("payment of {paid} does not equal the order total {total}")]
    AmountMismatch { paid: Money, total: Money },
}

impl OrderError {
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            Self::NotPlaced => ErrorKind::NotFound,
            Self::NoLines
            | Self::ZeroQuantity
            | Self::QuantityOutOfRange { .. }
            | Self::TooManyLines
            | Self::PriceOutOfRange { .. }
            | Self::Total(_)
            | Self::AmountMismatch { .. } => ErrorKind::Validation,
            Self::AlreadyPlaced | Self::InvalidTransition { .. } => ErrorKind::InvalidState,
        }
    }

    /// A stable, machine-readable name for the error.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::AlreadyPlaced => "order-already-placed",
            Self::NotPlaced => "order-not-found",
            Self::InvalidTransition { .. } => "invalid-transition",
            Self::NoLines => "no-lines",
            Self::ZeroQuantity => "zero-quantity",
            Self::QuantityOutOfRange { .. } => "quantity-out-of-range",
            Self::TooManyLines => "too-many-lines",
            Self::PriceOutOfRange { .. } => "price-out-of-range",
            Self::Total(_) => "invalid-total",
            Self::AmountMismatch { .. } => "amount-mismatch",
        }
    }
}
