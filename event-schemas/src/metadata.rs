use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

/// What every stored event carries besides its payload. Stored as the
/// string map of cqrs-es's `EventEnvelope::metadata` under the keys below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    /// Unique id of the event (UUID v7, time-ordered).
    pub event_id: Uuid,
    /// When the command that produced it was handled (UTC).
    pub occurred_at: DateTime<Utc>,
    /// Shared by everything done for one user interaction
    /// (`X-Correlation-Id`).
    pub correlation_id: String,
    /// The id of the command that produced the event.
    pub causation_id: String,
    /// Who issued the command.
    pub actor: String,
    /// The schema version of the payload as written.
    pub schema_version: String,
    /// W3C trace context of the request, when it had one.
    pub traceparent: Option<String>,
}

pub const EVENT_ID: &str = "event_id";
pub const OCCURRED_AT: &str = "occurred_at";
pub const CORRELATION_ID: &str = "correlation_id";
pub const CAUSATION_ID: &str = "causation_id";
pub const ACTOR: &str = "actor";
pub const SCHEMA_VERSION: &str = "schema_version";
pub const TRACEPARENT: &str = "traceparent";

impl EventMetadata {
    #[must_use]
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            (EVENT_ID.to_owned(), self.event_id.to_string()),
            (
                OCCURRED_AT.to_owned(),
                self.occurred_at
                    .to_rfc3339_opts(SecondsFormat::Micros, true),
            ),
            (CORRELATION_ID.to_owned(), self.correlation_id.clone()),
            (CAUSATION_ID.to_owned(), self.causation_id.clone()),
            (ACTOR.to_owned(), self.actor.clone()),
            (SCHEMA_VERSION.to_owned(), self.schema_version.clone()),
        ]);
        if let Some(traceparent) = &self.traceparent {
            map.insert(TRACEPARENT.to_owned(), traceparent.clone());
        }
        map
    }

    /// Reads metadata back from its stored JSON form, for an event the store
    /// recorded at `recorded_at`. Missing entries (from events written by
    /// other tools) get neutral values: no id (nil; the envelope then
    /// carries an id derived from the event's place in its stream), empty
    /// correlation,
    /// causation and actor, schema version 1.0. A missing or unreadable
    /// `occurred_at` is the time the store recorded the event, never a
    /// made-up one (it decides, for instance, the day a sale is booked on).
    #[must_use]
    pub fn from_json(value: &serde_json::Value, recorded_at: DateTime<Utc>) -> Self {
        let get = |key: &str| value.get(key).and_then(serde_json::Value::as_str);
        Self {
            event_id: get(EVENT_ID)
                .and_then(|s| s.parse().ok())
                .unwrap_or_default(),
            occurred_at: get(OCCURRED_AT)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map_or(recorded_at, |t| t.with_timezone(&Utc)),
            correlation_id: get(CORRELATION_ID).unwrap_or_default().to_owned(),
            causation_id: get(CAUSATION_ID).unwrap_or_default().to_owned(),
            actor: get(ACTOR).unwrap_or_default().to_owned(),
            schema_version: get(SCHEMA_VERSION).unwrap_or("1.0").to_owned(),
            traceparent: get(TRACEPARENT).map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_survives_a_round_trip_through_json() {
        let metadata = EventMetadata {
            event_id: Uuid::now_v7(),
            occurred_at: DateTime::parse_from_rfc3339("2026-11-21T10:00:00.123456Z")
                .expect("valid time")
                .with_timezone(&Utc),
            correlation_id: "c-1".into(),
            causation_id: "cmd-1".into(),
            actor: "alice".into(),
            schema_version: "2.0".into(),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        let json = serde_json::to_value(metadata.to_map()).expect("serialises");
        let recorded_at = Utc::now();
        assert_eq!(EventMetadata::from_json(&json, recorded_at), metadata);
    }

    #[test]
    fn an_event_without_a_readable_occurrence_time_occurred_when_it_was_recorded() {
        let recorded_at = DateTime::parse_from_rfc3339("2026-11-21T10:00:00.5Z")
            .expect("valid time")
            .with_timezone(&Utc);
        for stored in [
            serde_json::json!({}),
            serde_json::json!({ "occurred_at": "yesterday" }),
        ] {
            let metadata = EventMetadata::from_json(&stored, recorded_at);
            assert_eq!(metadata.occurred_at, recorded_at, "{stored}");
            assert_eq!(metadata.schema_version, "1.0");
        }
    }
}
