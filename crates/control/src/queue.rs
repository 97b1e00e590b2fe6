//! The environment's queue: deploys and cycles asked for while another job
//! holds the environment wait their turn here, first come first served
//! whatever their kind, instead of being refused (when the environment's
//! settings say `queue: true`, or the request asks: `ship deploy --wait`,
//! `ship cycle --all --wait`).
//!
//! A waiting job is its record (`queued`, `waiting`) and an empty object
//! `<app>/<env>/queue/<id>`; ids sort by creation across kinds, so the
//! listing is the order. Whoever frees the environment promotes the head:
//! the worker that finishes a job, the reconciler's round (a worker that
//! died), and the request that queued (the holder may have finished
//! meanwhile). Promoting takes the lock for the head (a conditional create:
//! of two promoters one wins), marks it no longer waiting with a
//! conditional write on the version read (a cancel meanwhile wins), removes
//! its entry and launches its worker. A promoter that cannot launch the
//! head's kind (a function that starts only deploys, with a cycle next)
//! leaves it to one that can: the cycle's own function, or the reconciler.

use chrono::Utc;

use crate::cycle::CycleRecord;
use crate::jobs::lock::{self, Lock, LockError};
use crate::jobs::{JobError, JobRecord, Launcher};
use crate::rollout::DeployRecord;
use slipway_core::ids::{JobId, JobKind};
use slipway_core::keys::{job_key, queue_key, queue_prefix};
use slipway_core::names::EnvRef;
use slipway_core::objects::{ObjectError, S3Objects, Write};

/// Puts `job` (its record already saved as waiting) at the end of the
/// queue.
pub async fn enqueue(objects: &S3Objects, env: &EnvRef, job: &JobId) -> Result<(), ObjectError> {
    objects
        .put(
            &queue_key(env, job),
            Vec::new(),
            "text/plain",
            Write::IfAbsent,
        )
        .await
        .map(drop)
}

/// Takes `job`'s entry out of the queue (nothing if it has none).
pub async fn remove(objects: &S3Objects, env: &EnvRef, job: &JobId) -> Result<(), ObjectError> {
    objects.delete(&queue_key(env, job)).await
}

/// The jobs waiting, next first.
pub async fn waiting(objects: &S3Objects, env: &EnvRef) -> Result<Vec<JobId>, ObjectError> {
    let prefix = queue_prefix(env);
    let mut jobs: Vec<JobId> = objects
        .list_keys(&prefix)
        .await?
        .iter()
        .filter_map(|k| JobId::parse(k.strip_prefix(&prefix)?).ok())
        .collect();
    jobs.sort();
    Ok(jobs)
}

/// Where `job` is in the queue (1: next), if it waits.
pub async fn position(
    objects: &S3Objects,
    env: &EnvRef,
    job: &JobId,
) -> Result<Option<usize>, ObjectError> {
    Ok(waiting(objects, env)
        .await?
        .iter()
        .position(|w| w == job)
        .map(|i| i + 1))
}

/// What became of the queue's head.
enum Head {
    /// Its worker was launched.
    Started,
    /// Cancelled, or promoted by someone else: its entry was left over.
    Gone,
    /// Someone holds the environment, or the head's kind is not ours to
    /// launch: it waits on.
    Waits,
}

/// When nothing holds the environment, the first waiting job takes it and
/// its worker is launched. The job promoted, if any.
pub async fn promote(
    objects: &S3Objects,
    env: &EnvRef,
    launcher: &dyn Launcher,
) -> Result<Option<JobId>, JobError> {
    loop {
        let Some(head) = waiting(objects, env).await?.into_iter().next() else {
            return Ok(None);
        };
        if !launcher.launches(head.kind()) {
            return Ok(None);
        }
        let outcome = match head.kind() {
            JobKind::Deploy => promote_head::<DeployRecord>(objects, env, &head, launcher).await?,
            JobKind::Cycle => promote_head::<CycleRecord>(objects, env, &head, launcher).await?,
        };
        match outcome {
            Head::Started => return Ok(Some(head)),
            Head::Gone => continue,
            Head::Waits => return Ok(None),
        }
    }
}

async fn promote_head<R: JobRecord>(
    objects: &S3Objects,
    env: &EnvRef,
    head: &JobId,
    launcher: &dyn Launcher,
) -> Result<Head, JobError> {
    let Some((mut record, etag)) = crate::jobs::record::<R>(objects, env, head).await? else {
        remove(objects, env, head).await?;
        return Ok(Head::Gone);
    };
    if !record.waiting() || record.is_finished() {
        remove(objects, env, head).await?;
        return Ok(Head::Gone);
    }
    let now = Utc::now();
    let held = match lock::acquire(
        objects,
        env,
        Lock::new(head.clone(), record.user(), now),
        now,
    )
    .await
    {
        Ok(held) => held,
        // Held (by another job, or the head promoted by someone else a
        // moment ago): nothing to do now.
        Err(LockError::Held(_)) => return Ok(Head::Waits),
        Err(e) => return Err(e.into()),
    };
    record.promoted(now);
    let body = serde_json::to_vec_pretty(&record).expect("a record always serialises");
    match objects
        .put(
            &job_key(env, head),
            body,
            "application/json",
            Write::IfMatch(&etag),
        )
        .await
    {
        Ok(_) => {}
        Err(e) => {
            // Cancelled (or changed) since it was read: it is not started.
            let _ = lock::release(objects, env, &held).await;
            return match e {
                ObjectError::Precondition { .. } => Ok(Head::Gone),
                e => Err(e.into()),
            };
        }
    }
    remove(objects, env, head).await?;
    tracing::info!(env = %env, job = %head, "queued job promoted");
    if let Err(e) = launcher.launch(env.clone(), head.clone()).await {
        tracing::error!(env = %env, job = %head, error = %e, "a queued job could not be started");
        record.end_unrun(
            true,
            &format!("the {} could not be started", head.kind()),
            Utc::now(),
        );
        let body = serde_json::to_vec_pretty(&record).expect("a record always serialises");
        let _ = objects
            .put(&job_key(env, head), body, "application/json", Write::Always)
            .await;
        let _ = lock::release(objects, env, &held).await;
        return Err(e.into());
    }
    Ok(Head::Started)
}

/// Takes a waiting job out of the queue, cancelled with `cause`: the record
/// as it is then, if it was waiting.
pub async fn drop_waiting<R: JobRecord>(
    objects: &S3Objects,
    env: &EnvRef,
    job: &JobId,
    cause: &str,
) -> Result<Option<R>, JobError> {
    let Some((mut record, etag)) = crate::jobs::record::<R>(objects, env, job).await? else {
        return Ok(None);
    };
    remove(objects, env, job).await?;
    if !record.waiting() || record.is_finished() {
        return Ok(None);
    }
    record.end_unrun(false, cause, Utc::now());
    let body = serde_json::to_vec_pretty(&record).expect("a record always serialises");
    match objects
        .put(
            &job_key(env, job),
            body,
            "application/json",
            Write::IfMatch(&etag),
        )
        .await
    {
        Ok(_) => Ok(Some(record)),
        // Promoted meanwhile: it runs, and a cancel goes to its worker.
        Err(ObjectError::Precondition { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
