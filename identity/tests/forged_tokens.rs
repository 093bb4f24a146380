//! The checks a token goes through, on tokens this test mints with its own
//! keys (`tests/keys`): the ones an issuer signs correctly pass, and every
//! forgery or mistake an attacker or a misconfigured client can make is
//! refused with its reason. No issuer is involved: the verifier is given
//! the key set the issuer would publish.

use std::time::{SystemTime, UNIX_EPOCH};

use eshop_identity::{IdentityConfig, Rejection, Role, Verifier, VerifyError};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const ISSUER: &str = "https://issuer.test/realms/eshop";
const ISSUER_KEY: &[u8] = include_bytes!("keys/issuer.pem");
const ISSUER_PUBLIC: &[u8] = include_bytes!("keys/issuer.pub.pem");
const STRANGER_KEY: &[u8] = include_bytes!("keys/stranger.pem");
const JWKS: &[u8] = include_bytes!("keys/jwks.json");

fn config() -> IdentityConfig {
    IdentityConfig {
        issuer_url: ISSUER.to_owned(),
        audience: "eshop-api".to_owned(),
        roles_claim: "realm_access.roles".to_owned(),
        leeway_seconds: 30,
        keys_refresh_ms: 300_000,
        keys_min_interval_ms: 10_000,
        timeout_ms: 5_000,
    }
}

fn verifier() -> Verifier {
    Verifier::with_keys(config(), JWKS).expect("the test key set")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        .try_into()
        .expect("seconds fit")
}

/// What Keycloak puts in a customer's access token, give or take.
fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": ["eshop-api", "account"],
        "sub": "5f0c6a1e-alice",
        "azp": "eshop-web",
        "exp": now() + 300,
        "iat": now(),
        "realm_access": {"roles": ["customer", "offline_access"]},
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().expect("claims").remove(key);
    claims
}

fn signed(algorithm: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let header = Header {
        kid: kid.map(str::to_owned),
        ..Header::new(algorithm)
    };
    jsonwebtoken::encode(&header, claims, key).expect("signed")
}

fn by_issuer(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(ISSUER_KEY).expect("issuer key");
    signed(Algorithm::RS256, Some("issuer-key"), &key, claims)
}

async fn rejection(token: &str) -> Rejection {
    match verifier().verify(token).await {
        Err(VerifyError::Rejected(rejection)) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn a_token_the_issuer_signed_names_the_caller_and_its_roles() {
    let caller = verifier()
        .verify(&by_issuer(&claims()))
        .await
        .expect("verified");
    assert_eq!(caller.subject, "5f0c6a1e-alice");
    assert_eq!(caller.client_id.as_deref(), Some("eshop-web"));
    assert!(caller.has(Role::Customer));
    assert!(!caller.has(Role::Staff) && !caller.has(Role::Admin));
    assert_eq!(caller.actor(), "5f0c6a1e-alice/eshop-web");
}

#[tokio::test]
async fn the_same_token_twice_names_the_same_caller() {
    let verifier = verifier();
    let token = by_issuer(&claims());
    let first = verifier.verify(&token).await.expect("verified");
    let second = verifier.verify(&token).await.expect("remembered");
    assert_eq!(first, second);
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let token = by_issuer(&with(claims(), "exp", json!(now() - 120)));
    assert_eq!(rejection(&token).await, Rejection::Expired);
}

#[tokio::test]
async fn a_token_expired_within_the_leeway_still_passes() {
    let token = by_issuer(&with(claims(), "exp", json!(now() - 5)));
    assert!(verifier().verify(&token).await.is_ok());
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() {
    let token = by_issuer(&with(claims(), "nbf", json!(now() + 120)));
    assert_eq!(rejection(&token).await, Rejection::NotYetValid);
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    let token = by_issuer(&with(
        claims(),
        "iss",
        json!("https://elsewhere.test/realms/eshop"),
    ));
    assert_eq!(rejection(&token).await, Rejection::WrongIssuer);
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let token = by_issuer(&with(claims(), "aud", json!("account")));
    assert_eq!(rejection(&token).await, Rejection::WrongAudience);
}

#[tokio::test]
async fn a_token_without_subject_or_expiry_is_refused() {
    assert_eq!(
        rejection(&by_issuer(&without(claims(), "sub"))).await,
        Rejection::MissingClaim("sub".into())
    );
    assert_eq!(
        rejection(&by_issuer(&without(claims(), "exp"))).await,
        Rejection::MissingClaim("exp".into())
    );
}

#[tokio::test]
async fn an_unsigned_token_is_refused() {
    let token = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims().to_string().as_bytes())
    );
    assert_eq!(rejection(&token).await, Rejection::Algorithm("none".into()));
}

#[tokio::test]
async fn hs256_signed_with_the_issuers_public_key_is_refused() {
    let key = EncodingKey::from_secret(ISSUER_PUBLIC);
    let token = signed(Algorithm::HS256, Some("issuer-key"), &key, &claims());
    assert_eq!(
        rejection(&token).await,
        Rejection::Algorithm("HS256".into())
    );
}

#[tokio::test]
async fn a_symmetric_key_in_the_published_set_is_never_trusted() {
    // jwks.json holds {"kid":"shared","kty":"oct","k":"secret"}: public.
    let key = EncodingKey::from_secret(b"secret");
    let token = signed(Algorithm::HS256, Some("shared"), &key, &claims());
    assert_eq!(
        rejection(&token).await,
        Rejection::Algorithm("HS256".into())
    );
}

#[tokio::test]
async fn a_token_signed_by_a_key_the_issuer_never_published_is_refused() {
    let key = EncodingKey::from_rsa_pem(STRANGER_KEY).expect("stranger key");
    // Under the issuer's key id, the signature does not verify.
    let token = signed(Algorithm::RS256, Some("issuer-key"), &key, &claims());
    assert_eq!(rejection(&token).await, Rejection::BadSignature);
    // Under its own id, no such key is published.
    let token = signed(Algorithm::RS256, Some("stranger"), &key, &claims());
    assert_eq!(rejection(&token).await, Rejection::UnknownKey);
    // The published encryption key is no signing key.
    let token = signed(Algorithm::RS256, Some("enc-key"), &key, &claims());
    assert_eq!(rejection(&token).await, Rejection::UnknownKey);
}

#[tokio::test]
async fn a_key_that_names_its_algorithm_verifies_no_other() {
    let key = EncodingKey::from_rsa_pem(ISSUER_KEY).expect("issuer key");
    let token = signed(Algorithm::PS256, Some("issuer-key"), &key, &claims());
    assert_eq!(
        rejection(&token).await,
        Rejection::Algorithm("PS256".into())
    );
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let token = by_issuer(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let admin = with(claims(), "realm_access", json!({"roles": ["admin"]}));
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(admin.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(rejection(&forged).await, Rejection::BadSignature);
}

#[tokio::test]
async fn garbage_is_refused_as_malformed() {
    for garbage in ["garbage", "a.b.c", "....", "eyJhbGciOiJSUzI1NiJ9.e30"] {
        assert_eq!(rejection(garbage).await, Rejection::Malformed, "{garbage}");
    }
    assert_eq!(rejection("").await, Rejection::Missing);
    assert_eq!(rejection(&"a".repeat(10_000)).await, Rejection::TooLong);
}

#[tokio::test]
async fn roles_are_read_where_the_configuration_says() {
    let verifier = Verifier::with_keys(
        IdentityConfig {
            roles_claim: "resource_access.eshop-api.roles".to_owned(),
            ..config()
        },
        JWKS,
    )
    .expect("key set");
    let claims = with(
        claims(),
        "resource_access",
        json!({"eshop-api": {"roles": ["staff"]}}),
    );
    let caller = verifier
        .verify(&by_issuer(&claims))
        .await
        .expect("verified");
    assert!(caller.has(Role::Staff));
    assert!(!caller.has(Role::Customer), "realm roles are not read");
}
