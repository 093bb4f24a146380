//! Request extractors whose rejections are problem+json like every other
//! error.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::{Authenticated, Scope};
use crate::commands::{CommandContext, IdempotencyKey};
use crate::error::ApiError;
use crate::telemetry::CorrelationId;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A path extractor whose rejection is a problem+json 404.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// A JSON body, with the digest an idempotency key is checked against.
///
/// An empty body reads as `{}`, so commands without data (discontinue,
/// deliver) accept both. A body that is not JSON is `400`; JSON of the wrong
/// shape is `422` naming the field.
#[derive(Debug)]
pub struct ApiJson<T> {
    pub value: T,
    /// SHA-256 of the method, path and canonical JSON, when the request
    /// carries an `Idempotency-Key`.
    pub fingerprint: Option<Vec<u8>>,
}

fn is_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType("no Content-Type".into()));
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::UnsupportedMediaType("a Content-Type that is not text".into()))?;
    let essence = value
        .split_once(';')
        .map_or(value, |(essence, _)| essence)
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "'{}'",
            value.chars().take(100).collect::<String>()
        )))
    }
}

/// SHA-256 over what makes two requests "the same request".
fn fingerprint(method: &Method, path: &str, body: &serde_json::Value) -> Vec<u8> {
    // serde_json's map is ordered by key, so this is canonical JSON.
    let canonical = serde_json::to_vec(body).expect("a JSON value always serialises");
    let mut digest = Sha256::new();
    digest.update(method.as_str().as_bytes());
    digest.update(b" ");
    digest.update(path.as_bytes());
    digest.update(b"\n");
    digest.update(&canonical);
    digest.finalize().to_vec()
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                ApiError::MalformedJson("the body could not be read".into())
            }
        })?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            // No body is fine, but not under a CORS-simple type: a web
            // page could send that cross-site without asking.
            if headers.contains_key(header::CONTENT_TYPE) {
                is_json(&headers)?;
            }
            b"{}"
        } else {
            is_json(&headers)?;
            &bytes
        };
        // One pass on the happy path. On failure, syntax decides first
        // (400), then shape (422): a body with trailing garbage is malformed
        // even if its start would not fit either.
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let parsed = serde_path_to_error::deserialize(&mut deserializer);
        let complete = deserializer.end();
        let value = match (parsed, complete) {
            (Ok(value), Ok(())) => value,
            (parsed, _) => {
                if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                    return Err(ApiError::MalformedJson(syntax.to_string()));
                }
                let Err(error) = parsed else {
                    return Err(ApiError::MalformedJson(
                        "unexpected content after the JSON value".into(),
                    ));
                };
                let path = error.path().to_string();
                let field = if path == "." { "body".to_owned() } else { path };
                return Err(ApiError::Validation(vec![crate::error::FieldError::new(
                    field,
                    strip_position(error.inner()),
                )]));
            }
        };
        let fingerprint = if headers.contains_key(IDEMPOTENCY_KEY) {
            let json: serde_json::Value = serde_json::from_slice(body)
                .map_err(|error| ApiError::MalformedJson(error.to_string()))?;
            Some(fingerprint(&method, &path, &json))
        } else {
            None
        };
        Ok(Self { value, fingerprint })
    }
}

/// serde's errors end in " at line 1 column 17", which means nothing next
/// to a field path.
fn strip_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(index) => text[..index].to_owned(),
        None => text,
    }
}

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The command-related headers of a request.
#[derive(Debug, Clone)]
pub struct CommandHeaders {
    pub correlation_id: String,
    pub if_match: Option<usize>,
    pub idempotency_key: Option<String>,
    pub traceparent: Option<String>,
}

impl CommandHeaders {
    /// The command context for a request of `who`, allowed to touch
    /// what `scope` says, with this body fingerprint.
    #[must_use]
    pub fn context(
        &self,
        who: &Authenticated,
        scope: Scope,
        fingerprint: Option<Vec<u8>>,
    ) -> CommandContext {
        let mut ctx = CommandContext::new(self.correlation_id.clone());
        ctx.actor = who.0.actor();
        ctx.owner = match scope {
            Scope::Any => None,
            Scope::Own(customer) => Some(customer),
        };
        ctx.expected_version = self.if_match;
        ctx.traceparent = self.traceparent.clone();
        // A key is the caller's own: stored under their subject, so that
        // another caller sending the same request with the same key gets
        // no replay of an outcome that is not theirs.
        ctx.idempotency = self.idempotency_key.clone().map(|key| IdempotencyKey {
            key,
            owner: who.0.subject_id.to_string(),
            // `ApiJson` fingerprints every request that carries a key.
            fingerprint: fingerprint.unwrap_or_default(),
        });
        ctx
    }
}

/// `If-Match: "3"` (or `3`, or `W/"3"`); `*` imposes nothing.
fn parse_if_match(value: &str) -> Result<Option<usize>, ApiError> {
    let value = value.trim();
    if value == "*" {
        return Ok(None);
    }
    let tag = value.strip_prefix("W/").unwrap_or(value);
    let digits = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(tag);
    let plain = (1..=18).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    let quoted_or_bare =
        digits.len() + 2 == tag.len() || (digits.len() == tag.len() && tag.len() == value.len());
    if !(plain && quoted_or_bare) {
        return Err(ApiError::BadHeader {
            header: "If-Match",
            message: "expected an entity tag holding the aggregate version, such as \"3\"".into(),
        });
    }
    digits.parse().map(Some).map_err(|_| ApiError::BadHeader {
        header: "If-Match",
        message: "expected an entity tag holding the aggregate version, such as \"3\"".into(),
    })
}

fn parse_idempotency_key(value: &str) -> Result<String, ApiError> {
    let valid = (1..=255).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(value.to_owned())
    } else {
        Err(ApiError::BadHeader {
            header: "Idempotency-Key",
            message: "expected 1 to 255 visible ASCII characters".into(),
        })
    }
}

/// A W3C `traceparent`: kept when well-formed, dropped otherwise, as the
/// Trace Context specification asks.
fn parse_traceparent(value: &str) -> Option<String> {
    telemetry::well_formed(value).map(str::to_owned)
}

impl<S: Send + Sync> FromRequestParts<S> for CommandHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let text = |name: &'static str, header: &str| -> Result<Option<&str>, ApiError> {
            parts
                .headers
                .get(header)
                .map(|v| {
                    v.to_str().map_err(|_| ApiError::BadHeader {
                        header: name,
                        message: "not visible ASCII".into(),
                    })
                })
                .transpose()
        };
        let if_match = text("If-Match", "if-match")?
            .map(parse_if_match)
            .transpose()?
            .flatten();
        let idempotency_key = text("Idempotency-Key", IDEMPOTENCY_KEY)?
            .map(parse_idempotency_key)
            .transpose()?;
        let traceparent = parts
            .headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let correlation_id = parts
            .extensions
            .get::<CorrelationId>()
            .map_or_else(|| Uuid::now_v7().to_string(), |id| id.0.clone());
        Ok(Self {
            correlation_id,
            if_match,
            idempotency_key,
            traceparent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_accepts_quoted_bare_and_weak_tags() {
        assert_eq!(parse_if_match("\"3\"").ok().flatten(), Some(3));
        assert_eq!(parse_if_match("3").ok().flatten(), Some(3));
        assert_eq!(parse_if_match("W/\"3\"").ok().flatten(), Some(3));
        assert_eq!(parse_if_match("*").ok().flatten(), None);
        assert!(parse_if_match("\"abc\"").is_err());
        assert!(parse_if_match("\"3").is_err());
        assert!(parse_if_match("W/3").is_err());
        assert!(parse_if_match("").is_err());
    }

    #[test]
    fn traceparent_must_be_well_formed() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(good).as_deref(), Some(good));
        assert_eq!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(parse_traceparent("garbage"), None);
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        assert!(parse_idempotency_key("order-2026-11-21-0001").is_ok());
        assert!(parse_idempotency_key("").is_err());
        assert!(parse_idempotency_key(&"k".repeat(256)).is_err());
        assert!(parse_idempotency_key("has space").is_err());
    }

    #[test]
    fn fingerprint_ignores_key_order_and_whitespace() {
        let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("json");
        let a = fingerprint(&Method::POST, "/products", &parse(r#"{"a":1,"b":2}"#));
        let b = fingerprint(&Method::POST, "/products", &parse("{ \"b\": 2, \"a\": 1 }"));
        let c = fingerprint(&Method::POST, "/products", &parse(r#"{"a":1,"b":3}"#));
        let d = fingerprint(&Method::POST, "/baskets", &parse(r#"{"a":1,"b":2}"#));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }
}
