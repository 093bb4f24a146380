//! eshop's streaming side: the relay from the event store to Kafka, and the
//! projectors that turn events into read models.

pub mod export;
pub mod position;
pub mod projector;
pub mod relay;
pub mod replay;
pub mod search;
pub mod status;

pub use read_models as views;
/// The read models and the events they fold (their own crate, which the
/// query side uses without this crate's Kafka runtime).
pub use read_models::event;
