/// A failure to read from or write to the event store that is not the
/// caller's doing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("event store query failed: {0}")]
    Database(#[source] sqlx::Error),
    #[error("stored {what} could not be decoded: {source}")]
    Decode {
        what: String,
        source: serde_json::Error,
    },
    /// A stored column that is not what the store writes there.
    #[error("stored {what} is invalid: {value:?}")]
    Invalid { what: &'static str, value: String },
    #[error("event could not be encoded: {0}")]
    Encode(#[source] serde_json::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            Self::Unavailable(error)
        } else {
            Self::Database(error)
        }
    }
}

/// Why a unit of work was not committed. Nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another writer appended to one of the aggregates since it was loaded.
    #[error("{aggregate_type} {aggregate_id} was changed concurrently")]
    Conflict {
        aggregate_type: String,
        aggregate_id: String,
    },
    /// A unique value (a SKU, say) is already claimed by another aggregate.
    #[error("{scope} '{value}' is already taken")]
    Duplicate { scope: String, value: String },
    /// The request no longer holds its claim on the idempotency key: the
    /// claim lapsed and another request took the key.
    #[error("idempotency key claimed by another request")]
    IdempotencyKeyTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) fn is_unavailable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
    )
}

/// The name of the unique constraint a statement violated, if that is why it
/// failed.
pub(crate) fn violated_constraint(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            db.constraint().or(Some(""))
        }
        _ => None,
    }
}
