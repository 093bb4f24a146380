use async_graphql::{Context, ID, Subscription as SubscriptionObject};
use futures::Stream;
use futures::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::order::{Order, order_as_of};
use super::{not_found, parse_id, services};
use crate::access::{self, Sees};
use crate::error::{Coded, QueryError, QueryResult};
use crate::live::OrderChanged;
use async_graphql::ErrorExtensions;
use chrono::Utc;
use read_models::OrderRecord;

/// Live updates over WebSocket (graphql-transport-ws at `/graphql/ws`),
/// pushed when the projector commits the change to `order_view`.
#[derive(Default)]
pub struct Subscription;

#[SubscriptionObject]
impl Subscription {
    /// The order each time its view changes (a new status, a payment, …).
    /// A customer subscribes to their own orders only: another's answers
    /// `NOT_FOUND`, as an id that does not exist. Ends, with an
    /// `UNAUTHENTICATED` error, when the connection's token expires.
    async fn order_updated(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
    ) -> Result<impl Stream<Item = QueryResult<Order>> + use<>, async_graphql::Error> {
        let sees = access::orders(ctx)?;
        let id = parse_id(&order_id, "order")?;
        if let Sees::Own(_) = sees {
            // Whose it is, from the event store: a customer may subscribe
            // the moment the checkout answered, before any projection.
            let events = services(ctx).read_models.order_events(id).await.coded()?;
            let owner = order_as_of(&events, Utc::now()).coded()?;
            if !owner.is_some_and(|order| sees.sees(order.customer_id)) {
                return Err(not_found("order", id));
            }
        }
        let expires = access::caller(ctx)?.expires_at;
        Ok(until_expiry(
            changes(ctx, move |change| {
                change.order_id == id && sees.sees(change.customer_id)
            }),
            expires,
        ))
    }

    /// Each order of the customer as it is placed or changes. A customer
    /// subscribes to their own only (`FORBIDDEN` otherwise). Ends, with an
    /// `UNAUTHENTICATED` error, when the connection's token expires.
    async fn customer_orders(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
    ) -> Result<impl Stream<Item = QueryResult<Order>> + use<>, async_graphql::Error> {
        let sees = access::orders(ctx)?;
        let id = parse_id(&customer_id, "customer")?;
        if !sees.sees(id) {
            return Err(QueryError::Forbidden(
                "a customer follows only their own orders: customerId must be yours".into(),
            )
            .extend());
        }
        let expires = access::caller(ctx)?.expires_at;
        Ok(until_expiry(
            changes(ctx, move |change| change.customer_id == id),
            expires,
        ))
    }
}

/// `stream` until `expires_at` (seconds since the Unix epoch), then one
/// `UNAUTHENTICATED` error, and the end: a subscription lives no longer
/// than the token it was started with.
fn until_expiry(
    stream: impl Stream<Item = Order> + Send + 'static,
    expires_at: u64,
) -> impl Stream<Item = QueryResult<Order>> + Send + 'static {
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    };
    let left = std::time::Duration::from_secs(expires_at.saturating_sub(unix_now()));
    let expiry = tokio::time::sleep(left);
    // Said only when the token did expire, not when the changes ended
    // first (the server stopping).
    let expired = futures::stream::once(async move {
        (unix_now() >= expires_at).then(|| {
            Err(QueryError::Unauthenticated(
                "the token expired: subscribe again with a new one".into(),
            )
            .extend())
        })
    })
    .filter_map(futures::future::ready);
    stream.map(Ok).take_until(expiry).chain(expired)
}

/// The orders of the changes that `wanted` selects, as the live listener
/// read them once for all subscribers (no read of their own).
fn changes<F>(ctx: &Context<'_>, wanted: F) -> impl Stream<Item = Order> + use<F>
where
    F: Fn(&OrderChanged) -> bool + Send + 'static,
{
    BroadcastStream::new(services(ctx).live.orders()).filter_map(move |update| {
        let order = match update {
            Ok(update) => wanted(&update.change).then(|| {
                // One span per push to this subscriber.
                let _push = telemetry::span!(
                    "subscription.push",
                    otel.kind = "producer",
                    order.id = %update.order.order_id,
                )
                .entered();
                Order(OrderRecord::clone(&update.order))
            }),
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                tracing::warn!(missed, "a subscriber fell behind; changes were dropped");
                None
            }
        };
        futures::future::ready(order)
    })
}
