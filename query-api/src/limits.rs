//! Depth and complexity limits, and a code on every error the GraphQL
//! library itself raises, so that every error a client sees carries
//! `extensions.code`:
//!
//! | where | code |
//! | --- | --- |
//! | the query does not parse | `GRAPHQL_PARSE_FAILED` |
//! | it does not validate against the schema | `GRAPHQL_VALIDATION_FAILED` |
//! | nested deeper than `GRAPHQL_MAX_DEPTH` | `QUERY_TOO_DEEP` |
//! | more complex than `GRAPHQL_MAX_COMPLEXITY` | `QUERY_TOO_COMPLEX` |
//! | an argument that does not coerce to its type | `BAD_USER_INPUT` |
//!
//! Resolvers set their own codes (see [`crate::error`]).

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Variables};

/// The limits, as an extension of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_depth: usize,
    pub max_complexity: usize,
}

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(*self)
    }
}

/// An error with `code` unless it has one already.
pub fn with_code(mut error: ServerError, code: &str) -> ServerError {
    let has_code = error
        .extensions
        .as_ref()
        .is_some_and(|extensions| extensions.get("code").is_some());
    if !has_code {
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", code);
    }
    error
}

#[async_graphql::async_trait::async_trait]
impl Extension for Limits {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables)
            .await
            .map_err(|error| with_code(error, "GRAPHQL_PARSE_FAILED"))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|error| with_code(error, "GRAPHQL_VALIDATION_FAILED"))
                .collect::<Vec<_>>()
        })?;
        if result.depth > self.max_depth {
            return Err(vec![with_code(
                ServerError::new(
                    format!(
                        "the query nests {} levels deep; at most {} are allowed",
                        result.depth, self.max_depth
                    ),
                    None,
                ),
                "QUERY_TOO_DEEP",
            )]);
        }
        if result.complexity > self.max_complexity {
            return Err(vec![with_code(
                ServerError::new(
                    format!(
                        "the query's complexity is {}; at most {} is allowed (ask for smaller pages or fewer fields)",
                        result.complexity, self.max_complexity
                    ),
                    None,
                ),
                "QUERY_TOO_COMPLEX",
            )]);
        }
        Ok(result)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut response = next.run(ctx, operation_name).await;
        // Resolvers code their own errors; what is left is an argument the
        // library could not coerce to its type.
        response.errors = response
            .errors
            .into_iter()
            .map(|error| with_code(error, "BAD_USER_INPUT"))
            .collect();
        response
    }
}
