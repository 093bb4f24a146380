//! eshop's public event contract, relied on by projectors and by analysts
//! outside this process:
//!
//! - [`Envelope`]: every published event, as a CloudEvents 1.0 JSON event
//!   with eshop's extension attributes;
//! - [`EventMetadata`]: what every stored event carries besides its payload;
//! - `schemas/`: a JSON Schema for every event type and version, generated
//!   from the Rust types by [`schemas::generate`] and checked in;
//! - [`upcasters`]: how older stored versions are read as the current ones.

pub mod envelope;
pub mod metadata;
pub mod schemas;
pub mod upcasters;

pub use envelope::Envelope;
pub use metadata::EventMetadata;
pub use upcasters::all as upcasters;

/// Splits a stored cqrs-es payload, `{"EventType": {...}}`, into the event
/// type and its data.
#[must_use]
pub fn split_payload(payload: &serde_json::Value) -> Option<(&str, &serde_json::Value)> {
    match payload {
        serde_json::Value::Object(map) if map.len() == 1 => {
            map.iter().next().map(|(k, v)| (k.as_str(), v))
        }
        _ => None,
    }
}
