//! Which issuer eshop trusts, and how it checks tokens.

use std::time::Duration;

/// The local Keycloak's realm that `scripts/setup` starts.
pub const DEFAULT_ISSUER_URL: &str = "http://127.0.0.1:8180/realms/eshop";

/// The OpenID Connect issuer whose access tokens eshop accepts.
#[derive(Debug, Clone, clap::Args)]
pub struct IdentityConfig {
    /// The issuer's URL: its discovery document is at
    /// `{issuer}/.well-known/openid-configuration`, and tokens must name it
    /// as `iss`.
    #[arg(
        id = "oidc_issuer_url",
        long = "oidc-issuer-url",
        env = "OIDC_ISSUER_URL",
        default_value = DEFAULT_ISSUER_URL
    )]
    pub issuer_url: String,
    /// The audience tokens must name (`aud`).
    #[arg(
        id = "oidc_audience",
        long = "oidc-audience",
        env = "OIDC_AUDIENCE",
        default_value = "eshop-api"
    )]
    pub audience: String,
    /// Where the token keeps its roles: a dotted path to an array of
    /// strings (Keycloak: `realm_access.roles`).
    #[arg(
        id = "oidc_roles_claim",
        long = "oidc-roles-claim",
        env = "OIDC_ROLES_CLAIM",
        default_value = "realm_access.roles"
    )]
    pub roles_claim: String,
    /// How far `exp` and `nbf` may be off, for clocks that differ a little,
    /// in seconds.
    #[arg(
        id = "oidc_leeway_seconds",
        long = "oidc-leeway-seconds",
        env = "OIDC_LEEWAY_SECONDS",
        default_value_t = 30
    )]
    pub leeway_seconds: u64,
    /// How old the issuer's keys may get before they are fetched again, in
    /// ms: a key the issuer removed stops being trusted after at most this.
    #[arg(
        id = "oidc_keys_refresh_ms",
        long = "oidc-keys-refresh-ms",
        env = "OIDC_KEYS_REFRESH_MS",
        default_value_t = 300_000
    )]
    pub keys_refresh_ms: u64,
    /// The least time between two fetches of the keys, in ms: tokens that
    /// name unknown keys cannot make eshop hammer the issuer.
    #[arg(
        id = "oidc_keys_min_interval_ms",
        long = "oidc-keys-min-interval-ms",
        env = "OIDC_KEYS_MIN_INTERVAL_MS",
        default_value_t = 10_000
    )]
    pub keys_min_interval_ms: u64,
    /// The longest wait for the issuer (discovery and keys), in ms.
    #[arg(
        id = "oidc_timeout_ms",
        long = "oidc-timeout-ms",
        env = "OIDC_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub timeout_ms: u64,
}

impl Default for IdentityConfig {
    /// The local Keycloak's realm, every other setting at its default.
    fn default() -> Self {
        Self::for_issuer(DEFAULT_ISSUER_URL)
    }
}

impl IdentityConfig {
    /// The configuration for the issuer at `url`, every other setting at
    /// its default (or its environment variable, when set).
    #[must_use]
    pub fn for_issuer(url: &str) -> Self {
        #[derive(clap::Parser)]
        struct Args {
            #[command(flatten)]
            identity: IdentityConfig,
        }
        <Args as clap::Parser>::parse_from(["eshop", "--oidc-issuer-url", url]).identity
    }

    /// The issuer, without a trailing slash.
    #[must_use]
    pub fn issuer(&self) -> &str {
        self.issuer_url.trim_end_matches('/')
    }

    pub(crate) fn keys_refresh(&self) -> Duration {
        Duration::from_millis(self.keys_refresh_ms)
    }

    pub(crate) fn keys_min_interval(&self) -> Duration {
        Duration::from_millis(self.keys_min_interval_ms)
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}
