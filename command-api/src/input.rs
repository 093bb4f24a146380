//! Turning request bodies into domain values, collecting every invalid
//! field instead of stopping at the first.

use domain::order::ShippingAddress;
use domain::text::{CountryCode, ShortText};
use domain::{Currency, Money};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{ApiError, FieldError};

/// Collects field errors while a body is parsed.
#[derive(Debug, Default)]
pub struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    /// Keeps a parsed value, or records why the field is invalid.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        parsed: Result<T, E>,
    ) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(error) => {
                self.errors.push(FieldError::new(field, error));
                None
            }
        }
    }

    /// The error for everything recorded; call when a value is missing.
    #[must_use]
    pub fn into_error(self) -> ApiError {
        ApiError::Validation(self.errors)
    }

    /// Fails when any field was invalid.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.into_error())
        }
    }
}

/// Parses the one validated field of a body.
pub fn one<T, E: std::fmt::Display>(field: &str, parsed: Result<T, E>) -> Result<T, ApiError> {
    parsed.map_err(|error| ApiError::Validation(vec![FieldError::new(field, error)]))
}

/// An amount of money in minor units (cents for EUR) and an ISO 4217
/// currency code.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"amount_minor": 1299, "currency": "EUR"}))]
pub struct MoneyInput {
    /// Integer minor units; never a decimal.
    #[schema(minimum = 0)]
    pub amount_minor: i64,
    /// ISO 4217 code, upper case.
    #[schema(schema_with = currency_schema)]
    pub currency: String,
}

fn currency_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some("ISO 4217 currency code"))
        .enum_values(Some(Currency::CODES.iter().copied()))
        .build()
}

impl MoneyInput {
    pub fn parse(&self, fields: &mut Fields, field: &str) -> Option<Money> {
        let currency = fields.check(
            &format!("{field}.currency"),
            self.currency.parse::<Currency>(),
        );
        let amount = fields.check(
            &format!("{field}.amount_minor"),
            if self.amount_minor < 0 {
                Err("must not be negative")
            } else {
                Ok(self.amount_minor)
            },
        );
        Some(Money::new(amount?, currency?))
    }
}

/// Where an order goes.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressInput {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub recipient: String,
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub line1: String,
    #[schema(max_length = 200)]
    pub line2: Option<String>,
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub city: String,
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code.
    #[schema(pattern = "^[A-Za-z]{2}$")]
    pub country: String,
}

impl AddressInput {
    pub fn parse(&self, fields: &mut Fields, field: &str) -> Option<ShippingAddress> {
        let mut text = |name: &str, value: &str| {
            fields.check(&format!("{field}.{name}"), ShortText::parse(value))
        };
        let recipient = text("recipient", &self.recipient);
        let line1 = text("line1", &self.line1);
        let line2 = match self.line2.as_deref().map(str::trim) {
            None | Some("") => Some(None),
            Some(value) => text("line2", value).map(Some),
        };
        let city = text("city", &self.city);
        let postal_code = text("postal_code", &self.postal_code);
        let country = fields.check(
            &format!("{field}.country"),
            CountryCode::parse(&self.country),
        );
        Some(ShippingAddress {
            recipient: recipient?,
            line1: line1?,
            line2: line2?,
            city: city?,
            postal_code: postal_code?,
            country: country?,
        })
    }
}
