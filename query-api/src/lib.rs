//! eshop's read side: a GraphQL API over the projections (PostgreSQL views
//! and the search index), with live subscriptions and read-your-writes.
//!
//! - [`schema`] holds the types and resolvers, one module per resource.
//! - [`read_models`] holds every SQL statement; resolvers write none.
//! - [`consistency`] makes a request wait for its command's effects.
//! - [`live`] turns the views' notifications into subscription events.
//! - [`http`] serves `/graphql` (POST and GET), `/graphql/ws`
//!   (graphql-transport-ws) and the bundled GraphiQL page.

mod access;
pub mod config;
pub mod consistency;
mod cursor;
mod document;
pub mod error;
mod graphiql;
pub mod http;
mod limits;
pub mod live;
mod loaders;
pub mod read_models;
pub mod schema;
mod search;
pub mod status;
mod ws;

pub use config::QueryConfig;
pub use http::router;
pub use schema::{EshopSchema, build_schema};
pub use search::SearchIndex;

use ::read_models::status::CollectStatus;
use search_index::{SearchClient, SearchConfig, SearchError};
use sqlx::PgPool;
use status::StatusBoard;

/// The GraphQL API over the read models in `pool` and the search indices
/// of `search`, ready to be routed.
pub struct QueryApi {
    pub schema: EshopSchema,
    pub read_models: read_models::ReadModels,
    pub search: SearchIndex,
    status: StatusBoard,
    config: QueryConfig,
    verifier: identity::Verifier,
}

/// How old a projection status the GraphQL API (and `/metrics` in
/// `eshop serve`) may serve.
pub const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl QueryApi {
    /// Builds the schema and starts listening for live updates. With a
    /// basket cache, `basket(id)` is served from it when it can be.
    pub fn new(
        pool: PgPool,
        search: &SearchConfig,
        status: std::sync::Arc<dyn CollectStatus>,
        config: QueryConfig,
        verifier: identity::Verifier,
        basket_cache: Option<::read_models::basket_cache::BasketCache>,
    ) -> Result<Self, SearchError> {
        let read_models =
            read_models::ReadModels::new(pool.clone()).with_basket_cache(basket_cache);
        let search = SearchIndex::new(SearchClient::new(&search.url)?, search.clone());
        let status = StatusBoard::new(status, STATUS_EVERY);
        let live = live::LiveUpdates::start(read_models.clone());
        let schema = build_schema(
            read_models.clone(),
            search.clone(),
            live,
            status.clone(),
            config.clone(),
        );
        Ok(Self {
            schema,
            read_models,
            search,
            status,
            config,
            verifier,
        })
    }

    /// The projection statuses the `projections` field serves; `eshop
    /// serve` records the same snapshots on `/metrics`.
    #[must_use]
    pub fn status_board(&self) -> StatusBoard {
        self.status.clone()
    }

    /// `/graphql`, `/graphql/ws` and GraphiQL.
    pub fn router(&self) -> axum::Router {
        router(
            self.schema.clone(),
            self.config.clone(),
            self.verifier.clone(),
        )
    }

    /// `/graphql` and friends, plus `/health/live` and `/health/ready`
    /// (PostgreSQL, the search engine, the identity provider, and the cache
    /// if any: `degraded` and still ready when only it is down), for a process that serves only
    /// the GraphQL API.
    pub fn router_with_health(&self) -> axum::Router {
        self.router().merge(http::health(
            self.read_models.clone(),
            self.search.clone(),
            self.verifier.clone(),
        ))
    }
}
