//! The end-to-end test harness: a database per test, cloned from a
//! migrated template, and the application served on an ephemeral port.
//!
//! Streaming tests also need a Kafka-protocol broker (`TEST_KAFKA_BROKERS`,
//! default `127.0.0.1:9092`; `scripts/setup` starts tansu there).
//!
//! Tests need a running PostgreSQL (`TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`); without one they fail
//! with a message saying so, never skip.

mod app;
mod broker;
mod db;
mod streaming;
mod wait;

pub use app::{TestApp, TestResponse};
pub use broker::{Consumed, TestBroker};
pub use db::TestDb;
pub use streaming::{start_projectors, start_relay};
pub use wait::eventually;
