use async_graphql::{Context, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::services;
use crate::error::{QueryError, QueryResult};
use async_graphql::ErrorExtensions;

/// One partition of a projection's topics.
#[derive(Debug, Clone, SimpleObject)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The next offset the projection will take.
    pub next_offset: i64,
    /// The offset after the partition's last message.
    pub high_watermark: i64,
    pub lag: i64,
}

/// Where one projection stands, as `eshop projections status` shows it.
#[derive(Debug, Clone, SimpleObject)]
pub struct ProjectionStatus {
    pub name: String,
    /// When this status was collected: statuses are collected at most
    /// every 5 seconds and shared by every request (and `/metrics`).
    pub observed_at: DateTime<Utc>,
    /// The highest global position it has taken.
    pub position: Option<i64>,
    /// When the newest event it has taken happened.
    pub last_event_at: Option<DateTime<Utc>>,
    /// Events in the store it has not taken yet.
    pub events_behind: i64,
    /// How long ago the oldest event it has not taken happened.
    pub seconds_behind: f64,
    /// Events it could not apply, sent to the dead-letter topic.
    pub dead_letters: i64,
    pub partitions: Vec<PartitionLag>,
}

#[derive(Default)]
pub struct OpsQueries;

#[Object]
impl OpsQueries {
    /// Every projection's position, lag and dead-letter count, as last
    /// collected (at most 5 seconds ago; see `observedAt`). An operator's
    /// field.
    async fn projections(&self, ctx: &Context<'_>) -> QueryResult<Vec<ProjectionStatus>> {
        crate::access::admin(ctx, "projections")?;
        let services = services(ctx);
        let snapshot = services.status.latest().await.map_err(|error| {
            tracing::error!(error = format!("{error:#}"), "projection status failed");
            QueryError::Unavailable.extend()
        })?;
        let observed_at = snapshot.taken_at;
        Ok(snapshot
            .statuses
            .iter()
            .cloned()
            .map(|s| ProjectionStatus {
                name: s.projection,
                observed_at,
                position: s.position,
                last_event_at: s.last_event_at,
                events_behind: s.events_behind,
                seconds_behind: s.seconds_behind,
                dead_letters: s.dead_letters,
                partitions: s
                    .partitions
                    .into_iter()
                    .map(|p| PartitionLag {
                        topic: p.topic,
                        partition: p.partition,
                        next_offset: p.next_offset,
                        high_watermark: p.high_watermark,
                        lag: p.lag,
                    })
                    .collect(),
            })
            .collect())
    }
}
