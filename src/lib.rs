//! The `eshop` process: what each subcommand of the binary runs. The
//! binary (`src/main.rs`) parses the command line and calls [`run`]; tests
//! can call [`run`] and the `serve` functions directly, stopping them with
//! a [`Stop`] of their own.

pub mod cli;
pub mod serve;

use anyhow::Context;
use projections::projector::ProjectorConfig;
use projections::relay::RelayConfig;

use cli::{Command, EventsCommand, ProjectArgs, ProjectionsCommand};
use serve::{metrics, status_source};

/// Asks a running command to stop; cloned for each part that stops.
#[derive(Clone)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

/// Requests the stop of the commands given its [`Stop`].
pub struct StopHandle(tokio::sync::watch::Sender<bool>);

impl StopHandle {
    /// Stops them.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Stop {
    /// A stop requested through the returned handle.
    #[must_use]
    pub fn new() -> (StopHandle, Self) {
        let (send, receive) = tokio::sync::watch::channel(false);
        (StopHandle(send), Self(receive))
    }

    /// A stop requested by ctrl-c or SIGTERM.
    #[must_use]
    pub fn on_signal() -> Self {
        let (handle, stop) = Self::new();
        tokio::spawn(async move {
            signalled().await;
            handle.stop();
        });
        stop
    }

    /// Completes once the stop is requested.
    pub fn requested(&self) -> impl std::future::Future<Output = ()> + Send + use<> {
        let mut stopped = self.0.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    }
}

/// Waits for ctrl-c or SIGTERM.
async fn signalled() {
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

/// Runs one subcommand until it is done or `stop` is requested.
pub async fn run(command: Command, stop: Stop) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve::serve(*args, &stop).await,
        Command::Relay {
            database,
            bus,
            relay,
            metrics_addr,
        } => {
            // With no broker, Publisher::new refuses, saying why.
            let bus = bus.bus();
            read_models::schema::migrate(&database)
                .await
                .context("failed to migrate the event store")?;
            let handle = metrics()?;
            if let Some(addr) = metrics_addr {
                tokio::spawn(command_api::serve_metrics(addr, handle, stop.requested()));
            }
            let relay = RelayConfig::new(bus, relay);
            projections::relay::run(&database, relay, stop.requested()).await
        }
        Command::Project(args) => {
            let ProjectArgs {
                database,
                bus,
                projector,
                cache,
                metrics_addr,
            } = *args;
            read_models::schema::migrate(&database)
                .await
                .context("failed to migrate the database")?;
            let pool = projections::projector::pool(&database).context("invalid DATABASE_URL")?;
            let handle = metrics()?;
            if let Some(addr) = metrics_addr {
                tokio::spawn(command_api::serve_metrics(addr, handle, stop.requested()));
            }
            let watch = projector.stall_watch();
            let mut projector = ProjectorConfig::new(database, bus.bus(), projector);
            projector.cache = cache;
            let views = projections::views::all();
            projections::run_all_watched(pool, projector, views, watch, stop.requested()).await
        }
        Command::QueryApi(args) => serve::query_api(*args, &stop).await,
        Command::Projections {
            command:
                ProjectionsCommand::Status {
                    database,
                    bus,
                    relay_name,
                    json,
                },
        } => {
            let pool = event_store::connect(&database).context("invalid DATABASE_URL")?;
            let statuses =
                projections::status::collect(&pool, &status_source(&bus, &relay_name)).await?;
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
            read_models::schema::migrate(&args.database)
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
        } => event_export::run(&database, &export).await.map(drop),
        Command::Migrate { database } => {
            read_models::schema::migrate(&database)
                .await
                .context("migration failed")?;
            tracing::info!("database is up to date");
            Ok(())
        }
    }
}
