//! The rollout engine and its building blocks: batch plans, the
//! environment lock, the deploy record, and the engine itself, written
//! against the fleet, runner and deploy-log ports.

pub mod engine;
mod good;
pub mod notify;
pub mod plan;
pub mod queue;
pub mod record;
pub mod service;
mod standby;
mod surge;

pub use engine::{DeployLog, Engine, Options};
pub use plan::{PlanError, Strategy, plan};
pub use record::{Batch, BatchStatus, DeployRecord, Prepare};
pub use service::{DeployError, Deploys, S3DeployLog, StartDeploy, run_queued};
pub use surge::undo as undo_surge;
