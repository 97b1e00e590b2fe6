//! Integration tests against the AWS emulator: one binary, one emulator.

mod api;
mod deploy_api;
mod deploys;
mod events;
mod example;
mod lock;
mod store;
