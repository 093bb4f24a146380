use std::net::SocketAddr;
use std::time::Duration;

use event_store::{DatabaseConfig, SnapshotPolicy};

use crate::commands::RetryPolicy;

/// Configuration of `eshop serve`. Every value comes from a flag or the
/// environment variable named beside it; the defaults suit a developer
/// machine.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Address the HTTP API listens on.
    #[arg(long = "listen", env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub http: crate::server::HttpLimits,

    /// Snapshot every N events, per aggregate type (0 = never).
    #[arg(
        long,
        env = "SNAPSHOT_EVERY",
        default_value = "Product=50,Basket=50,Order=0"
    )]
    pub snapshot_every: SnapshotPolicy,

    /// How long idempotency keys are remembered, in hours (at least 24).
    #[arg(long, env = "IDEMPOTENCY_TTL_HOURS", default_value_t = 24,
          value_parser = clap::value_parser!(u64).range(24..))]
    pub idempotency_ttl_hours: u64,

    /// Retries of a command whose aggregate was changed concurrently
    /// (without If-Match) before answering 409.
    #[arg(long, env = "COMMAND_MAX_RETRIES", default_value_t = 30)]
    pub command_max_retries: usize,

    /// How long a request waits, in milliseconds, for a concurrent request
    /// with the same Idempotency-Key to finish before answering 409
    /// idempotency-key-in-progress.
    #[arg(long, env = "IDEMPOTENCY_WAIT_MS", default_value_t = 5000)]
    pub idempotency_wait_ms: u64,

    #[command(flatten)]
    pub identity: identity::IdentityConfig,

    #[command(flatten)]
    pub cache: cache::CacheConfig,
}

impl ServeConfig {
    /// Defaults for a database URL, listening on an ephemeral port.
    #[must_use]
    pub fn for_database(url: &str) -> Self {
        Self {
            database: DatabaseConfig::for_url(url),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: crate::server::HttpLimits::default(),
            snapshot_every: "Product=50,Basket=50,Order=0"
                .parse()
                .expect("the default snapshot policy parses"),
            idempotency_ttl_hours: 24,
            command_max_retries: 30,
            idempotency_wait_ms: 5000,
            identity: identity::IdentityConfig::default(),
            cache: cache::CacheConfig::none(),
        }
    }

    #[must_use]
    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_hours * 3600)
    }

    #[must_use]
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.command_max_retries,
            idempotency_wait: Duration::from_millis(self.idempotency_wait_ms),
            ..RetryPolicy::default()
        }
    }
}
