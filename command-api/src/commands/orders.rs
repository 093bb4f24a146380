//! Order commands.

use domain::order::{Order, OrderCommand};
use domain::product::ProductCommand;
use domain::text::ShortText;
use domain::{Money, OrderId};

use super::{CommandContext, CommandError, CommandService, Outcome, Resource};

impl CommandService {
    pub async fn pay(
        &self,
        ctx: &CommandContext,
        id: OrderId,
        payment_reference: ShortText,
        amount: Money,
    ) -> Result<Outcome, CommandError> {
        let command = OrderCommand::Pay {
            payment_reference,
            amount,
        };
        self.single::<Order>(ctx, Resource::Order, *id.as_uuid(), command)
            .await
    }

    /// Ships an order; its reserved units leave the products' stock.
    pub async fn ship(
        &self,
        ctx: &CommandContext,
        id: OrderId,
        tracking_number: ShortText,
    ) -> Result<Outcome, CommandError> {
        let command = OrderCommand::Ship { tracking_number };
        self.order_with_stock(ctx, id, command, |order_id| ProductCommand::ShipReserved {
            order_id,
        })
        .await
    }

    pub async fn deliver(
        &self,
        ctx: &CommandContext,
        id: OrderId,
    ) -> Result<Outcome, CommandError> {
        self.single::<Order>(ctx, Resource::Order, *id.as_uuid(), OrderCommand::Deliver)
            .await
    }

    /// Cancels an order before it ships, releasing its reserved stock.
    pub async fn cancel(
        &self,
        ctx: &CommandContext,
        id: OrderId,
        reason: ShortText,
    ) -> Result<Outcome, CommandError> {
        let command = OrderCommand::Cancel { reason };
        self.order_with_stock(ctx, id, command, |order_id| ProductCommand::Release {
            order_id,
        })
        .await
    }
}
