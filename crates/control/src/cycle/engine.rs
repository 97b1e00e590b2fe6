//! The health-gated cycle of every instance, written against the fleet
//! ports and a cycle log, so the Lambda worker and the local platform run
//! the same code.
//!
//! One step per instance: terminate it (the group launches a replacement),
//! wait for an instance that was not there before to be InService with the
//! release tag the cycle wants, then for every target group to call it
//! healthy. A step that times out fails the cycle and stops it: the fleet
//! is one instance short at worst, never more. The record is saved after
//! every change; a cancel stops before the next step; a worker past its
//! time budget hands over to a fresh one, which resumes where it stopped
//! (a step already terminated is not terminated again).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::CycleStatus;
use super::{CycleRecord, StepStatus};
use crate::fleet::{Fleet, GroupControl, InstanceId, JOB_SUSPENDED_PROCESSES, Member};
use crate::jobs::JobLog;
use slipway_core::names::EnvRef;

#[derive(Debug, Clone)]
pub struct CycleOptions {
    /// How long a replacement may take to be InService with the release.
    pub replace_timeout: Duration,
    /// How long the load balancer has to call it healthy after that.
    pub health_timeout: Duration,
    /// How often to look at the group while waiting.
    pub poll: Duration,
    /// A worker stops starting steps after this long and hands over.
    pub budget: Duration,
}

impl CycleOptions {
    /// The environment's timeouts.
    pub fn from_settings(settings: &slipway_core::env_settings::EnvSettings) -> Self {
        let health_timeout = Duration::from_secs(settings.lb_health_timeout_secs);
        // Launching an instance, then its agent's boot: build and health.
        let replace_timeout =
            Duration::from_secs(300 + settings.build_timeout_secs + settings.health_timeout_secs);
        Self {
            replace_timeout,
            health_timeout,
            poll: Duration::from_secs(10),
            budget: Duration::MAX,
        }
    }

    /// A worker with `time_left` (a Lambda invocation) stops starting waits
    /// early enough to save and hand over.
    pub fn within(mut self, time_left: Option<Duration>) -> Self {
        let minute = Duration::from_secs(60);
        self.budget = crate::jobs::budget(time_left, self.health_timeout, minute, minute);
        self
    }
}

enum Wait {
    Replaced(InstanceId),
    TimedOut(String),
    /// This worker's time is up; the step resumes in the next.
    HandOff,
}

enum StepEnd {
    Done,
    HandOff,
    Failed(String),
}

pub struct CycleEngine<'a, F, L> {
    pub fleet: &'a F,
    pub log: &'a L,
    pub options: CycleOptions,
}

impl<F: Fleet + GroupControl, L: JobLog<CycleRecord>> CycleEngine<'_, F, L> {
    async fn save(&self, record: &CycleRecord) {
        if let Err(e) = self.log.save(record).await {
            tracing::warn!(cycle = %record.id, error = %e, "could not save the cycle record");
        }
    }

    /// Runs the cycle until it ends or hands over; returns the record.
    pub async fn run(&self, mut record: CycleRecord) -> CycleRecord {
        let env = EnvRef {
            app: record.app.clone(),
            env: record.env.clone(),
        };
        let started = Instant::now();
        record.status = CycleStatus::Running;
        // Unless a worker before this one did and they still are (the
        // reconciler resumes them when it finds a worker dead).
        if record.suspended.is_empty() {
            match self.fleet.suspend(&env, &JOB_SUSPENDED_PROCESSES).await {
                Ok(suspended) => record.suspended = suspended,
                Err(e) => record.notes.push(format!(
                    "could not suspend the group's scaling processes: {e}"
                )),
            }
        }
        self.save(&record).await;
        let mut failure = None;
        // A worker always tries one step, so every worker makes progress.
        let mut stepped = false;
        for index in 0..record.steps.len() {
            let status = record.steps[index].status;
            if !matches!(status, StepStatus::Pending | StepStatus::Replacing) {
                continue;
            }
            if self.log.cancel_requested(&record).await {
                record.status = CycleStatus::Cancelled;
                record.cause = Some(format!(
                    "cancelled with {} of {} instances replaced",
                    replaced(&record),
                    record.steps.len()
                ));
                break;
            }
            let end = if stepped && started.elapsed() >= self.options.budget {
                StepEnd::HandOff
            } else if let Err(e) = self.log.renew_lock().await {
                StepEnd::Failed(format!("the environment lock was lost: {e}"))
            } else {
                stepped = true;
                self.step(&env, &mut record, index, started).await
            };
            match end {
                StepEnd::Done => {}
                StepEnd::Failed(cause) => {
                    failure = Some(cause);
                    break;
                }
                StepEnd::HandOff => {
                    record.handed_off = true;
                    self.save(&record).await;
                    match self.log.hand_off(&record).await {
                        // The lock stays: the next worker holds it on.
                        Ok(()) => return record,
                        Err(e) => {
                            record.handed_off = false;
                            failure = Some(format!("could not hand over to a fresh worker: {e}"));
                            break;
                        }
                    }
                }
            }
        }
        if let Some(cause) = failure {
            record.status = CycleStatus::Failed;
            record.cause = Some(cause);
        } else if record.status == CycleStatus::Running {
            record.status = CycleStatus::Succeeded;
        }
        if !record.suspended.is_empty() {
            match self.fleet.resume(&env, &record.suspended).await {
                Ok(()) => record.suspended.clear(),
                Err(e) => record.notes.push(format!(
                    "could not resume the group's processes {:?}: {e}",
                    record.suspended
                )),
            }
        }
        record.finished_at = Some(Utc::now());
        self.save(&record).await;
        self.log.release_lock().await;
        record
    }

    /// One instance: terminate (unless a previous worker did), wait for
    /// its replacement.
    async fn step(
        &self,
        env: &EnvRef,
        record: &mut CycleRecord,
        index: usize,
        started: Instant,
    ) -> StepEnd {
        let old = record.steps[index].instance.clone();
        if record.steps[index].status == StepStatus::Pending {
            let members = match self.fleet.members(env).await {
                Ok(m) => m,
                Err(e) => return StepEnd::Failed(e.to_string()),
            };
            if !members.iter().any(|m| m.id == old && m.in_service()) {
                let step = &mut record.steps[index];
                step.status = StepStatus::Vanished;
                step.finished_at = Some(Utc::now());
                record
                    .notes
                    .push(format!("{old} left the group before its turn"));
                self.save(record).await;
                return StepEnd::Done;
            }
            let step = &mut record.steps[index];
            step.others = members
                .into_iter()
                .map(|m| m.id)
                .filter(|id| *id != old)
                .collect();
            step.started_at = Some(Utc::now());
            if let Err(e) = self.fleet.terminate(env, &old).await {
                return StepEnd::Failed(e.to_string());
            }
            record.steps[index].status = StepStatus::Replacing;
            self.save(record).await;
        }
        let wait = match self.wait_for_replacement(env, record, index, started).await {
            Ok(w) => w,
            Err(e) => return StepEnd::Failed(e),
        };
        let step = &mut record.steps[index];
        let end = match wait {
            Wait::HandOff => return StepEnd::HandOff,
            Wait::Replaced(new) => {
                step.replacement = Some(new);
                step.status = StepStatus::Replaced;
                StepEnd::Done
            }
            Wait::TimedOut(why) => {
                step.status = StepStatus::Failed;
                StepEnd::Failed(why)
            }
        };
        step.finished_at = Some(Utc::now());
        self.save(record).await;
        end
    }

    /// A new instance (not among the others, nor a replacement of an
    /// earlier step) InService with the wanted release, then healthy. The
    /// deadline counts from the termination, across workers.
    async fn wait_for_replacement(
        &self,
        env: &EnvRef,
        record: &CycleRecord,
        index: usize,
        started: Instant,
    ) -> Result<Wait, String> {
        let step = &record.steps[index];
        let mut known: BTreeSet<&InstanceId> = step.others.iter().collect();
        known.insert(&step.instance);
        known.extend(record.steps.iter().filter_map(|s| s.replacement.as_ref()));
        let wanted = record.release.as_deref();
        let terminated_at = step.started_at.unwrap_or_else(Utc::now);
        let timeout = self.options.replace_timeout;
        let mut seen: Option<Member> = None;
        let mut last_beat = Instant::now();
        loop {
            let members = self.fleet.members(env).await.map_err(|e| e.to_string())?;
            if seen.is_none() {
                seen = members.iter().find(|m| !known.contains(&m.id)).cloned();
            }
            let fresh = members.into_iter().find(|m| {
                !known.contains(&m.id)
                    && m.in_service()
                    && wanted.is_none_or(|w| m.release.as_deref() == Some(w))
            });
            if let Some(new) = fresh {
                let unhealthy = self
                    .fleet
                    .wait_healthy(
                        env,
                        std::slice::from_ref(&new.id),
                        self.options.health_timeout,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                if unhealthy.is_empty() {
                    return Ok(Wait::Replaced(new.id));
                }
                return Ok(Wait::TimedOut(format!(
                    "the replacement of {} ({}) did not become healthy in the load balancer within {}s",
                    step.instance,
                    new.id,
                    self.options.health_timeout.as_secs()
                )));
            }
            let waited = (Utc::now() - terminated_at).to_std().unwrap_or_default();
            if waited >= timeout {
                let why = match (&seen, wanted) {
                    (Some(m), Some(w)) => format!(
                        "the replacement of {} ({}) did not come up with {w} within {}s",
                        step.instance,
                        m.id,
                        timeout.as_secs()
                    ),
                    _ => format!(
                        "no replacement of {} was InService within {}s",
                        step.instance,
                        timeout.as_secs()
                    ),
                };
                return Ok(Wait::TimedOut(why));
            }
            if started.elapsed() >= self.options.budget {
                return Ok(Wait::HandOff);
            }
            if last_beat.elapsed() >= crate::jobs::HEARTBEAT.min(self.options.poll * 8) {
                // The worker is alive: the record says so.
                self.save(record).await;
                last_beat = Instant::now();
            }
            tokio::time::sleep(self.options.poll).await;
        }
    }
}

fn replaced(record: &CycleRecord) -> usize {
    record
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Replaced)
        .count()
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
