//! Cycles, scalings and termination as the API sees them: checks, the
//! lock, the records; and the S3 cycle log the engine writes through.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::CycleStatus;
use super::engine::{CycleEngine, CycleOptions};
use super::{CycleMode, CycleRecord, CycleStep, StepStatus, cycles_prefix};
use crate::fleet::{Destroyed, Fleet, FleetError, GroupControl, InstanceId, Sizes};
use crate::jobs::lock::{self, Held, Lock, LockError};
use crate::jobs::{Claim, JobError, JobLog, Launcher, S3Job};
use crate::store::{ReleaseStore, StoreError};
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
            created_at: now,
            finished_at: Some(Utc::now().max(now)),
        };
        self.save(env, &record, Write::IfAbsent).await?;
        Ok(record)
    }

    /// Locks the environment and queues the cycle of every instance in
    /// service; the caller launches its worker.
    pub async fn start_all<G: GroupControl>(
        &self,
        fleet: &G,
        env: &EnvRef,
        user: &str,
        now: DateTime<Utc>,
    ) -> Result<(CycleRecord, Held), CycleError> {
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
        let id = CycleId::new(now);
        let held = lock::acquire(&self.objects, env, Lock::new(id.clone(), user, now), now).await?;
        let mut notes = Vec::new();
        if steps.len() == 1 {
            notes.push("a group of one instance is unavailable while it is replaced".into());
        }
        let record = CycleRecord {
            id,
            app: env.app.clone(),
            env: env.env.clone(),
            user: user.to_owned(),
            mode: CycleMode::All,
            status: CycleStatus::Queued,
            release,
            steps,
            cause: None,
            notes,
            workers: 0,
            handed_off: false,
            heartbeat_at: None,
            suspended: Vec::new(),
            created_at: now,
            finished_at: None,
        };
        if let Err(e) = self.save(env, &record, Write::IfAbsent).await {
            let _ = lock::release(&self.objects, env, &held).await;
            return Err(e.into());
        }
        Ok((record, held))
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

    pub async fn get(&self, env: &EnvRef, id: &CycleId) -> Result<CycleRecord, CycleError> {
        Ok(crate::jobs::record(&self.objects, env, &id.clone().into())
            .await?
            .ok_or_else(|| CycleError::NotFound(id.clone()))?
            .0)
    }

    /// Records newest first, at most `limit`.
    pub async fn list(&self, env: &EnvRef, limit: usize) -> Result<Vec<CycleRecord>, CycleError> {
        Ok(self
            .objects
            .newest_records(&cycles_prefix(env), limit)
            .await?)
    }

    /// Asks a running cycle to stop before its next instance.
    pub async fn cancel(&self, env: &EnvRef, id: &CycleId) -> Result<CycleRecord, CycleError> {
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
    let record = match crate::jobs::claim(&cycles.objects, env, &job).await? {
        Claim::Ours(record) => record,
        Claim::NotOurs(record) => return Ok(record),
        Claim::Missing => return Err(CycleError::NotFound(id.clone())),
    };
    let log = S3CycleLog {
        cycles: cycles.clone(),
        env: env.clone(),
        job: S3Job::adopt(&cycles.objects, env, &job, launcher).await?,
    };
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
        self.job.release_lock().await
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
