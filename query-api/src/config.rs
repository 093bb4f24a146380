use std::time::Duration;

/// Limits and waits of the GraphQL API, from flags or the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryConfig {
    /// Deepest selection a query may nest (the standard introspection
    /// query of GraphQL clients nests 13).
    #[arg(
        long = "graphql-max-depth",
        env = "GRAPHQL_MAX_DEPTH",
        default_value_t = 15
    )]
    pub max_depth: usize,

    /// Largest complexity a query may have: each field counts 1, and a list
    /// counts its page size times its selection.
    #[arg(
        long = "graphql-max-complexity",
        env = "GRAPHQL_MAX_COMPLEXITY",
        default_value_t = 5_000
    )]
    pub max_complexity: usize,

    /// Largest `first` a connection accepts; larger is refused, not cut.
    #[arg(
        long = "graphql-max-page-size",
        env = "GRAPHQL_MAX_PAGE_SIZE",
        default_value_t = 100
    )]
    pub max_page_size: usize,

    /// Longest a request may run, in milliseconds (read-your-writes waits
    /// included).
    #[arg(
        long = "graphql-timeout-ms",
        env = "GRAPHQL_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub timeout_ms: u64,

    /// Longest a request with `X-Consistency-Token` waits for the
    /// projections it reads to reach the token, in milliseconds.
    #[arg(
        long = "consistency-timeout-ms",
        env = "CONSISTENCY_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub consistency_timeout_ms: u64,

    /// Largest `POST /graphql` body, and longest query text, in bytes.
    #[arg(
        long = "graphql-max-body-bytes",
        env = "GRAPHQL_MAX_BODY_BYTES",
        default_value_t = 64 * 1024
    )]
    pub max_body_bytes: usize,

    /// Whether clients may introspect the schema (`__schema`, `__type`);
    /// `false` in production hides it from whoever probes the API.
    #[arg(
        long = "graphql-introspection",
        env = "GRAPHQL_INTROSPECTION",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub introspection: bool,

    /// Whether validation errors suggest similar names ("Did you mean
    /// …?"); `false` keeps them from revealing the schema.
    #[arg(
        long = "graphql-suggestions",
        env = "GRAPHQL_SUGGESTIONS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub suggestions: bool,

    /// Most WebSocket connections (`/graphql/ws`) one process holds open;
    /// an upgrade past it is refused with 503 `TOO_MANY_CONNECTIONS`.
    #[arg(
        long = "graphql-ws-max-connections",
        env = "GRAPHQL_WS_MAX_CONNECTIONS",
        default_value_t = 1_000
    )]
    pub ws_max_connections: usize,

    /// Most subscriptions one WebSocket connection runs at once; one past
    /// it gets a `TOO_MANY_SUBSCRIPTIONS` error and the connection stays.
    #[arg(
        long = "graphql-ws-max-subscriptions",
        env = "GRAPHQL_WS_MAX_SUBSCRIPTIONS",
        default_value_t = 100
    )]
    pub ws_max_subscriptions: usize,

    /// Longest a WebSocket connection may go without `connection_init`, in
    /// milliseconds; then it is closed with 4408.
    #[arg(
        long = "graphql-ws-init-timeout-ms",
        env = "GRAPHQL_WS_INIT_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub ws_init_timeout_ms: u64,

    /// Origins (`https://shop.example`, comma-separated) whose pages may
    /// open a WebSocket besides the API's own; a request without `Origin`
    /// (not a browser) is always let in.
    #[arg(
        long = "graphql-ws-allowed-origins",
        env = "GRAPHQL_WS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub ws_allowed_origins: Vec<String>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            max_depth: 15,
            max_complexity: 5_000,
            max_page_size: 100,
            timeout_ms: 10_000,
            consistency_timeout_ms: 5_000,
            max_body_bytes: 64 * 1024,
            introspection: true,
            suggestions: true,
            ws_max_connections: 1_000,
            ws_max_subscriptions: 100,
            ws_init_timeout_ms: 10_000,
            ws_allowed_origins: Vec::new(),
        }
    }
}

impl QueryConfig {
    #[must_use]
    pub const fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    #[must_use]
    pub const fn consistency_timeout(&self) -> Duration {
        Duration::from_millis(self.consistency_timeout_ms)
    }

    #[must_use]
    pub const fn ws_init_timeout(&self) -> Duration {
        Duration::from_millis(self.ws_init_timeout_ms)
    }
}
