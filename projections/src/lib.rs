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

use anyhow::Context as _;
use projector::{ProjectorConfig, Sink, StallWatch};
use read_models::Projection;
use read_models::basket_cache::BasketCache;
use sqlx::PgPool;

/// The sinks of the projections: the given PostgreSQL read models (usually
/// [`views::all`]), then the search index.
///
/// With a cache, the `basket_view` sink invalidates the cached rows of the
/// baskets a batch changes before it commits them
/// ([`read_models::basket_cache`]).
pub fn sinks(
    pool: &PgPool,
    config: &ProjectorConfig,
    views: Vec<Arc<dyn Projection>>,
    basket_cache: Option<&BasketCache>,
) -> anyhow::Result<Vec<Arc<dyn Sink>>> {
    let mut sinks: Vec<Arc<dyn Sink>> = views
        .into_iter()
        .map(|view| {
            let caches = view.name() == <views::basket_view::BasketView as views::ReadModel>::NAME;
            let sink = projector::ViewSink::new(pool.clone(), view);
            let sink = match basket_cache {
                Some(cache) if caches => sink.invalidating(cache.clone()),
                _ => sink,
            };
            Arc::new(sink) as Arc<dyn Sink>
        })
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
    let basket_cache = cache::Cache::new(&config.cache)
        .context("invalid CACHE_URL")?
        .map(BasketCache::new);
    // Markers the cache did not take are stored once it answers again.
    let retries = basket_cache
        .as_ref()
        .map(|cache| cache.spawn_retries(MARKER_RETRY));
    let sinks = sinks(&pool, &config, views, basket_cache.as_ref())?;
    let result = projector::run_sinks(pool, config, sinks, watch, shutdown).await;
    if let Some(retries) = retries {
        retries.abort();
    }
    result
}

/// How often markers the cache did not take are offered again.
const MARKER_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
