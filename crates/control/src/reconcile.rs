//! The reconciler: finishes the jobs whose worker is gone.
//!
//! A worker can die anywhere: killed at Lambda's time limit mid-batch, out
//! of memory, its invocation lost. Its job then holds the environment with
//! instances in Standby, a surge's extra capacity, the group's scaling
//! processes suspended. Every minute (an EventBridge schedule in the
//! template, a task on the local platform) the deploy and cycle functions
//! each look at every environment's lock; a job of theirs whose heartbeat
//! is older than [`HEARTBEATS_MISSED`](crate::jobs::HEARTBEATS_MISSED)
//! heartbeats, or that Lambda gave up on (its event in the function's
//! on-failure queue, which this drains), is made safe and handed to a
//! fresh worker:
//!
//! - its instances in Standby go back in service;
//! - a surge it was waiting on is undone (the new instances go, desired
//!   and max come back), so the next worker surges afresh;
//! - the processes it suspended are resumed (the next worker suspends
//!   them again while it runs);
//! - it is marked handed over (and, when the environment's settings say
//!   `on_worker_lost: roll_back`, to be rolled back), with a note of what
//!   was done, in a write conditional on the version read: a worker that
//!   was only slow and saves meanwhile keeps its job;
//! - its worker is launched again, and continues the stored plan from the
//!   last finished batch (a deploy) or step (a cycle).
//!
//! A lock left by a finished job is released. A job still queued whose
//! worker never started is launched again. A free environment's queue
//! starts its head, of either kind.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cycle::CycleRecord;
use crate::fleet::{Fleet, InstanceId};
use crate::jobs::{JobRecord, Launcher, lock};
use crate::rollout::{BatchStatus, DeployRecord, Deploys};
use crate::store::StoreError;
use slipway_core::env_settings::OnWorkerLost;
use slipway_core::ids::{JobId, JobKind};
use slipway_core::names::{AppName, EnvName, EnvRef};
use slipway_core::objects::{ObjectError, S3Objects, Write};

/// The event the schedule sends: `{"slipway": "reconcile"}`.
pub const RECONCILE_EVENT: &str = "reconcile";

/// Whether `payload` is the schedule's event.
pub fn is_reconcile_event(payload: &serde_json::Value) -> bool {
    payload.get("slipway").and_then(|v| v.as_str()) == Some(RECONCILE_EVENT)
}

/// Where Lambda puts the asynchronous invocations it gave up on.
pub trait FailedInvocations: Send + Sync {
    /// Takes the waiting records: each `requestPayload` (the job's event)
    /// with a handle to delete it by.
    fn receive(
        &self,
    ) -> futures::future::BoxFuture<'_, Result<Vec<(String, serde_json::Value)>, String>>;
    fn delete(&self, handle: String) -> futures::future::BoxFuture<'_, Result<(), String>>;
}

/// What the reconciler did to one job.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Reconciled {
    pub env: String,
    pub job: String,
    pub action: String,
}

pub struct Reconciler<F> {
    pub deploys: Deploys,
    pub fleet: F,
    /// Starts a fresh worker of this function's jobs.
    pub launcher: Arc<dyn Launcher>,
    /// The kind of jobs this function runs (and so reconciles).
    pub kind: JobKind,
    /// How often a live worker beats.
    pub heartbeat: Duration,
    pub failures: Option<Arc<dyn FailedInvocations>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error(transparent)]
    Lock(#[from] crate::jobs::LockError),
}

impl<F: Fleet> Reconciler<F> {
    fn objects(&self) -> &S3Objects {
        &self.deploys.objects
    }

    /// One round over every environment; what it did.
    pub async fn run(&self, now: DateTime<Utc>) -> Result<Vec<Reconciled>, ReconcileError> {
        let given_up = self.drain_failures().await;
        let mut done = Vec::new();
        for app in self.folders::<AppName>("").await? {
            for env in self.folders::<EnvName>(&format!("{app}/")).await? {
                let env = EnvRef {
                    app: app.clone(),
                    env,
                };
                match self.environment(&env, &given_up, now).await {
                    Ok(Some(r)) => done.push(r),
                    Ok(None) => {}
                    // One environment's trouble does not stop the round.
                    Err(e) => {
                        tracing::warn!(env = %env, error = %e, "could not reconcile the environment")
                    }
                }
            }
        }
        for r in &done {
            tracing::warn!(env = %r.env, job = %r.job, action = %r.action, "reconciled a job whose worker was gone");
        }
        Ok(done)
    }

    async fn folders<T: std::str::FromStr>(&self, prefix: &str) -> Result<Vec<T>, ObjectError> {
        Ok(self
            .objects()
            .list_folders(prefix)
            .await?
            .iter()
            .filter_map(|p| p.strip_prefix(prefix)?.strip_suffix('/')?.parse().ok())
            .collect())
    }

    /// The jobs Lambda gave up on, from the on-failure queue (deleted once
    /// read: the round that follows deals with them).
    async fn drain_failures(&self) -> Vec<JobId> {
        let Some(queue) = &self.failures else {
            return Vec::new();
        };
        let mut jobs = Vec::new();
        for _ in 0..10 {
            let messages = match queue.receive().await {
                Ok(m) if !m.is_empty() => m,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the on-failure queue");
                    break;
                }
            };
            for (handle, payload) in messages {
                if let Some(Ok((_, job))) = crate::jobs::RunJob::parse(self.kind, &payload) {
                    jobs.push(job);
                }
                if let Err(e) = queue.delete(handle).await {
                    tracing::warn!(error = %e, "could not delete a failed invocation");
                }
            }
        }
        jobs
    }

    async fn environment(
        &self,
        env: &EnvRef,
        given_up: &[JobId],
        now: DateTime<Utc>,
    ) -> Result<Option<Reconciled>, ReconcileError> {
        let Some((held, lock_etag)) = lock::read(self.objects(), env).await? else {
            // Free: the job next in its queue goes (a worker died before
            // promoting it, or the one that finished could not start its
            // kind).
            if let Ok(Some(id)) = self.deploys.promote(env, self.launcher.as_ref()).await {
                return Ok(Some(Reconciled {
                    env: env.to_string(),
                    job: id.to_string(),
                    action: "started it: it was next in the queue".into(),
                }));
            }
            return Ok(None);
        };
        if held.job.kind() != self.kind {
            return Ok(None);
        }
        let job = held.job.clone();
        let stale_after = self.heartbeat * crate::jobs::HEARTBEATS_MISSED;
        let outcome = match self.kind {
            JobKind::Deploy => {
                self.job::<DeployRecord>(env, &job, given_up, now, stale_after)
                    .await?
            }
            JobKind::Cycle => {
                self.job::<CycleRecord>(env, &job, given_up, now, stale_after)
                    .await?
            }
        };
        let action = match outcome {
            Found::Alive => return Ok(None),
            Found::Finished | Found::Missing => {
                // Its worker died between the last save and the release.
                let _ = self
                    .objects()
                    .delete_if_match(&lock_key(env), &lock_etag)
                    .await;
                "released the lock it left behind".to_owned()
            }
            Found::Recovered(what) => what,
        };
        Ok(Some(Reconciled {
            env: env.to_string(),
            job: job.to_string(),
            action,
        }))
    }

    async fn job<R: JobRecord + Recoverable>(
        &self,
        env: &EnvRef,
        id: &JobId,
        given_up: &[JobId],
        now: DateTime<Utc>,
        stale_after: Duration,
    ) -> Result<Found, ReconcileError> {
        let Some((mut record, etag)) = crate::jobs::record::<R>(self.objects(), env, id).await?
        else {
            return Ok(Found::Missing);
        };
        if record.is_finished() {
            return Ok(Found::Finished);
        }
        let silent = (now - record.heartbeat_at()).to_std().unwrap_or_default();
        if silent < stale_after && !given_up.contains(id) {
            return Ok(Found::Alive);
        }
        let settings = self.deploys.settings(env).await.unwrap_or_default();
        let mut did = record.make_safe(&self.fleet, env).await;
        if settings.on_worker_lost == OnWorkerLost::RollBack && record.request_roll_back() {
            did.push("asked the next worker to roll back".into());
        }
        did.push("launched a fresh worker".into());
        let what = format!(
            "its worker was silent for {}s: {}",
            silent.as_secs(),
            did.join(", ")
        );
        record.note(format!("the reconciler: {what}"));
        record.hand_over(now);
        match crate::jobs::write_record(self.objects(), env, id, &record, Write::IfMatch(&etag))
            .await
        {
            Ok(_) => {}
            // Its worker saved meanwhile: alive after all.
            Err(ObjectError::Precondition { .. }) => return Ok(Found::Alive),
            Err(e) => return Err(e.into()),
        }
        if let Err(e) = self.launcher.launch(env.clone(), id.clone()).await {
            return Ok(Found::Recovered(format!(
                "{what}; the launch failed ({e}), the next round tries again"
            )));
        }
        Ok(Found::Recovered(what))
    }
}

use slipway_core::keys::lock_key;

enum Found {
    Alive,
    Finished,
    Missing,
    Recovered(String),
}

/// What the reconciler does to a job record of each kind.
trait Recoverable {
    /// Makes the group whole again; what it did.
    fn make_safe<F: Fleet>(
        &mut self,
        fleet: &F,
        env: &EnvRef,
    ) -> impl std::future::Future<Output = Vec<String>> + Send;
    fn note(&mut self, note: String);
    /// Marks it for a fresh worker to claim.
    fn hand_over(&mut self, now: DateTime<Utc>);
    /// Asks the next worker to roll back; false where that means nothing.
    fn request_roll_back(&mut self) -> bool;
}

/// Standby instances of `ids` back in service; processes resumed.
async fn restore<F: Fleet>(
    fleet: &F,
    env: &EnvRef,
    ids: &[InstanceId],
    suspended: &mut Vec<String>,
    did: &mut Vec<String>,
) {
    match fleet.group_members(env).await {
        Ok(members) => {
            let standby: Vec<InstanceId> = members
                .iter()
                .filter(|m| m.lifecycle == "Standby" && ids.contains(&m.id))
                .map(|m| m.id.clone())
                .collect();
            if !standby.is_empty() {
                match fleet.exit_standby(env, &standby).await {
                    Ok(()) => did.push(format!("put {standby:?} back in service")),
                    Err(e) => did.push(format!("could not put {standby:?} back in service: {e}")),
                }
            }
        }
        Err(e) => did.push(format!("could not read the group: {e}")),
    }
    if !suspended.is_empty() {
        match fleet.resume(env, suspended).await {
            Ok(()) => {
                did.push(format!("resumed {suspended:?}"));
                suspended.clear();
            }
            Err(e) => did.push(format!("could not resume {suspended:?}: {e}")),
        }
    }
}

impl Recoverable for DeployRecord {
    async fn make_safe<F: Fleet>(&mut self, fleet: &F, env: &EnvRef) -> Vec<String> {
        let mut did = Vec::new();
        let mut ids: Vec<InstanceId> = self.plan.iter().flatten().cloned().collect();
        ids.extend(
            self.rollback
                .iter()
                .flat_map(|b| b.instances.iter().cloned()),
        );
        for batch in self.batches.iter_mut().chain(self.rollback.as_mut()) {
            if batch.status != BatchStatus::Running {
                continue;
            }
            if let Some(surge) = batch.surge.take() {
                match crate::rollout::undo_surge(fleet, env, &surge).await {
                    Ok(()) => did.push(format!(
                        "undid batch {}'s surge (desired back to {})",
                        batch.number, surge.desired_before
                    )),
                    Err(e) => {
                        did.push(format!(
                            "could not undo batch {}'s surge: {e}",
                            batch.number
                        ));
                        batch.surge = Some(surge);
                    }
                }
            }
        }
        restore(fleet, env, &ids, &mut self.suspended, &mut did).await;
        did
    }

    fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    fn hand_over(&mut self, now: DateTime<Utc>) {
        if self.status == slipway_core::deploys::DeployStatus::Running {
            self.handed_off = true;
        }
        self.heartbeat_at = Some(now);
    }

    fn request_roll_back(&mut self) -> bool {
        if self.plan.is_empty() {
            return false;
        }
        self.roll_back_requested = true;
        true
    }
}

impl Recoverable for CycleRecord {
    async fn make_safe<F: Fleet>(&mut self, fleet: &F, env: &EnvRef) -> Vec<String> {
        let mut did = Vec::new();
        restore(fleet, env, &[], &mut self.suspended, &mut did).await;
        did
    }

    fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    fn hand_over(&mut self, now: DateTime<Utc>) {
        if self.status == crate::cycle::CycleStatus::Running {
            self.handed_off = true;
        }
        self.heartbeat_at = Some(now);
    }

    fn request_roll_back(&mut self) -> bool {
        false
    }
}
