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
use super::record::{Batch, BatchStatus, DeployRecord, Prepare};
use crate::fleet::{Fleet, InstanceId, JOB_SUSPENDED_PROCESSES};
use crate::jobs::{JobError, JobLog};
use crate::runner::{AgentCommand, Cancel, Gone, Invocation, RunStatus, Runner};
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
    /// Install the release on every instance at once before the first
    /// batch (not for surge batches, whose new instances boot it).
    pub prepare: bool,
    /// How long preparing may take on an instance.
    pub prepare_timeout: Duration,
    /// How long the agent may take on one batch.
    pub agent_timeout: Duration,
    /// How long the load balancer has to call a batch healthy.
    pub health_timeout: Duration,
    /// How long a surge batch's new instances have to launch and boot.
    pub boot_timeout: Duration,
    /// How often a running batch looks for a cancel request.
    pub cancel_poll: Duration,
    /// How often a surge batch looks at the group while it waits.
    pub poll: Duration,
    /// How often a running batch says the worker is alive (and renews
    /// the lock).
    pub heartbeat: Duration,
    /// After this long a worker starts no further batch and hands the
    /// rest to a fresh one (a Lambda invocation ends at 15 minutes).
    pub budget: Duration,
    /// After this long a surge batch's wait hands over (it resumes in the
    /// next worker from what the record says).
    pub wait_limit: Duration,
    /// Whether batches surge (see [`SurgeMode`]).
    pub surge: SurgeMode,
}

pub use slipway_core::env_settings::SurgeMode;

impl Options {
    /// The environment's timeouts for a deploy; `release_phase` when the
    /// target release's Procfile has a `release:` command.
    pub fn from_settings(
        settings: &slipway_core::env_settings::EnvSettings,
        release_phase: bool,
    ) -> Self {
        let agent_timeout = Duration::from_secs(settings.agent_secs());
        Self {
            release_phase,
            prepare: settings.prepare,
            prepare_timeout: Duration::from_secs(settings.prepare_secs()),
            // Build and health on the instance, plus fetching and starting.
            agent_timeout,
            health_timeout: Duration::from_secs(settings.lb_health_timeout_secs),
            // Launching an instance, then its agent's boot.
            boot_timeout: Duration::from_secs(300) + agent_timeout,
            cancel_poll: Duration::from_secs(5),
            poll: Duration::from_secs(5),
            heartbeat: crate::jobs::HEARTBEAT,
            budget: Duration::MAX,
            wait_limit: Duration::MAX,
            surge: settings.surge,
        }
    }

    /// A worker with `time_left` stops starting batches when a whole one
    /// (agent and load balancer) might not fit any more.
    pub fn within(mut self, time_left: Option<Duration>) -> Self {
        let margin = Duration::from_secs(slipway_core::env_settings::WORKER_MARGIN_SECS);
        self.budget = crate::jobs::budget(
            time_left,
            self.agent_timeout + self.health_timeout,
            Duration::ZERO,
            Duration::ZERO,
        );
        self.wait_limit = crate::jobs::budget(time_left, Duration::ZERO, margin, Duration::ZERO);
        self
    }

    /// Polls, heartbeats and cancel checks every `poll` and `poll` × 8
    /// (the local platform, whose instances answer within a second).
    pub fn polling(mut self, poll: Duration) -> Self {
        self.cancel_poll = poll;
        self.poll = poll;
        self.heartbeat = poll * 8;
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
pub(super) fn moved(record: &DeployRecord) -> Vec<InstanceId> {
    record
        .batches
        .iter()
        .flat_map(|b| {
            let launched = b
                .surge
                .iter()
                .filter(|_| b.status == BatchStatus::Succeeded)
                .flat_map(|s| s.launched.iter().cloned());
            // A batch still running when the deploy ends lost its worker
            // mid-way: any of its instances may have moved.
            let interrupted = b
                .instances
                .iter()
                .filter(|_| b.status == BatchStatus::Running && b.surge.is_none())
                .cloned();
            b.results
                .iter()
                .filter(|r| r.succeeded())
                .map(|r| r.instance.clone())
                .chain(launched)
                .chain(interrupted)
                .collect::<Vec<_>>()
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
    pub(super) fn cancel_watch<'b>(&'b self, record: &DeployRecord) -> Cancel<'b> {
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

    pub(super) async fn save(&self, record: &DeployRecord) {
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
        let mut outcome = if record.roll_back_requested {
            Outcome::Failed("its worker was lost; rolled back as the settings say".into())
        } else {
            self.suspend(&env, &mut record).await;
            self.deploy(&env, &mut record, resuming).await
        };
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
        self.resume(&env, &mut record).await;
        record.finished_at = Some(Utc::now());
        self.save(&record).await;
        self.log.release_lock().await;
        record
    }

    /// Suspends the group's processes that would move instances during
    /// the deploy, unless a worker before this one did and they still are
    /// (the reconciler resumes them when it finds a worker dead).
    async fn suspend(&self, env: &EnvRef, record: &mut DeployRecord) {
        if !record.suspended.is_empty() {
            return;
        }
        match self.fleet.suspend(env, &JOB_SUSPENDED_PROCESSES).await {
            Ok(suspended) => record.suspended = suspended,
            Err(e) => record.notes.push(format!(
                "could not suspend the group's scaling processes: {e}"
            )),
        }
    }

    /// Resumes what [`suspend`](Self::suspend) suspended.
    async fn resume(&self, env: &EnvRef, record: &mut DeployRecord) {
        if record.suspended.is_empty() {
            return;
        }
        match self.fleet.resume(env, &record.suspended).await {
            Ok(()) => record.suspended.clear(),
            Err(e) => record.notes.push(format!(
                "could not resume the group's processes {:?}: {e}",
                record.suspended
            )),
        }
    }

    async fn deploy(&self, env: &EnvRef, record: &mut DeployRecord, resuming: bool) -> Outcome {
        let started = std::time::Instant::now();
        let batches = if resuming {
            record.plan.clone()
        } else {
            match self.begin(env, record).await {
                Ok(b) => b,
                Err(_) if record.status == DeployStatus::Cancelled => {
                    // Cancelled while preparing: nothing switched anywhere.
                    self.restore_current(env, record).await;
                    return Outcome::Ok;
                }
                Err(cause) => return Outcome::Failed(cause),
            }
        };
        let known: BTreeSet<InstanceId> = batches.iter().flatten().cloned().collect();
        // Preparing and the release phase may each take a batch's time:
        // after them, a worker with too little left hands over before the
        // first batch (the plan is stored; the next one skips both).
        let mut ran = !resuming && (self.options.release_phase || record.prepare.is_some());
        if ran {
            self.save(record).await;
        }
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

    /// Moves `current`, plans the batches, prepares every instance and
    /// runs the release phase.
    async fn begin(
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
        let batches = self.plan_batches(env, record, &instances).await?;
        if self.options.prepare && !record.surge && !instances.is_empty() {
            self.prepare_all(record, &instances).await?;
        }
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
                    &Gone::default(),
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

    /// Every instance installs the release at once while it serves
    /// (download, verify, unpack, config, build; nothing switches). One
    /// that cannot fails the deploy before any instance leaves the load
    /// balancer, with its output; one that left the group meanwhile does
    /// not matter (its replacement boots the release).
    async fn prepare_all(
        &self,
        record: &mut DeployRecord,
        instances: &[InstanceId],
    ) -> Result<(), String> {
        let command = AgentCommand::Prepare {
            release_url: (self.release_url)(record.to),
        };
        let started_at = Utc::now();
        let results = self
            .beating(
                record,
                self.runner.run(
                    instances,
                    &command,
                    self.options.prepare_timeout,
                    self.cancel_watch(record),
                    &Gone::default(),
                ),
            )
            .await
            .map_err(|e| format!("could not prepare {}: {e}", record.to))?;
        let failed: Vec<Invocation> = results
            .iter()
            .filter(|r| !r.succeeded() && r.status != RunStatus::Vanished)
            .cloned()
            .collect();
        record.prepare = Some(Prepare {
            instances: results.len(),
            failed: failed.clone(),
            started_at,
            finished_at: Utc::now(),
        });
        self.save(record).await;
        let Some(first) = failed.first() else {
            return Ok(());
        };
        if failed.iter().any(|r| r.status == RunStatus::Cancelled)
            && self.log.cancel_requested(record).await
        {
            record.status = DeployStatus::Cancelled;
            record.cause = Some("cancelled while the release was prepared".into());
            return Err("cancelled".into());
        }
        let said = first.output_tail.lines().last().unwrap_or("").trim();
        Err(format!(
            "{} could not prepare {} ({} of {} instances failed){}",
            first.instance,
            record.to,
            failed.len(),
            results.len(),
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        ))
    }

    /// The batches, and whether they surge: asked for, or (`auto`) where
    /// taking a batch out would break the group's minimum size or the
    /// minimum healthy share. A surge batch never takes an instance out
    /// before its replacement serves.
    async fn plan_batches(
        &self,
        env: &EnvRef,
        record: &mut DeployRecord,
        instances: &[InstanceId],
    ) -> Result<Vec<Vec<InstanceId>>, String> {
        let standby = plan(instances, record.strategy, record.min_healthy_percent);
        let batch = plan::batch_size(record.strategy, instances.len()) as i32;
        let sizes = self.fleet.capacity(env).await.map_err(|e| e.to_string())?;
        let below_min = sizes.desired - batch < sizes.min;
        record.surge = match self.options.surge {
            SurgeMode::Always => true,
            SurgeMode::Never => false,
            SurgeMode::Auto => below_min || standby.is_err(),
        };
        if record.surge {
            return plan(instances, record.strategy, 0).map_err(|e| e.to_string());
        }
        if below_min && !instances.is_empty() {
            return Err(format!(
                "taking {batch} instance(s) out would leave the group below its minimum size ({} of desired {}); surge instead (settings: surge) or lower the minimum",
                sizes.min, sizes.desired
            ));
        }
        standby.map_err(|e| e.to_string())
    }

    /// Runs `work` while saving the record (and renewing the lock) every
    /// heartbeat, so the reconciler knows this worker is alive during a
    /// long batch. The last beat ends before `work`'s result is used.
    pub(super) async fn beating<T>(
        &self,
        record: &DeployRecord,
        work: impl Future<Output = T>,
    ) -> T {
        let done = tokio::sync::Notify::new();
        let beat = async {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(self.options.heartbeat) => {}
                    _ = done.notified() => return,
                }
                self.save(record).await;
                if let Err(e) = self.log.renew_lock().await {
                    tracing::warn!(deploy = %record.id, error = %e, "could not renew the lock");
                }
            }
        };
        let work = async {
            let out = work.await;
            done.notify_one();
            out
        };
        tokio::join!(work, beat).0
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
        let done = match self
            .batch(env, number + 1, batch, record.to, record, false)
            .await
        {
            Some(done) => done,
            None => return Some(Outcome::HandOff),
        };
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

    /// One batch: standby, agent, back in service, load-balancer health;
    /// or, for a surge deploy, new instances first. `None` when this
    /// worker's time ran out while a surge batch waited.
    async fn batch(
        &self,
        env: &EnvRef,
        number: usize,
        instances: Vec<InstanceId>,
        release: ReleaseId,
        record: &mut DeployRecord,
        rollback: bool,
    ) -> Option<Batch> {
        let existing = if rollback {
            record.rollback.clone()
        } else {
            record.batches.iter().find(|b| b.number == number).cloned()
        }
        .filter(|b| b.status == BatchStatus::Running && b.instances == instances);
        let mut batch = Batch {
            number,
            instances: instances.clone(),
            status: BatchStatus::Running,
            results: Vec::new(),
            unhealthy: Vec::new(),
            started_at: Utc::now(),
            finished_at: None,
            surge: None,
        };
        if record.surge {
            // A surge batch resumed by a fresh worker keeps what it raised.
            if let Some(existing) = existing {
                batch = existing;
            }
            self.put_batch(record, &batch, rollback).await;
            let failed = self
                .surge_batch(env, &mut batch, release, record, rollback)
                .await?;
            return Some(self.finish_batch(record, batch, failed, rollback).await);
        }
        self.put_batch(record, &batch, rollback).await;
        let url = (self.release_url)(release);
        let failed = self
            .beating(
                record,
                self.standby_batch(env, &mut batch, url, rollback, record),
            )
            .await;
        Some(self.finish_batch(record, batch, failed, rollback).await)
    }

    async fn finish_batch(
        &self,
        record: &mut DeployRecord,
        mut batch: Batch,
        failed: Option<String>,
        rollback: bool,
    ) -> Batch {
        batch.status = if failed.is_some() {
            BatchStatus::Failed
        } else {
            BatchStatus::Succeeded
        };
        if let Some(why) = failed {
            let note = format!("batch {}: {why}", batch.number);
            if !record.notes.contains(&note) {
                record.notes.push(note);
            }
        }
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
            let Some(batch) = self.batch(env, 1, moved, previous, record, true).await else {
                record.notes.push(format!(
                    "rolling back to {previous} ran out of time; the reconciler finishes it"
                ));
                return;
            };
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
