use std::hash::{DefaultHasher, Hash, Hasher};

use sqlx::{Connection, Executor, PgConnection, PgPool};
use uuid::Uuid;

/// The server every test database lives on, as an admin URL.
fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn url_for(database: &str) -> String {
    let admin = admin_url();
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{database}")
}

async fn admin() -> PgConnection {
    let url = admin_url();
    PgConnection::connect(&url).await.unwrap_or_else(|error| {
        panic!(
            "tests need PostgreSQL at {url} ({error}); start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` or set TEST_DATABASE_URL"
        )
    })
}

/// The template's name changes whenever a migration does.
fn template_name() -> String {
    let mut hasher = DefaultHasher::new();
    for migration in read_models::schema::MIGRATOR.iter() {
        migration.version.hash(&mut hasher);
        migration.checksum.hash(&mut hasher);
    }
    format!("eshop_test_template_{:016x}", hasher.finish())
}

async fn database_exists(conn: &mut PgConnection, name: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(conn)
        .await
        .expect("query pg_database")
}

/// Runs a statement that needs `database` to have no other sessions,
/// ending leftover ones and retrying until a deadline.
async fn retry_while_in_use(conn: &mut PgConnection, database: &str, statement: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match conn.execute(statement).await {
            Ok(_) => return,
            // 55006: object_in_use ("being accessed by other users").
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("55006") => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{database} stayed in use: {statement}"
                );
                sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
                    .bind(database)
                    .execute(&mut *conn)
                    .await
                    .expect("end leftover sessions");
                tokio::task::yield_now().await;
            }
            Err(error) => panic!("{statement}: {error}"),
        }
    }
}

/// Creates the migrated template once per migration set, under an advisory
/// lock so that parallel test processes build it only once.
async fn ensure_template(conn: &mut PgConnection) -> String {
    let template = template_name();
    conn.execute("SELECT pg_advisory_lock(727274)")
        .await
        .expect("take template lock");
    if !database_exists(conn, &template).await {
        // Build under another name and rename when complete, so that a
        // crash halfway never leaves a half-migrated template behind.
        let building = format!("{template}_building");
        conn.execute(format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)").as_str())
            .await
            .expect("drop stale");
        conn.execute(format!("CREATE DATABASE {building}").as_str())
            .await
            .expect("create template");
        let pool = PgPool::connect(&url_for(&building))
            .await
            .expect("connect to template");
        read_models::schema::MIGRATOR
            .run(&pool)
            .await
            .expect("migrate template");
        pool.close().await;
        // Backends exit asynchronously after their client hangs up.
        retry_while_in_use(
            conn,
            &building,
            &format!("ALTER DATABASE {building} RENAME TO {template}"),
        )
        .await;
    }
    conn.execute("SELECT pg_advisory_unlock(727274)")
        .await
        .expect("release template lock");
    template
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> Self {
        let mut conn = admin().await;
        let template = ensure_template(&mut conn).await;
        let name = format!("eshop_test_{}", Uuid::now_v7().simple());
        retry_while_in_use(
            &mut conn,
            &template,
            &format!("CREATE DATABASE {name} TEMPLATE {template}"),
        )
        .await;
        let url = url_for(&name);
        let pool = PgPool::connect(&url)
            .await
            .expect("connect to the test database");
        Self { name, url, pool }
    }

    /// Cuts every connection to this database and refuses new ones, as if
    /// its server had gone away; [`Self::allow_connections`] undoes it.
    pub async fn refuse_connections(&self) {
        let mut conn = admin().await;
        conn.execute(format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", self.name).as_str())
            .await
            .expect("refuse connections");
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&self.name)
            .execute(&mut conn)
            .await
            .expect("terminate connections");
    }

    pub async fn allow_connections(&self) {
        let mut conn = admin().await;
        conn.execute(format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", self.name).as_str())
            .await
            .expect("allow connections");
    }

    /// How many events the store holds.
    pub async fn event_count(&self) -> i64 {
        self.count("SELECT count(*) FROM events").await
    }

    /// The single number `sql` (a `SELECT count(*) …`) answers.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let mut conn = PgConnection::connect(&admin_url()).await.ok()?;
                conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("test database {} was not dropped", self.name);
        }
    }
}

impl TestDb {
    /// Starts `writers` tasks that each append `per_writer` events of
    /// `event_type` to the stream `writer-{n}` of `aggregate_type`, one
    /// transaction per event, as another tool would: some take their
    /// transaction id long before they write, some stay open while others
    /// commit, so transactions commit out of the order of their ids.
    #[must_use]
    pub fn interleaved_writers(
        &self,
        writers: u32,
        per_writer: u32,
        aggregate_type: &'static str,
        event_type: &'static str,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..writers)
            .map(|writer| {
                let pool = self.pool.clone();
                tokio::spawn(async move {
                    for n in 0..per_writer {
                        let mut tx = pool.begin().await.expect("begin");
                        // Take a transaction id now, write later: the widest
                        // window for another writer to commit in between.
                        sqlx::query("SELECT pg_current_xact_id()")
                            .execute(&mut *tx)
                            .await
                            .expect("xid");
                        for _ in 0..(writer + n) % 4 {
                            tokio::task::yield_now().await;
                        }
                        sqlx::query(
                            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                               event_version, payload, metadata) \
                             VALUES ($1, $2, $3, $4, '1.0', jsonb_build_object($4, '{}'::jsonb), '{}')",
                        )
                        .bind(aggregate_type)
                        .bind(format!("writer-{writer}"))
                        .bind(i64::from(n) + 1)
                        .bind(event_type)
                        .execute(&mut *tx)
                        .await
                        .expect("insert");
                        if (writer + n) % 3 == 0 {
                            // A slow transaction: others commit while it is open.
                            sqlx::query("SELECT count(*) FROM pg_class")
                                .execute(&mut *tx)
                                .await
                                .expect("work");
                        }
                        tx.commit().await.expect("commit");
                    }
                })
            })
            .collect()
    }
}
