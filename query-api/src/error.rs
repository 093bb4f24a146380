//! The codes every GraphQL error carries in `extensions.code`, set in one
//! place. A client branches on the code, never on the message.

use async_graphql::ErrorExtensions;

/// What went wrong, as a client can act on it.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// An argument is malformed or out of range (a bad id, cursor, page
    /// size, date range).
    #[error("{0}")]
    BadUserInput(String),
    /// The requested object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A projection did not reach the request's consistency token in time.
    #[error("projection {projection} has not reached the consistency token after {waited_ms} ms")]
    ConsistencyTimeout { projection: String, waited_ms: u128 },
    /// A backing service (PostgreSQL, the search engine) failed; the cause
    /// is logged, not shown.
    #[error("a backing service is unavailable; try again")]
    Unavailable,
    /// No token, a token that does not verify, or one that has expired
    /// (a subscription's).
    #[error("{0}")]
    Unauthenticated(String),
    /// The token lacks a role the field needs.
    #[error("{0}")]
    Forbidden(String),
    /// Stored data does not decode: the store holds something eshop never
    /// wrote. The cause is logged, not shown; nothing is made up in its
    /// place.
    #[error("stored data could not be read; the error is logged")]
    Internal,
}

/// At most the first 40 bytes of a client's value, for a message that
/// names it: a megabyte id must not come back as a megabyte error.
#[must_use]
pub fn echo(value: &str) -> String {
    domain::text::excerpt(value.chars().take(41).collect(), 40)
}

impl QueryError {
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::BadUserInput(_) => "BAD_USER_INPUT",
            Self::NotFound(_) => "NOT_FOUND",
            Self::ConsistencyTimeout { .. } => "CONSISTENCY_TIMEOUT",
            Self::Unavailable => "SERVICE_UNAVAILABLE",
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::Internal => "INTERNAL_SERVER_ERROR",
        }
    }

    /// Stored data that does not decode, logged with `what`.
    pub fn stored(what: impl std::fmt::Display) -> Self {
        tracing::error!(error = %what, "stored data does not decode");
        Self::Internal
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::BadUserInput(message.into())
    }
}

impl ErrorExtensions for QueryError {
    fn extend(&self) -> async_graphql::Error {
        async_graphql::Error::new(self.to_string()).extend_with(|_, extensions| {
            extensions.set("code", self.code());
            if let Self::ConsistencyTimeout { projection, .. } = self {
                extensions.set("projection", projection.as_str());
            }
        })
    }
}

impl From<sqlx::Error> for QueryError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            // A row that does not decode into its read model's type.
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => Self::stored(error),
            error => {
                tracing::error!(error = %error, "read model query failed");
                Self::Unavailable
            }
        }
    }
}

impl From<event_store::StoreError> for QueryError {
    fn from(error: event_store::StoreError) -> Self {
        tracing::error!(error = %error, "event store query failed");
        Self::Unavailable
    }
}

/// A stored event that does not decode into the current schema: the store's
/// fault, not the client's; logged with the cause.
impl From<read_models::event::DecodeError> for QueryError {
    fn from(error: read_models::event::DecodeError) -> Self {
        Self::stored(format!("a stored event does not decode: {error}"))
    }
}

/// Stored events that do not fold into a read model's row: the store's
/// fault, not the client's; logged with the cause.
impl From<read_models::FoldError> for QueryError {
    fn from(error: read_models::FoldError) -> Self {
        Self::stored(format!("stored events do not fold: {error}"))
    }
}

impl From<search_index::SearchError> for QueryError {
    fn from(error: search_index::SearchError) -> Self {
        match error {
            search_index::SearchError::Malformed(reason) => {
                Self::stored(format!("the search engine's reply does not read: {reason}"))
            }
            error => {
                tracing::error!(error = %error, "search query failed");
                Self::Unavailable
            }
        }
    }
}

/// Results of resolvers: every error leaves with its code.
pub type QueryResult<T> = Result<T, async_graphql::Error>;

/// `?` on a [`QueryError`] inside a resolver.
pub trait Coded<T> {
    fn coded(self) -> QueryResult<T>;
}

impl<T, E: Into<QueryError>> Coded<T> for Result<T, E> {
    fn coded(self) -> QueryResult<T> {
        self.map_err(|error| error.into().extend())
    }
}

/// An error with `code` unless it has one already.
pub fn with_code(mut error: async_graphql::ServerError, code: &str) -> async_graphql::ServerError {
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
