use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::metadata::EventMetadata;

/// A published event: CloudEvents 1.0 (JSON format) with eshop's extension
/// attributes. Extension names are lower-case letters and digits only, as
/// the CloudEvents specification requires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    /// Always `1.0`.
    pub specversion: String,
    /// The event id (UUID v7); unique per event, the same on every redelivery.
    pub id: Uuid,
    /// `/eshop/{aggregate type}`, for example `/eshop/Order`.
    pub source: String,
    /// `eshop.{AggregateType}.{EventType}`, for example `eshop.Order.OrderPlaced`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The aggregate id.
    pub subject: String,
    /// When the event occurred (UTC).
    pub time: DateTime<Utc>,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The JSON Schema of `data`, relative to the contract's schema folder.
    pub dataschema: String,
    /// `Product`, `Basket` or `Order`.
    pub aggregatetype: String,
    pub aggregateid: String,
    /// The event's sequence within its aggregate, from 1.
    pub aggregatesequence: i64,
    /// The event's position in the store's global order (unique, increasing
    /// within a transaction's events, with gaps).
    pub globalposition: i64,
    /// The version of `data`'s schema, for example `2.0`.
    pub schemaversion: String,
    pub correlationid: String,
    pub causationid: String,
    pub actor: String,
    /// W3C trace context of the command that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The event's payload, in the shape its schema describes.
    pub data: Value,
}

/// Where a stored event sits, for building its envelope.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub global_position: i64,
}

impl Envelope {
    /// The event type without its prefix: `OrderPlaced` for
    /// `eshop.Order.OrderPlaced`.
    #[must_use]
    pub fn event_name(&self) -> &str {
        self.event_type
            .rsplit_once('.')
            .map_or(self.event_type.as_str(), |(_, name)| name)
    }

    /// The envelope of a stored event whose payload has already been upcast
    /// to `schema_version`.
    #[must_use]
    pub fn new(
        at: Position<'_>,
        event_type: &str,
        schema_version: &str,
        data: Value,
        metadata: &EventMetadata,
    ) -> Self {
        Self {
            specversion: "1.0".into(),
            id: metadata.event_id,
            source: format!("/eshop/{}", at.aggregate_type),
            event_type: format!("eshop.{}.{event_type}", at.aggregate_type),
            subject: at.aggregate_id.to_owned(),
            time: metadata.occurred_at,
            datacontenttype: "application/json".into(),
            dataschema: crate::schemas::file_name(at.aggregate_type, event_type, schema_version),
            aggregatetype: at.aggregate_type.to_owned(),
            aggregateid: at.aggregate_id.to_owned(),
            aggregatesequence: at.sequence,
            globalposition: at.global_position,
            schemaversion: schema_version.to_owned(),
            correlationid: metadata.correlation_id.clone(),
            causationid: metadata.causation_id.clone(),
            actor: metadata.actor.clone(),
            traceparent: metadata.traceparent.clone(),
            data,
        }
    }
}
