//! One active process among several: a PostgreSQL advisory lock held on a
//! connection of its own, so that it is released the moment the holder's
//! connection goes, and another waiting process takes over.

use std::time::Duration;

use anyhow::Context;
use sqlx::{Connection, PgConnection};

/// How often a waiting process tries for the lock again.
pub const RETRY: Duration = Duration::from_secs(1);

/// Waits until this process holds the advisory lock `key`, on a new
/// connection to `url`; the lock lasts as long as the returned connection.
///
/// # Errors
/// The database cannot be reached.
pub async fn hold(url: &str, key: &str) -> anyhow::Result<PgConnection> {
    let mut connection = PgConnection::connect(url)
        .await
        .context("failed to connect for the lock")?;
    loop {
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(key)
            .fetch_one(&mut connection)
            .await?;
        if held {
            return Ok(connection);
        }
        tokio::time::sleep(RETRY).await;
    }
}
