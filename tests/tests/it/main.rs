//! Integration tests against the AWS emulator: one binary, one emulator.

mod agent_config;
mod api;
mod deploy_api;
mod deploys;
mod elb;
mod events;
mod example;
mod fleet;
mod lock;
mod rsyslog;
mod scaling;
mod ssm;
mod store;
mod templates;
