//! Micro-benchmark of eshop's token verifier alone (`identity::Verifier`):
//! what checking an access token costs a request. Tokens are minted with
//! the test keys of `identity/tests/keys` (RS256, 2048-bit, claims shaped
//! like Keycloak's), so no issuer is involved.
//!
//! - *first sight*: N distinct tokens, each verified once (signature, claims,
//!   roles): what a client's first request with a new token costs;
//! - *again*: one token verified M times: every later request with it (a
//!   hash and a lookup);
//! - *baseline*, in the same run: parsing a typical add-item command body
//!   with serde_json, work every command does anyway.
//!
//! Prints ns per verification and the ratio to the baseline. See
//! docs/benchmarks.md.

use clap::Parser;
use eshop_tests::bench::verifier_cost;

#[derive(Debug, Parser)]
struct Args {
    /// Distinct tokens verified once each.
    #[arg(long, default_value_t = 2_000)]
    tokens: usize,
    /// Verifications of one token.
    #[arg(long, default_value_t = 500_000)]
    repeat: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cost = verifier_cost(args.tokens, args.repeat)?;
    eprintln!("{} tokens of {} bytes", args.tokens, cost.token_bytes);
    let (first_sight, again, baseline) = (cost.first_sight_ns, cost.again_ns, cost.baseline_ns);
    println!("verification        ns/op   ratio to baseline");
    println!(
        "first sight  {first_sight:>14.0}   {:>8.2}",
        first_sight / baseline
    );
    println!("again        {again:>14.0}   {:>8.2}", again / baseline);
    println!("baseline     {baseline:>14.0}       1.00   (serde_json parse of an add-item body)");
    Ok(())
}
