//! Slipway's core: the domain every binary shares, the agent on each
//! instance as much as the control plane. Parsed names and ids, config
//! vars, the Procfile, source archives, release manifests, environment
//! settings, the bucket's key layout, and the one S3 adapter both sides
//! read the bucket through. Nothing here knows about HTTP, Lambda or the
//! fleet; see DESIGN.md for the crate map.

pub mod archive;
pub mod config;
pub mod deploys;
pub mod env_settings;
pub mod errors;
pub mod extract;
pub mod ids;
pub mod keys;
pub mod maintenance;
pub mod manifest;
pub mod metric_names;
pub mod names;
pub mod objects;
pub mod on_first_use;
pub mod procfile;
pub mod settings;
pub mod strategy;
pub mod syslog;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
