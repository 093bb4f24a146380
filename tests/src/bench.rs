//! Shared by the benchmarks (`src/bin/bench-*`): the token verifier's own
//! cost, measured alone, and the CPU time a process has used, so that a
//! benchmark can say what share of a request's CPU time checking its token
//! takes; and what they run against, the eshop binary and a PostgreSQL
//! server.

use std::hint::black_box;
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use identity::{IdentityConfig, Verifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sqlx::{Executor, PgConnection};

const ISSUER: &str = "https://issuer.test/realms/eshop";
const ISSUER_KEY: &[u8] = include_bytes!("../../identity/tests/keys/issuer.pem");
const JWKS: &[u8] = include_bytes!("../../identity/tests/keys/jwks.json");

/// What verifying a token costs, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct VerifierCost {
    /// A token seen for the first time: signature, claims, roles.
    pub first_sight_ns: f64,
    /// A token verified before (remembered by its SHA-256): every later
    /// request of a client.
    pub again_ns: f64,
    /// Parsing an add-item body with serde_json, in the same run.
    pub baseline_ns: f64,
    /// The size of the tokens, in bytes.
    pub token_bytes: usize,
}

/// Measures the verifier alone on `tokens` distinct tokens (once each) and
/// one token `repeat` times. Tokens are RS256 with claims shaped like
/// Keycloak's, minted with the test keys of `identity/tests/keys`; no
/// issuer is involved.
///
/// # Errors
/// When the test keys do not load or a token does not verify.
pub fn verifier_cost(tokens: usize, repeat: usize) -> anyhow::Result<VerifierCost> {
    // On a thread of its own, with a runtime of its own: callable from a
    // benchmark's async code too.
    std::thread::spawn(move || measure(tokens, repeat))
        .join()
        .map_err(|_| anyhow::anyhow!("the verifier benchmark panicked"))?
}

fn measure(tokens: usize, repeat: usize) -> anyhow::Result<VerifierCost> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let verifier = Verifier::with_keys(IdentityConfig::for_issuer(ISSUER), JWKS)
        .map_err(anyhow::Error::msg)?;
    let key = EncodingKey::from_rsa_pem(ISSUER_KEY)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let header = Header {
        kid: Some("issuer-key".to_owned()),
        ..Header::new(Algorithm::RS256)
    };
    let tokens = (0..tokens.max(1))
        .map(|i| {
            let claims = json!({
                "iss": ISSUER, "aud": ["eshop-api", "account"], "sub": format!("user-{i}"),
                "azp": "eshop-web", "exp": now + 3_600, "iat": now, "jti": format!("token-{i}"),
                "typ": "Bearer", "preferred_username": format!("user{i}"),
                "email": format!("user{i}@eshop.test"),
                "realm_access": {"roles": ["customer", "offline_access", "uma_authorization"]},
                "scope": "openid profile email",
            });
            jsonwebtoken::encode(&header, &claims, &key)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let started = Instant::now();
    for token in &tokens {
        runtime.block_on(verifier.verify(black_box(token)))?;
    }
    let first_sight_ns = started.elapsed().as_nanos() as f64 / tokens.len() as f64;

    let token = &tokens[0];
    let repeat = repeat.max(1);
    let started = Instant::now();
    for _ in 0..repeat {
        runtime.block_on(verifier.verify(black_box(token)))?;
    }
    let again_ns = started.elapsed().as_nanos() as f64 / repeat as f64;

    let body = r#"{"product_id":"01a22412-4b48-7727-848f-b77b95ca64ae","quantity":2}"#;
    let started = Instant::now();
    for _ in 0..repeat {
        let parsed: serde_json::Value = serde_json::from_str(black_box(body))?;
        black_box(parsed);
    }
    let baseline_ns = started.elapsed().as_nanos() as f64 / repeat as f64;
    Ok(VerifierCost {
        first_sight_ns,
        again_ns,
        baseline_ns,
        token_bytes: token.len(),
    })
}

/// The CPU time (user and system) process `pid` has used so far, from
/// `/proc/<pid>/stat`.
///
/// # Errors
/// When the process's stat cannot be read (it exited, or no `/proc`).
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // After the command name, which may hold spaces, in parentheses.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(index)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse()?)
    };
    // utime and stime: fields 14 and 15 of stat(5), counted from the pid.
    let used = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(used as f64 / clock_ticks()? as f64))
}

/// The CPU time used so far by every running process whose command name
/// (`/proc/<pid>/comm`) is one of `names`, per name: where a benchmark's
/// time goes among PostgreSQL, a cache server and eshop.
///
/// # Errors
/// When `/proc` cannot be read.
pub fn cpu_by_command(names: &[&str]) -> anyhow::Result<Vec<(String, Duration)>> {
    let found = cpu_by_role(&|_, comm, _| names.contains(&comm).then(|| comm.to_owned()))?;
    Ok(names
        .iter()
        .map(|name| {
            let cpu = found
                .iter()
                .find(|(role, _)| role == name)
                .map_or(Duration::ZERO, |(_, cpu)| *cpu);
            ((*name).to_owned(), cpu)
        })
        .collect())
}

/// The CPU time used so far by every running process, summed per role:
/// `classify(pid, comm, cmdline)` names a process's role, or `None` to
/// leave it out.
fn cpu_by_role(
    classify: &dyn Fn(u32, &str, &str) -> Option<String>,
) -> anyhow::Result<Vec<(String, Duration)>> {
    let mut roles: Vec<(String, Duration)> = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
            .unwrap_or_default();
        let Some(role) = classify(pid, comm.trim(), &cmdline) else {
            continue;
        };
        let Ok(cpu) = process_cpu(pid) else {
            continue;
        };
        match roles.iter_mut().find(|(name, _)| *name == role) {
            Some((_, total)) => *total += cpu,
            None => roles.push((role, cpu)),
        }
    }
    Ok(roles)
}

/// CPU time per role at one moment, to subtract from a later sample:
/// where a benchmark's phase spent the machine's cores. A process's role
/// comes from `classify(comm, cmdline)`; processes it returns `None` for
/// count only in the machine's total.
#[derive(Debug, Clone)]
pub struct CpuSample {
    at: Instant,
    /// Busy and total jiffies of all CPUs (`/proc/stat`).
    machine: (u64, u64),
    roles: Vec<(String, Duration)>,
}

/// What one role used between two samples, as a share of one core.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuUse {
    pub role: String,
    pub cores: f64,
}

/// Where a phase's CPU went: per role, and the whole machine's busy share.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuSplit {
    pub roles: Vec<CpuUse>,
    /// Busy share of all the machine's cores, 0 to 1.
    pub machine_busy: f64,
    pub cores: usize,
}

impl CpuSplit {
    /// One report line: each role in % of one core, heaviest first, and
    /// how busy the whole machine was.
    #[must_use]
    pub fn line(&self) -> String {
        let mut roles = self.roles.clone();
        roles.sort_by(|a, b| b.cores.total_cmp(&a.cores));
        let parts: Vec<String> = roles
            .iter()
            .filter(|r| r.cores >= 0.005)
            .map(|r| format!("{} {:.0} %", r.role, r.cores * 100.0))
            .collect();
        format!(
            "{} (in % of one core); machine {:.0} % busy of {} cores",
            parts.join(", "),
            self.machine_busy * 100.0,
            self.cores
        )
    }
}

impl CpuSample {
    /// Samples now.
    ///
    /// # Errors
    /// When `/proc` cannot be read.
    pub fn take(classify: &dyn Fn(u32, &str, &str) -> Option<String>) -> anyhow::Result<Self> {
        let roles = cpu_by_role(classify)?;
        Ok(Self {
            at: Instant::now(),
            machine: machine_jiffies()?,
            roles,
        })
    }

    /// What each role used since `self`, sampled again now with the same
    /// classification. A process that exited in between is not counted.
    ///
    /// # Errors
    /// When `/proc` cannot be read.
    pub fn since(
        &self,
        classify: &dyn Fn(u32, &str, &str) -> Option<String>,
    ) -> anyhow::Result<CpuSplit> {
        let now = Self::take(classify)?;
        let wall = now.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let roles = now
            .roles
            .iter()
            .map(|(role, cpu)| {
                let before = self
                    .roles
                    .iter()
                    .find(|(name, _)| name == role)
                    .map_or(Duration::ZERO, |(_, cpu)| *cpu);
                CpuUse {
                    role: role.clone(),
                    cores: cpu.saturating_sub(before).as_secs_f64() / wall,
                }
            })
            .collect();
        let busy = now.machine.0.saturating_sub(self.machine.0) as f64;
        let total = now.machine.1.saturating_sub(self.machine.1).max(1) as f64;
        Ok(CpuSplit {
            roles,
            machine_busy: busy / total,
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        })
    }
}

/// Busy and total jiffies of all CPUs, from the `cpu` line of `/proc/stat`
/// (idle and iowait count as not busy).
fn machine_jiffies() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|line| line.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        // user to steal; guest time is already counted in user.
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`).
fn clock_ticks() -> anyhow::Result<u64> {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
}

/// The report line of a benchmark that served `requests` requests while
/// eshop used `cpu`: eshop's CPU per request, and the verifier's share of
/// it with a remembered token (what the benchmark's clients send) and with
/// a token seen for the first time on every request (the worst case).
#[must_use]
pub fn verifier_share(cpu: Duration, requests: u64, cost: &VerifierCost) -> String {
    let per_request_ns = cpu.as_nanos() as f64 / requests.max(1) as f64;
    format!(
        "eshop CPU per request: {:.0} µs; token verification (measured alone, {}-byte RS256): \
         remembered {:.2} µs = {:.2} % of it, first sight {:.1} µs = {:.1} %",
        per_request_ns / 1000.0,
        cost.token_bytes,
        cost.again_ns / 1000.0,
        100.0 * cost.again_ns / per_request_ns,
        cost.first_sight_ns / 1000.0,
        100.0 * cost.first_sight_ns / per_request_ns,
    )
}

/// Whether the eshop processes of a benchmark export their spans, and
/// which share of traces (the clients send no trace context, so each
/// request's own sampling decision holds for its whole trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Export {
    /// No collector named: nothing is built.
    Off,
    /// Every trace (`parentbased_always_on`).
    All,
    /// One trace in ten (`parentbased_traceidratio`, 0.1).
    Tenth,
}

impl Export {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Off => "export off",
            Self::All => "export 100 %",
            Self::Tenth => "export 10 %",
        }
    }

    /// Sets `command`'s OTEL_* variables for this setting, exporting to
    /// `otlp` (an OTLP/HTTP endpoint), whatever the benchmark's own
    /// environment says.
    pub fn apply(self, command: &mut Command, otlp: &str) {
        match self {
            Self::Off => command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", "")
                .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            Self::All => command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
                .env("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
            Self::Tenth => command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
                .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
                .env("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        };
    }
}

/// What every benchmark runs against: the eshop binary and a PostgreSQL
/// server.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The eshop binary to benchmark.
    #[arg(long, default_value = "target/release/eshop")]
    pub eshop: String,
    /// PostgreSQL server, as a URL of its maintenance database.
    #[arg(
        long,
        env = "BENCH_ADMIN_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub admin_url: String,
}

impl Target {
    /// The URL of the database `name` on the same server.
    #[must_use]
    pub fn database_url(&self, name: &str) -> String {
        let admin = self.admin_url.as_str();
        let base = admin.rsplit_once('/').map_or(admin, |(base, _)| base);
        format!("{base}/{name}")
    }

    /// Starts `command`, a command of the eshop binary, saying how to build
    /// the binary when it cannot start.
    ///
    /// # Errors
    /// When the command does not start.
    pub fn spawn(&self, command: &mut Command) -> anyhow::Result<Child> {
        command.spawn().with_context(|| {
            format!(
                "failed to start {} (build it with cargo build --release)",
                self.eshop
            )
        })
    }
}

/// How many events of `aggregate_types` the projection `projection` has
/// taken from the event store's feed, with no broker: those at or before
/// its checkpoint in the feed's order (transaction id, then position), which
/// is not the order of positions alone (a transaction that took a lower id
/// can append above a position another has already committed).
///
/// # Errors
/// When the database refuses.
pub async fn store_messages_taken(
    db: &mut PgConnection,
    projection: &str,
    aggregate_types: &[&str],
) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM events AS e JOIN relay_checkpoints AS c ON c.name = $1 \
         WHERE (e.transaction_id, e.global_position) <= (c.transaction_id, c.global_position) \
           AND e.aggregate_type = ANY($2)",
    )
    .bind(projections::projector::StoreSource::checkpoint_name(
        projection,
    ))
    .bind(aggregate_types)
    .fetch_one(&mut *db)
    .await?)
}

/// Drops the database `name` on the server of `admin`, if it exists.
///
/// # Errors
/// When the server refuses.
pub async fn drop_database(admin: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await?;
    Ok(())
}

/// Makes the database `name` on the server of `admin`.
///
/// # Errors
/// When the server refuses (one of that name exists, for instance).
pub async fn create_database(admin: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    Ok(())
}

/// Makes the database `name` afresh on the server of `admin`, dropping
/// the one of that name first.
///
/// # Errors
/// When the server refuses.
pub async fn recreate_database(admin: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    drop_database(admin, name).await?;
    create_database(admin, name).await
}

#[cfg(test)]
mod cpu_tests {
    use super::*;

    #[test]
    fn a_process_is_counted_by_its_command_name_and_by_its_role() {
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(50) {
            black_box(started.elapsed());
        }
        let comm = std::fs::read_to_string("/proc/self/comm").expect("own comm");
        let by_command = cpu_by_command(&[comm.trim(), "no-such-command"]).expect("/proc");
        assert_eq!(by_command[0].0, comm.trim());
        assert!(by_command[0].1 > Duration::ZERO, "{by_command:?}");
        assert_eq!(
            by_command[1],
            ("no-such-command".to_owned(), Duration::ZERO)
        );

        let me = std::process::id();
        let roles = cpu_by_role(&|pid, _, _| (pid == me).then(|| "me".to_owned())).expect("/proc");
        assert_eq!(roles.len(), 1, "{roles:?}");
        assert!(roles[0].1 > Duration::ZERO, "{roles:?}");
    }
}
