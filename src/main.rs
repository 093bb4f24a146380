//! The `eshop` binary: parses the command line and calls into the crates.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use projections::projector::{ProjectorConfig, ProjectorOptions};
use projections::relay::{KafkaConfig, RelayConfig, RelayOptions};
use projections::status::{KafkaStatus, StatusSource};
use tracing_subscriber::EnvFilter;

/// A request allocates and frees many small objects; mimalloc handles that
/// pattern with less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// eshop: an event-sourced CQRS order and basket service.
///
/// Every backing service is named by a URL in the environment (or the flag
/// beside it). Logs go to stdout as JSON (to stderr for the commands that
/// print their results on stdout: `projections`, `events`); RUST_LOG
/// filters them (default: info).
#[derive(Debug, Parser)]
#[command(name = "eshop", version, propagate_version = true)]
struct Cli {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run eshop in one process: the HTTP API (REST commands, OpenAPI at
    /// /openapi.json, API page at /docs, health at /health/live and
    /// /health/ready, Prometheus metrics at /metrics), the relay and the
    /// projectors. With --api-only, just the API: run `eshop relay` and
    /// `eshop project` as separate processes. Applies pending migrations at
    /// start-up.
    Serve(Box<ServeArgs>),
    /// Publish every event of the store, in order and without gaps, to Kafka
    /// (one topic per aggregate type). Relays with the same name elect one
    /// leader; the others stand by.
    Relay {
        #[command(flatten)]
        database: event_store::DatabaseConfig,
        #[command(flatten)]
        kafka: KafkaConfig,
        #[command(flatten)]
        relay: RelayOptions,
        /// Serve /metrics (Prometheus) on this address.
        #[arg(long, env = "METRICS_ADDR")]
        metrics_addr: Option<SocketAddr>,
    },
    /// Run the projectors: one Kafka consumer group per projection, feeding
    /// the PostgreSQL views and the search index. Start more processes to
    /// share partitions.
    Project {
        #[command(flatten)]
        database: event_store::DatabaseConfig,
        #[command(flatten)]
        kafka: KafkaConfig,
        #[command(flatten)]
        projector: ProjectorOptions,
        /// Serve /metrics (Prometheus) on this address.
        #[arg(long, env = "METRICS_ADDR")]
        metrics_addr: Option<SocketAddr>,
    },
    /// Serve the GraphQL API over the projections: /graphql (queries, and
    /// GraphiQL for a browser), /graphql/ws (subscriptions over
    /// graphql-transport-ws), /health/live, /health/ready and /metrics.
    QueryApi(Box<QueryApiArgs>),
    /// Inspect the projections.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Work with the stored events themselves.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Create the database if needed and apply pending schema migrations.
    Migrate {
        #[command(flatten)]
        database: event_store::DatabaseConfig,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Stream the events committed when the export starts, upcast to the
    /// current schemas and in the global order, to stdout or a file: as
    /// NDJSON (one CloudEvents envelope per line, exactly as the relay
    /// publishes it) or CSV. Memory stays flat however many events there
    /// are. Logs and progress go to stderr.
    Export {
        #[command(flatten)]
        database: event_store::DatabaseConfig,
        #[command(flatten)]
        export: projections::export::ExportOptions,
    },
}

#[derive(Debug, Subcommand)]
enum ProjectionsCommand {
    /// Each projection's position, lag (events and seconds behind the event
    /// store) and dead letters.
    Status {
        #[command(flatten)]
        database: event_store::DatabaseConfig,
        #[command(flatten)]
        kafka: KafkaConfig,
        /// The relay whose checkpoint tells which events are unpublished.
        #[arg(long = "relay-name", env = "RELAY_NAME", default_value = "eshop")]
        relay_name: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild projections from the full event history in the event store,
    /// without downtime: into shadow tables, then caught up with the live
    /// stream and swapped in atomically (queries keep answering; the live
    /// projector pauses only for the swap). With --as-of or --to-position,
    /// build a named snapshot table for analysts instead, leaving the live
    /// view alone.
    Rebuild(Box<RebuildArgs>),
    /// Audit the projections: rebuild each from the event store into
    /// scratch tables, up to what the live view has applied, and compare
    /// (row counts, a content hash per table, and every differing row by
    /// key). Exits with status 1 when anything differs.
    Verify {
        #[command(flatten)]
        database: event_store::DatabaseConfig,
        /// Projections to verify (product_catalog, basket_view, order_view,
        /// sales_daily, search).
        names: Vec<String>,
        /// Verify every projection.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        search: projections::search::SearchConfig,
        /// Keep the scratch tables (schema eshop_verify_<name>) to look at.
        #[arg(long)]
        keep: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("snapshot").args(["as_of", "to_position"])))]
struct RebuildArgs {
    #[command(flatten)]
    database: event_store::DatabaseConfig,
    /// Projections to rebuild (product_catalog, basket_view, order_view,
    /// sales_daily, search: a new index, then an alias swap).
    names: Vec<String>,
    /// Rebuild every projection.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    search: projections::search::SearchConfig,
    /// Keep the replaced tables, in a schema the output names.
    #[arg(long)]
    keep: bool,
    /// Only report how many events each projection would read.
    #[arg(long)]
    dry_run: bool,
    /// Build a snapshot of the view as it stood at this time (RFC 3339;
    /// events that occurred at or before it), into a new table.
    #[arg(long, conflicts_with = "to_position")]
    as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// Build a snapshot of the view up to this global position (inclusive),
    /// into a new table.
    #[arg(long)]
    to_position: Option<i64>,
    /// The snapshot table's name (default: <table>_asof_<time> or
    /// <table>_pos_<position>).
    #[arg(long, requires = "snapshot")]
    snapshot_name: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    api: command_api::ServeConfig,
    #[command(flatten)]
    kafka: KafkaConfig,
    #[command(flatten)]
    relay: RelayOptions,
    #[command(flatten)]
    projector: ProjectorOptions,
    #[command(flatten)]
    graphql: query_api::QueryConfig,
    /// Run only the HTTP APIs (REST and GraphQL), without the relay and the
    /// projectors.
    #[arg(long, env = "SERVE_API_ONLY")]
    api_only: bool,
    /// Serve /metrics (Prometheus) on this address, for operators only,
    /// instead of beside the API.
    #[arg(long, env = "METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, clap::Args)]
struct QueryApiArgs {
    #[command(flatten)]
    database: event_store::DatabaseConfig,
    #[command(flatten)]
    kafka: KafkaConfig,
    #[command(flatten)]
    search: projections::search::SearchConfig,
    #[command(flatten)]
    graphql: query_api::QueryConfig,
    /// The relay whose checkpoint tells which events are unpublished.
    #[arg(long = "relay-name", env = "RELAY_NAME", default_value = "eshop")]
    relay_name: String,
    /// Where the GraphQL API listens.
    #[arg(
        long = "listen",
        env = "QUERY_LISTEN_ADDR",
        default_value = "127.0.0.1:8081"
    )]
    listen: SocketAddr,
    #[command(flatten)]
    http: command_api::server::HttpLimits,
    #[command(flatten)]
    identity: identity::IdentityConfig,
}

/// Whether the command's logs go to stderr: one-shot commands print their
/// results on stdout.
fn logs_to_stderr(command: &Command) -> bool {
    matches!(
        command,
        Command::Projections { .. } | Command::Events { .. }
    )
}

fn init_logging(format: LogFormat, stderr: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stdout);
    let writer = if stderr {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr)
    } else {
        writer
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Pretty => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

/// Installs the Prometheus recorder that every metric of the process goes
/// to.
fn metrics() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .install_recorder()
        .context("failed to install the metrics recorder")
}

fn status_source(kafka: &KafkaConfig, relay_name: &str) -> StatusSource {
    StatusSource {
        kafka: kafka.clone(),
        relay_name: relay_name.to_owned(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let handle = metrics()?;
    let mut app = command_api::Application::build(&args.api).await?;
    match args.metrics_addr {
        Some(addr) => {
            tokio::spawn(command_api::serve_metrics(addr, handle, shutdown_signal()));
        }
        None => app = app.with_metrics(handle),
    }
    let read_pool = event_store::connect(&args.api.database).context("invalid DATABASE_URL")?;
    let graphql = query_api::QueryApi::new(
        read_pool.clone(),
        &args.projector.search,
        std::sync::Arc::new(KafkaStatus::new(
            read_pool,
            status_source(&args.kafka, &args.relay.name),
        )),
        args.graphql.clone(),
        app.verifier(),
    )
    .context("invalid SEARCH_URL")?;
    app = app.with_router(graphql.router());
    let graphql_status = graphql.status_board();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopping = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let mut streaming = tokio::task::JoinSet::new();
    if !args.api_only {
        let kafka = args.kafka.clone();
        app = app.with_readiness(
            "kafka",
            Arc::new(move || {
                let kafka = kafka.clone();
                Box::pin(async move { projections::relay::broker_reachable(&kafka).await })
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
        let relay = RelayConfig::new(args.kafka.clone(), args.relay.clone());
        let database = args.api.database.clone();
        let stopped = stopping();
        streaming.spawn(async move { projections::relay::run(&database, relay, stopped).await });
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
        let mut projector = ProjectorConfig::new(args.kafka.clone(), args.projector);
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
    let api = tokio::spawn(app.run_until(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
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

async fn query_api(args: QueryApiArgs) -> anyhow::Result<()> {
    event_store::migrate(&args.database)
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
        std::sync::Arc::new(KafkaStatus::new(
            pool,
            status_source(&args.kafka, &args.relay_name),
        )),
        args.graphql,
        verifier,
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
    command_api::server::serve(listener, router, &args.http, shutdown_signal())
        .await
        .context("HTTP server failed")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format, logs_to_stderr(&cli.command));
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Relay {
            database,
            kafka,
            relay,
            metrics_addr,
        } => {
            event_store::migrate(&database)
                .await
                .context("failed to migrate the event store")?;
            let handle = metrics()?;
            if let Some(addr) = metrics_addr {
                tokio::spawn(command_api::serve_metrics(addr, handle, shutdown_signal()));
            }
            let relay = RelayConfig::new(kafka, relay);
            projections::relay::run(&database, relay, shutdown_signal()).await
        }
        Command::Project {
            database,
            kafka,
            projector,
            metrics_addr,
        } => {
            event_store::migrate(&database)
                .await
                .context("failed to migrate the database")?;
            let pool = projections::projector::pool(&database).context("invalid DATABASE_URL")?;
            let handle = metrics()?;
            if let Some(addr) = metrics_addr {
                tokio::spawn(command_api::serve_metrics(addr, handle, shutdown_signal()));
            }
            let watch = projector.stall_watch();
            let projector = ProjectorConfig::new(kafka, projector);
            let views = projections::views::all();
            projections::run_all_watched(pool, projector, views, watch, shutdown_signal()).await
        }
        Command::QueryApi(args) => query_api(*args).await,
        Command::Projections {
            command:
                ProjectionsCommand::Status {
                    database,
                    kafka,
                    relay_name,
                    json,
                },
        } => {
            let pool = event_store::connect(&database).context("invalid DATABASE_URL")?;
            let statuses =
                projections::status::collect(&pool, &status_source(&kafka, &relay_name)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&statuses)?);
            } else {
                print!("{}", projections::status::table(&statuses));
            }
            Ok(())
        }
        Command::Projections {
            command: ProjectionsCommand::Rebuild(args),
        } => {
            event_store::migrate(&args.database)
                .await
                .context("failed to migrate the database")?;
            let chosen = projections::replay::select(&args.names, args.all)?;
            let snapshot = match (args.as_of, args.to_position) {
                (Some(at), _) => Some(projections::replay::Cut::AsOf(at)),
                (None, Some(position)) => Some(projections::replay::Cut::ToPosition(position)),
                (None, None) => None,
            };
            let options = projections::replay::RebuildOptions {
                keep: args.keep,
                dry_run: args.dry_run,
                snapshot,
                snapshot_name: args.snapshot_name,
            };
            projections::replay::rebuild(&args.database, &chosen, &args.search, &options).await
        }
        Command::Projections {
            command:
                ProjectionsCommand::Verify {
                    database,
                    names,
                    all,
                    search,
                    keep,
                    json,
                },
        } => {
            let chosen = projections::replay::select(&names, all)?;
            let report = projections::replay::verify(&database, &chosen, &search, keep).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", projections::replay::report_table(&report));
            }
            if !report.clean() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Events {
            command: EventsCommand::Export { database, export },
        } => projections::export::run(&database, &export).await.map(drop),
        Command::Migrate { database } => {
            event_store::migrate(&database)
                .await
                .context("migration failed")?;
            tracing::info!("database is up to date");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every subcommand's arguments are consistent (unique names, valid
    /// defaults): clap checks it when a command is built, so a clash would
    /// otherwise only show when someone runs that subcommand.
    #[test]
    fn every_subcommand_parses_its_arguments() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
