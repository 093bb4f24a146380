//! Live updates for subscriptions. A trigger on `order_view` notifies
//! `eshop_order_view` from the projector's own transaction, so PostgreSQL
//! delivers the notification when (and only if) the view change commits.
//! One listener per process fans the notifications out to subscribers
//! through a broadcast channel; nothing polls.

use std::time::Duration;

use serde::Deserialize;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use uuid::Uuid;

/// The channel the `order_view` trigger notifies.
pub const ORDER_CHANNEL: &str = "eshop_order_view";

/// An order whose view row changed.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct OrderChanged {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub version: i64,
}

/// Where subscribers take order changes from.
#[derive(Clone)]
pub struct LiveUpdates {
    orders: broadcast::Sender<OrderChanged>,
}

impl LiveUpdates {
    /// Starts listening on `pool`'s database. The listener reconnects by
    /// itself; changes committed while it is disconnected are not pushed
    /// (a subscriber reads the current state with a query).
    #[must_use]
    pub fn start(pool: PgPool) -> Self {
        let (orders, _) = broadcast::channel(4096);
        let sender = orders.clone();
        tokio::spawn(async move {
            loop {
                if let Err(error) = listen(&pool, &sender).await {
                    tracing::warn!(%error, "order change listener failed; reconnecting");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Self { orders }
    }

    #[must_use]
    pub fn orders(&self) -> broadcast::Receiver<OrderChanged> {
        self.orders.subscribe()
    }
}

async fn listen(
    pool: &PgPool,
    sender: &broadcast::Sender<OrderChanged>,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(ORDER_CHANNEL).await?;
    tracing::info!(channel = ORDER_CHANNEL, "listening for order changes");
    loop {
        let notification = listener.recv().await?;
        match serde_json::from_str::<OrderChanged>(notification.payload()) {
            // No subscriber is not an error.
            Ok(change) => drop(sender.send(change)),
            Err(error) => {
                tracing::warn!(%error, payload = notification.payload(), "unreadable order change")
            }
        }
    }
}
