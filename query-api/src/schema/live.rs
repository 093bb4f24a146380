use async_graphql::{Context, ID, Subscription as SubscriptionObject};
use futures::Stream;
use futures::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::order::Order;
use super::{parse_id, services};
use crate::live::OrderChanged;
use crate::read_models::OrderRow;

/// Live updates over WebSocket (graphql-transport-ws at `/graphql/ws`),
/// pushed when the projector commits the change to `order_view`.
#[derive(Default)]
pub struct Subscription;

#[SubscriptionObject]
impl Subscription {
    /// The order each time its view changes (a new status, a payment, …).
    async fn order_updated(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
    ) -> Result<impl Stream<Item = Order> + use<>, async_graphql::Error> {
        let id = parse_id(&order_id, "order")?;
        Ok(changes(ctx, move |change| change.order_id == id))
    }

    /// Each order of the customer as it is placed or changes.
    async fn customer_orders(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
    ) -> Result<impl Stream<Item = Order> + use<>, async_graphql::Error> {
        let id = parse_id(&customer_id, "customer")?;
        Ok(changes(ctx, move |change| change.customer_id == id))
    }
}

/// The orders of the changes that `wanted` selects, as the live listener
/// read them once for all subscribers (no read of their own).
fn changes<F>(ctx: &Context<'_>, wanted: F) -> impl Stream<Item = Order> + use<F>
where
    F: Fn(&OrderChanged) -> bool + Send + 'static,
{
    BroadcastStream::new(services(ctx).live.orders()).filter_map(move |update| {
        let order = match update {
            Ok(update) => wanted(&update.change).then(|| Order(OrderRow::clone(&update.order))),
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                tracing::warn!(missed, "a subscriber fell behind; changes were dropped");
                None
            }
        };
        futures::future::ready(order)
    })
}
