use domain::ErrorKind;
use domain::basket::BasketError;
use domain::order::OrderError;
use domain::product::ProductError;
use event_store::StoreError;

/// Why a command was not carried out. Nothing was appended.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// An aggregate refused the command.
    #[error("{message}")]
    Rejected {
        kind: ErrorKind,
        code: &'static str,
        message: String,
    },
    /// A value that must be unique is taken (a SKU).
    #[error("{field} '{value}' is already taken")]
    Duplicate { field: String, value: String },
    /// `If-Match` named another version than the aggregate's.
    #[error("version {expected} was expected but the current version is {current}")]
    StaleVersion { expected: usize, current: usize },
    /// `If-Match` named the version that was current when the command was
    /// decided, but another write committed first.
    #[error("version {expected} was expected but the aggregate was changed concurrently")]
    ChangedConcurrently { expected: usize },
    /// Concurrent writers kept winning until the retries ran out.
    #[error("the {resource} kept changing concurrently; try again")]
    ContentionExhausted { resource: &'static str },
    /// The idempotency key was used before for a different request.
    #[error("this idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    /// Another request with the same idempotency key is still in progress
    /// and did not finish within the wait.
    #[error(
        "a request with idempotency key '{key}' is still in progress; retry to get its outcome"
    )]
    IdempotencyKeyInProgress { key: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CommandError {
    /// A rejection about another aggregate than the one addressed (a
    /// product during checkout), prefixed with which one.
    pub(crate) fn about(self, subject: impl std::fmt::Display) -> Self {
        match self {
            Self::Rejected {
                kind,
                code,
                message,
            } => Self::Rejected {
                kind,
                code,
                message: format!("{subject}: {message}"),
            },
            other => other,
        }
    }
}

macro_rules! rejected_from {
    ($($error:ty),*) => {$(
        impl From<$error> for CommandError {
            fn from(error: $error) -> Self {
                Self::Rejected { kind: error.kind(), code: error.code(), message: error.to_string() }
            }
        }
    )*};
}

rejected_from!(ProductError, BasketError, OrderError);
