//! Slipway's shared crate: everything the Lambda functions, the agent and the
//! CLI have in common. Binaries stay thin; the logic lives here, one module
//! per concept.

pub mod archive;
pub mod chat;
pub mod config;
pub mod cycle;
pub mod deploys;
pub mod env_settings;
pub mod names;
pub mod notify;
pub mod procfile;
pub mod rollout;
pub mod syslog;

pub mod api;
pub mod auth;
pub mod aws;
pub mod events;
pub mod extract;
pub mod fleet;
pub mod lambda;
pub mod logs;
pub mod metrics;
pub mod runner;
pub mod settings;
pub mod store;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod web;
