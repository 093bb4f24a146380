//! The GraphQL schema: one module per resource, merged into one root.
//! The SDL is checked in at `query-api/schema.graphql`; a test fails when
//! it changes without the file being updated (`UPDATE_SCHEMA=1`).

mod basket;
mod live;
mod ops;
mod order;
mod product;
mod sales;
pub mod scalars;
mod search;

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, EmptyMutation, ID, MergedObject, Schema};
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::config::QueryConfig;
use crate::consistency::{Consistency, ReadModel};
use crate::error::{Coded, QueryError, QueryResult};
use crate::live::LiveUpdates;
use crate::loaders::ProductLoader;
use crate::read_models::ReadModels;
use crate::search::SearchIndex;

pub use live::Subscription;

/// Every query field.
#[derive(MergedObject, Default)]
pub struct Query(
    product::ProductQueries,
    search::SearchQueries,
    basket::BasketQueries,
    order::OrderQueries,
    sales::SalesQueries,
    ops::OpsQueries,
);

pub type EshopSchema = Schema<Query, EmptyMutation, Subscription>;

/// What resolvers reach: the read models, the search index, live updates
/// and the limits.
pub struct Services {
    pub read_models: ReadModels,
    pub search: SearchIndex,
    pub live: LiveUpdates,
    pub config: QueryConfig,
    pub status: crate::status::StatusBoard,
    pub products: DataLoader<ProductLoader>,
}

/// Builds the schema over these services.
#[must_use]
pub fn build_schema(
    read_models: ReadModels,
    search: SearchIndex,
    live: LiveUpdates,
    status: crate::status::StatusBoard,
    config: QueryConfig,
) -> EshopSchema {
    let products = DataLoader::new(ProductLoader(read_models.clone()), tokio::spawn);
    let (max_depth, max_complexity) = (config.max_depth, config.max_complexity);
    let (introspection, suggestions) = (config.introspection, config.suggestions);
    let mut builder = Schema::build(Query::default(), EmptyMutation, Subscription)
        .data(Services {
            read_models,
            search,
            live,
            config,
            status,
            products,
        })
        // Errors get their codes from `crate::limits::CodedSchema`, not
        // from an extension (see there why).
        .limit_depth(max_depth)
        .limit_complexity(max_complexity);
    if !introspection {
        builder = builder.disable_introspection();
    }
    if !suggestions {
        builder = builder.disable_suggestions();
    }
    builder.finish()
}

/// The schema as SDL, as checked in.
#[must_use]
pub fn sdl() -> String {
    Schema::build(Query::default(), EmptyMutation, Subscription)
        .finish()
        .sdl()
}

pub(crate) fn services<'a>(ctx: &Context<'a>) -> &'a Services {
    ctx.data_unchecked::<Services>()
}

/// The services, once every projection in `models` has reached the
/// request's consistency token (if it sent one).
pub(crate) async fn read<'a>(ctx: &Context<'a>, models: &[ReadModel]) -> QueryResult<&'a Services> {
    let services = services(ctx);
    if let Some(consistency) = ctx.data_opt::<Consistency>() {
        for model in models {
            consistency
                .wait_for(*model, &services.read_models, &services.search)
                .await
                .coded()?;
        }
    }
    Ok(services)
}

/// An id argument as the UUID it must be.
pub(crate) fn parse_id(id: &ID, what: &str) -> QueryResult<Uuid> {
    Uuid::parse_str(id.as_str())
        .map_err(|_| {
            QueryError::bad_input(format!(
                "'{}' is not a {what} id (a UUID)",
                crate::error::echo(id.as_str())
            ))
        })
        .coded()
}

/// The error of a lookup by id that found nothing.
pub(crate) fn not_found(what: &str, id: Uuid) -> async_graphql::Error {
    use async_graphql::ErrorExtensions;
    QueryError::NotFound(format!("no {what} with id {id}")).extend()
}

/// The error of a lookup by id at a moment when there was nothing with
/// this id (yet).
pub(crate) fn not_found_at(what: &str, id: Uuid, at: DateTime<Utc>) -> async_graphql::Error {
    use async_graphql::ErrorExtensions;
    QueryError::NotFound(format!(
        "no {what} with id {id} existed at {}",
        at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    ))
    .extend()
}

/// A connection's page size for the complexity estimate: what `first`
/// asks for (negative counts as 0; the resolver refuses it).
pub(crate) fn count(first: Option<i32>) -> usize {
    usize::try_from(first.unwrap_or(20)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    /// The schema is a contract with every frontend: a change must be
    /// deliberate. Regenerate the file with `UPDATE_SCHEMA=1 cargo test -p
    /// eshop-query-api` and review the diff.
    #[test]
    fn the_schema_is_the_checked_in_sdl() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
        let sdl = super::sdl();
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(path, &sdl).expect("write schema.graphql");
        }
        let checked_in = std::fs::read_to_string(path).expect("query-api/schema.graphql");
        assert!(
            checked_in == sdl,
            "the GraphQL schema changed; if that is intended, run UPDATE_SCHEMA=1 cargo test -p eshop-query-api and commit schema.graphql"
        );
    }
}
