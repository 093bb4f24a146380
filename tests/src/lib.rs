//! The end-to-end test harness: a database per test, cloned from a
//! migrated template, and the application served on an ephemeral port.
//!
//! Tests need a running PostgreSQL (`TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`); without one they fail
//! with a message saying so, never skip.

mod app;
mod db;

pub use app::{TestApp, TestResponse};
pub use db::TestDb;
