//! Where each projection stands, as the projector's status collector finds
//! it (its Kafka partitions, the relay, the event store) and the query
//! side serves it.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One partition of one of a projection's topics.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    /// The next offset the projection will take.
    pub next_offset: i64,
    /// The partition's high watermark: the offset after its last message
    /// (read from the partition where the broker's answer falls short).
    pub high_watermark: i64,
    pub lag: i64,
}

/// Where one projection stands.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    pub projection: String,
    /// The highest global position it has taken (events of different
    /// partitions are taken in parallel, so lower positions may still be
    /// pending: see `events_behind`).
    pub position: Option<i64>,
    /// When the newest event it has taken happened.
    pub last_event_at: Option<DateTime<Utc>>,
    /// Events in the store it has not taken yet: unpublished ones plus the
    /// Kafka lag.
    pub events_behind: i64,
    /// How long ago the oldest event it has not taken happened (0 when it is
    /// caught up).
    pub seconds_behind: f64,
    pub dead_letters: i64,
    pub partitions: Vec<PartitionStatus>,
}

/// Finds every projection's status.
#[async_trait::async_trait]
pub trait CollectStatus: Send + Sync + 'static {
    async fn collect(&self) -> anyhow::Result<Vec<ProjectionStatus>>;
}
