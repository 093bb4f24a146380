use crate::error::ErrorKind;
use crate::ids::ProductId;
use crate::money::{Currency, MAX_UNIT_PRICE_MINOR};

use super::{BasketStatus, MAX_LINES, MAX_QUANTITY};

/// Why a basket command was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasketError {
    #[error("basket already exists")]
    AlreadyOpened,
    #[error("basket does not exist")]
    NotOpened,
    #[error("basket is {status} and accepts no further change")]
    NotOpen { status: BasketStatus },
    #[error("quantity must be between 1 and {MAX_QUANTITY}, got {quantity}")]
    QuantityOutOfRange { quantity: u64 },
    #[error(
        "the basket holds {held} of product {product_id}; adding {adding} would exceed {MAX_QUANTITY}"
    )]
    LineFull {
        product_id: ProductId,
        held: u32,
        adding: u32,
    },
    #[error("a basket holds at most {MAX_LINES} lines")]
    TooManyLines,
    #[error("product {product_id} is discontinued")]
    ProductDiscontinued { product_id: ProductId },
    #[error(
        "product {product_id} is priced outside 0 to {MAX_UNIT_PRICE_MINOR} minor units and cannot be sold"
    )]
    PriceOutOfRange { product_id: ProductId },
    #[error("basket is priced in {basket}, product in {product}")]
    CurrencyMismatch { basket: Currency, product: Currency },
    #[error("product {product_id} is not in the basket")]
    ItemNotInBasket { product_id: ProductId },
    #[error("basket is empty")]
    Empty,
}

impl BasketError {
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            Self::NotOpened | Self::ItemNotInBasket { .. } => ErrorKind::NotFound,
            Self::QuantityOutOfRange { .. }
            | Self::TooManyLines
            | Self::ProductDiscontinued { .. }
            | Self::PriceOutOfRange { .. }
            | Self::CurrencyMismatch { .. } => ErrorKind::Validation,
            Self::AlreadyOpened | Self::NotOpen { .. } | Self::Empty | Self::LineFull { .. } => {
                ErrorKind::InvalidState
            }
        }
    }

    /// A stable, machine-readable name for the error.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::AlreadyOpened => "basket-already-opened",
            Self::NotOpened => "basket-not-found",
            Self::NotOpen { .. } => "basket-not-open",
            Self::QuantityOutOfRange { .. } => "quantity-out-of-range",
            Self::LineFull { .. } => "line-full",
            Self::TooManyLines => "too-many-lines",
            Self::ProductDiscontinued { .. } => "product-discontinued",
            Self::PriceOutOfRange { .. } => "price-out-of-range",
            Self::CurrencyMismatch { .. } => "currency-mismatch",
            Self::ItemNotInBasket { .. } => "item-not-in-basket",
            Self::Empty => "basket-empty",
        }
    }
}
