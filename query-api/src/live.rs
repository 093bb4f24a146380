//! Live updates for subscriptions. A trigger on `order_view` notifies
//! `eshop_order_view` from the projector's own transaction, so PostgreSQL
//! delivers the notification when (and only if) the view change commits.
//! One listener per process fans the notifications out to subscribers
//! through a broadcast channel; nothing polls. The listener reads each
//! changed order once and broadcasts the row, so a change costs one SQL
//! read however many subscribers it reaches (and none when there are no
//! subscribers).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use uuid::Uuid;

use read_models::OrderRecord;

use crate::read_models::ReadModels;

/// The channel the `order_view` trigger notifies.
pub const ORDER_CHANNEL: &str = "eshop_order_view";

/// An order whose view row changed.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct OrderChanged {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub version: i64,
}

/// An order change with the order's view row as read once after the
/// change committed, shared by every subscriber.
#[derive(Debug, Clone)]
pub struct OrderUpdate {
    pub change: OrderChanged,
    pub order: Arc<OrderRecord>,
}

/// Where subscribers take order changes from.
#[derive(Clone)]
pub struct LiveUpdates {
    orders: broadcast::Sender<OrderUpdate>,
}

impl LiveUpdates {
    /// Starts listening on the read models' database. The listener
    /// reconnects by itself; changes committed while it is disconnected
    /// are not pushed (a subscriber reads the current state with a query).
    #[must_use]
    pub fn start(read_models: ReadModels) -> Self {
        let (orders, _) = broadcast::channel(4096);
        let sender = orders.clone();
        tokio::spawn(async move {
            loop {
                if let Err(error) = listen(&read_models, &sender).await {
                    tracing::warn!(%error, "order change listener failed; reconnecting");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Self { orders }
    }

    /// Every order change from now on, with its row.
    #[must_use]
    pub fn orders(&self) -> broadcast::Receiver<OrderUpdate> {
        self.orders.subscribe()
    }
}

/// Reads each notified order once, in notification order, and broadcasts
/// it. The read happens after the change committed (the notification is
/// sent at commit), so it sees that change or a later one.
async fn listen(
    read_models: &ReadModels,
    sender: &broadcast::Sender<OrderUpdate>,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(read_models.pool()).await?;
    listener.listen(ORDER_CHANNEL).await?;
    tracing::info!(channel = ORDER_CHANNEL, "listening for order changes");
    loop {
        let notification = listener.recv().await?;
        let change = match serde_json::from_str::<OrderChanged>(notification.payload()) {
            Ok(change) => change,
            Err(error) => {
                tracing::warn!(%error, payload = notification.payload(), "unreadable order change");
                continue;
            }
        };
        // No subscriber: nobody to read it for.
        if sender.receiver_count() == 0 {
            continue;
        }
        match read_models.order(change.order_id).await {
            // Subscribers that left meanwhile are not an error.
            Ok(Some(order)) => drop(sender.send(OrderUpdate {
                change,
                order: Arc::new(order),
            })),
            Ok(None) => {
                tracing::warn!(order.id = %change.order_id, "a changed order is not in order_view");
            }
            Err(error) => tracing::warn!(
                %error,
                order.id = %change.order_id,
                "failed to read a changed order; its subscribers miss this change"
            ),
        }
    }
}
