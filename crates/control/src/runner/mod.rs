//! The command-runner port: run the agent on instances and collect each
//! one's outcome. SSM Run Command in AWS (document `Slipway-Deploy`); a
//! local process on the local platform. Commands are typed: the runner
//! passes a release URL as a document parameter, never a shell string.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use slipway_core::names::InstanceId;

/// What the agent is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum AgentCommand {
    Deploy {
        release_url: String,
    },
    /// Install without switching: every instance at once, before the
    /// first batch, while they serve.
    Prepare {
        release_url: String,
    },
    ReleasePhase {
        release_url: String,
    },
}

impl AgentCommand {
    /// The document's `Action` (the agent's subcommand) and release URL.
    pub fn action(&self) -> (&'static str, &str) {
        match self {
            Self::Deploy { release_url } => ("deploy", release_url),
            Self::Prepare { release_url } => ("prepare", release_url),
            Self::ReleasePhase { release_url } => ("release-phase", release_url),
        }
    }
}

/// How one instance's run ended (SSM's terminal statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Success,
    Failed,
    TimedOut,
    Cancelled,
    Undeliverable,
    DeliveryTimedOut,
    /// It left the group while the command ran (terminated, scaled in):
    /// nothing to wait for, and not a failure of the release.
    Vanished,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    pub instance: InstanceId,
    pub status: RunStatus,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The last lines of the agent's output.
    pub output_tail: String,
    /// Where the full output is, when it was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_key: Option<String>,
}

impl Invocation {
    pub fn succeeded(&self) -> bool {
        self.status == RunStatus::Success && self.exit_code == Some(0)
    }
}

/// Makes each deploy's runner: the agent's full output of a deploy goes
/// under that deploy's prefix in the bucket.
pub trait Runners: Send + Sync + 'static {
    type Runner: Runner + Send + Sync;
    fn for_deploy(
        &self,
        env: &slipway_core::names::EnvRef,
        id: &slipway_core::ids::DeployId,
    ) -> Self::Runner;
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("could not run the agent: {0}")]
    Send(String),
    #[error("could not follow the command: {0}")]
    Poll(String),
}

/// Resolves when the run should stop: the deploy was cancelled.
pub type Cancel<'a> = futures::future::BoxFuture<'a, ()>;

/// Instances that left the group while a run waits for them: the runner
/// stops waiting for each one it finds here at its next poll (cancelling
/// its command) and reports it [`RunStatus::Vanished`].
pub type Gone = std::sync::Mutex<std::collections::BTreeSet<InstanceId>>;

/// A [`Cancel`] that never fires.
pub fn never<'a>() -> Cancel<'a> {
    Box::pin(std::future::pending())
}

pub trait Runner: Sync {
    /// Runs `command` on every instance of `targets` and waits for all of
    /// them (or `timeout`). When `cancel` fires first, the runs still going
    /// are cancelled and reported as they ended (`Cancelled`, mostly).
    fn run(
        &self,
        targets: &[InstanceId],
        command: &AgentCommand,
        timeout: Duration,
        cancel: Cancel<'_>,
        gone: &Gone,
    ) -> impl Future<Output = Result<Vec<Invocation>, RunnerError>> + Send;
}
