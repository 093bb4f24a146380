//! The small set of error kinds every domain error maps to. Adapters (REST,
//! GraphQL) turn a kind into a status or code in one place each.

/// What kind of rule a rejected command broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The command's data is invalid whatever the aggregate's state.
    Validation,
    /// The command is not allowed in the aggregate's current state.
    InvalidState,
    /// Something the command refers to does not exist.
    NotFound,
}
