//! JSON Schemas of the event contract, generated from the Rust types.
//!
//! The checked-in copies under `event-schemas/schemas/` are what consumers
//! read; a test fails when they differ from what the types generate. After
//! changing an event type, regenerate them with
//! `cargo run -p eshop-event-schemas --bin generate-event-schemas`.

use std::path::{Path, PathBuf};

use domain::basket::BasketEvent;
use domain::order::OrderEvent;
use domain::product::ProductEvent;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::envelope::Envelope;
use crate::upcasters::ProductRegisteredV1;

/// Where the checked-in schemas live.
#[must_use]
pub fn directory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

/// The schema file of an event type at a version, relative to
/// [`directory`]: `Product/ProductRegistered.v2.json` for `2.0`.
#[must_use]
pub fn file_name(aggregate_type: &str, event_type: &str, version: &str) -> String {
    let major = version.split('.').next().unwrap_or(version);
    format!("{aggregate_type}/{event_type}.v{major}.json")
}

fn root_schema<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// One schema per variant of an event enum: the variant's data, with the
/// enum's shared definitions.
fn event_schemas(
    aggregate_type: &str,
    root: &Value,
    version_of: impl Fn(&str) -> &'static str,
) -> Vec<(String, Value)> {
    let defs = root.get("$defs").cloned().unwrap_or_else(|| json!({}));
    let variants = root
        .get("oneOf")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    variants
        .iter()
        .filter_map(|variant| {
            let (event_type, data) = variant.get("properties")?.as_object()?.iter().next()?;
            let version = version_of(event_type);
            let mut schema = Map::new();
            schema.insert(
                "$schema".into(),
                json!("https://json-schema.org/draft/2020-12/schema"),
            );
            schema.insert(
                "$id".into(),
                json!(file_name(aggregate_type, event_type, version)),
            );
            schema.insert(
                "title".into(),
                json!(format!("eshop.{aggregate_type}.{event_type}")),
            );
            if let Some(description) = variant.get("description") {
                schema.insert("description".into(), description.clone());
            }
            schema.insert("x-schema-version".into(), json!(version));
            if let Value::Object(data) = data {
                schema.extend(data.clone());
            }
            if defs.as_object().is_some_and(|d| !d.is_empty()) {
                schema.insert("$defs".into(), defs.clone());
            }
            Some((
                file_name(aggregate_type, event_type, version),
                Value::Object(schema),
            ))
        })
        .collect()
}

/// Every schema of the contract, keyed by its path under [`directory`].
#[must_use]
pub fn generate() -> Vec<(String, Value)> {
    let mut schemas = vec![("envelope.v1.json".to_owned(), root_schema::<Envelope>())];
    schemas.extend(event_schemas(
        "Product",
        &root_schema::<ProductEvent>(),
        ProductEvent::version_of,
    ));
    schemas.extend(event_schemas(
        "Basket",
        &root_schema::<BasketEvent>(),
        |_| "1.0",
    ));
    schemas.extend(event_schemas(
        "Order",
        &root_schema::<OrderEvent>(),
        |_| "1.0",
    ));
    let mut v1 = root_schema::<ProductRegisteredV1>();
    if let Value::Object(map) = &mut v1 {
        map.insert(
            "$id".into(),
            json!(file_name("Product", "ProductRegistered", "1.0")),
        );
        map.insert("title".into(), json!("eshop.Product.ProductRegistered"));
        map.insert("x-schema-version".into(), json!("1.0"));
    }
    schemas.push((file_name("Product", "ProductRegistered", "1.0"), v1));
    schemas.sort_by(|a, b| a.0.cmp(&b.0));
    schemas
}

/// Renders a schema as it is checked in.
#[must_use]
pub fn render(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("a JSON value always serialises");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn checked_in_files(dir: &Path, prefix: &str, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir)
            .expect("schemas directory is readable")
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if entry.path().is_dir() {
                checked_in_files(&entry.path(), &path, found);
            } else if path.ends_with(".json") {
                found.insert(path);
            }
        }
    }

    #[test]
    fn checked_in_schemas_match_the_rust_types() {
        let hint = "run `cargo run -p eshop-event-schemas --bin generate-event-schemas` and commit the result";
        let generated = generate();
        for (path, schema) in &generated {
            let on_disk = std::fs::read_to_string(directory().join(path))
                .unwrap_or_else(|_| panic!("schema {path} is not checked in: {hint}"));
            assert_eq!(
                on_disk,
                render(schema),
                "schema {path} is out of date: {hint}"
            );
        }
        let mut on_disk = BTreeSet::new();
        checked_in_files(&directory(), "", &mut on_disk);
        let expected: BTreeSet<String> = generated.into_iter().map(|(path, _)| path).collect();
        assert_eq!(on_disk, expected, "stale or missing schema files: {hint}");
    }

    #[test]
    fn every_event_type_has_a_schema() {
        let names: Vec<String> = generate().into_iter().map(|(path, _)| path).collect();
        for expected in [
            "Product/ProductRegistered.v2.json",
            "Product/ProductRegistered.v1.json",
            "Product/ReservedStockShipped.v1.json",
            "Basket/BasketCheckedOut.v1.json",
            "Order/OrderPlaced.v1.json",
            "Order/OrderCancelled.v1.json",
            "envelope.v1.json",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
        assert_eq!(names.len(), 1 + 7 + 1 + 6 + 5);
    }

    #[test]
    fn file_names_use_the_major_version() {
        assert_eq!(
            file_name("Order", "OrderPaid", "1.0"),
            "Order/OrderPaid.v1.json"
        );
    }
}
