//! Events for tests, built as the relay publishes them (an envelope whose
//! data the domain's types decode): the read models' unit tests, and other
//! crates' tests with the `testing` feature.

use chrono::{DateTime, Duration, Utc};
use event_schemas::EventMetadata;
use event_schemas::envelope::{Envelope, Position};
use serde_json::Value;
use uuid::Uuid;

use crate::event::Event;

/// The time of the events of a history: `start + sequence` seconds.
#[must_use]
pub fn start() -> DateTime<Utc> {
    "2026-11-28T23:59:58.123456Z".parse().expect("a valid time")
}

/// One aggregate's history, one event after the other.
pub struct History {
    pub aggregate_type: &'static str,
    pub id: Uuid,
    sequence: i64,
}

impl History {
    #[must_use]
    pub fn new(aggregate_type: &'static str) -> Self {
        Self {
            aggregate_type,
            id: Uuid::now_v7(),
            sequence: 0,
        }
    }

    /// The history of aggregate `id` after its first `sequence` events.
    #[must_use]
    pub fn after(aggregate_type: &'static str, id: Uuid, sequence: i64) -> Self {
        Self {
            aggregate_type,
            id,
            sequence,
        }
    }

    /// The next event: `data` of type `event_type`.
    pub fn next(&mut self, event_type: &str, data: Value) -> Event {
        self.sequence += 1;
        let id = self.id.to_string();
        let metadata = EventMetadata {
            event_id: Uuid::now_v7(),
            occurred_at: start() + Duration::seconds(self.sequence),
            correlation_id: "c".into(),
            causation_id: "c".into(),
            actor: "test".into(),
            schema_version: "1".into(),
            traceparent: None,
        };
        let at = Position {
            aggregate_type: self.aggregate_type,
            aggregate_id: &id,
            sequence: self.sequence,
            global_position: self.sequence,
        };
        Event::from_envelope(Envelope::new(at, event_type, "1", data, &metadata))
            .expect("a test event decodes")
    }
}

/// `{amount_minor, currency}`.
#[must_use]
pub fn money(amount_minor: i64, currency: &str) -> Value {
    serde_json::json!({ "amount_minor": amount_minor, "currency": currency })
}
