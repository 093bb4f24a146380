//! Events as projections receive them: the public envelope, and its data
//! decoded into the domain's event types.

use domain::basket::BasketEvent;
use domain::order::OrderEvent;
use domain::product::ProductEvent;
use event_schemas::Envelope;
use serde_json::json;

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

    /// Decodes an envelope's data into the domain's event type.
    pub fn from_envelope(envelope: Envelope) -> Result<Self, DecodeError> {
        let event_type = envelope
            .event_type
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        let tagged = json!({ event_type.as_str(): envelope.data });
        let data = |source| DecodeError::Data {
            event_type: envelope.event_type.clone(),
            source,
        };
        let payload = match envelope.aggregatetype.as_str() {
            "Product" => Payload::Product(serde_json::from_value(tagged).map_err(data)?),
            "Basket" => Payload::Basket(serde_json::from_value(tagged).map_err(data)?),
            "Order" => Payload::Order(serde_json::from_value(tagged).map_err(data)?),
            other => return Err(DecodeError::AggregateType(other.to_owned())),
        };
        Ok(Self { envelope, payload })
    }

    /// The aggregate id as a UUID (every eshop aggregate has one).
    #[must_use]
    pub fn aggregate_uuid(&self) -> uuid::Uuid {
        self.envelope.aggregateid.parse().unwrap_or_default()
    }
}
