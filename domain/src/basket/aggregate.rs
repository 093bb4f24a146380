use std::fmt;

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};

use crate::ids::{CustomerId, OrderId, ProductId};
use crate::money::{Currency, Money};
use crate::text::{ProductName, Sku};

use super::{BasketCommand, BasketError, BasketEvent};

/// Most units of one product in one basket line (and so in one order line).
pub const MAX_QUANTITY: u32 = 99;
/// Most lines in one basket (and so in one order).
pub const MAX_LINES: usize = 50;

/// Where a basket is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BasketStatus {
    #[default]
    NotOpened,
    Open,
    CheckedOut,
}

crate::stored_names!(BasketStatus {
    NotOpened => "not_opened",
    Open => "open",
    CheckedOut => "checked_out",
});

impl fmt::Display for BasketStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotOpened => "not opened",
            Self::Open => "open",
            Self::CheckedOut => "checked out",
        })
    }
}

/// One product in a basket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasketLine {
    pub product_id: ProductId,
    pub sku: Sku,
    pub name: ProductName,
    pub unit_price: Money,
    pub quantity: u32,
}

/// A customer's basket. All its lines share one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Basket {
    status: BasketStatus,
    customer_id: Option<CustomerId>,
    lines: Vec<BasketLine>,
    order_id: Option<OrderId>,
}

fn checked_quantity(quantity: u64) -> Result<u32, BasketError> {
    match u32::try_from(quantity) {
        Ok(q) if (1..=MAX_QUANTITY).contains(&q) => Ok(q),
        _ => Err(BasketError::QuantityOutOfRange { quantity }),
    }
}

impl Basket {
    /// The format of a basket's serialized state, as snapshots and the
    /// state cache keep it. Bump it with any change to the fields of
    /// `Basket` or `BasketLine` (a test pins the shape): cached states of
    /// another format are then never read.
    pub const STATE_FORMAT: u32 = 1;

    #[must_use]
    pub const fn status(&self) -> BasketStatus {
        self.status
    }

    #[must_use]
    pub const fn customer_id(&self) -> Option<CustomerId> {
        self.customer_id
    }

    #[must_use]
    pub fn lines(&self) -> &[BasketLine] {
        &self.lines
    }

    /// The order a checkout placed, once checked out.
    #[must_use]
    pub const fn order_id(&self) -> Option<OrderId> {
        self.order_id
    }

    /// The basket's currency: that of its first line.
    #[must_use]
    pub fn currency(&self) -> Option<Currency> {
        self.lines.first().map(|line| line.unit_price.currency)
    }

    fn line(&self, product_id: ProductId) -> Option<&BasketLine> {
        self.lines.iter().find(|line| line.product_id == product_id)
    }

    fn require_open(&self) -> Result<(), BasketError> {
        match self.status {
            BasketStatus::Open => Ok(()),
            BasketStatus::NotOpened => Err(BasketError::NotOpened),
            status @ BasketStatus::CheckedOut => Err(BasketError::NotOpen { status }),
        }
    }

    fn decide(&self, command: BasketCommand) -> Result<Vec<BasketEvent>, BasketError> {
        if !matches!(command, BasketCommand::Open { .. }) {
            self.require_open()?;
        }
        let event = match command {
            BasketCommand::Open { customer_id } => {
                if self.status != BasketStatus::NotOpened {
                    return Err(BasketError::AlreadyOpened);
                }
                BasketEvent::BasketOpened { customer_id }
            }
            BasketCommand::AddItem { product, quantity } => {
                let added = checked_quantity(u64::from(quantity))?;
                if product.discontinued {
                    return Err(BasketError::ProductDiscontinued {
                        product_id: product.product_id,
                    });
                }
                // A catalog price from before prices were bounded.
                if product.unit_price.check_unit_price().is_err() {
                    return Err(BasketError::PriceOutOfRange {
                        product_id: product.product_id,
                    });
                }
                if let Some(currency) = self
                    .currency()
                    .filter(|c| *c != product.unit_price.currency)
                {
                    return Err(BasketError::CurrencyMismatch {
                        basket: currency,
                        product: product.unit_price.currency,
                    });
                }
                match self.line(product.product_id) {
                    Some(line) => {
                        // The request is valid; the basket's state refuses it.
                        let quantity = checked_quantity(
                            u64::from(line.quantity) + u64::from(added),
                        )
                        .map_err(|_| BasketError::LineFull {
                            product_id: product.product_id,
                            held: line.quantity,
                            adding: added,
                        })?;
                        BasketEvent::ItemQuantityChanged {
                            product_id: product.product_id,
                            quantity,
                        }
                    }
                    None if self.lines.len() >= MAX_LINES => return Err(BasketError::TooManyLines),
                    None => BasketEvent::ItemAdded {
                        product_id: product.product_id,
                        sku: product.sku,
                        name: product.name,
                        unit_price: product.unit_price,
                        quantity: added,
                    },
                }
            }
            BasketCommand::ChangeQuantity {
                product_id,
                quantity,
            } => {
                let quantity = checked_quantity(u64::from(quantity))?;
                let line = self
                    .line(product_id)
                    .ok_or(BasketError::ItemNotInBasket { product_id })?;
                if line.quantity == quantity {
                    return Ok(Vec::new());
                }
                BasketEvent::ItemQuantityChanged {
                    product_id,
                    quantity,
                }
            }
            BasketCommand::RemoveItem { product_id } => {
                self.line(product_id)
                    .ok_or(BasketError::ItemNotInBasket { product_id })?;
                BasketEvent::ItemRemoved { product_id }
            }
            BasketCommand::Clear => {
                if self.lines.is_empty() {
                    return Ok(Vec::new());
                }
                BasketEvent::BasketCleared {}
            }
            BasketCommand::CheckOut { order_id } => {
                if self.lines.is_empty() {
                    return Err(BasketError::Empty);
                }
                BasketEvent::BasketCheckedOut { order_id }
            }
        };
        Ok(vec![event])
    }
}

impl Aggregate for Basket {
    const TYPE: &'static str = "Basket";
    type Command = BasketCommand;
    type Event = BasketEvent;
    type Error = BasketError;
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
            BasketEvent::BasketOpened { customer_id } => {
                self.status = BasketStatus::Open;
                self.customer_id = Some(customer_id);
            }
            BasketEvent::ItemAdded { .. }
            | BasketEvent::ItemQuantityChanged { .. }
            | BasketEvent::ItemRemoved { .. }
            | BasketEvent::BasketCleared {} => super::edit_lines(&mut self.lines, &event),
            BasketEvent::BasketCheckedOut { order_id } => {
                self.status = BasketStatus::CheckedOut;
                self.order_id = Some(order_id);
            }
        }
    }
}
