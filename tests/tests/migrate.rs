//! `eshop migrate`: creates a missing database and is safe to run again.

use event_store::DatabaseConfig;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

#[tokio::test]
async fn migrate_creates_the_database_and_can_run_again() {
    let admin_url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("eshop_test_migrate_{}", Uuid::now_v7().simple());
    let url = format!(
        "{}/{name}",
        admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base)
    );
    let config = DatabaseConfig::for_url(&url);

    read_models::schema::migrate(&config)
        .await
        .expect("first run creates and migrates");
    read_models::schema::migrate(&config)
        .await
        .expect("second run finds nothing to do");

    let mut conn = PgConnection::connect(&url)
        .await
        .expect("the database exists");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut conn)
        .await
        .expect("migrations table");
    assert_eq!(
        applied,
        i64::try_from(read_models::schema::MIGRATOR.iter().count()).expect("count")
    );
    let read_model_tables = read_models::all()
        .into_iter()
        .flat_map(|projection| projection.tables().iter().map(|table| table.name))
        .collect::<Vec<_>>();
    assert!(read_model_tables.contains(&"order_view"));
    let event_store_tables = ["events", "snapshots", "unique_claims", "idempotency_keys"];
    for table in event_store_tables.into_iter().chain(read_model_tables) {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&mut conn)
            .await
            .expect("regclass");
        assert!(exists, "table {table} missing");
    }
    conn.close().await.expect("close");
    let mut admin = PgConnection::connect(&admin_url).await.expect("admin");
    admin
        .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
        .await
        .expect("drop");
}
