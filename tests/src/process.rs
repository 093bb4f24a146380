//! Real `eshop` processes, for tests that kill, restart and scale them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::broker::TestBroker;
use crate::db::TestDb;
use crate::search::TestSearch;

/// The `eshop` binary built beside the test executables
/// (`cargo nextest run --workspace` builds it), or `ESHOP_BIN` (the
/// benchmarks name the release build); fails loudly when missing.
pub fn eshop_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ESHOP_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/eshop
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("eshop"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --bin eshop` (scripts/test does)",
        bin.display()
    );
    bin
}

/// The environment that points an `eshop` process at a test's database,
/// topics, consumer groups and indices.
#[derive(Clone)]
pub struct EshopEnv {
    vars: Vec<(String, String)>,
    pub name: String,
}

impl EshopEnv {
    pub fn new(db: &TestDb, broker: &TestBroker, search: &TestSearch, name: &str) -> Self {
        Self::for_database(db, name).with_all([
            ("EVENT_BUS_URL", broker.url()),
            ("RABBITMQ_EXCHANGE", format!("{}.events", broker.prefix)),
            ("RABBITMQ_LANES", crate::broker::TEST_LANES.to_string()),
            ("KAFKA_BROKERS", broker.brokers.clone()),
            ("EVENT_TOPICS", broker.topics()),
            ("KAFKA_TOPIC_PARTITIONS", "3".to_owned()),
            ("DEAD_LETTER_TOPIC", broker.dead_letter_topic()),
            (
                "PROJECTOR_GROUP_PREFIX",
                format!("{}.{name}", broker.prefix),
            ),
            ("SEARCH_URL", search.url.clone()),
            ("SEARCH_INDEX_PREFIX", search.prefix.clone()),
            ("RELAY_NAME", name.to_owned()),
            ("RELAY_POLL_MS", "10".to_owned()),
            ("PROJECTOR_STORE_POLL_MS", "10".to_owned()),
            // Several processes per test, and tests in parallel, share one
            // PostgreSQL (max_connections 300).
            ("DATABASE_MAX_CONNECTIONS", "8".to_owned()),
        ])
    }

    /// The environment of a command that needs the database only (no
    /// broker, no search server), such as `eshop events export`.
    pub fn for_database(db: &TestDb, name: &str) -> Self {
        Self {
            vars: Vec::new(),
            name: name.to_owned(),
        }
        .with_all([
            ("DATABASE_URL", db.url.clone()),
            ("LOG_FORMAT", "json".to_owned()),
            (
                "RUST_LOG",
                "warn,eshop_projections=info,eshop_event_export=info".to_owned(),
            ),
        ])
    }

    /// Sets (or overrides) each of `vars`.
    fn with_all<const N: usize>(self, vars: [(&str, String); N]) -> Self {
        vars.into_iter()
            .fold(self, |env, (key, value)| env.with(key, &value))
    }

    /// Sets (or overrides) one variable.
    #[must_use]
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_owned(), value.to_owned()));
        self
    }

    /// `eshop <args>` with this environment (and only `PATH` and `HOME`
    /// besides), for a test that wires its standard streams itself.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(eshop_bin());
        command.args(args).env_clear();
        for key in ["PATH", "HOME"] {
            if let Ok(value) = std::env::var(key) {
                command.env(key, value);
            }
        }
        command.envs(self.vars.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Starts `eshop <args>`; its output goes to a log file named in the
    /// panic message if the test fails.
    pub fn spawn(&self, args: &[&str]) -> EshopProcess {
        let log = std::env::temp_dir().join(format!(
            "eshop-{}-{}-{}.log",
            self.name,
            args.join("-"),
            uuid::Uuid::now_v7().simple()
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let child = self
            .command(args)
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("eshop starts");
        EshopProcess { child, log }
    }

    /// Runs `eshop <args>` to completion and returns its stdout; panics with
    /// its stderr when it fails.
    pub fn run(&self, args: &[&str]) -> String {
        self.try_run(args)
            .unwrap_or_else(|error| panic!("eshop {args:?} failed: {error}"))
    }

    /// Runs `eshop <args>` to completion: its exit status and output.
    pub fn output(&self, args: &[&str]) -> std::process::Output {
        self.command(args).output().expect("eshop runs")
    }

    /// Runs `eshop <args>` to completion: its stdout, or its stderr when it
    /// fails.
    pub fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let output = self.output(args);
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

/// A running `eshop` process; killed (SIGKILL) when dropped.
pub struct EshopProcess {
    child: Child,
    pub log: PathBuf,
}

impl EshopProcess {
    /// `kill -9`: no shutdown hook runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running (it did not exit on an error).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the process's API on `port` answers `/health/live`;
    /// fails at once if the process exited. Returns the API's base URL.
    pub async fn wait_live(&mut self, port: u16) -> String {
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = std::time::Instant::now();
        loop {
            assert!(self.running(), "eshop exited; see {}", self.log.display());
            let live = http.get(format!("{base}/health/live")).send().await;
            if live.is_ok_and(|r| r.status().is_success()) {
                return base;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "the API did not answer in 60 s; see {}",
                self.log.display()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// What a test of real `eshop` processes needs: a database, topics and
/// indices of its own, a free port for the API, and the environment that
/// points the processes at them.
pub struct ProcessStack {
    pub db: TestDb,
    pub broker: TestBroker,
    pub search: TestSearch,
    pub port: u16,
    pub env: EshopEnv,
}

impl ProcessStack {
    /// A stack on the shared broker; `name` names the relay and the groups.
    pub async fn new(name: &str) -> Self {
        Self::on(TestBroker::new(), name).await
    }

    /// A stack on the given broker.
    pub async fn on(broker: TestBroker, name: &str) -> Self {
        let db = TestDb::new().await;
        let search = TestSearch::new(&broker.prefix).await;
        let port = free_port();
        let env = EshopEnv::new(&db, &broker, &search, name)
            .with("LISTEN_ADDR", &format!("127.0.0.1:{port}"));
        Self {
            db,
            broker,
            search,
            port,
            env,
        }
    }

    /// The same stack, its environment setting `key` to `value` as well.
    #[must_use]
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.env = self.env.with(key, value);
        self
    }

    /// Starts `eshop <args>` (`serve`, or `serve --api-only`) on the
    /// stack's port and waits until its API is live; returns the process
    /// and the API's base URL.
    pub async fn serve(&self, args: &[&str]) -> (EshopProcess, String) {
        let mut process = self.env.spawn(args);
        let base = process.wait_live(self.port).await;
        (process, base)
    }
}

impl Drop for EshopProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free port on 127.0.0.1 (bound, then released for a child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
