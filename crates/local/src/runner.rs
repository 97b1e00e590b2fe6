//! The local command runner: runs `slipway-agent` in each target
//! instance's directory (SSM Run Command's stand-in), collects exit codes
//! and output, and keeps the full output in the release bucket where SSM
//! would put it (`<app>/<env>/ssm-output/<id>/<instance>/stdout`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::FutureExt;
use slipway_control::runner::{
    AgentCommand, Cancel, Invocation, RunStatus, Runner, RunnerError, Runners,
};
use slipway_core::ids::DeployId;
use slipway_core::names::EnvRef;
use slipway_core::names::InstanceId;
use slipway_core::objects::{S3Objects, Write};

use super::fleet::{AgentSetup, LocalFleet};

const TAIL_LINES: usize = 20;
/// How long a command waits for its instance to be a local one.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

pub struct LocalRunner {
    pub fleet: LocalFleet,
    pub agent: AgentSetup,
    pub objects: S3Objects,
    pub output_prefix: String,
}

/// Local runners: each deploy's output goes under its prefix in the bucket.
#[derive(Clone)]
pub struct LocalRunners {
    pub fleet: LocalFleet,
    pub agent: AgentSetup,
    pub objects: S3Objects,
}

impl Runners for LocalRunners {
    type Runner = LocalRunner;
    fn for_deploy(&self, env: &EnvRef, id: &DeployId) -> LocalRunner {
        LocalRunner {
            fleet: self.fleet.clone(),
            agent: self.agent.clone(),
            objects: self.objects.clone(),
            output_prefix: slipway_core::keys::deploy_output_prefix(env, id),
        }
    }
}

fn invocation(
    instance: &InstanceId,
    status: RunStatus,
    code: Option<i32>,
    started: Instant,
    tail: String,
) -> Invocation {
    Invocation {
        instance: instance.clone(),
        status,
        exit_code: code,
        duration_ms: started.elapsed().as_millis() as u64,
        output_tail: tail,
        output_key: None,
    }
}

impl LocalRunner {
    async fn run_one(
        &self,
        id: &InstanceId,
        command: &AgentCommand,
        timeout: Duration,
        cancel: futures::future::Shared<Cancel<'_>>,
    ) -> Invocation {
        let started = Instant::now();
        // An instance the group just launched may not be a local one yet
        // (the fleet follows the group every moment): like SSM's delivery
        // timeout, give it a little while.
        let mut instance = self.fleet.instance(id);
        while instance.is_none() && started.elapsed() < DELIVERY_TIMEOUT {
            tokio::time::sleep(Duration::from_millis(100)).await;
            instance = self.fleet.instance(id);
        }
        let Some(instance) = instance else {
            return invocation(
                id,
                RunStatus::DeliveryTimedOut,
                None,
                started,
                "no such local instance".into(),
            );
        };
        let (action, url) = match command {
            AgentCommand::Deploy { release_url } => ("deploy", release_url),
            AgentCommand::ReleasePhase { release_url } => ("release-phase", release_url),
        };
        let child = self
            .agent
            .command(id, &instance)
            .args([action, url.as_str()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                return invocation(
                    id,
                    RunStatus::Undeliverable,
                    None,
                    started,
                    format!("could not start the agent: {e}"),
                );
            }
        };
        let (status, code, output) = tokio::select! {
            out = tokio::time::timeout(timeout, child.wait_with_output()) => match out {
                Ok(Ok(out)) => {
                    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                    text.push_str(&String::from_utf8_lossy(&out.stderr));
                    let code = out.status.code();
                    let status = if code == Some(0) { RunStatus::Success } else { RunStatus::Failed };
                    (status, code, text)
                }
                Ok(Err(e)) => (RunStatus::Failed, None, format!("the agent could not be waited for: {e}")),
                Err(_) => (RunStatus::TimedOut, None, "the agent did not finish in time and was stopped".into()),
            },
            () = cancel => (RunStatus::Cancelled, None, "cancelled".into()),
        };
        let key = format!("{}{id}/stdout", self.output_prefix);
        let stored = self
            .objects
            .put(
                &key,
                output.clone().into_bytes(),
                "text/plain",
                Write::Always,
            )
            .await
            .is_ok();
        let lines: Vec<&str> = output.lines().collect();
        let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
        let mut result = invocation(id, status, code, started, tail);
        result.output_key = stored.then_some(key);
        result
    }
}

impl Runner for LocalRunner {
    async fn run(
        &self,
        targets: &[InstanceId],
        command: &AgentCommand,
        timeout: Duration,
        cancel: Cancel<'_>,
    ) -> Result<Vec<Invocation>, RunnerError> {
        let cancel = cancel.shared();
        Ok(futures::future::join_all(
            targets
                .iter()
                .map(|id| self.run_one(id, command, timeout, cancel.clone())),
        )
        .await)
    }
}
