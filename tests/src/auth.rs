//! Real access tokens from the issuer eshop trusts: the local Keycloak's
//! `eshop` realm (`services/keycloak/eshop-realm.json`, started by
//! `scripts/setup`), or the issuer `OIDC_ISSUER_URL` names. Tests act as
//! one of the realm's demo users or its operator client; nothing switches
//! authentication off.
//!
//! Tokens are cached per caller and fetched again when they have less
//! than a minute left. A test without a reachable issuer fails, naming it.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Who a test acts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Who {
    /// A customer (`alice`).
    Alice,
    /// Another customer (`bob`).
    Bob,
    /// Staff (`sam`): the catalog, shipping, every order.
    Sam,
    /// An admin user (`ada`).
    Ada,
    /// The operator client `eshop-ops` (client credentials): an admin.
    /// What tests that are not about access act as.
    Ops,
}

impl Who {
    /// The demo user's name, for user callers.
    #[must_use]
    pub const fn username(self) -> Option<&'static str> {
        match self {
            Self::Alice => Some("alice"),
            Self::Bob => Some("bob"),
            Self::Sam => Some("sam"),
            Self::Ada => Some("ada"),
            Self::Ops => None,
        }
    }
}

/// The realm's dev-only credentials (see `services/keycloak/README.md`).
pub const WEB_CLIENT: &str = "eshop-web";
pub const OPS_CLIENT: &str = "eshop-ops";
pub const OPS_SECRET: &str = "eshop-ops-dev-secret";

/// The issuer tests get tokens from.
#[must_use]
pub fn issuer() -> String {
    std::env::var("OIDC_ISSUER_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| identity::DEFAULT_ISSUER_URL.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// Keycloak's token endpoint of the issuer.
#[must_use]
pub fn token_endpoint() -> String {
    format!("{}/protocol/openid-connect/token", issuer())
}

static CACHE: LazyLock<Mutex<HashMap<Who, (String, Instant)>>> = LazyLock::new(Mutex::default);

/// An access token for `who`, from the cache while it has a minute left.
pub async fn token(who: Who) -> String {
    if let Some((token, until)) = CACHE.lock().expect("token cache").get(&who)
        && *until > Instant::now() + Duration::from_secs(60)
    {
        return token.clone();
    }
    let form: Vec<(&str, &str)> = match who.username() {
        Some(user) => vec![
            ("grant_type", "password"),
            ("client_id", WEB_CLIENT),
            ("username", user),
            ("password", password_of(user)),
        ],
        None => vec![
            ("grant_type", "client_credentials"),
            ("client_id", OPS_CLIENT),
            ("client_secret", OPS_SECRET),
        ],
    };
    let (token, lifetime) = grant(&form).await;
    CACHE
        .lock()
        .expect("token cache")
        .insert(who, (token.clone(), Instant::now() + lifetime));
    token
}

/// `Bearer <token>` for `who`.
pub async fn bearer(who: Who) -> String {
    format!("Bearer {}", token(who).await)
}

/// A graphql-transport-ws `connection_init` message carrying `who`'s
/// token.
pub async fn connection_init(who: Who) -> Value {
    serde_json::json!({
        "type": "connection_init",
        "payload": { "Authorization": bearer(who).await }
    })
}

/// An HTTP client that sends `who`'s token with every request. Its token
/// is fixed: for a test that runs longer than a token lives, act as
/// [`Who::Ops`], whose tokens live an hour.
pub async fn client(who: Who) -> reqwest::Client {
    client_builder(who).await.build().expect("an HTTP client")
}

/// A builder of [`client`], for more settings (benchmarks).
pub async fn client_builder(who: Who) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        bearer(who).await.parse().expect("a header value"),
    );
    reqwest::Client::builder().default_headers(headers)
}

/// The demo users' dev-only passwords: `<user>-dev-password`.
fn password_of(user: &str) -> &'static str {
    match user {
        "alice" => "alice-dev-password",
        "bob" => "bob-dev-password",
        "sam" => "sam-dev-password",
        "ada" => "ada-dev-password",
        _ => panic!("no demo user {user}"),
    }
}

/// POSTs a token request to the issuer: the access token and how long it
/// lives.
pub async fn grant(form: &[(&str, &str)]) -> (String, Duration) {
    let endpoint = token_endpoint();
    let response = reqwest::Client::new()
        .post(&endpoint)
        .form(form)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap_or_else(|error| {
            panic!(
                "the identity provider is not reachable at {endpoint} ({error}); start it with \
                 scripts/setup, or point OIDC_ISSUER_URL at a running issuer"
            )
        });
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(
        status.is_success(),
        "POST {endpoint} answered {status}: {body} (is the eshop realm imported? run scripts/setup)"
    );
    let token = body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token from {endpoint}: {body}"))
        .to_owned();
    let lifetime = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(60));
    (token, lifetime)
}

/// The subject (`sub`) of a token, as the customer id eshop gives it
/// (Keycloak's subjects are UUIDs).
#[must_use]
pub fn subject(token: &str) -> uuid::Uuid {
    let claims = claims_of(token);
    let sub = claims["sub"].as_str().expect("a sub claim");
    uuid::Uuid::parse_str(sub).expect("a UUID subject")
}

/// The claims of a token, unverified (for tests to look at).
#[must_use]
pub fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWS");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url claims");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// The customer id of `who` (a demo user).
pub async fn customer_id(who: Who) -> uuid::Uuid {
    subject(&token(who).await)
}

/// An OpenID Connect issuer of the test's own, for tokens Keycloak cannot
/// make (expired a moment ago, not valid yet, forged): it serves a
/// discovery document and the key set of `identity/tests/keys`, and the
/// test signs tokens with their private halves.
pub struct TestIssuer {
    pub url: String,
}

const ISSUER_KEY: &[u8] = include_bytes!("../../identity/tests/keys/issuer.pem");
const ISSUER_PUBLIC: &[u8] = include_bytes!("../../identity/tests/keys/issuer.pub.pem");
const STRANGER_KEY: &[u8] = include_bytes!("../../identity/tests/keys/stranger.pem");
const JWKS: &str = include_str!("../../identity/tests/keys/jwks.json");

impl TestIssuer {
    /// Serves the issuer on an ephemeral port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/realms/test",
            listener.local_addr().expect("address")
        );
        let discovery = serde_json::json!({
            "issuer": url,
            "jwks_uri": format!("{url}/certs"),
        });
        let router = axum::Router::new()
            .route(
                "/realms/test/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let discovery = discovery.clone();
                    async move { axum::Json(discovery) }
                }),
            )
            .route(
                "/realms/test/certs",
                axum::routing::get(|| async {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        JWKS,
                    )
                }),
            );
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url }
    }

    /// The identity settings of an eshop that trusts this issuer.
    #[must_use]
    pub fn config(&self) -> identity::IdentityConfig {
        identity::IdentityConfig {
            leeway_seconds: 5,
            ..identity::IdentityConfig::for_issuer(&self.url)
        }
    }

    /// What Keycloak puts in an access token of a user with `roles`.
    #[must_use]
    pub fn claims(&self, subject: uuid::Uuid, roles: &[&str]) -> Value {
        let now = unix_now();
        serde_json::json!({
            "iss": self.url,
            "aud": ["eshop-api", "account"],
            "sub": subject.to_string(),
            "azp": "eshop-web",
            "iat": now,
            "exp": now + 300,
            "realm_access": { "roles": roles },
        })
    }

    /// `claims` signed with the issuer's published key.
    #[must_use]
    pub fn sign(claims: &Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(ISSUER_KEY).expect("issuer key");
        sign_as_issuer(jsonwebtoken::Algorithm::RS256, &key, claims)
    }

    /// `claims` signed with a key the issuer never published, under the
    /// issuer's key id.
    #[must_use]
    pub fn sign_as_stranger(claims: &Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(STRANGER_KEY).expect("stranger key");
        sign_as_issuer(jsonwebtoken::Algorithm::RS256, &key, claims)
    }

    /// `claims` "signed" with HS256 and the issuer's public key as the
    /// secret: the algorithm-confusion forgery.
    #[must_use]
    pub fn sign_hs256_with_public_key(claims: &Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_secret(ISSUER_PUBLIC);
        sign_as_issuer(jsonwebtoken::Algorithm::HS256, &key, claims)
    }

    /// `claims` with `alg: none` and no signature.
    #[must_use]
    pub fn unsigned(claims: &Value) -> String {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(&serde_json::to_vec(claims).expect("claims"))
        )
    }
}

/// `claims` signed with `key`, under the key id the issuer publishes.
fn sign_as_issuer(
    algorithm: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
    claims: &Value,
) -> String {
    let header = jsonwebtoken::Header {
        kid: Some("issuer-key".to_owned()),
        ..jsonwebtoken::Header::new(algorithm)
    };
    jsonwebtoken::encode(&header, claims, key).expect("signed")
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        .try_into()
        .expect("seconds fit")
}

/// The Keycloak server that hosts the issuer (its URL up to `/realms/`).
#[must_use]
pub fn keycloak_base() -> String {
    let issuer = issuer();
    match issuer.find("/realms/") {
        Some(at) => issuer[..at].to_owned(),
        None => panic!("OIDC_ISSUER_URL {issuer} is not a Keycloak realm URL"),
    }
}

/// Keycloak's admin REST API, as the master realm's admin (setup's
/// bootstrap admin, `admin`/`admin` unless KC_BOOTSTRAP_ADMIN_* say
/// otherwise).
pub struct KeycloakAdmin {
    /// The server, up to `/realms/`.
    pub base: String,
    /// The admin's access token.
    pub token: String,
}

impl KeycloakAdmin {
    pub async fn login() -> Self {
        let base = keycloak_base();
        let user = std::env::var("KC_BOOTSTRAP_ADMIN_USERNAME").unwrap_or_else(|_| "admin".into());
        let password =
            std::env::var("KC_BOOTSTRAP_ADMIN_PASSWORD").unwrap_or_else(|_| "admin".into());
        let endpoint = format!("{base}/realms/master/protocol/openid-connect/token");
        let response = reqwest::Client::new()
            .post(&endpoint)
            .form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", user.as_str()),
                ("password", password.as_str()),
            ])
            .send()
            .await
            .unwrap_or_else(|error| panic!("Keycloak is not reachable at {endpoint}: {error}"));
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let token = body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no admin token from {endpoint}: {body}"))
            .to_owned();
        Self { base, token }
    }

    /// `GET path` (under `/admin/realms`): the answer's JSON.
    pub async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Sends `method path` (under `/admin/realms`) with `body` and returns
    /// the answer's JSON (or null), failing on anything but a 2xx.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/admin/realms{path}", self.base);
        let mut request = reqwest::Client::new()
            .request(method.clone(), &url)
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("{method} {url}: {error}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {url}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

/// A confidential client of the `eshop` realm whose tokens live a few
/// seconds, its service account holding one realm role: for tests of what
/// happens when a token expires. Made through the admin API; `delete`
/// removes it.
pub struct ShortLivedClient {
    admin: KeycloakAdmin,
    id: String,
    client_id: String,
    secret: String,
}

impl ShortLivedClient {
    pub async fn create(lifespan_seconds: u32, role: &str) -> Self {
        let admin = KeycloakAdmin::login().await;
        let client_id = format!("test-short-{}", uuid::Uuid::now_v7().simple());
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let realm = issuer()
            .rsplit('/')
            .next()
            .expect("a realm name")
            .to_owned();
        admin
            .call(
                reqwest::Method::POST,
                &format!("/{realm}/clients"),
                Some(serde_json::json!({
                    "clientId": client_id,
                    "secret": secret,
                    "publicClient": false,
                    "serviceAccountsEnabled": true,
                    "standardFlowEnabled": false,
                    "attributes": { "access.token.lifespan": lifespan_seconds.to_string() },
                    "protocolMappers": [{
                        "name": "audience eshop-api",
                        "protocol": "openid-connect",
                        "protocolMapper": "oidc-audience-mapper",
                        "config": {
                            "included.client.audience": "eshop-api",
                            "access.token.claim": "true"
                        }
                    }]
                })),
            )
            .await;
        let found = admin
            .get(&format!("/{realm}/clients?clientId={client_id}"))
            .await;
        let id = found[0]["id"].as_str().expect("the client's id").to_owned();
        let account = admin
            .get(&format!("/{realm}/clients/{id}/service-account-user"))
            .await;
        let user = account["id"].as_str().expect("the service account");
        let role = admin.get(&format!("/{realm}/roles/{role}")).await;
        admin
            .call(
                reqwest::Method::POST,
                &format!("/{realm}/users/{user}/role-mappings/realm"),
                Some(serde_json::json!([role])),
            )
            .await;
        Self {
            admin,
            id: format!("/{realm}/clients/{id}"),
            client_id,
            secret,
        }
    }

    /// A fresh token of the client.
    pub async fn token(&self) -> String {
        grant(&[
            ("grant_type", "client_credentials"),
            ("client_id", &self.client_id),
            ("client_secret", &self.secret),
        ])
        .await
        .0
    }

    pub async fn delete(self) {
        self.admin
            .call(reqwest::Method::DELETE, &self.id, None)
            .await;
    }
}
