//! The projection statuses the GraphQL `projections` field serves and
//! `eshop serve` records on `/metrics`: collected by whatever finds them
//! (the projector's Kafka collector in `eshop`), at most once per period.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use read_models::status::{CollectStatus, ProjectionStatus};

/// Sets the status gauges of `/metrics`.
pub fn record_metrics(statuses: &[ProjectionStatus]) {
    for status in statuses {
        let labels = [("projection", status.projection.clone())];
        metrics::gauge!("eshop_projection_position", &labels)
            .set(status.position.unwrap_or(0) as f64);
        metrics::gauge!("eshop_projection_lag_events", &labels).set(status.events_behind as f64);
        metrics::gauge!("eshop_projection_lag_seconds", &labels).set(status.seconds_behind);
        metrics::gauge!("eshop_projection_dead_letters", &labels).set(status.dead_letters as f64);
    }
}

/// Refreshes the status gauges every `every` until the process ends.
pub async fn monitor(board: StatusBoard) {
    loop {
        match board.latest().await {
            Ok(snapshot) => record_metrics(&snapshot.statuses),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "projection status unavailable"
            ),
        }
        tokio::time::sleep(board.inner.every).await;
    }
}

/// Every projection's status at one moment.
#[derive(Debug)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    pub statuses: Vec<ProjectionStatus>,
}

/// The latest [`Snapshot`], shared by `/metrics` and every reader (the
/// GraphQL `projections` field): collecting opens Kafka consumers and
/// queries PostgreSQL, so it happens at most once per period and once at a
/// time, however many readers ask.
#[derive(Clone)]
pub struct StatusBoard {
    inner: Arc<Board>,
}

struct Board {
    collector: Arc<dyn CollectStatus>,
    every: Duration,
    latest: std::sync::Mutex<Option<(std::time::Instant, Arc<Snapshot>)>>,
    collecting: tokio::sync::Mutex<()>,
}

impl StatusBoard {
    /// A board whose snapshots are at most `every` old when read.
    #[must_use]
    pub fn new(collector: Arc<dyn CollectStatus>, every: Duration) -> Self {
        Self {
            inner: Arc::new(Board {
                collector,
                every,
                latest: std::sync::Mutex::default(),
                collecting: tokio::sync::Mutex::default(),
            }),
        }
    }

    fn fresh(&self) -> Option<Arc<Snapshot>> {
        let latest = self.inner.latest.lock().ok()?;
        latest
            .as_ref()
            .filter(|(at, _)| at.elapsed() < self.inner.every)
            .map(|(_, snapshot)| snapshot.clone())
    }

    /// The latest snapshot, collected now when none is younger than the
    /// period; concurrent callers wait for the one collection under way.
    pub async fn latest(&self) -> anyhow::Result<Arc<Snapshot>> {
        if let Some(snapshot) = self.fresh() {
            return Ok(snapshot);
        }
        let _collecting = self.inner.collecting.lock().await;
        if let Some(snapshot) = self.fresh() {
            return Ok(snapshot);
        }
        let statuses = self.inner.collector.collect().await?;
        metrics::counter!("eshop_projection_status_collections_total").increment(1);
        let snapshot = Arc::new(Snapshot {
            taken_at: Utc::now(),
            statuses,
        });
        if let Ok(mut latest) = self.inner.latest.lock() {
            *latest = Some((std::time::Instant::now(), snapshot.clone()));
        }
        Ok(snapshot)
    }
}
