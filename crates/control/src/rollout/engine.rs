//! The rollout engine: one deploy, from a locked environment to a finished
//! record. Written once against the fleet, runner and deploy-log ports, so
//! the Lambda worker and the local platform run the very same code.
//!
//! Steps: move `current` to the target (instances launched meanwhile boot
//! it); run the release phase on one instance; plan batches; for each
//! batch, take it out of the load balancer, run the agent, put it back and
//! wait for the load balancer to call it healthy. The first failed batch
//! stops the deploy; with auto-rollback the instances already moved get the
//! previous release back and `current` returns to it. The record is saved
//! after every step; a cancel request stops before the next batch.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use chrono::Utc;

use super::plan;
use super::record::{Batch, BatchStatus, DeployRecord};
use crate::fleet::{Fleet, InstanceId};
use crate::jobs::{JobError, JobLog};
use crate::runner::{AgentCommand, Cancel, RunStatus, Runner};
use slipway_core::deploys::DeployStatus;
use slipway_core::names::{EnvRef, ReleaseId};

/// Where the engine keeps what it does: the job's record and lock, and
/// `current`.
pub trait DeployLog: JobLog<DeployRecord> {
    fn set_current(
        &self,
        env: &EnvRef,
        id: ReleaseId,
    ) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// Timeouts and what the release needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run the Procfile's `release:` before the first batch.
    pub release_phase: bool,
    /// How long the agent may take on one batch.
    pub agent_timeout: Duration,
    /// How long the load balancer has to call a batch healthy.
    pub health_timeout: Duration,
    /// How often a running batch looks for a cancel request.
    pub cancel_poll: Duration,
    /// After this long a worker starts no further batch and hands the
    /// rest to a fresh one (a Lambda invocation ends at 15 minutes).
    pub budget: Duration,
}

impl Options {
    /// The environment's timeouts for a deploy; `release_phase` when the
    /// target release's Procfile has a `release:` command.
    pub fn from_settings(
        settings: &slipway_core::env_settings::EnvSettings,
        release_phase: bool,
    ) -> Self {
        Self {
            release_phase,
            // Build and health on the instance, plus fetching and starting.
            agent_timeout: Duration::from_secs(
                settings.build_timeout_secs + settings.health_timeout_secs + 120,
            ),
            health_timeout: Duration::from_secs(settings.lb_health_timeout_secs),
            cancel_poll: Duration::from_secs(5),
            budget: Duration::MAX,
        }
    }

    /// A worker with `time_left` stops starting batches when a whole one
    /// (agent and load balancer) might not fit any more.
    pub fn within(mut self, time_left: Option<Duration>) -> Self {
        self.budget = crate::jobs::budget(
            time_left,
            self.agent_timeout + self.health_timeout,
            Duration::ZERO,
            Duration::ZERO,
        );
        self
    }
}

pub use slipway_core::keys::release_url;

pub struct Engine<'a, F, R, L> {
    pub fleet: &'a F,
    pub runner: &'a R,
    pub log: &'a L,
    /// The release URL the agent is given for a release of this environment.
    pub release_url: &'a (dyn Fn(ReleaseId) -> String + Sync),
    pub options: Options,
}

/// Instances whose agent moved them to the target (a failed agent has
/// already gone back by itself).
fn moved(record: &DeployRecord) -> Vec<InstanceId> {
    record
        .batches
        .iter()
        .flat_map(|b| {
            b.results
                .iter()
                .filter(|r| r.succeeded())
                .map(|r| r.instance.clone())
        })
        .collect()
}

enum Outcome {
    Ok,
    Failed(String),
    /// This worker's time is up; a fresh one continues.
    HandOff,
}

impl<F: Fleet, R: Runner, L: DeployLog> Engine<'_, F, R, L> {
    /// Fires when someone asks to cancel the deploy: the runner then
    /// cancels the batch's command.
    fn cancel_watch<'b>(&'b self, record: &DeployRecord) -> Cancel<'b> {
        let record = record.clone();
        Box::pin(async move {
            loop {
                tokio::time::sleep(self.options.cancel_poll).await;
                if self.log.cancel_requested(&record).await {
                    return;
                }
            }
        })
    }

    async fn save(&self, record: &DeployRecord) {
        if let Err(e) = self.log.save(record).await {
            tracing::warn!(deploy = %record.id, error = %e, "could not save the deploy record");
        }
    }

    /// Runs the deploy to its end and returns the final record.
    pub async fn run(&self, mut record: DeployRecord) -> DeployRecord {
        let env = EnvRef {
            app: record.app.clone(),
            env: record.env.clone(),
        };
        // A fresh deploy has no plan yet; one handed over has it stored
        // (the claim already took it out of `handed_off`, so that a second
        // delivery of the hand-off finds it taken).
        let resuming = !record.plan.is_empty();
        record.handed_off = false;
        record.status = DeployStatus::Running;
        self.save(&record).await;
        let mut outcome = self.deploy(&env, &mut record, resuming).await;
        if let Outcome::HandOff = outcome {
            record.handed_off = true;
            self.save(&record).await;
            match self.log.hand_off(&record).await {
                // The lock stays: the next worker holds it on.
                Ok(()) => return record,
                Err(e) => {
                    record.handed_off = false;
                    outcome =
                        Outcome::Failed(format!("could not hand over to a fresh worker: {e}"));
                }
            }
        }
        match outcome {
            Outcome::HandOff => unreachable!("handled above"),
            Outcome::Ok if record.status == DeployStatus::Running => {
                record.status = DeployStatus::Succeeded;
            }
            Outcome::Ok => {}
            Outcome::Failed(cause) => {
                record.cause = Some(cause);
                record.status = DeployStatus::Failed;
                if moved(&record).is_empty() {
                    // Nothing changed on any instance (a failed agent goes
                    // back by itself): only `current` moved. After a batch
                    // ran, putting it back is the auto-rollback.
                    let restored = self.restore_current(&env, &mut record).await;
                    if restored && record.auto_rollback && !record.batches.is_empty() {
                        record.status = DeployStatus::RolledBack;
                    }
                } else if record.auto_rollback {
                    self.roll_back(&env, &mut record).await;
                }
            }
        }
        record.finished_at = Some(Utc::now());
        self.save(&record).await;
        self.log.release_lock().await;
        record
    }

    async fn deploy(&self, env: &EnvRef, record: &mut DeployRecord, resuming: bool) -> Outcome {
        let started = std::time::Instant::now();
        let batches = if resuming {
            record.plan.clone()
        } else {
            match self.prepare(env, record).await {
                Ok(b) => b,
                Err(cause) => return Outcome::Failed(cause),
            }
        };
        let known: BTreeSet<InstanceId> = batches.iter().flatten().cloned().collect();
        let mut ran = false;
        for (number, planned) in batches.into_iter().enumerate() {
            let done = record
                .batches
                .iter()
                .any(|b| b.number == number + 1 && b.status == BatchStatus::Succeeded);
            if done {
                continue;
            }
            // Every worker runs at least one batch, so each makes progress.
            if ran && started.elapsed() >= self.options.budget {
                return Outcome::HandOff;
            }
            ran = true;
            if let Some(outcome) = self.next_batch(env, record, number, planned, &known).await {
                return outcome;
            }
        }
        Outcome::Ok
    }

    /// Moves `current`, plans the batches and runs the release phase.
    async fn prepare(
        &self,
        env: &EnvRef,
        record: &mut DeployRecord,
    ) -> Result<Vec<Vec<InstanceId>>, String> {
        if let Err(e) = self.log.set_current(env, record.to).await {
            return Err(format!("could not move current to {}: {e}", record.to));
        }
        let instances = match self.fleet.in_service(env).await {
            Ok(i) => i,
            Err(e) => return Err(e.to_string()),
        };
        let batches = plan(&instances, record.strategy, record.min_healthy_percent)
            .map_err(|e| e.to_string())?;
        if self.options.release_phase
            && let Some(first) = instances.first()
        {
            let command = AgentCommand::ReleasePhase {
                release_url: (self.release_url)(record.to),
            };
            match self
                .runner
                .run(
                    std::slice::from_ref(first),
                    &command,
                    self.options.agent_timeout,
                    self.cancel_watch(record),
                )
                .await
            {
                Ok(mut results) if !results.is_empty() => {
                    let result = results.remove(0);
                    let ok = result.succeeded();
                    record.release_phase = Some(result);
                    self.save(record).await;
                    if !ok {
                        return Err("the release phase failed".into());
                    }
                }
                Ok(_) => return Err("the release phase reported nothing".into()),
                Err(e) => return Err(e.to_string()),
            }
        }
        record.plan = batches.clone();
        Ok(batches)
    }

    /// Batch `number` (0-based) of the plan; `Some` when the deploy ends.
    async fn next_batch(
        &self,
        env: &EnvRef,
        record: &mut DeployRecord,
        number: usize,
        planned: Vec<InstanceId>,
        known: &BTreeSet<InstanceId>,
    ) -> Option<Outcome> {
        if self.log.cancel_requested(record).await {
            record.status = DeployStatus::Cancelled;
            record.cause = Some(format!("cancelled before batch {}", number + 1));
            return Some(Outcome::Ok);
        }
        if let Err(e) = self.log.renew_lock().await {
            return Some(Outcome::Failed(format!(
                "the environment lock was lost: {e}"
            )));
        }
        // The group may have changed since the plan: skip the vanished,
        // note the new (they boot `current`, which is the target).
        let now: BTreeSet<InstanceId> = match self.fleet.in_service(env).await {
            Ok(i) => i.into_iter().collect(),
            Err(e) => return Some(Outcome::Failed(e.to_string())),
        };
        for joined in now.difference(known) {
            let note = format!("{joined} joined during the deploy and boots {}", record.to);
            if !record.notes.contains(&note) {
                record.notes.push(note);
            }
        }
        let mut batch: Vec<InstanceId> = Vec::new();
        for id in planned {
            if now.contains(&id) {
                batch.push(id);
            } else {
                record
                    .notes
                    .push(format!("{id} left the group before its batch"));
            }
        }
        if batch.is_empty() {
            return None;
        }
        let url = (self.release_url)(record.to);
        let done = self.batch(env, number + 1, batch, url, record, false).await;
        if done.status == BatchStatus::Failed {
            let cancelled = done
                .results
                .iter()
                .any(|r| r.status == RunStatus::Cancelled);
            if cancelled && self.log.cancel_requested(record).await {
                // Like a cancel between batches: the fleet stays as it
                // is, every instance back in service.
                record.status = DeployStatus::Cancelled;
                record.cause = Some(format!(
                    "cancelled during batch {}: its command was cancelled",
                    number + 1
                ));
                return Some(Outcome::Ok);
            }
            return Some(Outcome::Failed(format!("batch {} failed", number + 1)));
        }
        None
    }

    /// One batch: standby, agent, back in service, load-balancer health.
    async fn batch(
        &self,
        env: &EnvRef,
        number: usize,
        instances: Vec<InstanceId>,
        url: String,
        record: &mut DeployRecord,
        rollback: bool,
    ) -> Batch {
        let mut batch = Batch {
            number,
            instances: instances.clone(),
            status: BatchStatus::Running,
            results: Vec::new(),
            unhealthy: Vec::new(),
            started_at: Utc::now(),
            finished_at: None,
        };
        self.put_batch(record, &batch, rollback).await;
        let mut failed = None;
        if let Err(e) = self.fleet.enter_standby(env, &instances).await {
            failed = Some(e.to_string());
        } else {
            let command = AgentCommand::Deploy { release_url: url };
            match self
                .runner
                .run(
                    &instances,
                    &command,
                    self.options.agent_timeout,
                    if rollback {
                        // A rollback is never cancelled half-way.
                        crate::runner::never()
                    } else {
                        self.cancel_watch(record)
                    },
                )
                .await
            {
                Ok(results) => {
                    if results.len() != instances.len() || results.iter().any(|r| !r.succeeded()) {
                        failed = Some("the agent failed".into());
                    }
                    batch.results = results;
                }
                Err(e) => failed = Some(e.to_string()),
            }
            // Back in service whatever happened: a failed agent leaves the
            // previous release serving.
            if let Err(e) = self.fleet.exit_standby(env, &instances).await {
                failed.get_or_insert(e.to_string());
            }
            // After a failed agent there is nothing to wait for: the agent
            // already checked that the previous release serves (or says it
            // does not), and the deploy stops here.
            let health = if failed.is_some() {
                Ok(Vec::new())
            } else {
                self.fleet
                    .wait_healthy(env, &instances, self.options.health_timeout)
                    .await
            };
            match health {
                Ok(unhealthy) => {
                    if !unhealthy.is_empty() {
                        failed.get_or_insert("instances did not become healthy".into());
                    }
                    batch.unhealthy = unhealthy;
                }
                Err(e) => {
                    failed.get_or_insert(e.to_string());
                }
            }
        }
        batch.status = if failed.is_some() {
            BatchStatus::Failed
        } else {
            BatchStatus::Succeeded
        };
        batch.finished_at = Some(Utc::now());
        self.put_batch(record, &batch, rollback).await;
        batch
    }

    async fn put_batch(&self, record: &mut DeployRecord, batch: &Batch, rollback: bool) {
        if rollback {
            record.rollback = Some(batch.clone());
        } else {
            match record.batches.iter_mut().find(|b| b.number == batch.number) {
                Some(b) => *b = batch.clone(),
                None => record.batches.push(batch.clone()),
            }
        }
        self.save(record).await;
    }

    /// Points `current` back at the previous release; true if it did.
    async fn restore_current(&self, env: &EnvRef, record: &mut DeployRecord) -> bool {
        let Some(previous) = record.from else {
            record
                .notes
                .push("nothing to go back to: this was the first deploy".into());
            return false;
        };
        match self.log.set_current(env, previous).await {
            Ok(()) => true,
            Err(e) => {
                record
                    .notes
                    .push(format!("could not move current back to {previous}: {e}"));
                false
            }
        }
    }

    /// Puts the previous release back on every instance the deploy moved
    /// and points `current` at it again.
    async fn roll_back(&self, env: &EnvRef, record: &mut DeployRecord) {
        if !self.restore_current(env, record).await {
            return;
        }
        let Some(previous) = record.from else { return };
        let moved = moved(record);
        let present: BTreeSet<InstanceId> = match self.fleet.in_service(env).await {
            Ok(i) => i.into_iter().collect(),
            Err(_) => moved.iter().cloned().collect(),
        };
        let moved: Vec<InstanceId> = moved.into_iter().filter(|i| present.contains(i)).collect();
        if !moved.is_empty() {
            let url = (self.release_url)(previous);
            let batch = self.batch(env, 1, moved, url, record, true).await;
            if batch.status == BatchStatus::Failed {
                record.notes.push(format!(
                    "rolling back to {previous} failed on some instances"
                ));
                return;
            }
        }
        record.status = DeployStatus::RolledBack;
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
