//! Opaque cursors for Relay-style connections.
//!
//! A cursor is the sort key of a row, bound to the listing that produced
//! it: base64url of `{"q": <listing fingerprint>, "k": <key>}`. A cursor
//! from another listing (another field, or the same field with other
//! filters) is refused with `BAD_USER_INPUT` instead of silently paging
//! through the wrong rows. Clients must treat cursors as opaque.

use async_graphql::connection::CursorType;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::QueryError;

/// The cursor of one edge, already encoded.
#[derive(Debug, Clone)]
pub struct Cursor(pub String);

impl CursorType for Cursor {
    type Error = std::convert::Infallible;

    fn decode_cursor(s: &str) -> Result<Self, Self::Error> {
        Ok(Self(s.to_owned()))
    }

    fn encode_cursor(&self) -> String {
        self.0.clone()
    }
}

/// One listing with its filters: the scope within which its cursors hold.
#[derive(Debug, Clone)]
pub struct Listing(String);

impl Listing {
    /// `name` and every filter argument, in a fixed order.
    #[must_use]
    pub fn new(name: &str, filters: &Value) -> Self {
        let digest = Sha256::digest(format!("{name}|{filters}"));
        Self(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The cursor of a row whose sort key is `key`.
    #[must_use]
    pub fn cursor(&self, key: &impl Serialize) -> Cursor {
        let body = json!({ "q": self.0, "k": key });
        Cursor(URL_SAFE_NO_PAD.encode(body.to_string()))
    }

    /// The sort key in `after`, when it is a cursor of this listing.
    pub fn decode<K: DeserializeOwned>(
        &self,
        after: Option<&str>,
    ) -> Result<Option<K>, QueryError> {
        let Some(after) = after else {
            return Ok(None);
        };
        let invalid = || QueryError::bad_input("`after` is not a cursor of this listing");
        let bytes = URL_SAFE_NO_PAD.decode(after).map_err(|_| invalid())?;
        let body: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if body["q"].as_str() != Some(self.0.as_str()) {
            return Err(QueryError::bad_input(
                "`after` is a cursor of another listing or other filters; start again without it",
            ));
        }
        serde_json::from_value(body["k"].clone())
            .map(Some)
            .map_err(|_| invalid())
    }
}

/// The rows to fetch for a page of `first` (one more, to learn whether a
/// next page exists), after checking `first` against the cap.
pub fn page_size(first: Option<i32>, max: usize) -> Result<usize, QueryError> {
    let first = first.unwrap_or(20);
    let first = usize::try_from(first)
        .map_err(|_| QueryError::bad_input("`first` must not be negative"))?;
    if first > max {
        return Err(QueryError::bad_input(format!(
            "`first` must be at most {max}"
        )));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_decodes_only_in_its_own_listing() {
        let a = Listing::new("orders", &json!({"customer": "c1"}));
        let b = Listing::new("orders", &json!({"customer": "c2"}));
        let cursor = a.cursor(&("2026-01-01T00:00:00Z", 7));
        let key: Option<(String, i32)> = a.decode(Some(&cursor.0)).expect("own listing");
        assert_eq!(key, Some(("2026-01-01T00:00:00Z".to_owned(), 7)));
        assert!(b.decode::<(String, i32)>(Some(&cursor.0)).is_err());
        assert!(a.decode::<(String, i32)>(Some("not a cursor")).is_err());
    }

    #[test]
    fn page_size_is_capped_not_cut() {
        assert_eq!(page_size(None, 100).ok(), Some(20));
        assert_eq!(page_size(Some(100), 100).ok(), Some(100));
        assert!(page_size(Some(101), 100).is_err());
        assert!(page_size(Some(-1), 100).is_err());
    }
}
