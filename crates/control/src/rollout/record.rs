//! The deploy record, `<app>/<env>/deploys/<id>.json`: everything about one
//! deploy, rewritten after every step, read by the API, CLI, UI and chat
//! (and, through [`DeploySummary`](slipway_core::deploys::DeploySummary), by a
//! booting instance looking for the last good release).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Strategy;
use crate::runner::Invocation;
use slipway_core::deploys::DeployStatus;
use slipway_core::ids::DeployId;
use slipway_core::names::InstanceId;
use slipway_core::names::{AppName, EnvName, ReleaseId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub number: usize,
    pub instances: Vec<InstanceId>,
    pub status: BatchStatus,
    #[serde(default)]
    pub results: Vec<Invocation>,
    /// Instances the load balancer did not report healthy in time.
    #[serde(default)]
    pub unhealthy: Vec<InstanceId>,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// A surge batch: the capacity it raised, and the instances launched
    /// for it (which replace `instances`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surge: Option<Surge>,
}

/// What a surge batch did to the group, so that a worker taking over (or
/// the reconciler) neither raises it twice nor leaves it raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Surge {
    pub desired_before: i32,
    pub max_before: i32,
    /// The desired capacity it asked for.
    pub raised_to: i32,
    /// Every member of the group before it raised it: the new ones are the
    /// others.
    pub known: Vec<InstanceId>,
    /// The new instances that came up with the target, healthy.
    #[serde(default)]
    pub launched: Vec<InstanceId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRecord {
    pub id: DeployId,
    pub app: AppName,
    pub env: EnvName,
    pub user: String,
    pub from: Option<ReleaseId>,
    pub to: ReleaseId,
    pub strategy: Strategy,
    pub min_healthy_percent: u8,
    pub auto_rollback: bool,
    pub status: DeployStatus,
    /// Why it failed, was rolled back or cancelled.
    #[serde(default)]
    pub cause: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// How preparing the release on every instance went, before the
    /// first batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<Prepare>,
    #[serde(default)]
    pub release_phase: Option<Invocation>,
    #[serde(default)]
    pub batches: Vec<Batch>,
    /// The batch that put the previous release back, after a failure.
    #[serde(default)]
    pub rollback: Option<Batch>,
    /// Things worth knowing: instances that joined or vanished meanwhile.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The batches as planned, so a worker that takes over continues the
    /// same plan.
    #[serde(default)]
    pub plan: Vec<Vec<InstanceId>>,
    /// Workers that ran it so far (one per Lambda time budget).
    #[serde(default)]
    pub workers: u32,
    /// Set when a worker hands the rest to a fresh one.
    #[serde(default)]
    pub handed_off: bool,
    /// When the running worker last said it is alive (every save, and
    /// every heartbeat while a batch runs): long silence means it died.
    #[serde(default)]
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// The group's processes this deploy suspended, to resume at its end.
    #[serde(default)]
    pub suspended: Vec<String>,
    /// Batches bring new instances up first instead of taking old ones
    /// out (decided when the plan is made).
    #[serde(default)]
    pub surge: bool,
    /// The reconciler found the worker gone and asks the next one to roll
    /// back rather than go on.
    #[serde(default)]
    pub roll_back_requested: bool,
    /// Queued behind the job that holds the environment, in its queue.
    #[serde(default)]
    pub waiting: bool,
    /// Its place in the queue (1: next), as read with it; never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
}

/// Every instance installed the release at once (download, build) while
/// it served; the instances that could not, with their output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    pub instances: usize,
    #[serde(default)]
    pub failed: Vec<Invocation>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

impl DeployRecord {
    pub fn is_finished(&self) -> bool {
        self.finished_at.is_some()
    }
}
