//! Validated text values shared by the aggregates.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Why a text value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("must contain only {allowed}")]
    InvalidCharacters { allowed: &'static str },
}

/// `text` cut to at most `max` bytes, at a character boundary and marked
/// with `…`: what an error message may quote of a value a client sent, so
/// that a megabyte value never comes back as a megabyte error.
#[must_use]
pub fn excerpt(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

fn bounded(value: &str, max: usize) -> Result<String, TextError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(TextError::Empty);
    }
    if trimmed.chars().count() > max {
        return Err(TextError::TooLong { max });
    }
    if trimmed.chars().any(|c| c.is_control() && c != '\n') {
        return Err(TextError::InvalidCharacters {
            allowed: "printable characters",
        });
    }
    Ok(trimmed.to_owned())
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, parse = $parse:expr, schema = $schema:tt) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest value accepted, in characters.
            pub const MAX_CHARS: usize = $max;

            /// Parses and normalises a raw value.
            pub fn parse(raw: &str) -> Result<Self, TextError> {
                let parse: fn(&str) -> Result<String, TextError> = $parse;
                parse(raw).map(Self)
            }

            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = TextError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

text_type!(
    /// A stock keeping unit: 1 to 64 characters of `A-Z`, `0-9`, `-`, `_` and
    /// `.`, stored upper-case so that `ab-1` and `AB-1` are the same SKU.
    Sku,
    max = 64,
    parse = |raw| {
        let value = bounded(raw, 64)?.to_ascii_uppercase();
        if value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            Ok(value)
        } else {
            Err(TextError::InvalidCharacters { allowed: "letters A-Z, digits, '-', '_' and '.'" })
        }
    },
    schema = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Z0-9._-]+$"}
);

text_type!(
    /// A product name, 1 to 200 characters.
    ProductName,
    max = 200,
    parse = |raw| bounded(raw, 200),
    schema = {"type": "string", "minLength": 1, "maxLength": 200}
);

text_type!(
    /// A product description, up to 5,000 characters (may be empty).
    Description,
    max = 5000,
    parse = |raw| if raw.trim().is_empty() { Ok(String::new()) } else { bounded(raw, 5000) },
    schema = {"type": "string", "maxLength": 5000}
);

text_type!(
    /// A short free-text value: a reason, a payment reference, a tracking
    /// number, an address line. 1 to 200 characters.
    ShortText,
    max = 200,
    parse = |raw| bounded(raw, 200),
    schema = {"type": "string", "minLength": 1, "maxLength": 200}
);

text_type!(
    /// An ISO 3166-1 alpha-2 country code such as `DE`.
    CountryCode,
    max = 2,
    parse = |raw| {
        let value = raw.trim().to_ascii_uppercase();
        if value.len() == 2 && value.chars().all(|c| c.is_ascii_uppercase()) {
            Ok(value)
        } else {
            Err(TextError::InvalidCharacters { allowed: "two letters (ISO 3166-1 alpha-2)" })
        }
    },
    schema = {"type": "string", "pattern": "^[A-Z]{2}$"}
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_is_normalised_to_upper_case() {
        assert_eq!(
            Sku::parse(" ab-1.x ").map(|s| s.to_string()),
            Ok("AB-1.X".into())
        );
    }

    #[test]
    fn sku_refuses_spaces_inside() {
        assert!(matches!(
            Sku::parse("A B"),
            Err(TextError::InvalidCharacters { .. })
        ));
    }

    #[test]
    fn name_refuses_blank_and_overlong_values() {
        assert_eq!(ProductName::parse("   "), Err(TextError::Empty));
        assert_eq!(
            ProductName::parse(&"x".repeat(201)),
            Err(TextError::TooLong { max: 200 })
        );
    }

    #[test]
    fn description_may_be_empty() {
        assert_eq!(
            Description::parse("").map(|d| d.to_string()),
            Ok(String::new())
        );
    }

    #[test]
    fn deserialising_enforces_the_rules() {
        assert!(serde_json::from_str::<Sku>("\"bad sku\"").is_err());
        assert!(serde_json::from_str::<CountryCode>("\"DEU\"").is_err());
    }
}
