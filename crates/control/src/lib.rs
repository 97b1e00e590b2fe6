//! Slipway's control plane, without its HTTP face: the release store on
//! S3, the deploy and cycle engines and the jobs they run as, the fleet and
//! command-runner ports with their AWS adapters, logs, metrics,
//! notifications and upload events. The Lambda functions and the local
//! platform drive it through `slipway-http`; see DESIGN.md.

pub mod aws;
pub mod backoff;
pub mod cycle;
pub mod events;
pub mod fleet;
pub mod jobs;
pub mod logs;
pub mod metrics;
pub mod queue;
pub mod reconcile;
pub mod rollout;
pub mod runner;
pub mod store;
pub mod workers;
