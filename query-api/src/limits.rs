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

use crate::document;
use crate::error::with_code;
use crate::schema::EshopSchema;

/// The limits the schema enforces, for the messages that explain them,
/// and the ones checked before it sees a document.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_depth: usize,
    pub max_complexity: usize,
    /// Longest query text, in bytes.
    pub max_query_bytes: usize,
}

/// Most errors one response carries, and the longest message: a document
/// with thousands of mistakes, or a parse error that quotes a 60 KB line,
/// must not turn into a response many times its size.
const MAX_ERRORS: usize = 20;
const MAX_MESSAGE: usize = 500;

/// Parsed documents by query text, for documents that validated. Parsing
/// was 14 % of a request's CPU (perf, docs/benchmarks.md), and clients
/// send the same few query texts again and again with other variables.
///
/// Bounded by an estimate of the memory the entries hold (a parsed node
/// takes a few hundred bytes, many times its text), and holding only
/// documents that validated, so that a stream of distinct bad queries
/// costs nothing kept. When full it starts over.
struct ParsedQueries {
    entries: Mutex<Cache>,
    budget: usize,
}

#[derive(Default)]
struct Cache {
    documents: HashMap<String, ExecutableDocument>,
    bytes: usize,
}

/// A document parsed for a request, not yet known to validate.
struct Parsed {
    document: ExecutableDocument,
    /// Estimated bytes it holds; `None` when it came from the cache.
    cost: Option<usize>,
}

impl ParsedQueries {
    /// Estimated bytes of one parsed node (a field with its name,
    /// position, empty argument and directive lists and selection set).
    const NODE_BYTES: usize = 320;

    fn new(budget: usize) -> Self {
        Self {
            entries: Mutex::default(),
            budget,
        }
    }

    fn cached(&self, query: &str) -> Option<ExecutableDocument> {
        self.entries
            .lock()
            .ok()
            .and_then(|cache| cache.documents.get(query).cloned())
    }

    /// Keeps a document that validated, if it fits the budget at all.
    fn keep(&self, query: &str, document: ExecutableDocument, cost: usize) {
        let cost = cost.saturating_add(2 * query.len());
        if cost > self.budget / 16 {
            return;
        }
        if let Ok(mut cache) = self.entries.lock() {
            if cache.documents.contains_key(query) {
                return;
            }
            if cache.bytes + cost > self.budget {
                cache.documents.clear();
                cache.bytes = 0;
            }
            cache.bytes += cost;
            cache.documents.insert(query.to_owned(), document);
        }
    }
}

/// Checks, parses and measures `query` (see [`crate::document`]): off the
/// async workers, because a 64 KB document takes milliseconds.
async fn parse(query: String, limits: Limits) -> Result<Parsed, ServerError> {
    document::check_text(&query, limits.max_query_bytes)?;
    let parsed = tokio::task::spawn_blocking(move || {
        let document = async_graphql::parser::parse_query(&query)
            .map_err(|error| with_code(error.into(), "GRAPHQL_PARSE_FAILED"))?;
        let shape = document::check_expansion(&document, limits.max_complexity)?;
        Ok(Parsed {
            document,
            cost: Some(shape.nodes.saturating_mul(ParsedQueries::NODE_BYTES)),
        })
    })
    .await;
    parsed.unwrap_or_else(|_| {
        Err(with_code(
            ServerError::new("the query could not be parsed", None),
            "INTERNAL",
        ))
    })
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
    /// Bytes the parsed-query cache may hold.
    pub const CACHE_BYTES: usize = 32 * 1024 * 1024;

    #[must_use]
    pub fn new(schema: EshopSchema, limits: Limits) -> Self {
        Self {
            schema,
            limits,
            parsed: Arc::new(ParsedQueries::new(Self::CACHE_BYTES)),
        }
    }

    /// `request` with its parsed document, from the cache or checked and
    /// parsed now.
    async fn prepare(
        &self,
        mut request: Request,
    ) -> Result<(Request, Option<Parsed>), ServerError> {
        if let Some(document) = self.parsed.cached(&request.query) {
            request.set_parsed_query(document);
            return Ok((request, None));
        }
        let parsed = parse(request.query.clone(), self.limits).await?;
        request.set_parsed_query(parsed.document.clone());
        Ok((request, Some(parsed)))
    }

    /// Codes what the schema answered without a code.
    fn code(&self, mut response: Response) -> Response {
        let limits = self.limits;
        let total = response.errors.len();
        let mut errors: Vec<ServerError> = std::mem::take(&mut response.errors)
            .into_iter()
            .take(MAX_ERRORS)
            .map(|error| code_error(error, limits))
            .map(shorten)
            .collect();
        if total > MAX_ERRORS {
            errors.push(with_code(
                ServerError::new(
                    format!("{} more errors are not shown", total - MAX_ERRORS),
                    None,
                ),
                "GRAPHQL_VALIDATION_FAILED",
            ));
        }
        response.errors = errors;
        response
    }
}

/// Cuts a long message (the parser quotes the whole offending line).
fn shorten(mut error: ServerError) -> ServerError {
    error.message = domain::text::excerpt(std::mem::take(&mut error.message), MAX_MESSAGE);
    error
}

/// Whether the schema accepted the document: no error stopped the
/// request before execution (those have no path).
fn validated(response: &Response) -> bool {
    response.errors.iter().all(|error| !error.path.is_empty())
}

/// What async-graphql answers when a query is deeper than `limit_depth`.
const LIBRARY_TOO_DEEP: &str = "Query is nested too deep.";
/// What async-graphql answers when a query is above `limit_complexity`.
const LIBRARY_TOO_COMPLEX: &str = "Query is too complex.";

fn code_error(mut error: ServerError, limits: Limits) -> ServerError {
    if error
        .extensions
        .as_ref()
        .is_some_and(|extensions| extensions.get("code").is_some())
    {
        return error;
    }
    // async-graphql reports its limits with no variant, code or position:
    // its message is the only signal, so it is matched here and nowhere
    // else, and `the_librarys_limit_messages_are_the_ones_matched` fails
    // when an upgrade rewords them.
    match error.message.as_str() {
        LIBRARY_TOO_DEEP => {
            error.message = format!(
                "the query nests more than {} levels deep; at most {} are allowed",
                limits.max_depth, limits.max_depth
            );
            return with_code(error, "QUERY_TOO_DEEP");
        }
        LIBRARY_TOO_COMPLEX => {
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
    async fn execute(&self, request: Request) -> Response {
        let (request, parsed) = match self.prepare(request).await {
            Ok(prepared) => prepared,
            Err(error) => return self.code(Response::from_errors(vec![error])),
        };
        let query = parsed.as_ref().map(|_| request.query.clone());
        let response = self.schema.execute(request).await;
        if let (
            Some(query),
            Some(Parsed {
                document,
                cost: Some(cost),
            }),
        ) = (query, parsed)
            && validated(&response)
        {
            self.parsed.keep(&query, document, cost);
        }
        self.code(response)
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let coded = self.clone();
        futures::stream::once(async move {
            match coded.prepare(request).await {
                Ok((request, _)) => {
                    let recode = coded.clone();
                    coded
                        .schema
                        .execute_stream_with_session_data(request, session_data.unwrap_or_default())
                        .map(move |response| recode.code(response))
                        .boxed()
                }
                Err(error) => {
                    let response = coded.code(Response::from_errors(vec![error]));
                    futures::stream::once(async move { response }).boxed()
                }
            }
        })
        .flatten()
        .boxed()
    }
}

/// The code an error carries, as JSON text (`"QUERY_TOO_DEEP"`).
#[cfg(test)]
pub(crate) fn code(error: &ServerError) -> String {
    error
        .extensions
        .as_ref()
        .and_then(|extensions| extensions.get("code"))
        .map(ToString::to_string)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{PathSegment, Pos};

    const LIMITS: Limits = Limits {
        max_depth: 15,
        max_complexity: 5_000,
        max_query_bytes: 64 * 1024,
    };

    #[test]
    fn the_schemas_limits_get_their_codes_and_say_the_limit() {
        let deep = code_error(ServerError::new(LIBRARY_TOO_DEEP, None), LIMITS);
        assert_eq!(code(&deep), "\"QUERY_TOO_DEEP\"");
        assert!(deep.message.contains("at most 15"), "{}", deep.message);
        let complex = code_error(ServerError::new(LIBRARY_TOO_COMPLEX, None), LIMITS);
        assert_eq!(code(&complex), "\"QUERY_TOO_COMPLEX\"");
        assert!(complex.message.contains("5000"), "{}", complex.message);
    }

    #[tokio::test]
    async fn the_librarys_limit_messages_are_the_ones_matched() {
        use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

        struct Nested;
        #[Object]
        impl Nested {
            async fn next(&self) -> Nested {
                Nested
            }
            async fn leaf(&self) -> i32 {
                1
            }
        }
        let query = "{ next { next { next { leaf } } } }";
        let messages = |schema: Schema<Nested, EmptyMutation, EmptySubscription>| async move {
            let response = schema.execute(query).await;
            response
                .errors
                .into_iter()
                .map(|error| error.message)
                .collect::<Vec<_>>()
        };
        let build = || Schema::build(Nested, EmptyMutation, EmptySubscription);
        assert_eq!(
            messages(build().limit_depth(2).finish()).await,
            [LIBRARY_TOO_DEEP]
        );
        assert_eq!(
            messages(build().limit_complexity(2).finish()).await,
            [LIBRARY_TOO_COMPLEX]
        );
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
