//! The deploy queue: a deploy asked for while another job holds the
//! environment waits its turn instead of being refused, when the
//! environment's settings say `queue: true` or the request asks
//! (`ship deploy --wait`).
//!
//! A waiting deploy is its record (`queued`, `waiting`) and an empty
//! object `<app>/<env>/queue/<id>`; ids sort by creation, so the listing is
//! the order. Whoever frees the environment promotes the head: the worker
//! that finishes a deploy, the reconciler's round (after a cycle, or a
//! worker that died), and the request that queued (the holder may have
//! finished meanwhile). Promoting takes the lock for the head (a
//! conditional create: of two promoters one wins), marks it no longer
//! waiting, removes its entry and launches its worker. With `latest_wins`,
//! a newly queued deploy cancels those still waiting. Cancelling a waiting
//! deploy removes it from the queue.

use chrono::{DateTime, Utc};

use super::record::DeployRecord;
use super::service::{DeployError, Deploys, StartDeploy};
use crate::jobs::Launcher;
use crate::jobs::lock::{self, Lock, LockError};
use slipway_core::deploys::DeployStatus;
use slipway_core::ids::DeployId;
use slipway_core::keys::{queue_key, queue_prefix};
use slipway_core::names::EnvRef;
use slipway_core::objects::Write;

/// A deploy begun: running (its worker launched) or waiting its turn.
#[derive(Debug)]
pub struct Begun {
    pub record: DeployRecord,
    /// Its place in the queue when it waits (1: next).
    pub position: Option<usize>,
}

impl Deploys {
    /// Starts a deploy and launches its worker; or, when another job holds
    /// the environment and queueing is on (`queue` asks, or the settings
    /// say so), queues it.
    pub async fn begin(
        &self,
        env: &EnvRef,
        request: StartDeploy,
        queue: Option<bool>,
        now: DateTime<Utc>,
        launcher: &dyn Launcher,
    ) -> Result<Begun, DeployError> {
        let settings = self.settings(env).await?;
        let record = self.new_record(env, request, &settings, now).await?;
        match lock::acquire(
            &self.objects,
            env,
            Lock::new(record.id.clone(), &record.user, now),
            now,
        )
        .await
        {
            Ok(held) => {
                self.save_record(env, &record, &held).await?;
                let record = self.launch(env, record, &held, launcher).await?;
                Ok(Begun {
                    record,
                    position: None,
                })
            }
            Err(LockError::Held(holder)) if queue.unwrap_or(settings.queue) => {
                let mut record = record;
                record.waiting = true;
                self.put(env, &record).await?;
                self.objects
                    .put(
                        &queue_key(env, &record.id),
                        Vec::new(),
                        "text/plain",
                        Write::IfAbsent,
                    )
                    .await?;
                if settings.latest_wins {
                    self.replace_waiting(env, &record).await?;
                }
                tracing::info!(env = %env, deploy = %record.id, holder = %holder.holder(), "deploy queued");
                // The holder may have finished before the entry was there.
                self.promote(env, launcher).await?;
                let position = self.position(env, &record.id).await?;
                let record = self.get(env, &record.id).await?;
                Ok(Begun { record, position })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The waiting deploys, next first.
    pub async fn waiting(&self, env: &EnvRef) -> Result<Vec<DeployId>, DeployError> {
        let prefix = queue_prefix(env);
        let mut ids: Vec<DeployId> = self
            .objects
            .list_keys(&prefix)
            .await?
            .iter()
            .filter_map(|k| DeployId::parse(k.strip_prefix(&prefix)?).ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Where `id` is in the queue (1: next), if it waits.
    pub async fn position(
        &self,
        env: &EnvRef,
        id: &DeployId,
    ) -> Result<Option<usize>, DeployError> {
        Ok(self
            .waiting(env)
            .await?
            .iter()
            .position(|w| w == id)
            .map(|i| i + 1))
    }

    /// Fills in each waiting record's place in the queue.
    pub async fn with_positions(
        &self,
        env: &EnvRef,
        mut records: Vec<DeployRecord>,
    ) -> Result<Vec<DeployRecord>, DeployError> {
        if records.iter().any(|r| r.waiting && !r.is_finished()) {
            let waiting = self.waiting(env).await?;
            for r in records.iter_mut().filter(|r| r.waiting) {
                r.queue_position = waiting.iter().position(|w| *w == r.id).map(|i| i + 1);
            }
        }
        Ok(records)
    }

    /// Cancels every deploy waiting before `newest`: only the latest
    /// matters.
    async fn replace_waiting(
        &self,
        env: &EnvRef,
        newest: &DeployRecord,
    ) -> Result<(), DeployError> {
        for id in self.waiting(env).await? {
            if id >= newest.id {
                continue;
            }
            self.drop_waiting(
                env,
                &id,
                &format!("replaced by the newer deploy {}", newest.id),
            )
            .await?;
        }
        Ok(())
    }

    /// Takes a waiting deploy out of the queue, cancelled with `cause`.
    pub(super) async fn drop_waiting(
        &self,
        env: &EnvRef,
        id: &DeployId,
        cause: &str,
    ) -> Result<Option<DeployRecord>, DeployError> {
        let mut record = self.get(env, id).await?;
        self.objects.delete(&queue_key(env, id)).await?;
        if !record.waiting || record.is_finished() {
            return Ok(None);
        }
        record.waiting = false;
        record.status = DeployStatus::Cancelled;
        record.cause = Some(cause.to_owned());
        record.finished_at = Some(Utc::now());
        self.put(env, &record).await?;
        Ok(Some(record))
    }

    /// When nothing holds the environment, the first waiting deploy takes
    /// it and its worker is launched. The deploy promoted, if any.
    pub async fn promote(
        &self,
        env: &EnvRef,
        launcher: &dyn Launcher,
    ) -> Result<Option<DeployId>, DeployError> {
        loop {
            let Some(head) = self.waiting(env).await?.into_iter().next() else {
                return Ok(None);
            };
            let mut record = self.get(env, &head).await?;
            if !record.waiting || record.is_finished() {
                // Cancelled or promoted already: its entry is left over.
                self.objects.delete(&queue_key(env, &head)).await?;
                continue;
            }
            let now = Utc::now();
            let held = match lock::acquire(
                &self.objects,
                env,
                Lock::new(head.clone(), &record.user, now),
                now,
            )
            .await
            {
                Ok(held) => held,
                // Held (by another job, or the head promoted by someone
                // else a moment ago): nothing to do now.
                Err(LockError::Held(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            record.waiting = false;
            record.heartbeat_at = Some(now);
            self.save_record(env, &record, &held).await?;
            self.objects.delete(&queue_key(env, &head)).await?;
            tracing::info!(env = %env, deploy = %head, "queued deploy promoted");
            self.launch(env, record, &held, launcher).await?;
            return Ok(Some(head));
        }
    }
}
