//! Cycles, scalings and termination as the API sees them: checks, the
//! lock, the records; and the S3 cycle log the engine writes through.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::CycleStatus;
use super::engine::{CycleEngine, CycleOptions};
use super::{CycleMode, CycleRecord, CycleStep, StepStatus};
use crate::fleet::{Destroyed, Fleet, FleetError, GroupControl, InstanceId, Sizes};
use crate::jobs::lock::{self, Held, Lock, LockError};
use crate::jobs::{Claim, JobError, JobLog, Launcher, S3Job};
use crate::store::{ReleaseStore, StoreError};
use slipway_core::ids::JobKind;
use slipway_core::ids::{CycleId, JobId, ScaleId};
use slipway_core::names::EnvRef;
use slipway_core::objects::{ObjectError, S3Objects, Write};

/// The most instances a scaling may ask for; a typo guard, not AWS's limit.
pub const MAX_INSTANCES: i32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error(
        "{} by {} holds the environment since {}",
        .0.holder(), .0.user, .0.acquired_at.to_rfc3339()
    )]
    Locked(Box<Lock>),
    #[error("{instance} is not an instance of {env}")]
    NotMember { instance: InstanceId, env: String },
    #[error("{0} has no instances in service to cycle")]
    NoInstances(String),
    #[error("cycle {0} not found")]
    NotFound(CycleId),
    #[error("{0}")]
    BadScale(String),
    #[error("to terminate the environment, confirm with its name: ?confirm={0}")]
    Unconfirmed(String),
    #[error("{0} has no Auto Scaling group")]
    NoGroup(String),
    #[error(transparent)]
    Fleet(FleetError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error("the environment lock: {0}")]
    Lock(LockError),
    #[error("the cycle could not be started: {0}")]
    NotLaunched(#[from] crate::jobs::LaunchError),
    #[error("the environment's settings: {0}")]
    Settings(String),
}

impl From<FleetError> for CycleError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::NoGroup(env) => Self::NoGroup(env),
            e => Self::Fleet(e),
        }
    }
}

impl From<JobError> for CycleError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Lock(e) => e.into(),
            JobError::Store(e) => e.into(),
            JobError::Objects(e) => e.into(),
            JobError::Launch(e) => e.into(),
        }
    }
}

impl From<LockError> for CycleError {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Held(holder) => Self::Locked(Box::new(holder)),
            e => Self::Lock(e),
        }
    }
}

/// `PATCH …/scale`: any of the group's sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i32>,
}

impl ScaleRequest {
    /// The sizes after the change, if they make sense together.
    pub fn apply(self, current: Sizes) -> Result<Sizes, CycleError> {
        if self.desired.is_none() && self.min.is_none() && self.max.is_none() {
            return Err(CycleError::BadScale(
                "say what to change: desired, min and/or max".into(),
            ));
        }
        for (name, value) in [
            ("desired", self.desired),
            ("min", self.min),
            ("max", self.max),
        ] {
            if let Some(v) = value
                && !(0..=MAX_INSTANCES).contains(&v)
            {
                return Err(CycleError::BadScale(format!(
                    "{name} must be between 0 and {MAX_INSTANCES}"
                )));
            }
        }
        let to = Sizes {
            min: self.min.unwrap_or(current.min),
            max: self.max.unwrap_or(current.max),
            desired: self.desired.unwrap_or(current.desired),
        };
        if to.min > to.max {
            return Err(CycleError::BadScale(format!(
                "min {} is above max {}",
                to.min, to.max
            )));
        }
        if !(to.min..=to.max).contains(&to.desired) {
            return Err(CycleError::BadScale(format!(
                "desired {} is outside the group's bounds {}..{}; change min or max with it",
                to.desired, to.min, to.max
            )));
        }
        Ok(to)
    }
}

/// `<app>/<env>/scales/<id>.json`: who changed the group's sizes, from what
/// to what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleRecord {
    pub id: ScaleId,
    pub user: String,
    pub from: Sizes,
    pub to: Sizes,
    pub at: DateTime<Utc>,
}

/// `<app>/<env>/terminated.json`: who terminated the environment and what
/// went with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    pub user: String,
    pub destroyed: Destroyed,
    pub at: DateTime<Utc>,
}

use slipway_core::keys::cycle_key as record_key;
pub use slipway_core::keys::termination_key;

fn json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec_pretty(value).expect("records always serialise")
}

#[derive(Clone)]
pub struct Cycles {
    pub objects: S3Objects,
    pub store: ReleaseStore,
}

impl Cycles {
    pub fn new(store: ReleaseStore) -> Self {
        Self {
            objects: store.objects().clone(),
            store,
        }
    }

    /// Refuses while a deploy or cycle holds the environment: a standby
    /// batch's sizes or a cycle's replacements must not be disturbed.
    async fn ensure_unlocked(&self, env: &EnvRef, now: DateTime<Utc>) -> Result<(), CycleError> {
        match lock::read(&self.objects, env).await? {
            Some((holder, _)) if holder.expires_at > now => {
                Err(CycleError::Locked(Box::new(holder)))
            }
            _ => Ok(()),
        }
    }

    /// Terminates one instance of the environment; the group replaces it.
    pub async fn cycle_one<G: GroupControl>(
        &self,
        fleet: &G,
        env: &EnvRef,
        instance: InstanceId,
        user: &str,
        now: DateTime<Utc>,
    ) -> Result<CycleRecord, CycleError> {
        self.ensure_unlocked(env, now).await?;
        let members = fleet.members(env).await?;
        if !members.iter().any(|m| m.id == instance) {
            return Err(CycleError::NotMember {
                instance,
                env: env.qualified(),
            });
        }
        fleet.terminate(env, &instance).await?;
        let mut step = CycleStep::pending(instance);
        step.status = StepStatus::Terminated;
        step.started_at = Some(now);
        step.finished_at = Some(Utc::now());
        let record = CycleRecord {
            id: CycleId::new(now),
            app: env.app.clone(),
            env: env.env.clone(),
            user: user.to_owned(),
            mode: CycleMode::One,
            status: CycleStatus::Succeeded,
            release: self.store.current(env).await?.map(|r| r.to_string()),
            steps: vec![step],
            cause: None,
            notes: vec!["the group launches a replacement, which boots the current release".into()],
            workers: 0,
            handed_off: false,
            heartbeat_at: None,
            suspended: Vec::new(),
            waiting: false,
            queue_position: None,
            created_at: now,
            finished_at: Some(Utc::now().max(now)),
        };
        self.create(env, &record).await?;
        Ok(record)
    }

    /// The steps of a cycle of every instance in service now, and the
    /// release their replacements must boot (`current` now).
    async fn plan<G: GroupControl>(
        &self,
        fleet: &G,
        env: &EnvRef,
    ) -> Result<(Vec<CycleStep>, Option<String>), CycleError> {
        let members = fleet.members(env).await?;
        let steps: Vec<CycleStep> = members
            .into_iter()
            .filter(|m| m.in_service())
            .map(|m| CycleStep::pending(m.id))
            .collect();
        if steps.is_empty() {
            return Err(CycleError::NoInstances(env.qualified()));
        }
        let release = self.store.current(env).await?.map(|r| r.to_string());
        Ok((steps, release))
    }

    /// Starts the cycle of every instance in service and launches its
    /// worker; or, when another job holds the environment and queueing is
    /// on (`queue` asks, or the settings say so), queues it. Its place in
    /// the queue when it waits.
    pub async fn begin_all<G: GroupControl>(
        &self,
        fleet: &G,
        env: &EnvRef,
        user: &str,
        queue: Option<bool>,
        now: DateTime<Utc>,
        launcher: &dyn Launcher,
    ) -> Result<CycleRecord, CycleError> {
        let settings = crate::rollout::Deploys::new(self.store.clone())
            .settings(env)
            .await
            .map_err(|e| CycleError::Settings(e.to_string()))?;
        let (steps, release) = self.plan(fleet, env).await?;
        let id = CycleId::new(now);
        let mut record = CycleRecord {
            id: id.clone(),
            app: env.app.clone(),
            env: env.env.clone(),
            user: user.to_owned(),
            mode: CycleMode::All,
            status: CycleStatus::Queued,
            release,
            steps,
            cause: None,
            notes: Vec::new(),
            workers: 0,
            handed_off: false,
            heartbeat_at: None,
            suspended: Vec::new(),
            waiting: false,
            queue_position: None,
            created_at: now,
            finished_at: None,
        };
        match lock::acquire(&self.objects, env, Lock::new(id.clone(), user, now), now).await {
            Ok(held) => {
                if let Err(e) = self.create(env, &record).await {
                    let _ = lock::release(&self.objects, env, &held).await;
                    return Err(e.into());
                }
                self.launch(env, record, &held, launcher).await
            }
            Err(LockError::Held(holder)) if queue.unwrap_or(settings.queue) => {
                record.waiting = true;
                self.create(env, &record).await?;
                crate::queue::enqueue(&self.objects, env, &id.clone().into()).await?;
                tracing::info!(env = %env, cycle = %id, holder = %holder.holder(), "cycle queued");
                // The holder may have finished before the entry was there.
                crate::queue::promote(&self.objects, env, launcher).await?;
                self.get(env, &id).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A cycle's first worker plans it afresh: it may have waited in the
    /// queue behind a deploy that replaced instances and moved `current`.
    async fn replan<G: GroupControl>(
        &self,
        fleet: &G,
        env: &EnvRef,
        record: &mut CycleRecord,
    ) -> Result<(), CycleError> {
        let untouched = record.workers <= 1
            && record
                .steps
                .iter()
                .all(|s| s.status == StepStatus::Pending && s.started_at.is_none());
        if record.mode == CycleMode::All && untouched {
            let (steps, release) = self.plan(fleet, env).await?;
            record.steps = steps;
            record.release = release;
        }
        if record.steps.len() == 1 && !record.notes.iter().any(|n| n.starts_with("a group of one"))
        {
            record
                .notes
                .push("a group of one instance is unavailable while it is replaced".into());
        }
        Ok(())
    }

    /// A queued cycle that could not be launched: record why, free the
    /// environment.
    pub async fn abandon(&self, env: &EnvRef, mut record: CycleRecord, held: &Held, cause: &str) {
        record.status = CycleStatus::Failed;
        record.cause = Some(cause.to_owned());
        record.finished_at = Some(Utc::now());
        if let Err(e) = self.save(env, &record, Write::Always).await {
            tracing::warn!(cycle = %record.id, error = %e, "could not record an abandoned cycle");
        }
        if let Err(e) = lock::release(&self.objects, env, held).await {
            tracing::warn!(cycle = %record.id, error = %e, "could not release the lock");
        }
    }

    /// Writes a new cycle's record, with its entry in the history.
    async fn create(&self, env: &EnvRef, record: &CycleRecord) -> Result<String, ObjectError> {
        let id = record.id.clone().into();
        crate::jobs::history::create(&self.objects, env, &id, record, Write::IfAbsent).await
    }

    async fn save(
        &self,
        env: &EnvRef,
        record: &CycleRecord,
        write: Write<'_>,
    ) -> Result<String, ObjectError> {
        self.objects
            .put(
                &record_key(env, &record.id),
                json(record),
                "application/json",
                write,
            )
            .await
    }

    /// The record, with its place in the queue if it waits.
    pub async fn get(&self, env: &EnvRef, id: &CycleId) -> Result<CycleRecord, CycleError> {
        let record = crate::jobs::record(&self.objects, env, &id.clone().into())
            .await?
            .ok_or_else(|| CycleError::NotFound(id.clone()))?
            .0;
        Ok(self.with_positions(env, vec![record]).await?.remove(0))
    }

    /// Records newest first, at most `limit`.
    pub async fn list(&self, env: &EnvRef, limit: usize) -> Result<Vec<CycleRecord>, CycleError> {
        let records =
            crate::jobs::history::newest(&self.objects, env, JobKind::Cycle, limit).await?;
        self.with_positions(env, records).await
    }

    /// Fills in each waiting record's place in the queue.
    async fn with_positions(
        &self,
        env: &EnvRef,
        mut records: Vec<CycleRecord>,
    ) -> Result<Vec<CycleRecord>, CycleError> {
        if records.iter().any(|r| r.waiting && !r.is_finished()) {
            let waiting = crate::queue::waiting(&self.objects, env).await?;
            for r in records.iter_mut().filter(|r| r.waiting) {
                let id = JobId::Cycle(r.id.clone());
                r.queue_position = waiting.iter().position(|w| *w == id).map(|i| i + 1);
            }
        }
        Ok(records)
    }

    /// Asks a running cycle to stop before its next instance; a cycle
    /// waiting its turn leaves the queue.
    pub async fn cancel(&self, env: &EnvRef, id: &CycleId) -> Result<CycleRecord, CycleError> {
        if let Some(cancelled) = crate::queue::drop_waiting(
            &self.objects,
            env,
            &id.clone().into(),
            "cancelled while it waited its turn",
        )
        .await?
        {
            return Ok(cancelled);
        }
        crate::jobs::cancel(&self.objects, env, &id.clone().into())
            .await?
            .ok_or_else(|| CycleError::NotFound(id.clone()))
    }

    /// Changes the group's sizes and records who did, from what to what.
    pub async fn scale<G: GroupControl>(
        &self,
        fleet: &G,
        env: &EnvRef,
        request: ScaleRequest,
        user: &str,
        now: DateTime<Utc>,
    ) -> Result<ScaleRecord, CycleError> {
        self.ensure_unlocked(env, now).await?;
        let from = fleet.sizes(env).await?;
        let to = request.apply(from)?;
        fleet.resize(env, to).await?;
        let record = ScaleRecord {
            id: ScaleId::new(now),
            user: user.to_owned(),
            from,
            to,
            at: now,
        };
        let key = slipway_core::keys::scale_key(env, &record.id);
        self.objects
            .put(&key, json(&record), "application/json", Write::IfAbsent)
            .await?;
        Ok(record)
    }

    /// Terminates the whole environment, confirmed by its name. Releases,
    /// config and records stay in the bucket.
    pub async fn destroy<G: GroupControl>(
        &self,
        fleet: &G,
        env: &EnvRef,
        confirm: Option<&str>,
        user: &str,
        now: DateTime<Utc>,
    ) -> Result<Termination, CycleError> {
        if confirm != Some(env.qualified().as_str()) {
            return Err(CycleError::Unconfirmed(env.qualified()));
        }
        self.ensure_unlocked(env, now).await?;
        let destroyed = fleet.destroy(env).await?;
        let record = Termination {
            user: user.to_owned(),
            destroyed,
            at: now,
        };
        self.objects
            .put(
                &termination_key(env),
                json(&record),
                "application/json",
                Write::Always,
            )
            .await?;
        Ok(record)
    }

    /// Starts the worker of a cycle [`start_all`](Self::start_all)
    /// queued; if it cannot be started the cycle is recorded as failed and
    /// the environment freed.
    pub async fn launch(
        &self,
        env: &EnvRef,
        record: CycleRecord,
        held: &Held,
        launcher: &dyn Launcher,
    ) -> Result<CycleRecord, CycleError> {
        match launcher.launch(env.clone(), record.id.clone().into()).await {
            Ok(()) => Ok(record),
            Err(e) => {
                tracing::error!(cycle = %record.id, error = %e, "the cycle could not be started");
                self.abandon(env, record, held, "the cycle could not be started")
                    .await;
                Err(e.into())
            }
        }
    }
}

/// Runs (or resumes) a launched cycle: what the cycle worker does. A
/// duplicate launch of a cycle some worker already runs does nothing: the
/// worker claims the record with a conditional write first.
pub async fn run_queued_cycle<F: Fleet + GroupControl>(
    cycles: &Cycles,
    env: &EnvRef,
    id: &CycleId,
    fleet: &F,
    launcher: Option<Arc<dyn Launcher>>,
    options: CycleOptions,
) -> Result<CycleRecord, CycleError> {
    let job = JobId::Cycle(id.clone());
    let mut record: CycleRecord = match crate::jobs::claim(&cycles.objects, env, &job).await? {
        Claim::Ours(record) => record,
        Claim::NotOurs(record) => return Ok(record),
        Claim::Missing => return Err(CycleError::NotFound(id.clone())),
    };
    let log = S3CycleLog {
        cycles: cycles.clone(),
        env: env.clone(),
        job: S3Job::adopt(&cycles.objects, env, &job, launcher).await?,
    };
    if let Err(e) = cycles.replan(fleet, env, &mut record).await {
        record.status = CycleStatus::Failed;
        record.cause = Some(e.to_string());
        record.finished_at = Some(chrono::Utc::now());
        let _ = log.save(&record).await;
        log.release_lock().await;
        return Ok(record);
    }
    let engine = CycleEngine {
        fleet,
        log: &log,
        options,
    };
    Ok(engine.run(record).await)
}

/// The engine's cycle log on S3.
pub struct S3CycleLog {
    cycles: Cycles,
    env: EnvRef,
    job: S3Job,
}

impl JobLog<CycleRecord> for S3CycleLog {
    async fn save(&self, record: &CycleRecord) -> Result<(), JobError> {
        // Every save of a running worker is a heartbeat.
        let mut beating = record.clone();
        if !record.is_finished() {
            beating.heartbeat_at = Some(Utc::now());
        }
        self.cycles
            .save(&self.env, &beating, Write::Always)
            .await
            .map(drop)
            .map_err(JobError::Objects)
    }

    async fn renew_lock(&self) -> Result<(), JobError> {
        self.job.renew_lock().await
    }

    async fn release_lock(&self) {
        self.job.release_lock().await;
        // The environment is free: the next job in its queue goes.
        if let Some(launcher) = self.job.launcher()
            && let Err(e) =
                crate::queue::promote(&self.cycles.objects, &self.env, launcher.as_ref()).await
        {
            tracing::warn!(env = %self.env, error = %e, "could not promote a queued job");
        }
    }

    async fn cancel_requested(&self, _: &CycleRecord) -> bool {
        self.job.cancel_requested().await
    }

    async fn hand_off(&self, _: &CycleRecord) -> Result<(), JobError> {
        self.job.hand_off().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Sizes = Sizes {
        min: 1,
        max: 4,
        desired: 2,
    };

    fn scale(desired: Option<i32>, min: Option<i32>, max: Option<i32>) -> Result<Sizes, String> {
        ScaleRequest { desired, min, max }
            .apply(NOW)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_scaling_changes_only_what_it_names_and_stays_within_the_bounds() {
        assert_eq!(
            scale(Some(3), None, None).unwrap(),
            Sizes { desired: 3, ..NOW }
        );
        assert_eq!(
            scale(Some(6), None, Some(8)).unwrap(),
            Sizes {
                min: 1,
                max: 8,
                desired: 6
            }
        );
        assert_eq!(scale(Some(0), Some(0), None).unwrap().desired, 0);
    }

    #[test]
    fn a_scaling_that_makes_no_sense_is_refused_with_what_to_do() {
        let e = scale(Some(6), None, None).unwrap_err();
        assert!(e.contains("outside the group's bounds 1..4"), "{e}");
        assert!(
            scale(None, None, None)
                .unwrap_err()
                .contains("say what to change")
        );
        assert!(
            scale(None, Some(5), None)
                .unwrap_err()
                .contains("min 5 is above max 4")
        );
        assert!(
            scale(Some(-1), None, None)
                .unwrap_err()
                .contains("between 0 and")
        );
        assert!(scale(None, None, Some(MAX_INSTANCES + 1)).is_err());
    }
}
