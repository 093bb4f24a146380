//! The `eshop` command line: every subcommand and its arguments (each
//! backing service named by a URL in the environment, or the flag beside
//! it).

use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};
use projections::bus::BusArgs;
use projections::projector::ProjectorOptions;
use projections::relay::RelayOptions;
use tracing_subscriber::EnvFilter;

/// eshop: an event-sourced CQRS order and basket service.
///
/// Every backing service is named by a URL in the environment (or the flag
/// beside it). Logs go to stdout as JSON (to stderr for the commands that
/// print their results on stdout: `projections`, `events`); RUST_LOG
/// filters them (default: info).
#[derive(Debug, Parser)]
#[command(name = "eshop", version, propagate_version = true)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run eshop in one process: the HTTP API (REST commands, OpenAPI at
    /// /openapi.json, API page at /docs, health at /health/live and
    /// /health/ready, Prometheus metrics at /metrics), the relay and the
    /// projectors. With --api-only, just the API: run `eshop relay` and
    /// `eshop project` as separate processes. Applies pending migrations at
    /// start-up.
    Serve(Box<ServeArgs>),
    /// Publish every event of the store, in order and without gaps, to the
    /// event bus (on Kafka, one topic per aggregate type). Relays with the
    /// same name elect one leader; the others stand by. With no broker
    /// (EVENT_BUS_URL=none) there is nothing to relay: it refuses to start.
    Relay {
        #[command(flatten)]
        database: event_store::DatabaseConfig,
        #[command(flatten)]
        bus: BusArgs,
        #[command(flatten)]
        relay: RelayOptions,
        /// Serve /metrics (Prometheus) on this address.
        #[arg(long, env = "METRICS_ADDR")]
        metrics_addr: Option<SocketAddr>,
    },
    /// Run the projectors, feeding the PostgreSQL views and the search
    /// index: on Kafka, one consumer group per projection (start more
    /// processes to share partitions); with no broker, each projection
    /// reads the event store's feed (start more processes for standbys).
    Project(Box<ProjectArgs>),
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
pub enum EventsCommand {
    /// Stream the events committed when the export starts, upcast to the
    /// current schemas and in the global order, to stdout or a file: as
    /// NDJSON (one CloudEvents envelope per line, exactly as the relay
    /// publishes it) or CSV. Memory stays flat however many events there
    /// are. Logs and progress go to stderr.
    Export {
        #[command(flatten)]
        database: event_store::DatabaseConfig,
        #[command(flatten)]
        export: event_export::ExportOptions,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection's position, lag (events and seconds behind the event
    /// store) and dead letters.
    Status {
        #[command(flatten)]
        database: event_store::DatabaseConfig,
        #[command(flatten)]
        bus: BusArgs,
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
pub struct RebuildArgs {
    #[command(flatten)]
    pub database: event_store::DatabaseConfig,
    /// Projections to rebuild (product_catalog, basket_view, order_view,
    /// sales_daily, search: a new index, then an alias swap).
    pub names: Vec<String>,
    /// Rebuild every projection.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub search: projections::search::SearchConfig,
    /// Keep the replaced tables, in a schema the output names.
    #[arg(long)]
    pub keep: bool,
    /// Only report how many events each projection would read.
    #[arg(long)]
    pub dry_run: bool,
    /// Build a snapshot of the view as it stood at this time (RFC 3339;
    /// events that occurred at or before it), into a new table.
    #[arg(long, conflicts_with = "to_position")]
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// Build a snapshot of the view up to this global position (inclusive),
    /// into a new table.
    #[arg(long)]
    pub to_position: Option<i64>,
    /// The snapshot table's name (default: <table>_asof_<time> or
    /// <table>_pos_<position>).
    #[arg(long, requires = "snapshot")]
    pub snapshot_name: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub api: command_api::ServeConfig,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub relay: RelayOptions,
    #[command(flatten)]
    pub projector: ProjectorOptions,
    #[command(flatten)]
    pub graphql: query_api::QueryConfig,
    /// Run only the HTTP APIs (REST and GraphQL), without the relay and the
    /// projectors.
    #[arg(long, env = "SERVE_API_ONLY")]
    pub api_only: bool,
    /// Serve /metrics (Prometheus) on this address, for operators only,
    /// instead of beside the API.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, clap::Args)]
pub struct ProjectArgs {
    #[command(flatten)]
    pub database: event_store::DatabaseConfig,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub projector: ProjectorOptions,
    /// The cache whose `basket_view` rows are invalidated before their
    /// changes commit.
    #[command(flatten)]
    pub cache: cache::CacheConfig,
    /// Serve /metrics (Prometheus) on this address.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, clap::Args)]
pub struct QueryApiArgs {
    #[command(flatten)]
    pub database: event_store::DatabaseConfig,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub search: projections::search::SearchConfig,
    #[command(flatten)]
    pub graphql: query_api::QueryConfig,
    /// The relay whose checkpoint tells which events are unpublished.
    #[arg(long = "relay-name", env = "RELAY_NAME", default_value = "eshop")]
    pub relay_name: String,
    /// Where the GraphQL API listens.
    #[arg(
        long = "listen",
        env = "QUERY_LISTEN_ADDR",
        default_value = "127.0.0.1:8081"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub http: command_api::server::HttpLimits,
    #[command(flatten)]
    pub identity: identity::IdentityConfig,
    /// The cache `basket(id)` is served from when it holds the basket.
    #[command(flatten)]
    pub cache: cache::CacheConfig,
}

/// Whether the command's logs go to stderr: one-shot commands print their
/// results on stdout.
pub fn logs_to_stderr(command: &Command) -> bool {
    matches!(
        command,
        Command::Projections { .. } | Command::Events { .. }
    )
}

/// Installs the logger and, when `OTEL_EXPORTER_OTLP_ENDPOINT` names a
/// collector, the span exporter (see the `telemetry` crate). Keep the
/// returned guard until the process ends: dropping it flushes the last
/// spans.
///
/// # Errors
/// The `OTEL_EXPORTER_OTLP_*` settings are invalid.
pub fn init_logging(format: LogFormat, stderr: bool) -> anyhow::Result<Option<telemetry::Tracing>> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = if stderr {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr)
    } else {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stdout)
    };
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .map_event_format(telemetry::WithTraceIds)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
    };
    let (spans, guard) = match telemetry::init("eshop")? {
        Some((layer, guard)) => (Some(layer), Some(guard)),
        None => (None, None),
    };
    let exporting = spans.is_some();
    tracing_subscriber::registry()
        // The exporter's own HTTP client must not trace itself.
        .with(spans.map(|layer| {
            layer.with_filter(telemetry::AskEachTime::when(
                true,
                telemetry::export_filter(),
            ))
        }))
        // Two per-layer filters: see `telemetry::AskEachTime`.
        .with(logs.with_filter(telemetry::AskEachTime::when(exporting, filter)))
        .init();
    telemetry::remember_dispatch();
    Ok(guard)
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
