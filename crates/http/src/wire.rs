//! The HTTP API's contract: every request and answer body, shared by the
//! handlers that send them and by `ship`, which reads them back. The JSON
//! field names are the API's; scripts that read it keep working. Records
//! the control plane stores (deploys, cycles, manifests) travel as they
//! are stored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use slipway_control::cycle::{CycleRecord, ScaleRecord, Termination};
use slipway_control::fleet::Formation;
use slipway_control::jobs::Lock;
use slipway_control::metrics::Series;
use slipway_control::rollout::DeployRecord;
use slipway_core::archive::ArchiveFormat;
use slipway_core::config::DiffEntry;
use slipway_core::deploys::DeployStatus;
use slipway_core::ids::{CycleId, DeployId};
use slipway_core::manifest::Manifest;
use slipway_core::names::{AppName, EnvName, ReleaseId};
use slipway_core::strategy::Strategy;

pub use slipway_control::cycle::ScaleRequest;
pub use slipway_control::logs::{LogEvent, LogPage};
pub use slipway_control::store::{UploadStatus, UploadTicket};

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
}

/// Every error: what went wrong, in words, and a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
}

/// What a slash command is answered with: a message shown only to its
/// sender, or a refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SlackAnswer {
    Message(SlackMessage),
    Refused(ErrorBody),
}

/// A Slack message (`response_type` `ephemeral` or `in_channel`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlackMessage {
    pub response_type: String,
    pub text: String,
}

// --- releases and config (the release function) ---

/// `POST …/releases`: ask for an upload URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ArchiveFormat>,
}

/// `GET …/releases`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseList {
    pub releases: Vec<Manifest>,
    /// Pass as `before` for the next page.
    pub next: Option<ReleaseId>,
}

/// `GET …/config`: the vars (values masked unless `reveal=true`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigAnswer {
    pub config: BTreeMap<String, String>,
    pub sha256: String,
}

/// `PATCH …/config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigPatch {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unset: Vec<String>,
}

/// What a config change did: the release it made (if the environment had
/// one to build on), the diff and the config now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChanged {
    pub release: Option<Manifest>,
    pub diff: Vec<DiffEntry>,
    pub config: BTreeMap<String, String>,
}

/// `POST …/releases/{id}/promote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    pub to: String,
}

// --- deploys (the deploy function) ---

/// `POST …/deploys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<bool>,
    /// Wait in the environment's queue when another job holds it (else
    /// the settings' `queue` decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<bool>,
}

/// `POST …/rollback`: to `release`, or the previous good one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseId>,
    /// As for a deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<bool>,
}

/// 202 to a deploy or rollback: it is queued and its worker launched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployAccepted {
    pub id: DeployId,
    /// The deploy's path under the API.
    pub url: String,
    pub deploy: DeployRecord,
}

/// `GET …/deploys`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployList {
    pub deploys: Vec<DeployRecord>,
}

/// `GET …/rollback`: what a rollback would do now, from `current` to the
/// newest release a deploy succeeded with other than it (`None`: nothing
/// to roll back to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackTarget {
    pub from: Option<slipway_core::names::ReleaseId>,
    pub to: Option<slipway_core::names::ReleaseId>,
}

/// `POST …/deploys/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployCancelled {
    pub deploy: DeployRecord,
    pub note: String,
}

// --- cycles, scaling, termination (the cycle function) ---

/// `POST …/instances/{id}/cycle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleAnswer {
    pub cycle: CycleRecord,
}

/// `POST …/cycle`: the cycle of every instance (an empty body is `{}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CycleRequest {
    /// Wait in the environment's queue when another job holds it (else
    /// the settings' `queue` decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<bool>,
}

/// 202 to `POST …/cycle`: the cycle of every instance is started, or waits
/// its turn (`cycle.waiting`, `cycle.queue_position`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleAccepted {
    pub id: CycleId,
    pub url: String,
    pub cycle: CycleRecord,
}

/// `GET …/cycles`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleList {
    pub cycles: Vec<CycleRecord>,
}

/// `POST …/cycles/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleCancelled {
    pub cycle: CycleRecord,
    pub note: String,
}

/// `PATCH …/scale`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleAnswer {
    pub scale: ScaleRecord,
}

/// 202 to `DELETE /apps/{app}/envs/{env}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminated {
    pub terminated: Termination,
}

/// `PUT` and `DELETE …/maintenance`: maintenance mode as it now is (`None`: off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceAnswer {
    pub maintenance: Option<slipway_core::maintenance::Maintenance>,
}

// --- apps and formation (the formation function) ---

/// `GET /apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppList {
    pub apps: Vec<AppSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSummary {
    pub name: AppName,
    pub envs: Vec<EnvSummary>,
}

/// An environment in the app list: its release and its last deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvSummary {
    pub name: EnvName,
    pub current: Option<ReleaseId>,
    pub last_deploy: Option<LastDeploy>,
    /// Torn down (its records stay in the bucket).
    pub terminated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastDeploy {
    pub id: DeployId,
    pub to: ReleaseId,
    pub status: DeployStatus,
    pub user: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<&DeployRecord> for LastDeploy {
    fn from(d: &DeployRecord) -> Self {
        Self {
            id: d.id.clone(),
            to: d.to,
            status: d.status,
            user: d.user.clone(),
            created_at: d.created_at,
            finished_at: d.finished_at,
        }
    }
}

/// `GET /apps/{app}/envs/{env}`: the formation, with the job that holds
/// the environment, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub app: AppName,
    pub env: EnvName,
    pub current: Option<ReleaseId>,
    pub formation: Option<Formation>,
    /// Each instance's recent CPU and memory, by instance id.
    #[serde(default)]
    pub metrics: BTreeMap<String, Series>,
    pub lock: Option<Lock>,
    /// The running deploy, when a deploy holds the lock.
    pub deploy: Option<DeployRecord>,
    /// The running cycle, when a cycle holds the lock.
    pub cycle: Option<CycleRecord>,
}
