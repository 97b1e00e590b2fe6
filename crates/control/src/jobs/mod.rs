//! Jobs: the deploys and cycles that hold an environment's lock and run in
//! a worker, a fresh Lambda invocation in AWS or a task on the local
//! platform. Both kinds share the machinery here, written once:
//!
//! - the lock (`lock`): one job per environment, conditional writes;
//! - launching a worker (`Launcher`, `launch`): an asynchronous invocation
//!   carrying a small internal event;
//! - the claim: of two launches of the same job, one runs it
//!   ([`claim`], a conditional write on the record's version);
//! - what a running job needs of S3 besides its record ([`S3Job`]): renew
//!   and release the lock, see its cancel marker, hand over to a fresh
//!   worker when its time runs out;
//! - the time budget of a worker ([`budget`]).

pub mod history;
pub mod launch;
pub mod lock;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use slipway_core::ids::JobId;
use slipway_core::keys::{job_cancel_key, job_key};
use slipway_core::names::EnvRef;
use slipway_core::objects::{ObjectError, S3Objects, Write};

pub use launch::RunJob;
pub use lock::{Held, Lock, LockError};

use crate::store::{StoreError, read_record};

/// Why a worker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The SDK's error, as it says it.
    #[error("{0}")]
    Invoke(String),
    #[error("the asynchronous invocation answered {0}")]
    Status(i32),
    #[error("this launcher starts {expected} jobs, not {got}")]
    WrongKind {
        expected: slipway_core::ids::JobKind,
        got: slipway_core::ids::JobKind,
    },
    #[error("no launcher to hand over to")]
    NoLauncher,
}

/// Starts the worker of a queued job without waiting for it: an
/// asynchronous invocation of the job's function in AWS, a task on the
/// local platform.
pub trait Launcher: Send + Sync {
    fn launch(&self, env: EnvRef, job: JobId) -> BoxFuture<'_, Result<(), LaunchError>>;

    /// Whether it starts jobs of `kind` (a queue's head of another kind is
    /// left to a function that does).
    fn launches(&self, kind: slipway_core::ids::JobKind) -> bool {
        let _ = kind;
        true
    }
}

/// The launchers of both kinds a function has, as one: its own for its own
/// jobs, the other function's for a queued job of the other kind it
/// promotes.
#[derive(Clone, Default)]
pub struct Launchers {
    pub deploys: Option<Arc<dyn Launcher>>,
    pub cycles: Option<Arc<dyn Launcher>>,
}

impl Launchers {
    fn of(&self, kind: slipway_core::ids::JobKind) -> Option<&Arc<dyn Launcher>> {
        match kind {
            slipway_core::ids::JobKind::Deploy => self.deploys.as_ref(),
            slipway_core::ids::JobKind::Cycle => self.cycles.as_ref(),
        }
    }
}

impl Launcher for Launchers {
    fn launch(&self, env: EnvRef, job: JobId) -> BoxFuture<'_, Result<(), LaunchError>> {
        match self.of(job.kind()) {
            Some(launcher) => launcher.launch(env, job),
            None => Box::pin(async { Err(LaunchError::NoLauncher) }),
        }
    }

    fn launches(&self, kind: slipway_core::ids::JobKind) -> bool {
        self.of(kind).is_some_and(|l| l.launches(kind))
    }
}

/// Why a running job could not keep its record, its lock or its worker.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
}

/// Where an engine keeps what its job does: the record, the lock, the
/// cancel marker, the hand-over. The deploy engine's log adds `current`.
pub trait JobLog<R>: Sync {
    fn save(&self, record: &R) -> impl Future<Output = Result<(), JobError>> + Send;
    /// Keeps the environment lock; `Err` when it was lost.
    fn renew_lock(&self) -> impl Future<Output = Result<(), JobError>> + Send;
    fn release_lock(&self) -> impl Future<Output = ()> + Send;
    fn cancel_requested(&self, record: &R) -> impl Future<Output = bool> + Send;
    /// Starts a fresh worker that continues this job.
    fn hand_off(&self, record: &R) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// How often a running job says its worker is alive, on AWS.
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// A job whose worker has been silent for this many heartbeats is
/// presumed dead: the reconciler finishes it.
pub const HEARTBEATS_MISSED: u32 = 4;

/// What a job record says about who runs it.
pub trait JobRecord: Serialize + DeserializeOwned {
    /// Queued, or handed over by a worker that ran out of time.
    fn resumable(&self) -> bool;
    fn is_finished(&self) -> bool;
    /// A worker takes it up: counts itself, and marks it running.
    fn take_up(&mut self);
    /// When its worker last said it is alive (its creation for a job no
    /// worker took up yet).
    fn heartbeat_at(&self) -> DateTime<Utc>;
    fn beat(&mut self, now: DateTime<Utc>);
    /// Who asked for it.
    fn user(&self) -> &str;
    /// Waits in the environment's queue; no worker has it yet.
    fn waiting(&self) -> bool;
    /// Out of the queue, its worker about to start.
    fn promoted(&mut self, now: DateTime<Utc>) {
        self.set_waiting(false);
        self.beat(now);
    }
    fn set_waiting(&mut self, waiting: bool);
    /// Ends it before any worker ran it: failed, or cancelled, with why.
    fn end_unrun(&mut self, failed: bool, cause: &str, now: DateTime<Utc>);
}

/// The outcome of a worker's claim on a job.
pub enum Claim<R> {
    /// This worker runs it.
    Ours(R),
    /// Finished, run by another worker, or claimed by one meanwhile: the
    /// record as it is.
    NotOurs(R),
    /// There is no such job.
    Missing,
}

/// A job's record and its version, if it exists.
pub async fn record<R: JobRecord>(
    objects: &S3Objects,
    env: &EnvRef,
    id: &JobId,
) -> Result<Option<(R, String)>, StoreError> {
    let what = format!("{} record {id}", id.kind());
    read_record(objects, &job_key(env, id), &what).await
}

/// Writes a job's record as `write` allows (`IfMatch` the version read,
/// where whoever wrote meanwhile must win): its new version.
pub async fn write_record<R: JobRecord>(
    objects: &S3Objects,
    env: &EnvRef,
    id: &JobId,
    record: &R,
    write: Write<'_>,
) -> Result<String, ObjectError> {
    let body = serde_json::to_vec_pretty(record).expect("a record always serialises");
    objects
        .put(&job_key(env, id), body, "application/json", write)
        .await
}

/// Asks a running job to stop: its marker beside the record, which the
/// engine looks for between steps (and a deploy while its batch runs). A
/// finished job is left as it is. The record as it was, if it exists.
pub async fn cancel<R: JobRecord>(
    objects: &S3Objects,
    env: &EnvRef,
    id: &JobId,
) -> Result<Option<R>, StoreError> {
    let Some((record, _)) = record::<R>(objects, env, id).await? else {
        return Ok(None);
    };
    if !record.is_finished() {
        objects
            .put(
                &job_cancel_key(env, id),
                Vec::new(),
                "text/plain",
                Write::Always,
            )
            .await?;
    }
    Ok(Some(record))
}

/// Claims the job `id` for this worker: a conditional write of the taken-up
/// record on the version that was read, so of two launches of the same job
/// exactly one runs it.
pub async fn claim<R: JobRecord>(
    objects: &S3Objects,
    env: &EnvRef,
    id: &JobId,
) -> Result<Claim<R>, StoreError> {
    let Some((mut record, etag)) = record::<R>(objects, env, id).await? else {
        return Ok(Claim::Missing);
    };
    if record.is_finished() || !record.resumable() {
        return Ok(Claim::NotOurs(record));
    }
    record.take_up();
    record.beat(Utc::now());
    match write_record(objects, env, id, &record, Write::IfMatch(&etag)).await {
        Ok(_) => Ok(Claim::Ours(record)),
        Err(ObjectError::Precondition { .. }) => {
            Ok(match self::record::<R>(objects, env, id).await? {
                Some((now, _)) => Claim::NotOurs(now),
                None => Claim::Missing,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// How long a worker with `time_left` (a Lambda invocation's) may go on
/// starting steps: what is left once the longest step and `reserve` (to
/// save and hand over) are set aside, and at least `floor`. Without a
/// deadline (the local platform), no limit.
pub fn budget(
    time_left: Option<Duration>,
    longest_step: Duration,
    reserve: Duration,
    floor: Duration,
) -> Duration {
    match time_left {
        Some(left) => left.saturating_sub(longest_step + reserve).max(floor),
        None => Duration::MAX,
    }
}

/// What a running job needs of S3 besides its record: its lock, its cancel
/// marker, and a launcher to hand over to.
pub struct S3Job {
    objects: S3Objects,
    env: EnvRef,
    id: JobId,
    held: tokio::sync::Mutex<Held>,
    /// Starts the worker that takes over; none where workers never run
    /// out of time (the local platform's deploys).
    launcher: Option<Arc<dyn Launcher>>,
}

impl S3Job {
    /// Takes up the lock `id` holds (the API took it when it queued the
    /// job); fails if another job holds it.
    pub async fn adopt(
        objects: &S3Objects,
        env: &EnvRef,
        id: &JobId,
        launcher: Option<Arc<dyn Launcher>>,
    ) -> Result<Self, LockError> {
        let held = lock::adopt(objects, env, id).await?;
        Ok(Self {
            objects: objects.clone(),
            env: env.clone(),
            id: id.clone(),
            held: tokio::sync::Mutex::new(held),
            launcher,
        })
    }

    /// Pushes the lock's expiry forward; fails if it was taken over.
    pub async fn renew_lock(&self) -> Result<(), JobError> {
        let mut held = self.held.lock().await;
        Ok(lock::renew(&self.objects, &self.env, &mut held, Utc::now()).await?)
    }

    /// Best effort: a lock left behind expires.
    pub async fn release_lock(&self) {
        let held = self.held.lock().await;
        if let Err(e) = lock::release(&self.objects, &self.env, &held).await {
            tracing::warn!(env = %self.env, job = %self.id, error = %e, "could not release the lock");
        }
    }

    /// Whether someone asked the job to stop.
    pub async fn cancel_requested(&self) -> bool {
        matches!(
            self.objects
                .head(&job_cancel_key(&self.env, &self.id))
                .await,
            Ok(Some(_))
        )
    }

    /// The launcher of this function's workers, if it has one.
    pub fn launcher(&self) -> Option<&Arc<dyn Launcher>> {
        self.launcher.as_ref()
    }

    /// Starts a fresh worker that continues this job; the lock stays held.
    pub async fn hand_off(&self) -> Result<(), JobError> {
        let launcher = self.launcher.as_ref().ok_or(LaunchError::NoLauncher)?;
        Ok(launcher.launch(self.env.clone(), self.id.clone()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_with_a_deadline_keeps_room_for_its_longest_step() {
        let m = Duration::from_secs(60);
        assert_eq!(budget(None, m, m, m), Duration::MAX);
        assert_eq!(
            budget(
                Some(Duration::from_secs(900)),
                Duration::from_secs(300),
                m,
                m
            ),
            Duration::from_secs(540)
        );
        assert_eq!(budget(Some(Duration::from_secs(100)), m, m, m), m);
        assert_eq!(
            budget(Some(Duration::ZERO), m, m, Duration::ZERO),
            Duration::ZERO
        );
    }
}
