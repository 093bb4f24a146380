use async_graphql::{Context, ID, Subscription as SubscriptionObject};
use futures::Stream;
use futures::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use uuid::Uuid;

use super::order::Order;
use super::{parse_id, services};
use crate::live::OrderChanged;

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

/// The orders of the changes that `wanted` selects, read from the view
/// after each change committed.
fn changes<F>(ctx: &Context<'_>, wanted: F) -> impl Stream<Item = Order> + use<F>
where
    F: Fn(&OrderChanged) -> bool + Send + 'static,
{
    let services = services(ctx);
    let read_models = services.read_models.clone();
    BroadcastStream::new(services.live.orders())
        .filter_map(move |change| {
            let keep = match change {
                Ok(change) => wanted(&change).then_some(change.order_id),
                Err(BroadcastStreamRecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "a subscriber fell behind; changes were dropped");
                    None
                }
            };
            futures::future::ready(keep)
        })
        .then(move |id: Uuid| {
            let read_models = read_models.clone();
            async move { read_models.order(id).await.ok().flatten().map(Order) }
        })
        .filter_map(futures::future::ready)
}
