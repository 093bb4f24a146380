//! Events as projections receive them: the public envelope, and its data
//! decoded into the domain's event types.

use domain::basket::BasketEvent;
use domain::order::OrderEvent;
use domain::product::ProductEvent;
use event_schemas::Envelope;

/// The decoded data of an envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Product(ProductEvent),
    Basket(BasketEvent),
    Order(OrderEvent),
}

/// An event delivered to a projection.
#[derive(Debug, Clone)]
pub struct Event {
    pub envelope: Envelope,
    pub payload: Payload,
}

/// Why a message could not become an [`Event`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the message is not an eshop envelope: {0}")]
    Envelope(serde_json::Error),
    #[error("unknown aggregate type {0}")]
    AggregateType(String),
    #[error("{event_type} does not match its schema: {source}")]
    Data {
        event_type: String,
        source: serde_json::Error,
    },
}

impl Event {
    /// Decodes a message's value.
    pub fn decode(value: &[u8]) -> Result<Self, DecodeError> {
        let envelope: Envelope = serde_json::from_slice(value).map_err(DecodeError::Envelope)?;
        Self::from_envelope(envelope)
    }

    /// An event read from the store itself, as the relay would have
    /// published it (upcast to the current schema).
    pub fn from_recorded(
        recorded: &event_store::feed::RecordedEvent,
        upcasters: &[Box<dyn cqrs_es::persist::EventUpcaster>],
    ) -> Result<Self, DecodeError> {
        Self::from_envelope(crate::relay::envelope_of(recorded, upcasters))
    }

    /// [`Event::from_recorded`], taking the recorded event (no copy of its
    /// payload).
    pub fn from_recorded_owned(
        recorded: event_store::feed::RecordedEvent,
        upcasters: &[Box<dyn cqrs_es::persist::EventUpcaster>],
    ) -> Result<Self, DecodeError> {
        Self::from_envelope(crate::relay::envelope_from(recorded, upcasters))
    }

    /// Decodes an envelope's data into the domain's event type.
    pub fn from_envelope(mut envelope: Envelope) -> Result<Self, DecodeError> {
        let event_type = envelope
            .event_type
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        // The domain's events are tagged with their type: lend the data to
        // a tagged value, decode it from there, and give it back.
        let mut tagged = serde_json::Map::new();
        tagged.insert(event_type.clone(), std::mem::take(&mut envelope.data));
        let tagged = serde_json::Value::Object(tagged);
        let data = |source| DecodeError::Data {
            event_type: envelope.event_type.clone(),
            source,
        };
        use serde::Deserialize;
        let payload = match envelope.aggregatetype.as_str() {
            "Product" => ProductEvent::deserialize(&tagged).map(Payload::Product),
            "Basket" => BasketEvent::deserialize(&tagged).map(Payload::Basket),
            "Order" => OrderEvent::deserialize(&tagged).map(Payload::Order),
            other => return Err(DecodeError::AggregateType(other.to_owned())),
        };
        if let serde_json::Value::Object(mut map) = tagged {
            envelope.data = map.remove(&event_type).unwrap_or_default();
        }
        let payload = payload.map_err(data)?;
        Ok(Self { envelope, payload })
    }

    /// The aggregate id as a UUID (every eshop aggregate has one).
    #[must_use]
    pub fn aggregate_uuid(&self) -> uuid::Uuid {
        self.envelope.aggregateid.parse().unwrap_or_default()
    }
}
