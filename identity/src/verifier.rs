//! Turns a bearer token into a [`Caller`], with the issuer's keys cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use sha2::{Digest, Sha256};

use crate::caller::{Caller, Role, Roles};
use crate::config::IdentityConfig;
use crate::keys::{KeySet, asymmetric};

/// Why a token was refused: the caller's to fix (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no bearer token")]
    Missing,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token is too long")]
    TooLong,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    #[error("the token is meant for another audience")]
    WrongAudience,
    #[error("tokens signed with {0} are not accepted")]
    Algorithm(String),
    #[error("the token is signed with a key the issuer does not publish")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has no {0} claim")]
    MissingClaim(String),
}

/// The issuer's keys could not be had, so no token can be checked (503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the identity provider is unavailable: {0}")]
pub struct Unavailable(pub String);

/// Why [`Verifier::verify`] gave no caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Longest token looked at: Keycloak's are around 1.5 KB.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Largest discovery document or key set read from the issuer.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Most verified tokens remembered.
const MAX_CACHED: usize = 10_000;

/// Verifies access tokens from one issuer. Cheap to clone; every clone
/// shares the keys and the cache.
///
/// The issuer's keys are fetched (discovery document, then `jwks_uri`) on
/// first use, again when they are older than `OIDC_KEYS_REFRESH_MS` (so a
/// key the issuer removed stops being trusted), and when a token names a
/// key id not among them (a rotation), never more often than once per
/// `OIDC_KEYS_MIN_INTERVAL_MS`. A token that verified is remembered, by
/// its SHA-256, until it expires or the keys change: a client's next
/// requests with the same token cost a hash and a lookup.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: IdentityConfig,
    http: reqwest::Client,
    state: Mutex<State>,
    /// One fetch of the keys at a time; when the last one started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

#[derive(Default)]
struct State {
    keys: Arc<KeySet>,
    fetched_at: Option<Instant>,
    /// When a request last found the keys too old and asked for them.
    refresh_asked_at: Option<Instant>,
    /// Why the last fetch of the keys failed, if it did.
    last_failure: Option<String>,
    verified: HashMap<[u8; 32], Caller>,
}

impl Verifier {
    /// A verifier for `config`'s issuer. Nothing is fetched yet.
    ///
    /// # Errors
    /// When no HTTP client can be built.
    pub fn new(config: IdentityConfig) -> Result<Self, Unavailable> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| Unavailable(format!("no HTTP client: {error}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                http,
                state: Mutex::new(State::default()),
                fetching: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// A verifier that trusts the keys of `jwks` (a JWKS document) and
    /// never fetches any: for tests of the checks themselves.
    ///
    /// # Errors
    /// When `jwks` is not a JWKS document.
    pub fn with_keys(config: IdentityConfig, jwks: &[u8]) -> Result<Self, String> {
        let verifier = Self::new(IdentityConfig {
            keys_refresh_ms: u64::MAX,
            keys_min_interval_ms: u64::MAX,
            ..config
        })
        .map_err(|error| error.to_string())?;
        let keys = KeySet::parse(jwks)?;
        {
            let mut state = verifier.state();
            state.keys = Arc::new(keys);
            state.fetched_at = Some(Instant::now());
        }
        *verifier
            .inner
            .fetching
            .try_lock()
            .map_err(|error| error.to_string())? = Some(Instant::now());
        Ok(verifier)
    }

    /// The configuration this verifier checks against.
    #[must_use]
    pub fn config(&self) -> &IdentityConfig {
        &self.inner.config
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The caller `token` (a compact JWS, without `Bearer `) stands for.
    ///
    /// # Errors
    /// [`VerifyError::Rejected`] says what is wrong with the token;
    /// [`VerifyError::Unavailable`] that the issuer's keys cannot be had.
    pub async fn verify(&self, token: &str) -> Result<Caller, VerifyError> {
        if token.is_empty() {
            return Err(Rejection::Missing.into());
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::TooLong.into());
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        let leeway = self.inner.config.leeway_seconds;
        let (have_keys, stale) = {
            let mut state = self.state();
            let config = &self.inner.config;
            let stale = state
                .fetched_at
                .is_none_or(|at| at.elapsed() >= config.keys_refresh())
                && state
                    .refresh_asked_at
                    .is_none_or(|at| at.elapsed() >= config.keys_min_interval());
            if stale {
                state.refresh_asked_at = Some(Instant::now());
            }
            (!state.keys.keys.is_empty(), stale)
        };
        if stale {
            if have_keys {
                // Fetched again beside this request, which goes on with
                // the keys at hand; a change of keys forgets every
                // remembered token.
                let verifier = self.clone();
                tokio::spawn(async move {
                    let _ = verifier.refresh_keys(false).await;
                });
            } else {
                let _ = self.refresh_keys(false).await;
            }
        }
        {
            let state = self.state();
            if let Some(caller) = state.verified.get(&digest)
                && now <= caller.expires_at.saturating_add(leeway)
            {
                metrics::counter!("eshop_identity_tokens_total", "outcome" => "remembered")
                    .increment(1);
                return Ok(caller.clone());
            }
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| unreadable_header(token))?;
        if !asymmetric(header.alg) {
            return Err(Rejection::Algorithm(format!("{:?}", header.alg)).into());
        }
        let mut keys = self.state().keys.clone();
        if keys.find(header.kid.as_deref()).is_none() {
            // A key the issuer added since: fetch the keys again (at most
            // once per minimum interval).
            let _ = self.refresh_keys(true).await;
            keys = self.state().keys.clone();
        }
        if keys.keys.is_empty() {
            let why = self.state().last_failure.clone();
            return Err(Unavailable(why.unwrap_or_else(|| {
                format!(
                    "{} publishes no signing key eshop can use",
                    self.inner.config.issuer()
                )
            }))
            .into());
        }
        let key = keys
            .find(header.kid.as_deref())
            .ok_or(Rejection::UnknownKey)?;
        if !key.algorithms.contains(&header.alg) {
            return Err(Rejection::Algorithm(format!("{:?}", header.alg)).into());
        }
        let caller = self.check(token, header.alg, &key.decoding)?;
        metrics::counter!("eshop_identity_tokens_total", "outcome" => "verified").increment(1);
        let mut state = self.state();
        if Arc::ptr_eq(&state.keys, &keys) {
            if state.verified.len() >= MAX_CACHED {
                state
                    .verified
                    .retain(|_, c| now <= c.expires_at.saturating_add(leeway));
                if state.verified.len() >= MAX_CACHED {
                    state.verified.clear();
                }
            }
            state.verified.insert(digest, caller.clone());
        }
        Ok(caller)
    }

    /// The claims of `token`, checked with `key` for `algorithm`.
    fn check(
        &self,
        token: &str,
        algorithm: Algorithm,
        key: &jsonwebtoken::DecodingKey,
    ) -> Result<Caller, Rejection> {
        let config = &self.inner.config;
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway_seconds;
        validation.validate_nbf = true;
        validation.set_issuer(&[config.issuer()]);
        validation.set_audience(&[config.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            key,
            &validation,
        )
        .map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature => Rejection::Expired,
            ErrorKind::ImmatureSignature => Rejection::NotYetValid,
            ErrorKind::InvalidIssuer => Rejection::WrongIssuer,
            ErrorKind::InvalidAudience => Rejection::WrongAudience,
            ErrorKind::InvalidSignature => Rejection::BadSignature,
            ErrorKind::InvalidAlgorithm => Rejection::Algorithm(format!("{algorithm:?}")),
            ErrorKind::MissingRequiredClaim(claim) => Rejection::MissingClaim(claim.clone()),
            _ => Rejection::Malformed,
        })?
        .claims;
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let subject = text("sub").ok_or_else(|| Rejection::MissingClaim("sub".into()))?;
        let expires_at = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| Rejection::MissingClaim("exp".into()))?;
        let mut path = config.roles_claim.split('.');
        let roles = path
            .next()
            .and_then(|first| claims.get(first))
            .and_then(|value| path.try_fold(value, |value, step| value.get(step)))
            .and_then(serde_json::Value::as_array)
            .map(|names| {
                names
                    .iter()
                    .filter_map(serde_json::Value::as_str)
                    .filter_map(Role::parse)
                    .collect::<Roles>()
            })
            .unwrap_or_default();
        Ok(Caller {
            subject_id: crate::caller::subject_id(config.issuer(), &subject),
            subject,
            client_id: text("azp").or_else(|| text("client_id")),
            roles,
            expires_at,
        })
    }

    /// Whether the issuer's keys are at hand, fetching them if none are:
    /// for readiness checks.
    ///
    /// # Errors
    /// Why the keys cannot be had.
    pub async fn ready(&self) -> Result<(), String> {
        if self.state().keys.keys.is_empty() {
            let _ = self.refresh_keys(true).await;
        }
        let state = self.state();
        if !state.keys.keys.is_empty() {
            return Ok(());
        }
        Err(state.last_failure.clone().unwrap_or_else(|| {
            format!(
                "{} publishes no signing key eshop can use",
                self.inner.config.issuer()
            )
        }))
    }

    /// Fetches the keys again, unless a fetch is under way (then `wait`
    /// says whether to wait for it) or the last one began less than the
    /// minimum interval ago. Keeps the keys it had when the issuer does
    /// not answer.
    async fn refresh_keys(&self, wait: bool) -> Result<(), Unavailable> {
        let mut last = if wait {
            self.inner.fetching.lock().await
        } else {
            match self.inner.fetching.try_lock() {
                Ok(last) => last,
                Err(_) => return Ok(()),
            }
        };
        if last.is_some_and(|at| at.elapsed() < self.inner.config.keys_min_interval()) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let fetched = self.fetch_keys().await;
        match fetched {
            Ok(keys) => {
                let mut state = self.state();
                if keys.ids() != state.keys.ids() {
                    tracing::info!(
                        issuer = self.inner.config.issuer(),
                        keys = keys.keys.len(),
                        "identity provider keys loaded"
                    );
                    state.verified.clear();
                }
                state.keys = Arc::new(keys);
                state.fetched_at = Some(Instant::now());
                state.last_failure = None;
                Ok(())
            }
            Err(error) => {
                metrics::counter!("eshop_identity_key_fetch_failures_total").increment(1);
                tracing::warn!(
                    issuer = self.inner.config.issuer(),
                    error = %error,
                    "fetching the identity provider's keys failed"
                );
                self.state().last_failure = Some(error.0.clone());
                Err(error)
            }
        }
    }

    async fn fetch_keys(&self) -> Result<KeySet, Unavailable> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let issuer = self.inner.config.issuer();
        let url = format!("{issuer}/.well-known/openid-configuration");
        let discovery: Discovery = serde_json::from_slice(&self.get(&url).await?)
            .map_err(|error| Unavailable(format!("{url}: not a discovery document: {error}")))?;
        if discovery.issuer.trim_end_matches('/') != issuer {
            return Err(Unavailable(format!(
                "{url} names issuer {}, not {issuer}",
                discovery.issuer
            )));
        }
        let document = self.get(&discovery.jwks_uri).await?;
        KeySet::parse(&document)
            .map_err(|error| Unavailable(format!("{}: {error}", discovery.jwks_uri)))
    }

    /// The body of a GET of `url`, at most [`MAX_DOCUMENT_BYTES`].
    async fn get(&self, url: &str) -> Result<Vec<u8>, Unavailable> {
        let failed = |error: &dyn std::fmt::Display| Unavailable(format!("{url}: {error}"));
        let mut response = self
            .inner
            .http
            .get(url)
            .send()
            .await
            .map_err(|error| failed(&error))?;
        if !response.status().is_success() {
            return Err(failed(&response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|error| failed(&error))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(failed(&format!("larger than {MAX_DOCUMENT_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Why a token's header did not decode: an algorithm this service does not
/// know (`none` above all), named as such, or else a malformed token.
fn unreadable_header(token: &str) -> Rejection {
    use base64::Engine as _;
    let named = token
        .split('.')
        .next()
        .and_then(|header| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(header)
                .ok()
        })
        .and_then(|header| serde_json::from_slice::<serde_json::Value>(&header).ok())
        .and_then(|header| header.get("alg")?.as_str().map(str::to_owned));
    match named {
        // A known algorithm: the rest of the token is what is wrong.
        Some(alg) if alg.len() <= 16 && alg.parse::<Algorithm>().is_err() => {
            Rejection::Algorithm(alg)
        }
        _ => Rejection::Malformed,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
