//! eshop's streaming side: the relay from the event store to Kafka, and the
//! projectors that turn events into read models.

pub mod bus;
pub mod leader;
pub mod position;
pub mod projector;
pub mod rabbit;
pub mod relay;
pub mod replay;
pub mod search;
pub mod status;

pub use read_models as views;
/// The read models and the events they fold (their own crate, which the
/// query side uses without this crate's Kafka runtime).
pub use read_models::event;

use std::future::Future;
use std::sync::Arc;

use projector::{ProjectorConfig, Sink, StallWatch};
use read_models::Projection;
use sqlx::PgPool;

/// The sinks of the projections: the given PostgreSQL read models (usually
/// [`views::all`]), then the search index.
pub fn sinks(
    pool: &PgPool,
    config: &ProjectorConfig,
    views: Vec<Arc<dyn Projection>>,
) -> anyhow::Result<Vec<Arc<dyn Sink>>> {
    let mut sinks: Vec<Arc<dyn Sink>> = views
        .into_iter()
        .map(|view| Arc::new(projector::ViewSink::new(pool.clone(), view)) as Arc<dyn Sink>)
        .collect();
    sinks.push(Arc::new(search::IndexSink::new(
        pool.clone(),
        config.search.clone(),
    )?));
    Ok(sinks)
}

/// Runs every projection the configuration selects (the given PostgreSQL
/// read models, and the search index) until `shutdown` completes, watched
/// for stalls with the default stall time
/// ([`projector::DEFAULT_STALL`]).
pub async fn run_all(
    pool: PgPool,
    config: ProjectorConfig,
    views: Vec<Arc<dyn Projection>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let watch = StallWatch::new(projector::DEFAULT_STALL);
    run_all_watched(pool, config, views, watch, shutdown).await
}

/// Like [`run_all`], with the stall watch `watch`.
pub async fn run_all_watched(
    pool: PgPool,
    config: ProjectorConfig,
    views: Vec<Arc<dyn Projection>>,
    watch: StallWatch,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let sinks = sinks(&pool, &config, views)?;
    projector::run_sinks(pool, config, sinks, watch, shutdown).await
}
