use crate::error::ErrorKind;
use crate::ids::OrderId;
use crate::money::Currency;

use super::ProductStatus;

/// Why a product command was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    #[error("product is already registered")]
    AlreadyRegistered,
    #[error("product is not registered")]
    NotRegistered,
    #[error("product is {status}")]
    Discontinued { status: ProductStatus },
    #[error("price must be in {expected}, the product's currency, not {got}")]
    CurrencyMismatch { expected: Currency, got: Currency },
    #[error("price must not be negative")]
    NegativePrice,
    #[error("price must be at most {max} minor units")]
    PriceTooHigh { max: i64 },
    #[error("the new price equals the current price")]
    PriceUnchanged,
    #[error("stock adjustment must not be zero")]
    ZeroAdjustment,
    #[error("adjustment would leave {on_hand} on hand, below the {reserved} units reserved")]
    StockBelowReserved { on_hand: i64, reserved: u32 },
    #[error("adjustment would take stock on hand above {max}")]
    StockOverflow { max: u32 },
    #[error("quantity must be at least 1")]
    ZeroQuantity,
    #[error("insufficient stock: {requested} requested, {available} available")]
    InsufficientStock { requested: u32, available: u32 },
    #[error("order {order_id} already holds a reservation")]
    AlreadyReserved { order_id: OrderId },
    #[error("order {order_id} holds no reservation")]
    NoReservation { order_id: OrderId },
}

impl ProductError {
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            Self::NotRegistered => ErrorKind::NotFound,
            Self::CurrencyMismatch { .. }
            | Self::NegativePrice
            | Self::PriceTooHigh { .. }
            | Self::ZeroAdjustment
            | Self::StockOverflow { .. }
            | Self::ZeroQuantity => ErrorKind::Validation,
            Self::AlreadyRegistered
            | Self::Discontinued { .. }
            | Self::PriceUnchanged
            | Self::StockBelowReserved { .. }
            | Self::InsufficientStock { .. }
            | Self::AlreadyReserved { .. }
            | Self::NoReservation { .. } => ErrorKind::InvalidState,
        }
    }

    /// A stable, machine-readable name for the error.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::AlreadyRegistered => "product-already-registered",
            Self::NotRegistered => "product-not-found",
            Self::Discontinued { .. } => "product-discontinued",
            Self::CurrencyMismatch { .. } => "currency-mismatch",
            Self::NegativePrice => "negative-price",
            Self::PriceTooHigh { .. } => "price-too-high",
            Self::PriceUnchanged => "price-unchanged",
            Self::ZeroAdjustment => "zero-adjustment",
            Self::StockBelowReserved { .. } => "stock-below-reserved",
            Self::StockOverflow { .. } => "stock-overflow",
            Self::ZeroQuantity => "zero-quantity",
            Self::InsufficientStock { .. } => "insufficient-stock",
            Self::AlreadyReserved { .. } => "already-reserved",
            Self::NoReservation { .. } => "no-reservation",
        }
    }
}
