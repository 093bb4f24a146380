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

use std::hint::black_box;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use identity::{IdentityConfig, Verifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// Distinct tokens verified once each.
    #[arg(long, default_value_t = 2_000)]
    tokens: usize,
    /// Verifications of one token.
    #[arg(long, default_value_t = 500_000)]
    repeat: usize,
}

const ISSUER: &str = "https://issuer.test/realms/eshop";
const ISSUER_KEY: &[u8] = include_bytes!("../../../identity/tests/keys/issuer.pem");
const JWKS: &[u8] = include_bytes!("../../../identity/tests/keys/jwks.json");

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let verifier = Verifier::with_keys(IdentityConfig::for_issuer(ISSUER), JWKS)
        .map_err(anyhow::Error::msg)?;
    let key = EncodingKey::from_rsa_pem(ISSUER_KEY)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let header = Header {
        kid: Some("issuer-key".to_owned()),
        ..Header::new(Algorithm::RS256)
    };
    let tokens = (0..args.tokens)
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
    eprintln!(
        "{} tokens of {} bytes",
        tokens.len(),
        tokens.first().map_or(0, String::len)
    );

    let started = Instant::now();
    for token in &tokens {
        runtime.block_on(verifier.verify(black_box(token)))?;
    }
    let first_sight = started.elapsed().as_nanos() as f64 / tokens.len() as f64;

    let token = &tokens[0];
    let started = Instant::now();
    for _ in 0..args.repeat {
        runtime.block_on(verifier.verify(black_box(token)))?;
    }
    let again = started.elapsed().as_nanos() as f64 / args.repeat as f64;

    let body = r#"{"product_id":"01a22412-4b48-7727-848f-b77b95ca64ae","quantity":2}"#;
    let started = Instant::now();
    for _ in 0..args.repeat {
        let parsed: serde_json::Value = serde_json::from_str(black_box(body))?;
        black_box(parsed);
    }
    let baseline = started.elapsed().as_nanos() as f64 / args.repeat as f64;

    println!("verification        ns/op   ratio to baseline");
    println!(
        "first sight  {first_sight:>14.0}   {:>8.2}",
        first_sight / baseline
    );
    println!("again        {again:>14.0}   {:>8.2}", again / baseline);
    println!("baseline     {baseline:>14.0}       1.00   (serde_json parse of an add-item body)");
    Ok(())
}
