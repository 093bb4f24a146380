//! Every error the REST API returns, as RFC 9457 `application/problem+json`.
//! This is the one place where errors become HTTP statuses.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::ErrorKind;
use domain::text::excerpt;
use event_store::StoreError;
use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};

use crate::commands::CommandError;

/// A problem detail (RFC 9457).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem; `/problems/{code}`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short, human-readable summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence.
    pub detail: String,
    /// A stable machine-readable code, the last segment of `type`.
    pub code: String,
    /// Per-field validation errors, when the request body was at fault.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One invalid field of a request body or header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Path of the field, for example `price.currency` or `lines[2].quantity`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl ToString) -> Self {
        Self {
            field: excerpt(field.into(), 200),
            message: excerpt(message.to_string(), 500),
        }
    }
}

/// The error type of every handler.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("expected a JSON body ('Content-Type: application/json'), got {0}")]
    UnsupportedMediaType(String),
    #[error("header {header} is invalid: {message}")]
    BadHeader {
        header: &'static str,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    /// No token, or one that does not verify (`401`).
    #[error("{0}")]
    Unauthenticated(identity::Rejection),
    /// The token lacks a role the operation needs (`403`).
    #[error("{0}")]
    Forbidden(String),
    /// The issuer's keys cannot be had, so no token can be checked.
    #[error("the identity provider is unavailable")]
    IdentityUnavailable,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the request was not received and answered within {limit_ms} ms")]
    RequestTimeout { limit_ms: u128 },
    /// A refusal by the HTTP layer with no more specific type.
    #[error("{detail}")]
    Other { status: StatusCode, detail: String },
    #[error("internal error")]
    Internal,
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        Self::NotFound("no resource at this path: ids are UUIDs".into())
    }
}

fn title_of(code: &str) -> String {
    let mut title = code.replace('-', " ");
    if let Some(first) = title.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    title
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, Vec<FieldError>) {
        match self {
            Self::Command(error) => match error {
                CommandError::Rejected { kind, code, .. } => {
                    let status = match kind {
                        ErrorKind::Validation => StatusCode::UNPROCESSABLE_ENTITY,
                        ErrorKind::NotFound => StatusCode::NOT_FOUND,
                        ErrorKind::InvalidState => StatusCode::CONFLICT,
                    };
                    (status, code, Vec::new())
                }
                CommandError::Duplicate { field, .. } => (
                    StatusCode::CONFLICT,
                    "duplicate-sku",
                    vec![FieldError::new(field.clone(), error)],
                ),
                CommandError::StaleVersion { .. } | CommandError::ChangedConcurrently { .. } => {
                    (StatusCode::PRECONDITION_FAILED, "stale-version", Vec::new())
                }
                CommandError::ContentionExhausted { .. } => {
                    (StatusCode::CONFLICT, "concurrent-modification", Vec::new())
                }
                CommandError::IdempotencyKeyReused => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    Vec::new(),
                ),
                CommandError::IdempotencyKeyInProgress { .. } => (
                    StatusCode::CONFLICT,
                    "idempotency-key-in-progress",
                    Vec::new(),
                ),
                CommandError::Store(StoreError::Unavailable(_)) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service-unavailable",
                    Vec::new(),
                ),
                CommandError::Store(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal-error",
                    Vec::new(),
                ),
            },
            Self::Validation(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-failed",
                errors.clone(),
            ),
            Self::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed-json", Vec::new()),
            Self::PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                Vec::new(),
            ),
            Self::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                Vec::new(),
            ),
            Self::BadHeader { header, message } => (
                StatusCode::BAD_REQUEST,
                "invalid-header",
                vec![FieldError::new(*header, message)],
            ),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", Vec::new()),
            Self::Unauthenticated(identity::Rejection::Missing) => {
                (StatusCode::UNAUTHORIZED, "unauthenticated", Vec::new())
            }
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "invalid-token", Vec::new()),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", Vec::new()),
            Self::IdentityUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "identity-provider-unavailable",
                Vec::new(),
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                Vec::new(),
            ),
            Self::RequestTimeout { .. } => {
                (StatusCode::REQUEST_TIMEOUT, "request-timeout", Vec::new())
            }
            Self::Other { status, .. } => (*status, "request-refused", Vec::new()),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal-error",
                Vec::new(),
            ),
        }
    }

    #[must_use]
    pub fn problem(&self) -> Problem {
        let (status, code, errors) = self.parts();
        let detail = if status.is_server_error() {
            // Say nothing internal; the cause is logged where it is handled.
            match status {
                StatusCode::SERVICE_UNAVAILABLE => {
                    "a backing service is unavailable; try again".to_owned()
                }
                _ => "an internal error occurred; it has been logged".to_owned(),
            }
        } else {
            excerpt(self.to_string(), 500)
        };
        Problem {
            problem_type: format!("/problems/{code}"),
            title: title_of(code),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
            errors,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        if problem.status >= 500 {
            tracing::error!(error = %self, error.debug = ?self, "request failed");
        }
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            Json(problem),
        )
            .into_response();
        match &self {
            // The first request usually finishes within moments.
            Self::Command(CommandError::IdempotencyKeyInProgress { .. }) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            Self::IdentityUnavailable => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            }
            Self::Unauthenticated(rejection) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, www_authenticate(rejection));
            }
            _ => {}
        }
        response
    }
}

/// The RFC 6750 challenge for a refused token ([`identity::challenge`]).
pub fn www_authenticate(rejection: &identity::Rejection) -> header::HeaderValue {
    header::HeaderValue::from_str(&identity::challenge(rejection)).unwrap_or_else(|_| {
        header::HeaderValue::from_static(r#"Bearer realm="eshop", error="invalid_token""#)
    })
}

/// The errors every command endpoint may answer with (for the OpenAPI
/// document).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum CommandErrors {
    /// Malformed JSON or an invalid header (`If-Match`, `Idempotency-Key`).
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// No bearer token, or one that does not verify (expired, another
    /// issuer or audience, a bad signature, …); see `WWW-Authenticate`.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The token lacks a role the operation needs.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such aggregate, or another customer's.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// Not allowed in the aggregate's current state (the detail names it),
    /// concurrent changes kept winning until retries ran out, or a request
    /// with the same `Idempotency-Key` is still in progress (retry after
    /// `Retry-After` seconds to get its outcome).
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// `If-Match` names another version than the current one.
    #[response(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Problem),
    /// The body exceeds 64 KiB.
    #[response(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Problem),
    /// The body is not `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// Invalid values (see `errors`), or an idempotency key reused for a
    /// different request.
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(Problem),
    /// An unexpected error; nothing was appended.
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
    /// The event store or the identity provider is unavailable; nothing
    /// was appended.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_derived_from_codes() {
        assert_eq!(title_of("insufficient-stock"), "Insufficient stock");
    }

    #[test]
    fn server_errors_say_nothing_internal() {
        let problem = ApiError::Internal.problem();
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.contains("sqlx"));
    }
}
