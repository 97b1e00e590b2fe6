//! The environment lock, `<app>/<env>/lock`: one job (a deploy or a cycle)
//! at a time.
//!
//! Taking it is a conditional create (`If-None-Match: *`), so of any number
//! of concurrent deploys exactly one wins. The lock carries the deploy id,
//! who started it and an expiry: a lock whose holder crashed is taken over
//! once expired, with an `If-Match` write on the version that was read, so
//! two deploys taking over the same stale lock cannot both win. A running
//! deploy renews its lock (again `If-Match`), and releases it only if it
//! still holds it.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use slipway_core::ids::JobId;
use slipway_core::names::EnvRef;
use slipway_core::objects::{ObjectError, S3Objects, Write};

/// A deploy that has not renewed its lock for this long is presumed dead.
pub const LOCK_TTL: Duration = Duration::minutes(20);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// The deploy or cycle that holds it (stored as `deploy_id`, the name
    /// it has always had, so locks of running jobs stay readable).
    #[serde(rename = "deploy_id")]
    pub job: JobId,
    pub user: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Lock {
    pub fn new(job: impl Into<JobId>, user: &str, now: DateTime<Utc>) -> Self {
        Self {
            job: job.into(),
            user: user.to_owned(),
            acquired_at: now,
            expires_at: now + LOCK_TTL,
        }
    }

    /// What holds it, in words: `deploy d…` or `cycle c…`.
    pub fn holder(&self) -> String {
        format!("{} {}", self.job.kind(), self.job)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{} by {} holds the environment since {}",
        .0.holder(), .0.user, .0.acquired_at.to_rfc3339()
    )]
    Held(Lock),
    #[error("the lock is no longer held by this job")]
    Lost,
    #[error("the lock object is damaged: {0}")]
    Damaged(String),
    #[error(transparent)]
    Store(#[from] ObjectError),
}

/// A lock this process holds, with the version it wrote.
#[derive(Debug, Clone)]
pub struct Held {
    pub lock: Lock,
    etag: String,
}

pub use slipway_core::keys::lock_key;

fn body(lock: &Lock) -> Vec<u8> {
    serde_json::to_vec_pretty(lock).expect("a lock always serialises")
}

/// The current lock, if any, with its version.
pub async fn read(objects: &S3Objects, env: &EnvRef) -> Result<Option<(Lock, String)>, LockError> {
    let Some(object) = objects.get(&lock_key(env)).await? else {
        return Ok(None);
    };
    let lock =
        serde_json::from_slice(&object.body).map_err(|e| LockError::Damaged(e.to_string()))?;
    Ok(Some((lock, object.etag)))
}

/// After losing a conditional write: who holds the lock now.
async fn beaten(objects: &S3Objects, env: &EnvRef) -> LockError {
    match read(objects, env).await {
        Ok(Some((holder, _))) => LockError::Held(holder),
        Ok(None) => LockError::Lost,
        Err(e) => e,
    }
}

/// Takes the lock for `lock.job`, or says who holds it.
pub async fn acquire(
    objects: &S3Objects,
    env: &EnvRef,
    lock: Lock,
    now: DateTime<Utc>,
) -> Result<Held, LockError> {
    let key = lock_key(env);
    match objects
        .put(&key, body(&lock), "application/json", Write::IfAbsent)
        .await
    {
        Ok(etag) => return Ok(Held { lock, etag }),
        Err(ObjectError::Precondition { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let Some((holder, etag)) = read(objects, env).await? else {
        // Released between our write and our read: one more try.
        return match objects
            .put(&key, body(&lock), "application/json", Write::IfAbsent)
            .await
        {
            Ok(etag) => Ok(Held { lock, etag }),
            Err(ObjectError::Precondition { .. }) => Err(beaten(objects, env).await),
            Err(e) => Err(e.into()),
        };
    };
    if holder.expires_at > now {
        return Err(LockError::Held(holder));
    }
    match objects
        .put(&key, body(&lock), "application/json", Write::IfMatch(&etag))
        .await
    {
        Ok(etag) => Ok(Held { lock, etag }),
        Err(ObjectError::Precondition { .. }) => Err(beaten(objects, env).await),
        Err(e) => Err(e.into()),
    }
}

/// Takes up a lock this deploy already holds (a worker continuing what the
/// API started), so it can renew and release it.
pub async fn adopt(objects: &S3Objects, env: &EnvRef, job: &JobId) -> Result<Held, LockError> {
    match read(objects, env).await? {
        Some((lock, etag)) if lock.job == *job => Ok(Held { lock, etag }),
        Some((lock, _)) => Err(LockError::Held(lock)),
        None => Err(LockError::Lost),
    }
}

/// Pushes the expiry forward; fails if the lock was taken over meanwhile.
pub async fn renew(
    objects: &S3Objects,
    env: &EnvRef,
    held: &mut Held,
    now: DateTime<Utc>,
) -> Result<(), LockError> {
    let mut lock = held.lock.clone();
    lock.expires_at = now + LOCK_TTL;
    match objects
        .put(
            &lock_key(env),
            body(&lock),
            "application/json",
            Write::IfMatch(&held.etag),
        )
        .await
    {
        Ok(etag) => {
            *held = Held { lock, etag };
            Ok(())
        }
        Err(ObjectError::Precondition { .. }) => Err(LockError::Lost),
        Err(e) => Err(e.into()),
    }
}

/// Releases the lock if this job still holds it: a delete conditional on
/// the version this job wrote, so a lock another job took over meanwhile
/// is never removed.
pub async fn release(objects: &S3Objects, env: &EnvRef, held: &Held) -> Result<(), LockError> {
    match objects.delete_if_match(&lock_key(env), &held.etag).await {
        Ok(()) => Ok(()),
        Err(ObjectError::Precondition { .. }) => match read(objects, env).await? {
            None => Ok(()),
            Some(_) => Err(LockError::Lost),
        },
        Err(e) => Err(e.into()),
    }
}
