use std::collections::BTreeMap;
use std::fmt;

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};

use crate::ids::OrderId;
use crate::money::{Money, MoneyError};
use crate::text::{Description, ProductName, Sku};

use super::{ProductCommand, ProductError, ProductEvent};

/// Where a product is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    #[default]
    Unregistered,
    Active,
    Discontinued,
}

crate::stored_names!(ProductStatus {
    Unregistered => "unregistered",
    Active => "active",
    Discontinued => "discontinued",
});

impl fmt::Display for ProductStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unregistered => "unregistered",
            Self::Active => "active",
            Self::Discontinued => "discontinued",
        })
    }
}

/// The catalog facts of a registered product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDetails {
    pub sku: Sku,
    pub name: ProductName,
    pub description: Description,
    pub price: Money,
}

/// A product of the catalog and its stock.
///
/// Invariant: `reserved` is the sum of `reservations`, and
/// `reserved <= on_hand`, so the available stock never goes below zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    status: ProductStatus,
    details: Option<ProductDetails>,
    on_hand: u32,
    reserved: u32,
    /// Units set aside per order, until the order ships or is cancelled.
    reservations: BTreeMap<OrderId, u32>,
}

/// A price the catalog accepts: zero to
/// [`MAX_UNIT_PRICE_MINOR`](crate::money::MAX_UNIT_PRICE_MINOR).
fn check_price(price: Money) -> Result<(), ProductError> {
    match price.check_unit_price() {
        Ok(()) => Ok(()),
        Err(MoneyError::AboveMaximum { max }) => Err(ProductError::PriceTooHigh { max }),
        Err(_) => Err(ProductError::NegativePrice),
    }
}

impl Product {
    #[must_use]
    pub const fn status(&self) -> ProductStatus {
        self.status
    }

    #[must_use]
    pub const fn details(&self) -> Option<&ProductDetails> {
        self.details.as_ref()
    }

    #[must_use]
    pub const fn on_hand(&self) -> u32 {
        self.on_hand
    }

    #[must_use]
    pub const fn reserved(&self) -> u32 {
        self.reserved
    }

    /// Units that can still be reserved.
    #[must_use]
    pub const fn available(&self) -> u32 {
        self.on_hand.saturating_sub(self.reserved)
    }

    fn require_registered(&self) -> Result<&ProductDetails, ProductError> {
        self.details.as_ref().ok_or(ProductError::NotRegistered)
    }

    /// The quantity reserved for `order_id` on a registered product.
    fn reservation(&self, order_id: OrderId) -> Result<u32, ProductError> {
        self.require_registered()?;
        self.reservations
            .get(&order_id)
            .copied()
            .ok_or(ProductError::NoReservation { order_id })
    }

    fn require_active(&self) -> Result<&ProductDetails, ProductError> {
        let details = self.require_registered()?;
        if self.status == ProductStatus::Discontinued {
            return Err(ProductError::Discontinued {
                status: self.status,
            });
        }
        Ok(details)
    }

    fn decide(&self, command: ProductCommand) -> Result<Vec<ProductEvent>, ProductError> {
        let event = match command {
            ProductCommand::Register {
                sku,
                name,
                description,
                price,
                initial_stock,
            } => {
                if self.status != ProductStatus::Unregistered {
                    return Err(ProductError::AlreadyRegistered);
                }
                check_price(price)?;
                ProductEvent::ProductRegistered {
                    sku,
                    name,
                    description,
                    price,
                    initial_stock,
                }
            }
            ProductCommand::ChangePrice { price } => {
                let details = self.require_active()?;
                if price.currency != details.price.currency {
                    return Err(ProductError::CurrencyMismatch {
                        expected: details.price.currency,
                        got: price.currency,
                    });
                }
                check_price(price)?;
                if price == details.price {
                    return Err(ProductError::PriceUnchanged);
                }
                ProductEvent::PriceChanged {
                    old_price: details.price,
                    new_price: price,
                }
            }
            ProductCommand::AdjustStock { delta, reason } => {
                self.require_registered()?;
                if delta == 0 {
                    return Err(ProductError::ZeroAdjustment);
                }
                let on_hand = i64::from(self.on_hand).saturating_add(delta);
                if on_hand < i64::from(self.reserved) {
                    return Err(ProductError::StockBelowReserved {
                        on_hand,
                        reserved: self.reserved,
                    });
                }
                let on_hand = u32::try_from(on_hand)
                    .map_err(|_| ProductError::StockOverflow { max: u32::MAX })?;
                ProductEvent::StockAdjusted {
                    delta,
                    reason,
                    on_hand,
                }
            }
            ProductCommand::Discontinue => {
                self.require_active()?;
                ProductEvent::ProductDiscontinued {}
            }
            ProductCommand::Reserve { order_id, quantity } => {
                self.require_active()?;
                if quantity == 0 {
                    return Err(ProductError::ZeroQuantity);
                }
                if self.reservations.contains_key(&order_id) {
                    return Err(ProductError::AlreadyReserved { order_id });
                }
                if quantity > self.available() {
                    return Err(ProductError::InsufficientStock {
                        requested: quantity,
                        available: self.available(),
                    });
                }
                ProductEvent::StockReserved { order_id, quantity }
            }
            ProductCommand::Release { order_id } => ProductEvent::StockReleased {
                order_id,
                quantity: self.reservation(order_id)?,
            },
            ProductCommand::ShipReserved { order_id } => ProductEvent::ReservedStockShipped {
                order_id,
                quantity: self.reservation(order_id)?,
            },
        };
        Ok(vec![event])
    }
}

impl Aggregate for Product {
    const TYPE: &'static str = "Product";
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ProductEvent::ProductRegistered {
                sku,
                name,
                description,
                price,
                initial_stock,
            } => {
                self.status = ProductStatus::Active;
                self.details = Some(ProductDetails {
                    sku,
                    name,
                    description,
                    price,
                });
                self.on_hand = initial_stock;
            }
            ProductEvent::PriceChanged { new_price, .. } => {
                if let Some(details) = self.details.as_mut() {
                    details.price = new_price;
                }
            }
            ProductEvent::StockAdjusted { on_hand, .. } => self.on_hand = on_hand,
            ProductEvent::ProductDiscontinued {} => self.status = ProductStatus::Discontinued,
            ProductEvent::StockReserved { order_id, quantity } => {
                self.reservations.insert(order_id, quantity);
                self.reserved = self.reserved.saturating_add(quantity);
            }
            ProductEvent::StockReleased { order_id, quantity } => {
                self.reservations.remove(&order_id);
                self.reserved = self.reserved.saturating_sub(quantity);
            }
            ProductEvent::ReservedStockShipped { order_id, quantity } => {
                self.reservations.remove(&order_id);
                self.reserved = self.reserved.saturating_sub(quantity);
                self.on_hand = self.on_hand.saturating_sub(quantity);
            }
        }
    }
}
