//! A standby batch: the batch leaves the load balancer (Auto Scaling
//! standby, with the desired capacity lowered so nothing replaces it), the
//! agent deploys it through the runner, it goes back in service whatever
//! happened, and the load balancer must call it healthy.
//!
//! An instance may leave the group meanwhile (terminated, scaled in): it
//! is noticed within one poll, its command cancelled and its result
//! `vanished`, not a failure of the release; the rest of the batch goes on,
//! and the desired capacity it took with it (standby had lowered it) goes
//! back up, so the group launches a replacement, which boots `current`. One
//! that leaves after it came back in service took nothing: the group
//! replaces it by itself.

use std::time::Duration;

use super::engine::{DeployLog, Engine};
use super::record::{Batch, DeployRecord};
use crate::fleet::{Fleet, InstanceId};
use crate::runner::{AgentCommand, Gone, RunStatus, Runner};
use slipway_core::names::EnvRef;

impl<F: Fleet, R: Runner, L: DeployLog> Engine<'_, F, R, L> {
    /// Standby, agent, back in service, health: why it failed, if it did.
    pub(super) async fn standby_batch(
        &self,
        env: &EnvRef,
        batch: &mut Batch,
        url: String,
        rollback: bool,
        record: &DeployRecord,
    ) -> Option<String> {
        let instances = batch.instances.clone();
        let mut failed = None;
        if let Err(e) = self.fleet.enter_standby(env, &instances).await {
            // Some may have gone out before the error (a drain that did
            // not finish): back in, best effort.
            let _ = self.fleet.exit_standby(env, &instances).await;
            return Some(e.to_string());
        }
        let command = AgentCommand::Deploy { release_url: url };
        let gone = Gone::default();
        let run = self.runner.run(
            &instances,
            &command,
            self.options.agent_timeout,
            if rollback {
                // A rollback is never cancelled half-way.
                crate::runner::never()
            } else {
                self.cancel_watch(record)
            },
            &gone,
        );
        let outcome = tokio::select! {
            outcome = run => outcome,
            () = self.watch_for_gone(env, &instances, &gone) => unreachable!("the watch never ends"),
        };
        let vanished: Vec<InstanceId> = match outcome {
            Ok(mut results) => {
                // An instance that left the group failed because it left,
                // whichever the runner saw first.
                let failed_ids: Vec<InstanceId> = results
                    .iter()
                    .filter(|r| !r.succeeded())
                    .map(|r| r.instance.clone())
                    .collect();
                if !failed_ids.is_empty() {
                    let left = self.left(env, &failed_ids).await;
                    for r in results.iter_mut().filter(|r| left.contains(&r.instance)) {
                        r.status = RunStatus::Vanished;
                    }
                }
                let vanished: Vec<InstanceId> = results
                    .iter()
                    .filter(|r| r.status == RunStatus::Vanished)
                    .map(|r| r.instance.clone())
                    .collect();
                if results.len() != instances.len()
                    || results
                        .iter()
                        .any(|r| !r.succeeded() && r.status != RunStatus::Vanished)
                {
                    failed = Some("the agent failed".into());
                }
                batch.results = results;
                vanished
            }
            Err(e) => {
                failed = Some(e.to_string());
                Vec::new()
            }
        };
        // Any that left after their agent finished leave nothing to put
        // back either.
        let mut vanished = vanished;
        vanished.extend(
            self.left(env, &instances)
                .await
                .into_iter()
                .filter(|i| !vanished.contains(i))
                .collect::<Vec<_>>(),
        );
        let mut instances: Vec<InstanceId> = instances
            .into_iter()
            .filter(|i| !vanished.contains(i))
            .collect();
        // These left while in Standby, with the capacity standby had taken
        // off; one that leaves after ExitStandby gave it back is replaced
        // by the group itself.
        let mut left_in_standby = vanished.clone();
        // Back in service whatever happened: a failed agent leaves the
        // previous release serving.
        if !instances.is_empty()
            && let Err(e) = self.fleet.exit_standby(env, &instances).await
        {
            // One may have left between the look and the call: it is
            // vanished, and the rest go back in.
            let gone = self.left(env, &instances).await;
            if gone.is_empty() {
                failed.get_or_insert(e.to_string());
            } else {
                instances.retain(|i| !gone.contains(i));
                vanished.extend(gone.iter().cloned());
                left_in_standby.extend(gone);
                if !instances.is_empty()
                    && let Err(e) = self.fleet.exit_standby(env, &instances).await
                {
                    failed.get_or_insert(e.to_string());
                }
            }
        }
        // After a failed agent there is nothing to wait for: the agent
        // already checked that the previous release serves (or says it
        // does not), and the deploy stops here.
        if failed.is_none() {
            match self.wait_serving(env, &mut instances, &mut vanished).await {
                Ok(unhealthy) => {
                    if !unhealthy.is_empty() {
                        failed = Some("instances did not become healthy".into());
                    }
                    batch.unhealthy = unhealthy;
                }
                Err(e) => failed = Some(e.to_string()),
            }
        }
        if !vanished.is_empty() {
            for r in batch
                .results
                .iter_mut()
                .filter(|r| vanished.contains(&r.instance))
            {
                r.status = RunStatus::Vanished;
            }
            if !left_in_standby.is_empty() {
                self.replace_vanished(env, &left_in_standby).await;
            }
        }
        failed
    }

    /// Until every target group calls `instances` healthy, or the load
    /// balancer's timeout: those that were not. One that leaves the group
    /// meanwhile is noticed within a poll interval and moved to `vanished`.
    async fn wait_serving(
        &self,
        env: &EnvRef,
        instances: &mut Vec<InstanceId>,
        vanished: &mut Vec<InstanceId>,
    ) -> Result<Vec<InstanceId>, crate::fleet::FleetError> {
        let started = std::time::Instant::now();
        let mut pace = crate::backoff::Backoff::up_to(self.options.poll);
        // Target health is polled fast; the group (two more calls) once a
        // poll interval, and at the end.
        let mut looked: Option<std::time::Instant> = None;
        loop {
            let unhealthy = self
                .fleet
                .wait_healthy(env, instances, Duration::ZERO)
                .await?;
            if unhealthy.is_empty() {
                return Ok(unhealthy);
            }
            let timed_out = started.elapsed() >= self.options.health_timeout;
            if timed_out || looked.is_none_or(|t| t.elapsed() >= self.options.poll) {
                looked = Some(std::time::Instant::now());
                let gone = self.left(env, &unhealthy).await;
                if !gone.is_empty() {
                    instances.retain(|i| !gone.contains(i));
                    vanished.extend(gone);
                    continue;
                }
            }
            if timed_out {
                return Ok(unhealthy);
            }
            pace.wait().await;
        }
    }

    /// Resolves never; notes in `gone` each of `ids` that leaves the group
    /// (absent, terminating, detaching), looking every poll.
    async fn watch_for_gone(&self, env: &EnvRef, ids: &[InstanceId], gone: &Gone) {
        loop {
            tokio::time::sleep(self.options.poll).await;
            let left = self.left(env, ids).await;
            if !left.is_empty() {
                let mut gone = gone.lock().unwrap_or_else(|e| e.into_inner());
                gone.extend(left);
            }
        }
    }

    /// Those of `ids` no longer in the group (or on their way out).
    async fn left(&self, env: &EnvRef, ids: &[InstanceId]) -> Vec<InstanceId> {
        let Ok(members) = self.fleet.group_members(env).await else {
            return Vec::new();
        };
        ids.iter()
            .filter(|i| {
                !members.iter().any(|m| {
                    m.id == **i
                        && !m.lifecycle.starts_with("Terminat")
                        && !m.lifecycle.starts_with("Detach")
                })
            })
            .cloned()
            .collect()
    }

    /// Instances that left while in Standby took their place in desired
    /// capacity with them (standby had lowered it): it goes back up, so
    /// the group launches replacements, which boot `current`.
    async fn replace_vanished(&self, env: &EnvRef, vanished: &[InstanceId]) {
        match self.fleet.capacity(env).await {
            Ok(sizes) => {
                let desired = (sizes.desired + vanished.len() as i32).min(sizes.max);
                if let Err(e) = self.fleet.set_capacity(env, desired, sizes.max).await {
                    tracing::warn!(env = %env, error = %e, "could not restore the capacity of vanished instances");
                }
            }
            Err(e) => {
                tracing::warn!(env = %env, error = %e, "could not read the group's capacity")
            }
        }
    }
}
