//! Events as projections receive them: the public envelope, and its data
//! decoded into the domain's event types.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use domain::basket::BasketEvent;
use domain::order::OrderEvent;
use domain::product::ProductEvent;
use event_schemas::envelope::Position;
use event_schemas::{Envelope, EventMetadata};
use event_store::feed::RecordedEvent;

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
    /// The envelope's aggregate id, which every eshop aggregate has as a
    /// UUID (an event without one does not decode).
    aggregate_id: uuid::Uuid,
}

/// Why a message could not become an [`Event`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the message is not an eshop envelope: {0}")]
    Envelope(serde_json::Error),
    #[error("unknown aggregate type {0}")]
    AggregateType(String),
    #[error("the aggregate id {0:?} is not a UUID")]
    AggregateId(String),
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
        recorded: &RecordedEvent,
        upcasters: &[Box<dyn EventUpcaster>],
    ) -> Result<Self, DecodeError> {
        Self::from_envelope(envelope_of(recorded, upcasters))
    }

    /// [`Event::from_recorded`], taking the recorded event (no copy of its
    /// payload).
    pub fn from_recorded_owned(
        recorded: RecordedEvent,
        upcasters: &[Box<dyn EventUpcaster>],
    ) -> Result<Self, DecodeError> {
        Self::from_envelope(envelope_from(recorded, upcasters))
    }

    /// Decodes an envelope's data into the domain's event type.
    pub fn from_envelope(mut envelope: Envelope) -> Result<Self, DecodeError> {
        let aggregate_id = envelope
            .aggregateid
            .parse()
            .map_err(|_| DecodeError::AggregateId(envelope.aggregateid.clone()))?;
        let event_type = envelope.event_name().to_owned();
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
        Ok(Self {
            envelope,
            payload,
            aggregate_id,
        })
    }

    /// The aggregate id as a UUID.
    #[must_use]
    pub fn aggregate_uuid(&self) -> uuid::Uuid {
        self.aggregate_id
    }

    /// When the event happened, to the microsecond (as PostgreSQL stores
    /// a time, and as the event store recorded it).
    #[must_use]
    pub fn time(&self) -> chrono::DateTime<chrono::Utc> {
        use chrono::SubsecRound;
        self.envelope.time.trunc_subsecs(6)
    }
}

/// The envelope of a stored event: payload upcast to its current schema,
/// metadata turned into CloudEvents attributes. A payload that is not of
/// the `{"EventType": data}` shape is published as it is, so that a
/// consumer can dead-letter it rather than the relay stopping on it.
#[must_use]
pub fn envelope_of(event: &RecordedEvent, upcasters: &[Box<dyn EventUpcaster>]) -> Envelope {
    envelope_from(event.clone(), upcasters)
}

/// [`envelope_of`], taking the event: its payload moves into the envelope
/// instead of being copied (replays build millions of them).
pub fn envelope_from(event: RecordedEvent, upcasters: &[Box<dyn EventUpcaster>]) -> Envelope {
    let at = Position {
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        sequence: event.sequence,
        global_position: event.global.position,
    };
    let mut metadata = EventMetadata::from_json(&event.metadata, event.recorded_at);
    if metadata.event_id.is_nil() {
        metadata.event_id = stand_in_id(&at);
    }
    let current = event_store::upcast(
        SerializedEvent::new(
            event.aggregate_id.clone(),
            usize::try_from(event.sequence).unwrap_or(0),
            event.aggregate_type.clone(),
            event.event_type.clone(),
            event.event_version.clone(),
            event.payload,
            serde_json::Value::Null,
        ),
        upcasters,
    );
    // The payload is `{EventType: data}`; the envelope carries the data.
    let data = match current.payload {
        serde_json::Value::Object(map) if map.len() == 1 => map
            .into_iter()
            .next()
            .map_or(serde_json::Value::Null, |(_, data)| data),
        other => other,
    };
    Envelope::new(
        at,
        &current.event_type,
        &current.event_version,
        data,
        &metadata,
    )
}

/// The headers every message of an event carries, on every bus (and in a
/// dead letter): its content type and the CloudEvents attributes a router
/// needs without reading the payload (`ce_id`, `ce_type`,
/// `ce_schemaversion`), and its W3C `traceparent` when it has one.
#[must_use]
pub fn message_headers(envelope: &Envelope) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("content-type", "application/cloudevents+json".to_owned()),
        ("ce_id", envelope.id.to_string()),
        ("ce_type", envelope.event_type.clone()),
        ("ce_schemaversion", envelope.schemaversion.clone()),
    ];
    if let Some(traceparent) = &envelope.traceparent {
        headers.push(("traceparent", traceparent.clone()));
    }
    headers
}

/// The id of an event stored without one (written by another tool): a
/// name-based UUID of its place in its stream, so that it is unique and
/// the same on every redelivery, as the contract promises.
fn stand_in_id(at: &Position<'_>) -> uuid::Uuid {
    /// The namespace of eshop's stand-in event ids.
    const NAMESPACE: uuid::Uuid = uuid::uuid!("6f1c7c9e-2b0a-4f57-9c3e-5d2f7a1e8b40");
    uuid::Uuid::new_v5(
        &NAMESPACE,
        format!("{}/{}/{}", at.aggregate_type, at.aggregate_id, at.sequence).as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::History;

    #[test]
    fn an_aggregate_id_that_is_not_a_uuid_does_not_decode() {
        let event = History::new("Basket").next("BasketCleared", json!({}));
        let mut envelope = event.envelope;
        envelope.aggregateid = "basket-7".to_owned();
        let error = Event::from_envelope(envelope).expect_err("not a UUID");
        assert!(matches!(error, DecodeError::AggregateId(ref id) if id == "basket-7"));
    }

    #[test]
    fn data_that_does_not_match_its_event_type_does_not_decode() {
        let event = History::new("Basket").next("BasketCleared", json!({}));
        let mut envelope = event.envelope;
        envelope.event_type = "eshop.Basket.ItemAdded".to_owned();
        let error = Event::from_envelope(envelope).expect_err("no item");
        assert!(matches!(error, DecodeError::Data { .. }), "{error}");
    }

    #[test]
    fn an_event_stored_without_an_id_gets_one_of_its_own_the_same_each_time() {
        let stored = |sequence| RecordedEvent {
            global: event_store::feed::GlobalPosition {
                transaction_id: 7,
                position: sequence,
            },
            aggregate_type: "Basket".to_owned(),
            aggregate_id: uuid::Uuid::nil().to_string(),
            sequence,
            event_type: "BasketCleared".to_owned(),
            event_version: "1.0".to_owned(),
            payload: json!({"BasketCleared": {}}),
            metadata: json!({}),
            recorded_at: chrono::Utc::now(),
        };
        let first = envelope_of(&stored(1), &[]).id;
        assert!(!first.is_nil());
        assert_eq!(
            envelope_of(&stored(1), &[]).id,
            first,
            "stable on redelivery"
        );
        assert_ne!(envelope_of(&stored(2), &[]).id, first, "unique per event");
    }
}
