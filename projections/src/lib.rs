//! eshop's streaming side: the relay from the event store to Kafka, and the
//! projectors that turn events into read models.

pub mod event;
pub mod export;
pub mod position;
pub mod projector;
pub mod relay;
pub mod replay;
pub mod search;
pub mod status;
pub mod views;
