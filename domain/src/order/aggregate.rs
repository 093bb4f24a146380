use std::fmt;

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::basket::{MAX_LINES, MAX_QUANTITY};
use crate::ids::{BasketId, CustomerId, ProductId};
use crate::money::{MAX_UNIT_PRICE_MINOR, Money, MoneyError};
use crate::text::{CountryCode, ProductName, ShortText, Sku};

use super::{OrderCommand, OrderError, OrderEvent};

/// The largest order total: [`MAX_LINES`] lines of [`MAX_QUANTITY`] units at
/// [`MAX_UNIT_PRICE_MINOR`], 4.95 × 10^15 minor units. Orders are placed
/// within these bounds, so a total (and any amount paid) always fits a
/// 64-bit integer, with room for more than a thousand such totals.
pub const MAX_ORDER_TOTAL_MINOR: i64 =
    MAX_UNIT_PRICE_MINOR * MAX_QUANTITY as i64 * MAX_LINES as i64;

const _: () = assert!(
    MAX_ORDER_TOTAL_MINOR <= i64::MAX / 1000,
    "an order total must fit a 64-bit integer with a wide margin"
);

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    #[default]
    NotPlaced,
    Placed,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

crate::stored_names!(OrderStatus {
    NotPlaced => "not_placed",
    Placed => "placed",
    Paid => "paid",
    Shipped => "shipped",
    Delivered => "delivered",
    Cancelled => "cancelled",
});

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotPlaced => "not placed",
            Self::Placed => "placed",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        })
    }
}

/// One product of an order, priced at checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLine {
    pub product_id: ProductId,
    pub sku: Sku,
    pub name: ProductName,
    pub unit_price: Money,
    pub quantity: u32,
}

/// Where an order goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShippingAddress {
    pub recipient: ShortText,
    pub line1: ShortText,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<ShortText>,
    pub city: ShortText,
    pub postal_code: ShortText,
    pub country: CountryCode,
}

/// An order and where it stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    status: OrderStatus,
    customer_id: Option<CustomerId>,
    basket_id: Option<BasketId>,
    lines: Vec<OrderLine>,
    total: Option<Money>,
    shipping_address: Option<ShippingAddress>,
    payment_reference: Option<ShortText>,
    tracking_number: Option<ShortText>,
    cancellation_reason: Option<ShortText>,
}

impl Order {
    #[must_use]
    pub const fn status(&self) -> OrderStatus {
        self.status
    }

    #[must_use]
    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }

    #[must_use]
    pub const fn total(&self) -> Option<Money> {
        self.total
    }

    #[must_use]
    pub const fn customer_id(&self) -> Option<CustomerId> {
        self.customer_id
    }

    fn transition(&self, action: &'static str, allowed: &[OrderStatus]) -> Result<(), OrderError> {
        match self.status {
            OrderStatus::NotPlaced => Err(OrderError::NotPlaced),
            status if allowed.contains(&status) => Ok(()),
            status => Err(OrderError::InvalidTransition { action, status }),
        }
    }

    fn decide(&self, command: OrderCommand) -> Result<OrderEvent, OrderError> {
        match command {
            OrderCommand::Place {
                customer_id,
                basket_id,
                lines,
                shipping_address,
            } => {
                if self.status != OrderStatus::NotPlaced {
                    return Err(OrderError::AlreadyPlaced);
                }
                let first = lines.first().ok_or(OrderError::NoLines)?;
                if lines.len() > MAX_LINES {
                    return Err(OrderError::TooManyLines);
                }
                let mut total = Money::zero(first.unit_price.currency);
                for line in &lines {
                    if line.quantity == 0 {
                        return Err(OrderError::ZeroQuantity);
                    }
                    if line.quantity > MAX_QUANTITY {
                        return Err(OrderError::QuantityOutOfRange {
                            quantity: line.quantity,
                        });
                    }
                    match line.unit_price.check_unit_price() {
                        Ok(()) => {}
                        Err(MoneyError::AboveMaximum { .. }) => {
                            return Err(OrderError::PriceOutOfRange {
                                product_id: line.product_id,
                            });
                        }
                        Err(error) => return Err(OrderError::Total(error)),
                    }
                    let amount = line
                        .unit_price
                        .checked_mul(line.quantity)
                        .map_err(OrderError::Total)?;
                    total = total.checked_add(amount).map_err(OrderError::Total)?;
                }
                Ok(OrderEvent::OrderPlaced {
                    customer_id,
                    basket_id,
                    lines,
                    total,
                    shipping_address,
                })
            }
            OrderCommand::Pay {
                payment_reference,
                amount,
            } => {
                self.transition("pay", &[OrderStatus::Placed])?;
                let total = self.total.ok_or(OrderError::NotPlaced)?;
                if amount != total {
                    return Err(OrderError::AmountMismatch {
                        paid: amount,
                        total,
                    });
                }
                Ok(OrderEvent::OrderPaid {
                    payment_reference,
                    amount,
                })
            }
            OrderCommand::Ship { tracking_number } => {
                self.transition("ship", &[OrderStatus::Paid])?;
                Ok(OrderEvent::OrderShipped { tracking_number })
            }
            OrderCommand::Deliver => {
                self.transition("deliver", &[OrderStatus::Shipped])?;
                Ok(OrderEvent::OrderDelivered {})
            }
            OrderCommand::Cancel { reason } => {
                self.transition("cancel", &[OrderStatus::Placed, OrderStatus::Paid])?;
                Ok(OrderEvent::OrderCancelled { reason })
            }
        }
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "Order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OrderEvent::OrderPlaced {
                customer_id,
                basket_id,
                lines,
                total,
                shipping_address,
            } => {
                self.status = OrderStatus::Placed;
                self.customer_id = Some(customer_id);
                self.basket_id = Some(basket_id);
                self.lines = lines;
                self.total = Some(total);
                self.shipping_address = Some(shipping_address);
            }
            OrderEvent::OrderPaid {
                payment_reference, ..
            } => {
                self.status = OrderStatus::Paid;
                self.payment_reference = Some(payment_reference);
            }
            OrderEvent::OrderShipped { tracking_number } => {
                self.status = OrderStatus::Shipped;
                self.tracking_number = Some(tracking_number);
            }
            OrderEvent::OrderDelivered {} => self.status = OrderStatus::Delivered,
            OrderEvent::OrderCancelled { reason } => {
                self.status = OrderStatus::Cancelled;
                self.cancellation_reason = Some(reason);
            }
        }
    }
}
