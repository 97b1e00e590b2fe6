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
}

impl DeployRecord {
    pub fn is_finished(&self) -> bool {
        self.finished_at.is_some()
    }
}
