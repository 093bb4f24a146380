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
//!
//! This is an [`Executor`] around the schema rather than a schema
//! extension: with any extension registered, async-graphql resolves every
//! field of every response through the extension chain (a registry lookup
//! and boxed futures per field); without it `order(id)` served 6 % and
//! `orders(customerId)` 10 % more requests (docs/benchmarks.md). The
//! executor parses the query itself
//! (with a cache of parsed documents), so a parse error is known as such;
//! the schema enforces the limits; what the schema answers without a code
//! is then a validation error when it has no path (it stopped the request
//! before execution) and an argument error when it has one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Data, Executor, Request, Response, ServerError};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::schema::EshopSchema;

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

/// The limits the schema enforces, for the messages that explain them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_depth: usize,
    pub max_complexity: usize,
}

/// Parsed documents by query text. Parsing was 14 % of a request's CPU
/// (perf, docs/benchmarks.md), and clients send the same few query texts
/// again and again with other variables. Bounded: when full it starts
/// over, and long texts are not kept.
#[derive(Default)]
struct ParsedQueries(Mutex<HashMap<String, ExecutableDocument>>);

impl ParsedQueries {
    const MAX_ENTRIES: usize = 1_000;
    const MAX_TEXT: usize = 16 * 1024;

    /// Gives `request` its parsed document, from the cache or parsed now;
    /// the parse error with its code otherwise.
    fn prepare(&self, request: &mut Request) -> Result<(), ServerError> {
        let cached = self
            .0
            .lock()
            .ok()
            .and_then(|cache| cache.get(&request.query).cloned());
        if let Some(document) = cached {
            request.set_parsed_query(document);
            return Ok(());
        }
        let document = async_graphql::parser::parse_query(&request.query)
            .map_err(|error| with_code(error.into(), "GRAPHQL_PARSE_FAILED"))?;
        if request.query.len() <= Self::MAX_TEXT
            && let Ok(mut cache) = self.0.lock()
        {
            if cache.len() >= Self::MAX_ENTRIES {
                cache.clear();
            }
            cache.insert(request.query.clone(), document.clone());
        }
        request.set_parsed_query(document);
        Ok(())
    }
}

/// The schema, with parsed documents cached and every error coded: what
/// the HTTP routes and the WebSocket protocol execute.
#[derive(Clone)]
pub struct CodedSchema {
    schema: EshopSchema,
    limits: Limits,
    parsed: Arc<ParsedQueries>,
}

impl CodedSchema {
    #[must_use]
    pub fn new(schema: EshopSchema, limits: Limits) -> Self {
        Self {
            schema,
            limits,
            parsed: Arc::default(),
        }
    }

    /// Codes what the schema answered without a code.
    fn code(&self, mut response: Response) -> Response {
        let limits = self.limits;
        response.errors = std::mem::take(&mut response.errors)
            .into_iter()
            .map(|error| code_error(error, limits))
            .collect();
        response
    }
}

fn code_error(mut error: ServerError, limits: Limits) -> ServerError {
    if error
        .extensions
        .as_ref()
        .is_some_and(|extensions| extensions.get("code").is_some())
    {
        return error;
    }
    // The schema's own messages for its limits.
    match error.message.as_str() {
        "Query is nested too deep." => {
            error.message = format!(
                "the query nests more than {} levels deep; at most {} are allowed",
                limits.max_depth, limits.max_depth
            );
            return with_code(error, "QUERY_TOO_DEEP");
        }
        "Query is too complex." => {
            error.message = format!(
                "the query's complexity is above {}, the most allowed (ask for smaller pages or fewer fields)",
                limits.max_complexity
            );
            return with_code(error, "QUERY_TOO_COMPLEX");
        }
        _ => {}
    }
    if error.path.is_empty() {
        with_code(error, "GRAPHQL_VALIDATION_FAILED")
    } else {
        with_code(error, "BAD_USER_INPUT")
    }
}

impl Executor for CodedSchema {
    async fn execute(&self, mut request: Request) -> Response {
        if let Err(error) = self.parsed.prepare(&mut request) {
            return Response::from_errors(vec![error]);
        }
        self.code(self.schema.execute(request).await)
    }

    fn execute_stream(
        &self,
        mut request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        if let Err(error) = self.parsed.prepare(&mut request) {
            return futures::stream::once(async move { Response::from_errors(vec![error]) })
                .boxed();
        }
        let coded = self.clone();
        self.schema
            .execute_stream_with_session_data(request, session_data.unwrap_or_default())
            .map(move |response| coded.code(response))
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{PathSegment, Pos};

    const LIMITS: Limits = Limits {
        max_depth: 15,
        max_complexity: 5_000,
    };

    fn code(error: &ServerError) -> String {
        error
            .extensions
            .as_ref()
            .and_then(|extensions| extensions.get("code"))
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    #[test]
    fn the_schemas_limits_get_their_codes_and_say_the_limit() {
        let deep = code_error(ServerError::new("Query is nested too deep.", None), LIMITS);
        assert_eq!(code(&deep), "\"QUERY_TOO_DEEP\"");
        assert!(deep.message.contains("at most 15"), "{}", deep.message);
        let complex = code_error(ServerError::new("Query is too complex.", None), LIMITS);
        assert_eq!(code(&complex), "\"QUERY_TOO_COMPLEX\"");
        assert!(complex.message.contains("5000"), "{}", complex.message);
    }

    #[test]
    fn errors_before_execution_are_validation_and_field_errors_bad_input() {
        let unknown = ServerError::new(
            "Unknown field \"nope\" on type \"Query\".",
            Some(Pos { line: 1, column: 3 }),
        );
        assert_eq!(
            code(&code_error(unknown, LIMITS)),
            "\"GRAPHQL_VALIDATION_FAILED\""
        );
        let mut argument = ServerError::new("Failed to parse \"Int\"", None);
        argument.path = vec![PathSegment::Field("products".to_owned())];
        assert_eq!(code(&code_error(argument, LIMITS)), "\"BAD_USER_INPUT\"");
    }

    #[test]
    fn a_code_a_resolver_set_stays() {
        let coded = with_code(ServerError::new("no such order", None), "NOT_FOUND");
        assert_eq!(code(&code_error(coded, LIMITS)), "\"NOT_FOUND\"");
    }
}
