//! The database's whole schema: the event store's migrations
//! (`event-store/migrations/`) and the read models' (`migrations/` beside
//! this crate: the view tables, their triggers and the projector's
//! bookkeeping), applied as one history in version order.
//!
//! The two directories share one `_sqlx_migrations` table, so every
//! process that migrates runs this one list: a migrator that knew only
//! one half would find the other half applied and unknown, and refuse.

use std::borrow::Cow;
use std::sync::LazyLock;

use event_store::DatabaseConfig;
use sqlx::migrate::Migrator;

/// The read models' own migrations.
static READ_MODELS: Migrator = sqlx::migrate!("./migrations");

/// Every migration of the database, the event store's and the read models',
/// in version order.
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    let mut migrations: Vec<_> = event_store::MIGRATOR
        .iter()
        .chain(READ_MODELS.iter())
        .cloned()
        .collect();
    migrations.sort_by_key(|migration| migration.version);
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
});

/// Creates the database when it does not exist yet, then applies every
/// pending migration of the whole schema.
///
/// # Errors
/// The database cannot be reached or created, or a migration fails.
pub async fn migrate(config: &DatabaseConfig) -> Result<(), sqlx::Error> {
    event_store::migrate_with(config, &MIGRATOR).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_is_both_halves_once_each_in_version_order() {
        let versions: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert_eq!(
            versions.len(),
            event_store::MIGRATOR.iter().count() + READ_MODELS.iter().count()
        );
        assert!(
            versions.windows(2).all(|pair| pair[0] < pair[1]),
            "{versions:?}"
        );
        // The event store's own tables are its migrations' business alone.
        for migration in READ_MODELS.iter() {
            assert!(
                !migration.sql.trim().is_empty(),
                "{}",
                migration.description
            );
            for table in [
                "events",
                "snapshots",
                "relay_checkpoints",
                "idempotency_keys",
                "unique_claims",
            ] {
                for statement in ["CREATE TABLE", "ALTER TABLE", "DROP TABLE"] {
                    assert!(
                        !migration.sql.contains(&format!("{statement} {table} ")),
                        "{}: {statement} {table}",
                        migration.description
                    );
                }
            }
        }
    }
}
