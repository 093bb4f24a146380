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

/// Gives a status enum the names read models store it by (its serde
/// names): `as_str`, and `FromStr`/`TryFrom<String>` back, refusing any
/// other name with [`UnknownStatus`].
#[macro_export]
macro_rules! stored_names {
    ($type:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $type {
            /// Every status, in order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The status as read models store it (its serde name).
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        }

        impl std::str::FromStr for $type {
            type Err = $crate::UnknownStatus;

            fn from_str(stored: &str) -> Result<Self, Self::Err> {
                match stored {
                    $($name => Ok(Self::$variant),)+
                    other => Err($crate::UnknownStatus(other.to_owned())),
                }
            }
        }

        impl TryFrom<String> for $type {
            type Error = $crate::UnknownStatus;

            fn try_from(stored: String) -> Result<Self, Self::Error> {
                stored.parse()
            }
        }
    };
}

/// A stored status that is none of its type's: the store holds something
/// eshop never wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);
pub use ids::{BasketId, CustomerId, OrderId, ProductId};
pub use money::{Currency, MAX_UNIT_PRICE_MINOR, Money, MoneyError};

#[cfg(test)]
mod tests {
    use std::fmt::Debug;
    use std::str::FromStr;

    use serde::Serialize;

    use super::UnknownStatus;
    use crate::basket::BasketStatus;
    use crate::order::OrderStatus;
    use crate::product::ProductStatus;

    fn stored_by_serde_name<T>(all: &[T], as_str: fn(T) -> &'static str)
    where
        T: Copy + Debug + PartialEq + Serialize + FromStr<Err = UnknownStatus>,
    {
        for &status in all {
            let name = as_str(status);
            assert_eq!(
                serde_json::to_value(status).expect("a status serializes"),
                serde_json::Value::from(name)
            );
            assert_eq!(name.parse::<T>(), Ok(status));
        }
        assert_eq!(
            "shipped-ish".parse::<T>(),
            Err(UnknownStatus("shipped-ish".to_owned()))
        );
    }

    #[test]
    fn each_status_is_stored_as_its_serde_name_and_no_other_name_parses() {
        stored_by_serde_name(OrderStatus::ALL, OrderStatus::as_str);
        stored_by_serde_name(BasketStatus::ALL, BasketStatus::as_str);
        stored_by_serde_name(ProductStatus::ALL, ProductStatus::as_str);
    }
}
