use std::collections::HashMap;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use event_schemas::EventMetadata;
use uuid::Uuid;

/// An idempotency key and the digest of the request that carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// As the client sent it.
    pub key: String,
    /// Whose key it is (the caller's subject): the same key from another
    /// caller is another key.
    pub owner: String,
    pub fingerprint: Vec<u8>,
}

impl IdempotencyKey {
    /// The key as stored: scoped to its owner.
    #[must_use]
    pub fn stored(&self) -> String {
        if self.owner.is_empty() {
            self.key.clone()
        } else {
            format!("{}:{}", self.owner, self.key)
        }
    }
}

/// Who asked for a command, and under which conditions.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// The id of this command; the causation id of the events it appends.
    pub command_id: Uuid,
    pub correlation_id: String,
    /// Who asked: the token's subject and client (`<sub>/<client>`).
    pub actor: String,
    /// Only this customer's baskets and orders may be touched; `None`:
    /// anyone's.
    pub owner: Option<domain::CustomerId>,
    pub traceparent: Option<String>,
    /// `If-Match`: apply only if the aggregate is at this version.
    pub expected_version: Option<usize>,
    pub idempotency: Option<IdempotencyKey>,
    /// When the command was received; the events' `occurred_at`.
    pub received_at: DateTime<Utc>,
}

impl CommandContext {
    #[must_use]
    pub fn new(correlation_id: impl Into<String>) -> Self {
        Self {
            command_id: Uuid::now_v7(),
            correlation_id: correlation_id.into(),
            actor: "anonymous".into(),
            owner: None,
            traceparent: None,
            expected_version: None,
            idempotency: None,
            received_at: Utc::now(),
        }
    }

    /// The metadata stored with one event of this command. Its
    /// `traceparent` names the command's span when spans are exported, so
    /// that whoever handles the event later (the relay, the projectors) is
    /// linked to this command; otherwise it is the client's, as received.
    pub(crate) fn metadata_for<E: DomainEvent>(&self, event: &E) -> HashMap<String, String> {
        let traceparent =
            telemetry::traceparent(&tracing::Span::current()).or_else(|| self.traceparent.clone());
        EventMetadata {
            event_id: Uuid::now_v7(),
            occurred_at: self.received_at,
            correlation_id: self.correlation_id.clone(),
            causation_id: self.command_id.to_string(),
            actor: self.actor.clone(),
            schema_version: event.event_version(),
            traceparent,
        }
        .to_map()
    }
}
