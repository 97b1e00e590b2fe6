//! Deploys in the environment's queue (see `crate::queue`): a deploy asked
//! for while another job holds the environment waits its turn instead of
//! being refused, when the environment's settings say `queue: true` or the
//! request asks (`ship deploy --wait`). With `latest_wins`, a newly queued
//! deploy cancels the deploys still waiting (cycles keep their place).
//! Cancelling a waiting deploy removes it from the queue.

use chrono::{DateTime, Utc};

use super::record::DeployRecord;
use super::service::{DeployError, Deploys, StartDeploy};
use crate::jobs::Launcher;
use crate::jobs::lock::{self, Lock, LockError};
use crate::queue;
use slipway_core::ids::{DeployId, JobId};
use slipway_core::names::EnvRef;

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
                self.create(env, &record).await?;
                queue::enqueue(&self.objects, env, &record.id.clone().into()).await?;
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

    /// The jobs waiting for the environment (deploys and cycles), next
    /// first.
    pub async fn waiting(&self, env: &EnvRef) -> Result<Vec<JobId>, DeployError> {
        Ok(queue::waiting(&self.objects, env).await?)
    }

    /// Where `id` is in the queue (1: next), if it waits.
    pub async fn position(
        &self,
        env: &EnvRef,
        id: &DeployId,
    ) -> Result<Option<usize>, DeployError> {
        Ok(queue::position(&self.objects, env, &id.clone().into()).await?)
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
                let id = JobId::Deploy(r.id.clone());
                r.queue_position = waiting.iter().position(|w| *w == id).map(|i| i + 1);
            }
        }
        Ok(records)
    }

    /// Cancels every deploy waiting before `newest`: only the latest
    /// matters. Cycles keep their place.
    async fn replace_waiting(
        &self,
        env: &EnvRef,
        newest: &DeployRecord,
    ) -> Result<(), DeployError> {
        for id in self.waiting(env).await? {
            let JobId::Deploy(id) = id else { continue };
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
        Ok(queue::drop_waiting(&self.objects, env, &id.clone().into(), cause).await?)
    }

    /// When nothing holds the environment, the first waiting job (a deploy
    /// or a cycle) takes it and its worker is launched.
    pub async fn promote(
        &self,
        env: &EnvRef,
        launcher: &dyn Launcher,
    ) -> Result<Option<JobId>, DeployError> {
        Ok(queue::promote(&self.objects, env, launcher).await?)
    }
}
