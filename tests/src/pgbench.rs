//! The pgbench baseline the benchmarks measure eshop against, on the same
//! PostgreSQL in the same run.

use std::process::Command;

use anyhow::{Context, bail};

/// Runs `script` (a pgbench custom script) with `clients` clients for
/// `seconds` against `db_url`, prepared statements; returns the TPS.
pub fn tps(script: &str, db_url: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let path = std::env::temp_dir().join(format!(
        "eshop-pgbench-{}.sql",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::write(&path, script)?;
    eprintln!("pgbench: {clients} client(s) for {seconds} s …");
    let output = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-c", &clients.to_string(), "-j"])
        .arg(clients.min(2).to_string())
        .args(["-T", &seconds.to_string(), "-f"])
        .arg(&path)
        .arg(db_url)
        .output()
        .context("failed to run pgbench (apt-get install postgresql-client)");
    let _ = std::fs::remove_file(&path);
    let output = output?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    text.lines()
        .find_map(|line| {
            line.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        })
        .context("no tps line in pgbench output")
}
