//! The end-to-end test harness: a database per test, cloned from a
//! migrated template, and the application served on an ephemeral port.
//!
//! Streaming tests run on the event bus `TEST_EVENT_BUS` names (`kafka`,
//! the default, `rabbitmq` (`TEST_RABBITMQ_URL`, default the node
//! `scripts/setup` starts) or `none`). On Kafka they need Apache Kafka
//! (`TEST_KAFKA_BROKERS`, default `127.0.0.1:9092`; `scripts/setup` starts
//! a single node there), and the Kafka fault tests start clusters of their
//! own from the same installation.
//!
//! Search tests also need Elasticsearch or OpenSearch (`TEST_SEARCH_URL`,
//! default `http://127.0.0.1:9200`; `scripts/setup` starts OpenSearch
//! there).
//!
//! Every request carries a real access token from the identity provider
//! (`OIDC_ISSUER_URL`, default the local Keycloak's realm `eshop` that
//! `scripts/setup` starts); see [`auth`].
//!
//! Tests need a running PostgreSQL (`TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`); without one they fail
//! with a message saying so, never skip.

mod app;
pub mod auth;
pub mod bench;
pub mod bodies;
mod broker;
pub mod cache;
mod db;
pub mod fault;
pub mod graphql;
pub mod history;
pub mod jaeger;
mod kafka;
pub mod pgbench;
mod process;
pub mod rabbit;
mod rounds;
mod search;
mod streaming;
mod wait;

pub use app::{Caller, TestApp, TestResponse};
pub use broker::{Consumed, TEST_LANES, TestBroker, TestBus};
pub use db::TestDb;
pub use kafka::KafkaCluster;
pub use process::{EshopEnv, EshopProcess, ProcessStack, eshop_bin, free_port};
pub use rabbit::RabbitNode;
pub use rounds::Rounds;
pub use search::TestSearch;
pub use streaming::{start_projectors, start_projectors_cached, start_relay};
pub use wait::eventually;

/// Shows the projections' logs (info and above, other crates' warnings) in
/// the output of a failing test.
pub fn log_projections() {
    // Another test of the same binary may have set it up already.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,eshop_projections=info")
        .with_test_writer()
        .try_init();
}
