//! `eshop serve` (the HTTP APIs with the relay and the projectors in one
//! process) and `eshop query-api` (the GraphQL API alone): their wiring,
//! callable from tests with a [`Stop`] of their own.

use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use projections::bus::BusArgs;
use projections::projector::ProjectorConfig;
use projections::relay::RelayConfig;
use projections::status::{BusStatus, StatusSource};

use crate::Stop;
use crate::cli::{QueryApiArgs, ServeArgs};

/// The buckets of every `*_seconds` histogram, in seconds: from 1 ms (a
/// cached read) to 30 s (the longest request timeout), so that dashboards
/// can aggregate quantiles across instances (`histogram_quantile`).
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the Prometheus recorder that every metric of the process goes
/// to.
pub(crate) fn metrics() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            SECONDS_BUCKETS,
        )
        .context("invalid histogram buckets")?
        .install_recorder()
        .context("failed to install the metrics recorder")
}

pub(crate) fn status_source(bus: &BusArgs, relay_name: &str) -> StatusSource {
    StatusSource {
        bus: bus.bus(),
        relay_name: relay_name.to_owned(),
    }
}

pub async fn serve(args: ServeArgs, stop: &Stop) -> anyhow::Result<()> {
    read_models::schema::migrate(&args.api.database)
        .await
        .context("failed to migrate the database")?;
    let handle = metrics()?;
    let mut app = command_api::Application::build(&args.api).await?;
    match args.metrics_addr {
        Some(addr) => {
            tokio::spawn(command_api::serve_metrics(addr, handle, stop.requested()));
        }
        None => app = app.with_metrics(handle),
    }
    let read_pool = event_store::connect(&args.api.database).context("invalid DATABASE_URL")?;
    let basket_cache = cache::Cache::new(&args.api.cache)
        .context("invalid CACHE_URL")?
        .map(read_models::basket_cache::BasketCache::new);
    let graphql = query_api::QueryApi::new(
        read_pool.clone(),
        &args.projector.search,
        std::sync::Arc::new(BusStatus::new(
            read_pool,
            status_source(&args.bus, &args.relay.name),
        )),
        args.graphql.clone(),
        app.verifier(),
        basket_cache,
    )
    .context("invalid SEARCH_URL")?;
    app = app.with_router(graphql.router());
    let graphql_status = graphql.status_board();
    // The streaming parts stop once the API has stopped.
    let (halt, halted) = Stop::new();
    let stopping = move || halted.requested();
    let mut streaming = tokio::task::JoinSet::new();
    if !args.api_only {
        let bus = args.bus.bus();
        tracing::info!(bus = bus.name(), "event bus");
        // The check is named after the bus in use: `kafka`, `rabbitmq`, or
        // `event_store_feed` with no broker (the database's own check
        // covers the event store).
        let checked = bus.clone();
        app = app.with_readiness(
            bus.check_name(),
            Arc::new(move || {
                let bus = checked.clone();
                Box::pin(async move { bus.reachable().await })
            }),
        );
        let search = projections::search::SearchClient::new(&args.projector.search.url)?;
        app = app.with_readiness(
            "search",
            Arc::new(move || {
                let search = search.clone();
                Box::pin(async move { search.info().await.map(drop).map_err(|e| e.to_string()) })
            }),
        );
        let pool =
            projections::projector::pool(&args.api.database).context("invalid DATABASE_URL")?;
        if bus.has_broker() {
            let relay = RelayConfig::new(bus.clone(), args.relay.clone());
            let database = args.api.database.clone();
            let stopped = stopping();
            streaming
                .spawn(async move { projections::relay::run(&database, relay, stopped).await });
        }
        // A projection with messages pending that takes none for the stall
        // time makes the process not ready, naming it.
        let watch = args.projector.stall_watch();
        let stalls = watch.stalls.clone();
        app = app.with_readiness(
            "projections",
            Arc::new(move || {
                let stalls = stalls.clone();
                Box::pin(async move { stalls.check() })
            }),
        );
        let mut projector = ProjectorConfig::new(args.api.database.clone(), bus, args.projector);
        projector.cache = args.api.cache.clone();
        if projector.instance_id.is_none() && args.api.listen.port() != 0 {
            // Stable across restarts with the same configuration, and unique
            // on this host: no two processes listen on one port.
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            projector.instance_id = Some(format!("{host}:{}", args.api.listen.port()));
        }
        let (views, stopped) = (projections::views::all(), stopping());
        let projector_pool = pool;
        streaming.spawn(async move {
            projections::run_all_watched(projector_pool, projector, views, watch, stopped).await
        });
        let board = graphql_status.clone();
        streaming.spawn(async move {
            query_api::status::monitor(board).await;
            Ok(())
        });
    }
    let requested = stop.requested();
    let api = tokio::spawn(app.run_until(async move {
        requested.await;
        halt.stop();
    }));
    // The relay or a projector failing to start (an unreachable broker, a
    // refused mapping) is fatal: the process exits and its supervisor sees.
    let mut api = std::pin::pin!(api);
    loop {
        tokio::select! {
            result = &mut api => {
                result.context("the API task panicked")??;
                break;
            }
            Some(result) = streaming.join_next() => {
                result.context("a streaming task panicked")??;
            }
        }
    }
    streaming.abort_all();
    Ok(())
}

pub async fn query_api(args: QueryApiArgs, stop: &Stop) -> anyhow::Result<()> {
    read_models::schema::migrate(&args.database)
        .await
        .context("failed to migrate the database")?;
    let handle = metrics()?;
    let pool = event_store::connect(&args.database).context("invalid DATABASE_URL")?;
    let verifier =
        identity::Verifier::new(args.identity).context("failed to set up token verification")?;
    // The issuer's keys, fetched now rather than by the first request.
    let warm = verifier.clone();
    tokio::spawn(async move {
        if let Err(error) = warm.ready().await {
            tracing::warn!(%error, "the identity provider's keys could not be fetched yet");
        }
    });
    let api = query_api::QueryApi::new(
        pool.clone(),
        &args.search,
        std::sync::Arc::new(BusStatus::new(
            pool,
            status_source(&args.bus, &args.relay_name),
        )),
        args.graphql,
        verifier,
        cache::Cache::new(&args.cache)
            .context("invalid CACHE_URL")?
            .map(read_models::basket_cache::BasketCache::new),
    )
    .context("invalid SEARCH_URL")?;
    let router = api
        .router_with_health()
        .merge(command_api::metrics_router(handle));
    let router = command_api::server::with_common_layers(router, &args.http);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "GraphQL API listening");
    command_api::server::serve(listener, router, &args.http, stop.requested())
        .await
        .context("HTTP server failed")
}
