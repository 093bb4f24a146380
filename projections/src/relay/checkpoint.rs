//! A reader's position in the global order, kept in PostgreSQL: the
//! relay's (named by `RELAY_NAME`), and each projection's that reads the
//! event store itself (`projection.<name>`, see `projector::StoreSource`).

use event_store::feed::GlobalPosition;
use sqlx::{PgPool, Row};

/// The last position the reader named `name` has passed, or the start.
pub async fn load(pool: &PgPool, name: &str) -> Result<GlobalPosition, sqlx::Error> {
    let row = sqlx::query(
        "SELECT transaction_id::text AS transaction_id, global_position FROM relay_checkpoints WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    row.map_or(Ok(GlobalPosition::default()), |row| {
        Ok(GlobalPosition {
            transaction_id: row
                .try_get::<String, _>("transaction_id")?
                .parse()
                .map_err(|error| sqlx::Error::Decode(Box::new(error)))?,
            position: row.try_get("global_position")?,
        })
    })
}

/// Moves the checkpoint to `position`, never backwards: a relay that lost
/// its leadership without noticing cannot rewind its successor's progress.
pub async fn advance(
    pool: &PgPool,
    name: &str,
    position: GlobalPosition,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO relay_checkpoints (name, transaction_id, global_position) VALUES ($1, $2::text::xid8, $3) \
         ON CONFLICT (name) DO UPDATE \
           SET transaction_id = EXCLUDED.transaction_id, global_position = EXCLUDED.global_position, \
               updated_at = now() \
           WHERE (relay_checkpoints.transaction_id, relay_checkpoints.global_position) \
               < (EXCLUDED.transaction_id, EXCLUDED.global_position)",
    )
    .bind(name)
    .bind(position.transaction_id.to_string())
    .bind(position.position)
    .execute(pool)
    .await?;
    Ok(())
}
