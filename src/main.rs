//! The `eshop` binary: parses the command line and calls into the crates.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// A request allocates and frees many small objects; mimalloc handles that
/// pattern with less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// eshop: an event-sourced CQRS order and basket service.
///
/// Every backing service is named by a URL in the environment (or the flag
/// beside it). Logs go to stdout as JSON; RUST_LOG filters them
/// (default: info).
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
    /// Run the HTTP API (REST commands, OpenAPI at /openapi.json, API page at
    /// /docs, health at /health/live and /health/ready). Applies pending
    /// migrations at start-up.
    Serve(command_api::ServeConfig),
    /// Publish every event of the store, in order and without gaps, to Kafka
    /// (one topic per aggregate type). Relays with the same name elect one
    /// leader; the others stand by.
    Relay {
        #[command(flatten)]
        database: event_store::DatabaseConfig,
        #[command(flatten)]
        relay: projections::relay::RelayConfig,
    },
    /// Run the projectors: one Kafka consumer group per projection, feeding
    /// the PostgreSQL read models. Start more processes to share partitions.
    Project {
        #[command(flatten)]
        database: event_store::DatabaseConfig,
        #[command(flatten)]
        projector: projections::projector::ProjectorConfig,
    },
    /// Create the database if needed and apply pending schema migrations.
    Migrate {
        #[command(flatten)]
        database: event_store::DatabaseConfig,
    },
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve(config) => {
            let app = command_api::Application::build(&config).await?;
            app.run_until(shutdown_signal()).await
        }
        Command::Relay { database, relay } => {
            event_store::migrate(&database)
                .await
                .context("failed to migrate the event store")?;
            projections::relay::run(&database, relay, shutdown_signal()).await
        }
        Command::Project {
            database,
            projector,
        } => {
            event_store::migrate(&database)
                .await
                .context("failed to migrate the database")?;
            let pool = event_store::connect(&database).context("invalid DATABASE_URL")?;
            let projections = projections::views::all();
            projections::projector::run_all(pool, projector, projections, shutdown_signal()).await
        }
        Command::Migrate { database } => {
            event_store::migrate(&database)
                .await
                .context("migration failed")?;
            tracing::info!("database is up to date");
            Ok(())
        }
    }
}
