//! Upcasters: read older stored event versions as the current types. They
//! run whenever events are loaded (aggregates, replays, the relay), so every
//! reader sees only current schemas.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use domain::Money;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `ProductRegistered` version 1.0, as stored before prices became `Money`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductRegisteredV1 {
    pub sku: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The price in minor units of `currency`.
    pub price_cents: i64,
    pub currency: String,
    /// Units on hand at registration.
    pub stock: u32,
}

/// `ProductRegistered` 1.0 → 2.0: `price_cents` and `currency` become the
/// `price` object and `stock` is renamed `initial_stock`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProductRegisteredV1ToV2;

impl ProductRegisteredV1ToV2 {
    fn convert(data: &Value) -> Option<Value> {
        let v1: ProductRegisteredV1 = serde_json::from_value(data.clone()).ok()?;
        let price = Money::new(v1.price_cents, v1.currency.parse().ok()?);
        Some(json!({
            "sku": v1.sku,
            "name": v1.name,
            "description": v1.description,
            "price": price,
            "initial_stock": v1.stock,
        }))
    }
}

impl EventUpcaster for ProductRegisteredV1ToV2 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "ProductRegistered" && event_version == "1.0"
    }

    /// An event that does not parse as version 1.0 is left as it is, so
    /// that loading it fails with a decoding error naming the event.
    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        let converted = event
            .payload
            .get("ProductRegistered")
            .and_then(Self::convert);
        if let Some(data) = converted {
            event.payload = json!({ "ProductRegistered": data });
            event.event_version = "2.0".into();
        }
        event
    }
}

/// Every upcaster, in the order they apply.
#[must_use]
pub fn all() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(ProductRegisteredV1ToV2)]
}

#[cfg(test)]
mod tests {
    use domain::product::ProductEvent;

    use super::*;

    fn stored(version: &str, data: Value) -> SerializedEvent {
        SerializedEvent::new(
            "p-1".into(),
            1,
            "Product".into(),
            "ProductRegistered".into(),
            version.into(),
            json!({ "ProductRegistered": data }),
            json!({}),
        )
    }

    #[test]
    fn version_1_registration_reads_as_version_2() {
        let v1 = stored(
            "1.0",
            json!({"sku": "MUG-1", "name": "Mug", "description": "", "price_cents": 1299, "currency": "EUR", "stock": 7}),
        );
        let upcaster = ProductRegisteredV1ToV2;
        assert!(upcaster.can_upcast(&v1.event_type, &v1.event_version));
        let v2 = upcaster.upcast(v1);
        assert_eq!(v2.event_version, "2.0");
        let event: ProductEvent =
            serde_json::from_value(v2.payload).expect("reads as the current type");
        let ProductEvent::ProductRegistered {
            price,
            initial_stock,
            ..
        } = event
        else {
            panic!("expected ProductRegistered, got {event:?}");
        };
        assert_eq!(
            (price.minor, price.currency.as_str(), initial_stock),
            (1299, "EUR", 7)
        );
    }

    #[test]
    fn current_versions_are_left_alone() {
        assert!(!ProductRegisteredV1ToV2.can_upcast("ProductRegistered", "2.0"));
        assert!(!ProductRegisteredV1ToV2.can_upcast("PriceChanged", "1.0"));
    }

    #[test]
    fn a_malformed_version_1_payload_is_not_rewritten() {
        let v1 = stored("1.0", json!({"sku": "MUG-1"}));
        let out = ProductRegisteredV1ToV2.upcast(v1.clone());
        assert_eq!(out, v1);
    }
}
