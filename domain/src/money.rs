//! Money as integer minor units plus an ISO 4217 currency. There is no
//! floating point anywhere in this module, and every operation that could
//! overflow or mix currencies is checked.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The ISO 4217 codes of currencies in circulation (funds and precious
/// metals excluded).
const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// An ISO 4217 currency code such as `EUR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// Every accepted code, sorted.
    pub const CODES: &'static [&'static str] = ISO_4217;

    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ever built from an entry of ISO_4217, which is ASCII.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// How many digits the minor unit has (ISO 4217's "E"): 2 for EUR
    /// (cents), 0 for JPY, 3 for KWD.
    #[must_use]
    pub fn minor_digits(&self) -> u32 {
        match self.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF"
            | "UGX" | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            "CLF" | "UYW" => 4,
            _ => 2,
        }
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match ISO_4217.binary_search(&s) {
            Ok(index) => {
                let code = ISO_4217[index].as_bytes();
                Ok(Self([code[0], code[1], code[2]]))
            }
            Err(_) => Err(MoneyError::UnknownCurrency(s.chars().take(16).collect())),
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JsonSchema for Currency {
    fn schema_name() -> Cow<'static, str> {
        "Currency".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[A-Z]{3}$",
            "description": "ISO 4217 currency code"
        })
    }
}

/// The most a unit price may be: 10^12 minor units, ten billion euros.
///
/// Currencies with the smallest units still get a price a shop may ask
/// (10^12 minor units are some 600,000 US dollars in Indonesian rupiah,
/// 110,000 in Lebanese pounds). Together with
/// [`MAX_QUANTITY`](crate::basket::MAX_QUANTITY) and
/// [`MAX_LINES`](crate::basket::MAX_LINES) it bounds every figure the views
/// derive (see [`MAX_ORDER_TOTAL_MINOR`](crate::order::MAX_ORDER_TOTAL_MINOR)):
/// a line is at most 9.9 × 10^13 minor units, an order 4.95 × 10^15, 1/1,800
/// of a 64-bit integer; and a `sales_daily` row (one product, one day) holds
/// the revenue of more than 93,000 lines of 99 units at this price before
/// its bigint would overflow, which the projection then refuses rather than
/// wraps.
pub const MAX_UNIT_PRICE_MINOR: i64 = 1_000_000_000_000;

/// An amount of money: integer minor units (cents for EUR, yen for JPY)
/// and its currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Money {
    /// The amount in the currency's minor unit.
    #[serde(rename = "amount_minor")]
    pub minor: i64,
    pub currency: Currency,
}

/// Why a money value or operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("'{0}' is not an ISO 4217 currency code")]
    UnknownCurrency(String),
    #[error("amounts in {left} and {right} cannot be combined")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("amount must not be negative")]
    Negative,
    #[error("amount is too large")]
    Overflow,
    #[error("amount must be at most {max} minor units")]
    AboveMaximum { max: i64 },
}

impl Money {
    #[must_use]
    pub const fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// A price or payment: zero or more minor units.
    pub fn non_negative(minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        if minor < 0 {
            return Err(MoneyError::Negative);
        }
        Ok(Self { minor, currency })
    }

    /// A unit price: zero to [`MAX_UNIT_PRICE_MINOR`] minor units.
    pub fn unit_price(minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        let price = Self::non_negative(minor, currency)?;
        price.check_unit_price()?;
        Ok(price)
    }

    /// Whether this amount may be a unit price (see [`Money::unit_price`]).
    pub fn check_unit_price(&self) -> Result<(), MoneyError> {
        if self.minor < 0 {
            return Err(MoneyError::Negative);
        }
        if self.minor > MAX_UNIT_PRICE_MINOR {
            return Err(MoneyError::AboveMaximum {
                max: MAX_UNIT_PRICE_MINOR,
            });
        }
        Ok(())
    }

    #[must_use]
    pub const fn zero(currency: Currency) -> Self {
        Self { minor: 0, currency }
    }

    pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            });
        }
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self {
            minor,
            currency: self.currency,
        })
    }

    pub fn checked_mul(self, quantity: u32) -> Result<Self, MoneyError> {
        let minor = self
            .minor
            .checked_mul(i64::from(quantity))
            .ok_or(MoneyError::Overflow)?;
        Ok(Self {
            minor,
            currency: self.currency,
        })
    }
}

impl Money {
    /// The amount in major units with the currency's own number of
    /// decimals, then the code: `12.34 EUR`, `1234 JPY`, `-0.050 KWD`.
    /// Exact (integer arithmetic); locale-specific display is the
    /// frontend's.
    #[must_use]
    pub fn formatted(&self) -> String {
        let digits = self.currency.minor_digits();
        let sign = if self.minor < 0 { "-" } else { "" };
        let magnitude = self.minor.unsigned_abs();
        if digits == 0 {
            return format!("{sign}{magnitude} {}", self.currency);
        }
        let unit = 10_u64.pow(digits);
        format!(
            "{sign}{}.{:0width$} {}",
            magnitude / unit,
            magnitude % unit,
            self.currency,
            width = digits as usize
        )
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.minor, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        "EUR".parse().expect("EUR is ISO 4217")
    }

    #[test]
    fn formatted_uses_the_currency_s_own_decimals() {
        let money = |minor, code: &str| Money::new(minor, code.parse().expect("ISO 4217"));
        assert_eq!(money(1234, "EUR").formatted(), "12.34 EUR");
        assert_eq!(money(5, "EUR").formatted(), "0.05 EUR");
        assert_eq!(money(-1234, "USD").formatted(), "-12.34 USD");
        assert_eq!(money(1234, "JPY").formatted(), "1234 JPY");
        assert_eq!(money(1234, "KWD").formatted(), "1.234 KWD");
        assert_eq!(
            money(i64::MIN, "EUR").formatted(),
            "-92233720368547758.08 EUR"
        );
    }

    #[test]
    fn currency_list_is_sorted_for_binary_search() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn unknown_or_lower_case_codes_are_refused() {
        assert!("EUX".parse::<Currency>().is_err());
        assert!("eur".parse::<Currency>().is_err());
    }

    #[test]
    fn adding_different_currencies_is_refused() {
        let usd = "USD".parse().expect("USD is ISO 4217");
        let err = Money::new(1, eur()).checked_add(Money::new(1, usd));
        assert!(matches!(err, Err(MoneyError::CurrencyMismatch { .. })));
    }

    #[test]
    fn multiplication_overflow_is_an_error_not_a_wrap() {
        assert_eq!(
            Money::new(i64::MAX, eur()).checked_mul(2),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn a_unit_price_is_between_zero_and_the_maximum() {
        assert!(Money::unit_price(0, eur()).is_ok());
        assert!(Money::unit_price(MAX_UNIT_PRICE_MINOR, eur()).is_ok());
        assert_eq!(
            Money::unit_price(MAX_UNIT_PRICE_MINOR + 1, eur()),
            Err(MoneyError::AboveMaximum {
                max: MAX_UNIT_PRICE_MINOR
            })
        );
        assert_eq!(Money::unit_price(-1, eur()), Err(MoneyError::Negative));
    }

    #[test]
    fn money_serialises_as_minor_units_and_code() {
        let json = serde_json::to_value(Money::new(1299, eur())).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"amount_minor": 1299, "currency": "EUR"})
        );
    }
}
