//! eshop's write side: command handlers over the event store and the REST
//! command API that exposes them.

pub mod auth;
pub mod commands;
pub mod config;
pub mod error;
pub mod extract;
pub mod input;
pub mod responses;
pub mod routes;
pub mod server;
pub mod startup;
pub mod telemetry;

pub use config::ServeConfig;
pub use startup::{Application, metrics_router, serve_metrics};
