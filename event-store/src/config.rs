use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

/// The event store's own migrations (its tables, claims, idempotency keys
/// and relay checkpoints). The database's whole schema adds the read
/// models' migrations to these: `read_models::schema`.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Where the event store lives (an attached resource named by a URL).
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL of the event store.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/eshop",
        hide_env_values = true
    )]
    pub url: String,

    /// Most connections this process opens to PostgreSQL.
    #[arg(
        long = "database-max-connections",
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub max_connections: u32,

    /// How long a request waits for a free connection, in seconds.
    #[arg(
        long = "database-acquire-timeout",
        env = "DATABASE_ACQUIRE_TIMEOUT_SECS",
        default_value_t = 5
    )]
    pub acquire_timeout_secs: u64,
}

impl DatabaseConfig {
    #[must_use]
    pub fn for_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            acquire_timeout_secs: 5,
        }
    }
}

/// Opens a pool. Connections are made lazily, so a database that is down at
/// start-up shows in `/health/ready` rather than crashing the process.
pub fn connect(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    connect_with(config, APPLICATION_NAME, &[])
}

/// The `application_name` of the connections that may append events.
pub const APPLICATION_NAME: &str = "eshop";

/// The `application_name` of connections that write read models only. The
/// event store refuses their appends (a trigger), and in exchange readers
/// of the global order need not wait for their transactions: see
/// [`crate::feed`].
pub const READ_MODEL_WRITER: &str = "eshop-projector";

/// Opens a pool whose connections carry `application_name` and also start
/// with the given settings (`synchronous_commit`, …).
pub fn connect_with(
    config: &DatabaseConfig,
    application_name: &str,
    settings: &[(&str, &str)],
) -> Result<PgPool, sqlx::Error> {
    // The store's statements are written so that their generic plans are
    // the right ones (see `EventStore::fetch`); without this, PostgreSQL may
    // re-plan them on every execution.
    let options = PgConnectOptions::from_str(&config.url)?
        .application_name(application_name)
        .options([("plan_cache_mode", "force_generic_plan")])
        .options(settings.iter().copied());
    Ok(PgPoolOptions::new()
        // No ping before each use: it costs a round trip per statement. A
        // connection broken by a database restart fails one statement
        // instead (answered 503, nothing committed) and is discarded.
        .test_before_acquire(false)
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs))
        .connect_lazy_with(options))
}

/// Creates the database when it does not exist yet, then applies every
/// pending migration of `migrator`.
///
/// # Errors
/// The database cannot be reached or created, or a migration fails.
pub async fn migrate_with(config: &DatabaseConfig, migrator: &Migrator) -> Result<(), sqlx::Error> {
    if !Postgres::database_exists(&config.url).await? {
        tracing::info!("creating database");
        Postgres::create_database(&config.url).await?;
    }
    let pool = connect(config)?;
    migrator.run(&pool).await?;
    pool.close().await;
    Ok(())
}
