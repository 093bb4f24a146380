//! Scalars of our own: exact money amounts and calendar dates.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, SimpleObject, Value};
use chrono::NaiveDate;

/// An amount in a currency's minor unit (cents for EUR, yen for JPY): a
/// 64-bit integer, exact, never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinorUnits(pub i64);

/// An amount in a currency's minor unit (cents for EUR, yen for JPY): a
/// 64-bit integer, exact, never a float.
#[Scalar(name = "MinorUnits")]
impl ScalarType for MinorUnits {
    fn parse(value: Value) -> InputValueResult<Self> {
        if let Value::Number(number) = &value
            && let Some(minor) = number.as_i64()
        {
            return Ok(Self(minor));
        }
        Err(InputValueError::expected_type(value))
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0.into())
    }
}

/// A calendar date in UTC, `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date(pub NaiveDate);

/// A calendar date in UTC, `YYYY-MM-DD`.
#[Scalar(name = "Date")]
impl ScalarType for Date {
    fn parse(value: Value) -> InputValueResult<Self> {
        if let Value::String(text) = &value {
            return NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(Self)
                .map_err(|_| InputValueError::custom("expected a date as YYYY-MM-DD"));
        }
        Err(InputValueError::expected_type(value))
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}

/// An amount of money.
#[derive(Debug, Clone, SimpleObject)]
pub struct Money {
    /// In the currency's minor unit.
    pub amount: MinorUnits,
    /// ISO 4217 code.
    pub currency: String,
    /// `12.34 EUR`: the currency's own decimals, for display; locale
    /// formatting is the client's.
    pub formatted: String,
}

impl Money {
    #[must_use]
    pub fn new(minor: i64, currency: &str) -> Self {
        let formatted = currency.parse::<domain::money::Currency>().map_or_else(
            |_| format!("{minor} {currency}"),
            |code| domain::money::Money::new(minor, code).formatted(),
        );
        Self {
            amount: MinorUnits(minor),
            currency: currency.to_owned(),
            formatted,
        }
    }
}
