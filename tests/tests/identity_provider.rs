//! The identity provider eshop trusts: Keycloak with the `eshop` realm of
//! `services/keycloak/eshop-realm.json`, which `scripts/setup` starts through
//! `services/keycloak/setup` on `http://127.0.0.1:8180`. `OIDC_ISSUER_URL`
//! names another issuer (default `http://127.0.0.1:8180/realms/eshop`).
//!
//! These tests never skip: without a reachable Keycloak they fail, naming the
//! URL they tried.

use std::time::Duration;

use eshop_tests::auth::KeycloakAdmin;
use eshop_tests::eventually;
use identity::{IdentityConfig, Rejection, Role, Verifier, VerifyError};
use serde_json::Value;

const DEFAULT_ISSUER: &str = "http://127.0.0.1:8180/realms/eshop";

/// Dev-only credentials, as in `services/keycloak/eshop-realm.json`.
const WEB_CLIENT: &str = "eshop-web";
const OPS_CLIENT: &str = "eshop-ops";
const OPS_SECRET: &str = "eshop-ops-dev-secret";
const API_AUDIENCE: &str = "eshop-api";

fn issuer() -> String {
    std::env::var("OIDC_ISSUER_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| DEFAULT_ISSUER.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

fn unreachable(url: &str, error: impl std::fmt::Display) -> ! {
    panic!(
        "Keycloak is not reachable at {url} ({error}). Start it with scripts/setup \
         (or services/keycloak/setup), or point OIDC_ISSUER_URL at a running issuer."
    )
}

/// Sends `request` (described as `what`, e.g. `GET <url>`, to `url`) and
/// returns its JSON body, failing loudly on anything but a 2xx.
async fn json_answer(what: &str, url: &str, request: reqwest::RequestBuilder) -> Value {
    let response = request
        .send()
        .await
        .unwrap_or_else(|error| unreachable(url, error));
    let status = response.status();
    let body = response
        .text()
        .await
        .unwrap_or_else(|error| unreachable(url, error));
    assert!(
        status.is_success(),
        "{what} answered {status}: {body}\n(is the eshop realm imported? run scripts/setup)"
    );
    serde_json::from_str(&body).unwrap_or_else(|error| panic!("{what}: not JSON ({error}): {body}"))
}

/// GETs `url` and returns its JSON body.
async fn get_json(url: &str) -> Value {
    json_answer(&format!("GET {url}"), url, client().get(url)).await
}

struct Discovery {
    issuer: String,
    jwks_uri: String,
    token_endpoint: String,
}

async fn discovery() -> Discovery {
    let issuer = issuer();
    let url = format!("{issuer}/.well-known/openid-configuration");
    let document = get_json(&url).await;
    let field = |name: &str| {
        document[name]
            .as_str()
            .unwrap_or_else(|| panic!("{url} has no string `{name}`: {document}"))
            .to_owned()
    };
    Discovery {
        issuer: field("issuer"),
        jwks_uri: field("jwks_uri"),
        token_endpoint: field("token_endpoint"),
    }
}

/// POSTs a token request and returns the access token.
async fn token(endpoint: &str, form: &[(&str, &str)]) -> String {
    let body = json_answer(
        &format!("POST {endpoint}"),
        endpoint,
        client().post(endpoint).form(form),
    )
    .await;
    assert_eq!(body["token_type"].as_str(), Some("Bearer"), "{body}");
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("POST {endpoint}: no access_token in {body}"))
        .to_owned()
}

async fn password_grant(endpoint: &str, username: &str, password: &str) -> String {
    token(
        endpoint,
        &[
            ("grant_type", "password"),
            ("client_id", WEB_CLIENT),
            ("username", username),
            ("password", password),
        ],
    )
    .await
}

/// Decodes unpadded base64url (RFC 4648 §5), as JWT segments are.
fn base64url_decode(text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {c:?} in {text}"),
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    bytes
}

/// The header and claims of a compact JWS (the signature is not checked
/// here; its key is, through `kid`).
struct Jwt {
    header: Value,
    claims: Value,
}

fn decode(token: &str) -> Jwt {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS: {token}");
    let segment = |i: usize| -> Value {
        serde_json::from_slice(&base64url_decode(parts[i]))
            .unwrap_or_else(|error| panic!("JWT segment {i} is not JSON ({error}): {token}"))
    };
    Jwt {
        header: segment(0),
        claims: segment(1),
    }
}

/// The `kid`s of the RS256 signing keys the issuer publishes.
async fn rs256_signing_kids(jwks_uri: &str) -> Vec<String> {
    let jwks = get_json(jwks_uri).await;
    jwks["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("{jwks_uri} has no `keys`: {jwks}"))
        .iter()
        .filter(|key| key["kty"] == "RSA" && key["alg"] == "RS256" && key["use"] != "enc")
        .filter_map(|key| key["kid"].as_str().map(str::to_owned))
        .collect()
}

fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn realm_roles(claims: &Value) -> Vec<&str> {
    strings(&claims["realm_access"]["roles"])
}

/// Checks what every eshop access token must carry: an RS256 signature by a
/// published key, this issuer, the API as audience, a 300 s lifetime.
/// `lifetime`: how long the realm makes the client's tokens live, in
/// seconds (300 for users, an hour for the operators' client).
async fn assert_api_access_token(discovery: &Discovery, token: &Jwt, lifetime: i64) {
    assert_eq!(token.header["alg"], "RS256", "header: {}", token.header);
    let kid = token.header["kid"]
        .as_str()
        .unwrap_or_else(|| panic!("no kid in the header: {}", token.header));
    let kids = rs256_signing_kids(&discovery.jwks_uri).await;
    assert!(
        kids.iter().any(|k| k == kid),
        "kid {kid} is not among the RS256 keys of {}: {kids:?}",
        discovery.jwks_uri
    );
    let claims = &token.claims;
    assert_eq!(
        claims["iss"].as_str(),
        Some(discovery.issuer.as_str()),
        "claims: {claims}"
    );
    assert_eq!(claims["typ"], "Bearer", "claims: {claims}");
    assert!(
        strings(&claims["aud"]).contains(&API_AUDIENCE),
        "aud does not name {API_AUDIENCE}: {claims}"
    );
    let (iat, exp) = (claims["iat"].as_i64(), claims["exp"].as_i64());
    let (Some(iat), Some(exp)) = (iat, exp) else {
        panic!("no numeric iat/exp: {claims}");
    };
    assert!(
        (lifetime - 5..=lifetime + 5).contains(&(exp - iat)),
        "lifetime {} s, want about {lifetime}: {claims}",
        exp - iat
    );
}

#[tokio::test]
async fn the_discovery_document_names_the_issuer_and_publishes_an_rs256_signing_key() {
    let issuer = issuer();
    let discovery = discovery().await;
    assert_eq!(discovery.issuer, issuer);
    assert!(
        discovery.jwks_uri.starts_with(&issuer),
        "jwks_uri {} is not under {issuer}",
        discovery.jwks_uri
    );
    assert!(
        discovery.token_endpoint.starts_with(&issuer),
        "token_endpoint {} is not under {issuer}",
        discovery.token_endpoint
    );
    let kids = rs256_signing_kids(&discovery.jwks_uri).await;
    assert!(
        !kids.is_empty(),
        "{} publishes no RS256 signing key",
        discovery.jwks_uri
    );
}

#[tokio::test]
async fn alice_logs_in_through_the_web_client_and_gets_a_customer_token_for_the_api() {
    let discovery = discovery().await;
    let token =
        decode(&password_grant(&discovery.token_endpoint, "alice", "alice-dev-password").await);
    assert_api_access_token(&discovery, &token, 300).await;
    let claims = &token.claims;
    assert_eq!(claims["azp"], WEB_CLIENT, "claims: {claims}");
    assert_eq!(claims["preferred_username"], "alice", "claims: {claims}");
    assert_eq!(claims["email"], "alice@eshop.test", "claims: {claims}");
    let roles = realm_roles(claims);
    assert!(roles.contains(&"customer"), "realm_access.roles {roles:?}");
    assert!(
        !roles.contains(&"staff") && !roles.contains(&"admin"),
        "realm_access.roles {roles:?}"
    );
}

#[tokio::test]
async fn every_demo_user_logs_in_with_their_role_and_nothing_more() {
    let discovery = discovery().await;
    let users = [
        ("alice", "customer"),
        ("bob", "customer"),
        ("sam", "staff"),
        ("ada", "admin"),
    ];
    for (user, role) in users {
        let password = format!("{user}-dev-password");
        let token = decode(&password_grant(&discovery.token_endpoint, user, &password).await);
        assert_api_access_token(&discovery, &token, 300).await;
        let roles = realm_roles(&token.claims);
        for eshop_role in ["customer", "staff", "admin"] {
            assert_eq!(
                roles.contains(&eshop_role),
                eshop_role == role,
                "{user}: realm_access.roles {roles:?}, want {role} alone of the eshop roles"
            );
        }
    }
}

#[tokio::test]
async fn a_wrong_password_gets_no_token() {
    let discovery = discovery().await;
    let endpoint = &discovery.token_endpoint;
    let response = client()
        .post(endpoint)
        .form(&[
            ("grant_type", "password"),
            ("client_id", WEB_CLIENT),
            ("username", "alice"),
            ("password", "not-her-password"),
        ])
        .send()
        .await
        .unwrap_or_else(|error| unreachable(endpoint, error));
    // RFC 6749 §5.2: a bad resource owner password is invalid_grant, 400.
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_grant"), "{body}");
}

#[tokio::test]
async fn the_ops_client_gets_an_admin_token_for_the_api_with_client_credentials() {
    let discovery = discovery().await;
    let token = decode(
        &token(
            &discovery.token_endpoint,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", OPS_CLIENT),
                ("client_secret", OPS_SECRET),
            ],
        )
        .await,
    );
    assert_api_access_token(&discovery, &token, 3600).await;
    let claims = &token.claims;
    assert_eq!(claims["azp"], OPS_CLIENT, "claims: {claims}");
    let roles = realm_roles(claims);
    assert!(roles.contains(&"admin"), "realm_access.roles {roles:?}");
}

async fn alices_token(discovery: &Discovery) -> String {
    password_grant(&discovery.token_endpoint, "alice", "alice-dev-password").await
}

#[tokio::test]
async fn eshops_verifier_takes_alices_token_for_a_customer_with_her_subject() {
    let discovery = discovery().await;
    let token = alices_token(&discovery).await;
    let claims = decode(&token).claims;
    let verifier = Verifier::new(IdentityConfig::for_issuer(&issuer())).expect("verifier");
    verifier.ready().await.expect("the issuer's keys");
    let caller = verifier
        .verify(&token)
        .await
        .expect("alice's token verifies");
    assert_eq!(Some(caller.subject.as_str()), claims["sub"].as_str());
    assert_eq!(caller.client_id.as_deref(), Some(WEB_CLIENT));
    assert!(caller.has(Role::Customer), "{caller:?}");
    assert!(
        !caller.has(Role::Staff) && !caller.has(Role::Admin),
        "{caller:?}"
    );
}

#[tokio::test]
async fn eshops_verifier_takes_the_ops_clients_token_for_an_admin() {
    let discovery = discovery().await;
    let token = token(
        &discovery.token_endpoint,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", OPS_CLIENT),
            ("client_secret", OPS_SECRET),
        ],
    )
    .await;
    let verifier = Verifier::new(IdentityConfig::for_issuer(&issuer())).expect("verifier");
    let caller = verifier
        .verify(&token)
        .await
        .expect("the ops token verifies");
    assert!(caller.has(Role::Admin), "{caller:?}");
    assert_eq!(caller.client_id.as_deref(), Some(OPS_CLIENT));
}

#[tokio::test]
async fn a_verifier_for_another_audience_refuses_keycloaks_tokens() {
    let token = alices_token(&discovery().await).await;
    let verifier = Verifier::new(IdentityConfig {
        audience: "another-api".to_owned(),
        ..IdentityConfig::for_issuer(&issuer())
    })
    .expect("verifier");
    assert_eq!(
        verifier.verify(&token).await,
        Err(VerifyError::Rejected(Rejection::WrongAudience))
    );
}

#[tokio::test]
async fn an_unreachable_issuer_makes_verification_unavailable_rather_than_refused() {
    let token = alices_token(&discovery().await).await;
    // Nothing listens on port 9 (discard) here.
    let verifier = Verifier::new(IdentityConfig {
        timeout_ms: 2_000,
        ..IdentityConfig::for_issuer("http://127.0.0.1:9/realms/eshop")
    })
    .expect("verifier");
    let ready = verifier.ready().await.expect_err("no keys");
    assert!(ready.contains("127.0.0.1:9"), "{ready}");
    assert!(
        matches!(
            verifier.verify(&token).await,
            Err(VerifyError::Unavailable(_))
        ),
        "a token that cannot be checked is not the caller's fault"
    );
}

/// A realm of the test's own, so that rotating its keys troubles no other
/// test: a confidential client with a service account whose tokens name
/// the eshop API as audience. Deleted on drop.
struct OwnRealm {
    admin: KeycloakAdmin,
    name: String,
}

const ROTATION_CLIENT: &str = "rotation-ops";
const ROTATION_SECRET: &str = "rotation-dev-secret";

impl OwnRealm {
    async fn create() -> Self {
        let admin = KeycloakAdmin::login().await;
        let name = format!("rotation-{}", uuid::Uuid::now_v7().simple());
        let realm = serde_json::json!({
            "realm": name,
            "enabled": true,
            "clients": [{
                "clientId": ROTATION_CLIENT,
                "secret": ROTATION_SECRET,
                "publicClient": false,
                "serviceAccountsEnabled": true,
                "standardFlowEnabled": false,
                "directAccessGrantsEnabled": false,
                "protocolMappers": [{
                    "name": "eshop-api audience",
                    "protocol": "openid-connect",
                    "protocolMapper": "oidc-audience-mapper",
                    "config": {
                        "included.custom.audience": API_AUDIENCE,
                        "access.token.claim": "true",
                    },
                }],
            }],
        });
        admin.call(reqwest::Method::POST, "", Some(realm)).await;
        Self { admin, name }
    }

    fn issuer(&self) -> String {
        format!("{}/realms/{}", self.admin.base, self.name)
    }

    async fn client_token(&self) -> String {
        token(
            &format!("{}/protocol/openid-connect/token", self.issuer()),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", ROTATION_CLIENT),
                ("client_secret", ROTATION_SECRET),
            ],
        )
        .await
    }

    /// The realm's RSA signing key providers: (component id, name).
    async fn rsa_signing_providers(&self) -> Vec<(String, String)> {
        let components = self
            .admin
            .get(&format!(
                "/{}/components?type=org.keycloak.keys.KeyProvider",
                self.name
            ))
            .await;
        components
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["providerId"] == "rsa-generated")
            .filter_map(|c| Some((c["id"].as_str()?.to_owned(), c["name"].as_str()?.to_owned())))
            .collect()
    }

    /// Adds an RS256 key that outranks the realm's first one: new tokens
    /// are signed with it.
    async fn add_signing_key(&self, name: &str) {
        let realm = self.admin.get(&format!("/{}", self.name)).await;
        let component = serde_json::json!({
            "name": name,
            "providerId": "rsa-generated",
            "providerType": "org.keycloak.keys.KeyProvider",
            "parentId": realm["id"],
            "config": {"priority": ["500"], "keySize": ["2048"], "algorithm": ["RS256"]},
        });
        self.admin
            .call(
                reqwest::Method::POST,
                &format!("/{}/components", self.name),
                Some(component),
            )
            .await;
    }

    async fn remove_component(&self, id: &str) {
        self.admin
            .call(
                reqwest::Method::DELETE,
                &format!("/{}/components/{id}", self.name),
                None,
            )
            .await;
    }
}

impl Drop for OwnRealm {
    fn drop(&mut self) {
        let url = format!("{}/admin/realms/{}", self.admin.base, self.name);
        let token = self.admin.token.clone();
        // Best effort, on a thread of its own: the test's runtime may be
        // shutting down.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    let _ = client().delete(&url).bearer_auth(token).send().await;
                });
            }
        })
        .join();
    }
}

#[tokio::test]
async fn after_a_key_rotation_new_tokens_verify_and_tokens_of_the_removed_key_do_not() {
    let realm = OwnRealm::create().await;
    let verifier = Verifier::new(IdentityConfig {
        keys_refresh_ms: 500,
        keys_min_interval_ms: 0,
        ..IdentityConfig::for_issuer(&realm.issuer())
    })
    .expect("verifier");
    let before = realm.client_token().await;
    verifier
        .verify(&before)
        .await
        .expect("a token of the first key");
    let first_keys = realm.rsa_signing_providers().await;
    assert_eq!(first_keys.len(), 1, "{first_keys:?}");

    realm.add_signing_key("rotated").await;
    let after = realm.client_token().await;
    assert_ne!(
        decode(&after).header["kid"],
        decode(&before).header["kid"],
        "the new token is signed with the new key"
    );
    verifier
        .verify(&after)
        .await
        .expect("a token of the new key verifies without a restart");

    for (id, _) in &first_keys {
        realm.remove_component(id).await;
    }
    eventually(
        Duration::from_secs(30),
        "the token of the removed key to be refused",
        || async {
            matches!(
                verifier.verify(&before).await,
                Err(VerifyError::Rejected(Rejection::UnknownKey))
            )
            .then_some(())
        },
    )
    .await;
    verifier
        .verify(&after)
        .await
        .expect("the new key's token still verifies");
}

#[test]
fn base64url_segments_decode_without_padding() {
    assert_eq!(base64url_decode("eyJhIjoxfQ"), br#"{"a":1}"#);
    assert_eq!(base64url_decode("-_8"), [0xfb, 0xff]);
    assert_eq!(base64url_decode("TWE"), b"Ma");
}
