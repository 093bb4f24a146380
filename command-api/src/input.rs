//! Turning request bodies into domain values, collecting every invalid
//! field instead of stopping at the first.

use domain::order::{MAX_ORDER_TOTAL_MINOR, ShippingAddress};
use domain::text::{CountryCode, ShortText};
use domain::{Currency, MAX_UNIT_PRICE_MINOR, Money};
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

/// A unit price: 0 to 10^12 minor units (cents for EUR, so at most ten
/// billion euros) and an ISO 4217 currency code.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"amount_minor": 1299, "currency": "EUR"}))]
pub struct PriceInput {
    /// Integer minor units, 0 to 10^12; never a decimal.
    #[schema(schema_with = price_minor_schema)]
    pub amount_minor: i64,
    /// ISO 4217 code, upper case.
    #[schema(schema_with = currency_schema)]
    pub currency: String,
}

/// An amount of money, such as a payment: minor units (cents for EUR) up
/// to the largest order total, and an ISO 4217 currency code.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"amount_minor": 1299, "currency": "EUR"}))]
pub struct MoneyInput {
    /// Integer minor units, 0 to the largest order total (50 lines of 99
    /// units at the highest price); never a decimal.
    #[schema(schema_with = amount_minor_schema)]
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

/// Integer minor units from 0 to `maximum` (the domain's bound, so the
/// document cannot drift from what is enforced).
fn minor_units_schema(maximum: i64, description: &str) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{KnownFormat, SchemaFormat, Type};
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .description(Some(description))
        .minimum(Some(0))
        .maximum(Some(maximum))
        .build()
}

fn price_minor_schema() -> utoipa::openapi::Object {
    minor_units_schema(
        MAX_UNIT_PRICE_MINOR,
        "Integer minor units, 0 to 10^12; never a decimal.",
    )
}

fn amount_minor_schema() -> utoipa::openapi::Object {
    minor_units_schema(
        MAX_ORDER_TOTAL_MINOR,
        "Integer minor units, 0 to the largest order total (50 lines of 99 units at the \
         highest price); never a decimal.",
    )
}

/// Parses minor units between 0 and `max`.
fn minor_units(fields: &mut Fields, field: &str, amount_minor: i64, max: i64) -> Option<i64> {
    let checked = if amount_minor < 0 {
        Err("must not be negative".to_owned())
    } else if amount_minor > max {
        Err(format!("must be at most {max}"))
    } else {
        Ok(amount_minor)
    };
    fields.check(&format!("{field}.amount_minor"), checked)
}

impl PriceInput {
    pub fn parse(&self, fields: &mut Fields, field: &str) -> Option<Money> {
        let currency = fields.check(
            &format!("{field}.currency"),
            self.currency.parse::<Currency>(),
        );
        let amount = minor_units(fields, field, self.amount_minor, MAX_UNIT_PRICE_MINOR);
        Some(Money::new(amount?, currency?))
    }
}

impl MoneyInput {
    pub fn parse(&self, fields: &mut Fields, field: &str) -> Option<Money> {
        let currency = fields.check(
            &format!("{field}.currency"),
            self.currency.parse::<Currency>(),
        );
        let amount = minor_units(fields, field, self.amount_minor, MAX_ORDER_TOTAL_MINOR);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn price(amount_minor: i64) -> PriceInput {
        PriceInput {
            amount_minor,
            currency: "EUR".to_owned(),
        }
    }

    #[test]
    fn a_price_up_to_the_maximum_parses() {
        let mut fields = Fields::default();
        let parsed = price(MAX_UNIT_PRICE_MINOR).parse(&mut fields, "price");
        assert_eq!(parsed.map(|m| m.minor), Some(MAX_UNIT_PRICE_MINOR));
        assert!(fields.finish().is_ok());
    }

    #[test]
    fn a_price_above_the_maximum_is_a_field_error() {
        let mut fields = Fields::default();
        assert_eq!(
            price(MAX_UNIT_PRICE_MINOR + 1).parse(&mut fields, "price"),
            None
        );
        let ApiError::Validation(errors) = fields.into_error() else {
            panic!("a validation error");
        };
        assert_eq!(
            errors,
            [FieldError::new(
                "price.amount_minor",
                "must be at most 1000000000000"
            )]
        );
    }

    #[test]
    fn a_payment_may_reach_the_largest_order_total() {
        let amount = MoneyInput {
            amount_minor: MAX_ORDER_TOTAL_MINOR,
            currency: "EUR".to_owned(),
        };
        let mut fields = Fields::default();
        assert!(amount.parse(&mut fields, "amount").is_some());
        let beyond = MoneyInput {
            amount_minor: MAX_ORDER_TOTAL_MINOR + 1,
            ..amount
        };
        assert!(beyond.parse(&mut fields, "amount").is_none());
    }
}
