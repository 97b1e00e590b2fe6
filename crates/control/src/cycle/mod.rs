//! Cycling, scaling and terminating an environment's instances: what the
//! cycle function does.
//!
//! Cycling replaces instances: the group terminates one (without lowering
//! its desired capacity) and launches a replacement, which boots the
//! environment's `current` release. Cycling one instance is immediate.
//! Cycling all of them (after a base-image change) is health-gated and
//! long: one instance at a time, each replacement InService, tagged with
//! the current release and healthy in every target group before the next
//! goes; it holds the environment lock like a deploy and runs in a
//! launched worker that hands over to a fresh one before the Lambda time
//! limit. Records live in `<app>/<env>/cycles/<id>.json`, scalings in
//! `<app>/<env>/scales/<id>.json`.

pub mod engine;
mod service;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use engine::CycleOptions;
pub use service::{
    CycleError, Cycles, S3CycleLog, ScaleRecord, ScaleRequest, Termination, run_queued_cycle,
    termination_key,
};

use slipway_core::ids::CycleId;
use slipway_core::names::InstanceId;
use slipway_core::names::{AppName, EnvName};

pub use slipway_core::keys::{cycles_prefix, scales_prefix};

/// How a cycle ended (or that it has not yet). Stored with the same words
/// as a deploy's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CycleStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// A status this build does not know yet.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CycleMode {
    /// One instance, terminated at once.
    One,
    /// Every instance, one at a time, health-gated.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    /// Terminated; waiting for its replacement.
    Replacing,
    Replaced,
    /// Terminated (a single cycle does not wait for the replacement).
    Terminated,
    /// Gone before its turn (scaled in, replaced by the group).
    Vanished,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleStep {
    pub instance: InstanceId,
    pub status: StepStatus,
    #[serde(default)]
    pub replacement: Option<InstanceId>,
    /// The group's other instances when this one was terminated: the
    /// replacement is the one that was not among them.
    #[serde(default)]
    pub others: Vec<InstanceId>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

impl CycleStep {
    pub fn pending(instance: InstanceId) -> Self {
        Self {
            instance,
            status: StepStatus::Pending,
            replacement: None,
            others: Vec::new(),
            started_at: None,
            finished_at: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleRecord {
    pub id: CycleId,
    pub app: AppName,
    pub env: EnvName,
    pub user: String,
    pub mode: CycleMode,
    pub status: CycleStatus,
    /// The release replacements must come up with (`current` at the start).
    #[serde(default)]
    pub release: Option<String>,
    pub steps: Vec<CycleStep>,
    #[serde(default)]
    pub cause: Option<String>,
    #[serde(default)]
    pub notes: Vec<String>,
    /// Workers that ran it so far (one per Lambda time budget).
    #[serde(default)]
    pub workers: u32,
    /// Set when a worker hands the rest to a fresh one.
    #[serde(default)]
    pub handed_off: bool,
    /// When the running worker last said it is alive.
    #[serde(default)]
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// The group's processes this cycle suspended, to resume at its end.
    #[serde(default)]
    pub suspended: Vec<String>,
    /// Queued behind the job that holds the environment, in its queue.
    #[serde(default)]
    pub waiting: bool,
    /// Its place in the queue (1: next), as read with it; never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

impl CycleRecord {
    pub fn is_finished(&self) -> bool {
        self.finished_at.is_some()
    }
}

impl crate::jobs::JobRecord for CycleRecord {
    fn resumable(&self) -> bool {
        (self.status == CycleStatus::Queued && !self.waiting)
            || (self.status == CycleStatus::Running && self.handed_off)
    }

    fn is_finished(&self) -> bool {
        CycleRecord::is_finished(self)
    }

    fn take_up(&mut self) {
        self.status = CycleStatus::Running;
        self.handed_off = false;
        self.workers += 1;
    }

    fn heartbeat_at(&self) -> DateTime<Utc> {
        self.heartbeat_at.unwrap_or(self.created_at)
    }

    fn beat(&mut self, now: DateTime<Utc>) {
        self.heartbeat_at = Some(now);
    }

    fn user(&self) -> &str {
        &self.user
    }

    fn waiting(&self) -> bool {
        self.waiting
    }

    fn set_waiting(&mut self, waiting: bool) {
        self.waiting = waiting;
    }

    fn end_unrun(&mut self, failed: bool, cause: &str, now: DateTime<Utc>) {
        self.waiting = false;
        self.status = if failed {
            CycleStatus::Failed
        } else {
            CycleStatus::Cancelled
        };
        self.cause = Some(cause.to_owned());
        self.finished_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_status_this_build_does_not_know_still_reads() {
        let s: CycleStatus = serde_json::from_str("\"paused\"").unwrap();
        assert_eq!(s, CycleStatus::Unknown);
        assert_eq!(
            serde_json::to_string(&CycleStatus::Cancelled).unwrap(),
            "\"cancelled\""
        );
    }
}
