//! A surge batch: new instances first, old ones after. Where taking a
//! batch out of service would break the group's minimum size (a group of
//! one, or min = desired) or the minimum healthy share, the batch instead
//! raises the desired capacity by its size (and the maximum, for as long
//! as the batch needs it), waits until that many new instances are
//! InService with the target release and healthy in every target group,
//! then terminates the old batch with a decrement (it drains first). No
//! instance leaves the load balancer before its replacement serves.
//!
//! What it raised is in the batch's record before it raises it, so a
//! worker taking over mid-wait (or the reconciler) neither raises twice
//! nor leaves the group raised. A new instance that comes up with another
//! release (its agent fell back to the last good one) fails the batch at
//! once; a failed batch terminates the new instances and puts the
//! capacity back, leaving the old batch serving as it was.

use std::collections::BTreeSet;
use std::time::Instant;

use super::engine::{DeployLog, Engine};
use super::record::{Batch, DeployRecord, Surge};
use crate::fleet::{Fleet, FleetError, InstanceId, Member};
use crate::runner::Runner;
use slipway_core::names::{EnvRef, ReleaseId};

enum Wait {
    Ready(Vec<InstanceId>),
    Failed(String),
    HandOff,
}

fn is_leaving(m: &Member) -> bool {
    m.lifecycle.starts_with("Terminat") || m.lifecycle.starts_with("Detach")
}

impl<F: Fleet, R: Runner, L: DeployLog> Engine<'_, F, R, L> {
    /// Runs (or resumes) the surge batch `batch`: why it failed, if it did;
    /// `None` when this worker's time ran out while it waited.
    pub(super) async fn surge_batch(
        &self,
        env: &EnvRef,
        batch: &mut Batch,
        release: ReleaseId,
        record: &mut DeployRecord,
        rollback: bool,
    ) -> Option<Option<String>> {
        let surge = match batch.surge.clone() {
            Some(surge) => surge,
            None => match self.raise(env, batch, record, rollback).await {
                Ok(surge) => surge,
                Err(e) => return Some(Some(e.to_string())),
            },
        };
        let wait = self
            .beating(record, self.wait_for_surge(env, batch, &surge, release))
            .await;
        let launched = match wait {
            Wait::HandOff => return None,
            Wait::Ready(launched) => launched,
            Wait::Failed(why) => {
                let undone = self.undo_surge(env, &surge).await;
                return Some(Some(match undone {
                    Ok(()) => why,
                    Err(e) => format!("{why}; putting the capacity back failed: {e}"),
                }));
            }
        };
        if let Some(s) = batch.surge.as_mut() {
            s.launched = launched.clone();
        }
        // The old batch goes (draining first), lowering desired back.
        let members = match self.fleet.group_members(env).await {
            Ok(m) => m,
            Err(e) => return Some(Some(e.to_string())),
        };
        let old: Vec<InstanceId> = batch
            .instances
            .iter()
            .filter(|i| members.iter().any(|m| m.id == **i && !is_leaving(m)))
            .cloned()
            .collect();
        if let Err(e) = self.fleet.retire(env, &old).await {
            return Some(Some(e.to_string()));
        }
        Some(
            self.restore_max(env, &surge)
                .await
                .err()
                .map(|e| e.to_string()),
        )
    }

    /// Raises desired by the batch's size, and the maximum if it must;
    /// records it first.
    async fn raise(
        &self,
        env: &EnvRef,
        batch: &mut Batch,
        record: &mut DeployRecord,
        rollback: bool,
    ) -> Result<Surge, FleetError> {
        let sizes = self.fleet.capacity(env).await?;
        let members = self.fleet.group_members(env).await?;
        let raised_to = sizes.desired + batch.instances.len() as i32;
        let surge = Surge {
            desired_before: sizes.desired,
            max_before: sizes.max,
            raised_to,
            known: members.into_iter().map(|m| m.id).collect(),
            launched: Vec::new(),
        };
        batch.surge = Some(surge.clone());
        if raised_to > sizes.max {
            record.notes.push(format!(
                "batch {}: the maximum size was raised from {} to {raised_to} while it surged",
                batch.number, sizes.max
            ));
        }
        self.put_surge(record, batch, rollback).await;
        self.fleet
            .set_capacity(env, raised_to, sizes.max.max(raised_to))
            .await?;
        Ok(surge)
    }

    async fn put_surge(&self, record: &mut DeployRecord, batch: &Batch, rollback: bool) {
        if rollback {
            record.rollback = Some(batch.clone());
        } else if let Some(b) = record.batches.iter_mut().find(|b| b.number == batch.number) {
            *b = batch.clone();
        }
        if let Err(e) = self.log.save(record).await {
            tracing::warn!(deploy = %record.id, error = %e, "could not save the deploy record");
        }
    }

    /// Until as many new instances as the batch has are InService with
    /// `release` and healthy; a new one with another release fails it.
    async fn wait_for_surge(
        &self,
        env: &EnvRef,
        batch: &Batch,
        surge: &Surge,
        release: ReleaseId,
    ) -> Wait {
        let started = Instant::now();
        let known: BTreeSet<&InstanceId> = surge.known.iter().collect();
        let wanted = release.to_string();
        let count = batch.instances.len();
        let limit = self.options.boot_timeout + self.options.health_timeout;
        loop {
            let members = match self.fleet.group_members(env).await {
                Ok(m) => m,
                Err(e) => return Wait::Failed(e.to_string()),
            };
            let new: Vec<&Member> = members
                .iter()
                .filter(|m| !known.contains(&m.id) && !is_leaving(m))
                .collect();
            if let Some(wrong) = new
                .iter()
                .find(|m| m.in_service() && m.release.as_ref().is_some_and(|r| *r != wanted))
            {
                return Wait::Failed(format!(
                    "the new instance {} came up with {} instead of {wanted}: the release did not start",
                    wrong.id,
                    wrong.release.as_deref().unwrap_or_default()
                ));
            }
            let ready: Vec<InstanceId> = new
                .iter()
                .filter(|m| m.in_service() && m.release.as_deref() == Some(wanted.as_str()))
                .map(|m| m.id.clone())
                .collect();
            if ready.len() >= count {
                let first: Vec<InstanceId> = ready.iter().take(count).cloned().collect();
                match self
                    .fleet
                    .wait_healthy(env, &first, std::time::Duration::ZERO)
                    .await
                {
                    Ok(unhealthy) if unhealthy.is_empty() => return Wait::Ready(first),
                    Ok(_) => {}
                    Err(e) => return Wait::Failed(e.to_string()),
                }
            }
            let waited = (chrono::Utc::now() - batch.started_at)
                .to_std()
                .unwrap_or_default();
            if waited >= limit {
                return Wait::Failed(format!(
                    "{} new instance(s) with {wanted} were not healthy within {}s ({} ready)",
                    count,
                    limit.as_secs(),
                    ready.len()
                ));
            }
            if started.elapsed() >= self.options.wait_limit {
                return Wait::HandOff;
            }
            tokio::time::sleep(self.options.poll).await;
        }
    }

    pub(super) async fn undo_surge(&self, env: &EnvRef, surge: &Surge) -> Result<(), FleetError> {
        undo(self.fleet, env, surge).await
    }

    /// Puts back a maximum the surge raised, unless the group grew past it
    /// meanwhile.
    async fn restore_max(&self, env: &EnvRef, surge: &Surge) -> Result<(), FleetError> {
        let sizes = self.fleet.capacity(env).await?;
        if sizes.max > surge.max_before && sizes.desired <= surge.max_before {
            self.fleet
                .set_capacity(env, sizes.desired, surge.max_before)
                .await?;
        }
        Ok(())
    }
}

/// A surge undone (a failed batch, or one the reconciler found without its
/// worker): the new instances go, desired and max come back.
pub async fn undo<F: Fleet>(fleet: &F, env: &EnvRef, surge: &Surge) -> Result<(), FleetError> {
    let members = fleet.group_members(env).await?;
    let new: Vec<InstanceId> = members
        .iter()
        .filter(|m| !surge.known.contains(&m.id) && !is_leaving(m))
        .map(|m| m.id.clone())
        .collect();
    fleet.retire(env, &new).await?;
    let sizes = fleet.capacity(env).await?;
    if sizes.desired > surge.desired_before || sizes.max != surge.max_before {
        let desired = sizes.desired.min(surge.desired_before.max(sizes.min));
        fleet
            .set_capacity(env, desired, surge.max_before.max(desired))
            .await?;
    }
    Ok(())
}
