//! The runner over SSM Run Command.
//!
//! One `SendCommand` of the `Slipway-Deploy` document per 50 instances (the
//! API's limit), its parameters typed (`Action`, `ReleaseUrl`; the
//! document's `allowedPattern` checks them again), a timeout, and the full
//! output written by SSM itself to the release bucket under the deploy's
//! `output/` prefix. Then `ListCommandInvocations` with details, polled
//! with a back-off (at most one poll every two seconds after the first ten)
//! until every instance is in a terminal state; a throttled poll just waits
//! longer. An instance that never answers by the deadline is cancelled and
//! reported `TimedOut`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::{CommandInvocation, CommandInvocationStatus};

use crate::runner::{
    AgentCommand, Cancel, Gone, Invocation, RunStatus, Runner, RunnerError, Runners,
};
use slipway_core::names::InstanceId;
use slipway_core::objects::S3Objects;

/// `SendCommand` takes at most this many instance ids.
pub const MAX_TARGETS: usize = 50;
/// SSM returns at most this much stdout inline; the rest is in S3.
const TAIL_LINES: usize = 20;

/// How often to poll: quickly at first, then backing off.
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    pub first: Duration,
    pub max: Duration,
    /// After this long, polls are at least `slow_min` apart.
    pub fast_for: Duration,
    pub slow_min: Duration,
}

impl Default for Polling {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(500),
            max: Duration::from_secs(10),
            fast_for: Duration::from_secs(10),
            slow_min: Duration::from_secs(2),
        }
    }
}

impl Polling {
    fn next(&self, current: Duration, elapsed: Duration) -> Duration {
        let doubled = (current * 2).min(self.max);
        if elapsed >= self.fast_for {
            doubled.max(self.slow_min)
        } else {
            doubled
        }
    }
}

pub struct SsmRunner {
    client: aws_sdk_ssm::Client,
    document: String,
    /// The bucket SSM writes the full output to, and reads it back from
    /// when the inline output was truncated.
    output: S3Objects,
    output_prefix: String,
    polling: Polling,
}

/// SSM runners of one document, their output in one bucket.
#[derive(Clone)]
pub struct SsmRunners {
    pub client: slipway_core::on_first_use::OnFirstUse<aws_sdk_ssm::Client>,
    pub document: String,
    pub output: S3Objects,
    pub polling: Polling,
}

impl Runners for SsmRunners {
    type Runner = SsmRunner;
    fn for_deploy(
        &self,
        env: &slipway_core::names::EnvRef,
        id: &slipway_core::ids::DeployId,
    ) -> SsmRunner {
        SsmRunner::new(
            (*self.client).clone(),
            &self.document,
            self.output.clone(),
            slipway_core::keys::deploy_output_prefix(env, id),
        )
        .with_polling(self.polling)
    }
}

impl SsmRunner {
    pub fn new(
        client: aws_sdk_ssm::Client,
        document: impl Into<String>,
        output: S3Objects,
        output_prefix: impl Into<String>,
    ) -> Self {
        Self {
            client,
            document: document.into(),
            output,
            output_prefix: output_prefix.into(),
            polling: Polling::default(),
        }
    }

    pub fn with_polling(mut self, polling: Polling) -> Self {
        self.polling = polling;
        self
    }

    async fn send(
        &self,
        targets: &[InstanceId],
        command: &AgentCommand,
        timeout: Duration,
    ) -> Result<String, RunnerError> {
        let (action, url) = command.action();
        let out = self
            .client
            .send_command()
            .document_name(&self.document)
            .set_instance_ids(Some(targets.iter().map(|t| t.to_string()).collect()))
            .parameters("Action", vec![action.to_owned()])
            .parameters("ReleaseUrl", vec![url.to_owned()])
            .timeout_seconds(timeout.as_secs().clamp(30, 2_592_000) as i32)
            .output_s3_bucket_name(self.output.bucket())
            .output_s3_key_prefix(&self.output_prefix)
            .comment(format!("slipway {action}"))
            .send()
            .await
            .map_err(|e| {
                RunnerError::Send(aws_sdk_ssm::error::DisplayErrorContext(e).to_string())
            })?;
        out.command()
            .and_then(|c| c.command_id())
            .map(str::to_owned)
            .ok_or_else(|| RunnerError::Send("SendCommand returned no command id".into()))
    }

    /// Every invocation of the command, with details. `Ok(None)` when the
    /// call was throttled and should simply be tried again later.
    async fn invocations(
        &self,
        command_id: &str,
    ) -> Result<Option<Vec<CommandInvocation>>, RunnerError> {
        let mut pages = self
            .client
            .list_command_invocations()
            .command_id(command_id)
            .details(true)
            .into_paginator()
            .send();
        let mut all = Vec::new();
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => all.extend(page.command_invocations().iter().cloned()),
                Err(e) if is_throttling(e.code()) => return Ok(None),
                Err(e) => {
                    return Err(RunnerError::Poll(
                        aws_sdk_ssm::error::DisplayErrorContext(e).to_string(),
                    ));
                }
            }
        }
        Ok(Some(all))
    }

    async fn cancel(&self, command_id: &str, ids: &[InstanceId]) {
        let result = self
            .client
            .cancel_command()
            .command_id(command_id)
            .set_instance_ids(Some(ids.iter().map(|i| i.to_string()).collect()))
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(command = command_id, error = %aws_sdk_ssm::error::DisplayErrorContext(e), "could not cancel");
        }
    }

    async fn follow(
        &self,
        command_id: &str,
        targets: &[InstanceId],
        timeout: Duration,
        gone: &Gone,
    ) -> Result<Vec<Invocation>, RunnerError> {
        let started = Instant::now();
        // The agent's own timeout, plus time for delivery and reporting.
        let deadline = timeout + Duration::from_secs(60).min(timeout);
        let mut done: BTreeMap<InstanceId, Invocation> = BTreeMap::new();
        let mut wait = self.polling.first;
        loop {
            tokio::time::sleep(wait).await;
            if let Some(invocations) = self.invocations(command_id).await? {
                for inv in invocations {
                    let Some(mut result) = terminal(&inv, self.output.bucket()) else {
                        continue;
                    };
                    if targets.contains(&result.instance) && !done.contains_key(&result.instance) {
                        if result.output_tail.ends_with(TRUNCATED) {
                            self.read_full_tail(&mut result).await;
                        }
                        done.insert(result.instance.clone(), result);
                    }
                }
            }
            let vanished: Vec<InstanceId> = {
                let gone = gone.lock().unwrap_or_else(|e| e.into_inner());
                targets
                    .iter()
                    .filter(|t| !done.contains_key(*t) && gone.contains(*t))
                    .cloned()
                    .collect()
            };
            if !vanished.is_empty() {
                self.cancel(command_id, &vanished).await;
                for instance in vanished {
                    let ended = unfinished(
                        instance,
                        RunStatus::Vanished,
                        started,
                        "it left the group while the command ran",
                    );
                    done.insert(ended.instance.clone(), ended);
                }
            }
            if done.len() == targets.len() {
                break;
            }
            if started.elapsed() >= deadline {
                let pending: Vec<InstanceId> = targets
                    .iter()
                    .filter(|t| !done.contains_key(*t))
                    .cloned()
                    .collect();
                self.cancel(command_id, &pending).await;
                for instance in pending {
                    let ended = unfinished(
                        instance,
                        RunStatus::TimedOut,
                        started,
                        "no result before the deadline; the command was cancelled",
                    );
                    done.insert(ended.instance.clone(), ended);
                }
                break;
            }
            wait = self.polling.next(wait, started.elapsed());
        }
        Ok(targets.iter().filter_map(|t| done.remove(t)).collect())
    }
}

/// The result of an invocation the runner stopped waiting for.
fn unfinished(instance: InstanceId, status: RunStatus, started: Instant, why: &str) -> Invocation {
    Invocation {
        instance,
        status,
        exit_code: None,
        duration_ms: started.elapsed().as_millis() as u64,
        output_tail: why.into(),
        output_key: None,
    }
}

/// How SSM ends inline output it cut short.
const TRUNCATED: &str = "---Output truncated---";

impl SsmRunner {
    /// SSM keeps only the first 2,500 characters of a plugin's output
    /// inline, and the agent's summary comes last: read the tail from the
    /// full output in the bucket. Keeps the inline text if that fails.
    async fn read_full_tail(&self, result: &mut Invocation) {
        let Some(key) = result.output_key.clone() else {
            return;
        };
        match self.output.get(&key).await {
            Ok(Some(object)) => result.output_tail = tail(&String::from_utf8_lossy(&object.body)),
            Ok(None) => tracing::warn!(key, "the full SSM output is missing"),
            Err(e) => tracing::warn!(key, error = %e, "could not read the full SSM output"),
        }
    }
}

fn tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// The key in `bucket` of an SSM output URL
/// (`https://s3.<region>.amazonaws.com/<bucket>/<key>`, or the bucket as
/// the host's first label).
fn output_key(url: &str, bucket: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let (host, path) = rest.split_once('/')?;
    let key = if host.starts_with(&format!("{bucket}.")) {
        path
    } else {
        path.strip_prefix(bucket)?.strip_prefix('/')?
    };
    (!key.is_empty()).then(|| key.to_owned())
}

fn is_throttling(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ThrottlingException"
                | "Throttling"
                | "TooManyRequestsException"
                | "RequestLimitExceeded"
        )
    )
}

/// The result of a finished invocation; `None` while it still runs.
fn terminal(inv: &CommandInvocation, bucket: &str) -> Option<Invocation> {
    let instance = InstanceId::parse(inv.instance_id()?).ok()?;
    let status = match (inv.status()?, inv.status_details()) {
        (_, Some("Undeliverable")) => RunStatus::Undeliverable,
        (_, Some("DeliveryTimedOut")) => RunStatus::DeliveryTimedOut,
        (CommandInvocationStatus::Success, _) => RunStatus::Success,
        (CommandInvocationStatus::Failed, _) => RunStatus::Failed,
        (CommandInvocationStatus::TimedOut, _) => RunStatus::TimedOut,
        (CommandInvocationStatus::Cancelled, _) => RunStatus::Cancelled,
        _ => return None,
    };
    let plugin = inv.command_plugins().first();
    let output = plugin.and_then(|p| p.output()).unwrap_or_default();
    let tail = tail(output);
    let duration_ms = match (
        plugin.and_then(|p| p.response_start_date_time()),
        plugin.and_then(|p| p.response_finish_date_time()),
    ) {
        (Some(a), Some(b)) => ((b.as_secs_f64() - a.as_secs_f64()).max(0.0) * 1000.0) as u64,
        _ => 0,
    };
    Some(Invocation {
        instance,
        status,
        exit_code: plugin.map(|p| p.response_code()).filter(|c| *c >= 0),
        duration_ms,
        output_tail: tail,
        output_key: plugin
            .and_then(|p| p.standard_output_url())
            .or(inv.standard_output_url())
            .and_then(|url| output_key(url, bucket)),
    })
}

/// How long cancelled invocations have to report how they ended.
const AFTER_CANCEL: Duration = Duration::from_secs(30);

impl SsmRunner {
    async fn follow_all(
        &self,
        sent: &[(String, &[InstanceId])],
        timeout: Duration,
        gone: &Gone,
    ) -> Result<Vec<Invocation>, RunnerError> {
        let mut results = Vec::new();
        for (command_id, chunk) in sent {
            results.extend(self.follow(command_id, chunk, timeout, gone).await?);
        }
        Ok(results)
    }
}

impl Runner for SsmRunner {
    async fn run(
        &self,
        targets: &[InstanceId],
        command: &AgentCommand,
        timeout: Duration,
        cancel: Cancel<'_>,
        gone: &Gone,
    ) -> Result<Vec<Invocation>, RunnerError> {
        let mut sent = Vec::new();
        for chunk in targets.chunks(MAX_TARGETS) {
            sent.push((self.send(chunk, command, timeout).await?, chunk));
        }
        let finished = tokio::select! {
            results = self.follow_all(&sent, timeout, gone) => Some(results),
            () = cancel => None,
        };
        if let Some(results) = finished {
            return results;
        }
        for (command_id, chunk) in &sent {
            self.cancel(command_id, chunk).await;
        }
        self.follow_all(&sent, AFTER_CANCEL, gone).await
    }
}

#[cfg(test)]
#[path = "ssm_tests.rs"]
mod tests;
