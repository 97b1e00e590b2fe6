//! The fleet port: an environment's instances as the rollout engine needs
//! them. In AWS this is the Auto Scaling group, its target groups' health
//! and EC2; on the local platform the same APIs on the emulator with an
//! HTTP probe for health. The engine only sees this trait.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use slipway_core::names::EnvRef;

mod view;

pub use view::{Formation, InstanceView, LoadBalancer, session_url};

pub use slipway_core::names::{BadInstanceId, InstanceId};

/// Where a formation comes from: AWS, or the local platform's view of it.
pub trait FormationSource: Clone + Send + Sync + 'static {
    fn formation(&self, env: &EnvRef)
    -> impl Future<Output = Result<Formation, FleetError>> + Send;
}

/// Everything the control plane asks of a fleet: the rollout's view of
/// instances, the group's controls, and the formation. The AWS adapter
/// and the local platform's fleet are both one.
pub trait ControlFleet: Fleet + GroupControl + FormationSource + EdgeControl {}
impl<F: Fleet + GroupControl + FormationSource + EdgeControl> ControlFleet for F {}

/// What the environment's edge (its load balancers' listeners) is told.
pub trait EdgeControl: Sync {
    /// Puts maintenance mode's page up (`Some`, replacing one already up)
    /// or takes it down (`None`).
    fn set_maintenance(
        &self,
        env: &EnvRef,
        maintenance: Option<&slipway_core::maintenance::Maintenance>,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("no Auto Scaling group for {0}")]
    NoGroup(String),
    #[error("{op} failed: {detail}")]
    Aws { op: &'static str, detail: String },
}

/// What the rollout engine does with an environment's instances.
pub trait Fleet: Sync {
    /// The group's instances that are InService, in a stable order.
    fn in_service(
        &self,
        env: &EnvRef,
    ) -> impl Future<Output = Result<Vec<InstanceId>, FleetError>> + Send;

    /// Takes instances out of the load balancer (ASG standby).
    fn enter_standby(
        &self,
        env: &EnvRef,
        ids: &[InstanceId],
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// Puts them back in service.
    fn exit_standby(
        &self,
        env: &EnvRef,
        ids: &[InstanceId],
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// Waits until every target group reports `ids` healthy; returns the
    /// ones that were not by `timeout`.
    fn wait_healthy(
        &self,
        env: &EnvRef,
        ids: &[InstanceId],
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<InstanceId>, FleetError>> + Send;

    /// The group's sizes now.
    fn capacity(&self, env: &EnvRef) -> impl Future<Output = Result<Sizes, FleetError>> + Send;

    /// Every instance of the group with its lifecycle and release tag.
    fn group_members(
        &self,
        env: &EnvRef,
    ) -> impl Future<Output = Result<Vec<Member>, FleetError>> + Send;

    /// Suspends those of `processes` the group does not already have
    /// suspended; answers the ones this call suspended (only those are a
    /// job's to resume).
    fn suspend(
        &self,
        env: &EnvRef,
        processes: &[&str],
    ) -> impl Future<Output = Result<Vec<String>, FleetError>> + Send;

    /// Resumes `processes`.
    fn resume(
        &self,
        env: &EnvRef,
        processes: &[String],
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// Sets the desired capacity and the maximum (a surge batch raises
    /// both, and puts the maximum back after).
    fn set_capacity(
        &self,
        env: &EnvRef,
        desired: i32,
        max: i32,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// Terminates `ids`, lowering the desired capacity by one for each, so
    /// nothing replaces them (they drain from the load balancer first).
    fn retire(
        &self,
        env: &EnvRef,
        ids: &[InstanceId],
    ) -> impl Future<Output = Result<(), FleetError>> + Send;
}

/// The group's processes a job suspends while it holds the environment,
/// so nothing else moves instances meanwhile: zone rebalancing, alarm
/// (target-tracking) scaling and scheduled scaling. Launch, Terminate and
/// health replacement stay on: a group must still heal.
pub const JOB_SUSPENDED_PROCESSES: [&str; 3] =
    ["AZRebalance", "AlarmNotification", "ScheduledActions"];

/// One instance of the group as cycling sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: InstanceId,
    /// The group's lifecycle state: InService, Pending, Terminating…
    pub lifecycle: String,
    /// The `slipway:release` tag its agent set, once it booted a release.
    pub release: Option<String>,
}

impl Member {
    pub fn in_service(&self) -> bool {
        self.lifecycle == "InService"
    }
}

/// The group's size bounds and wish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizes {
    pub min: i32,
    pub max: i32,
    pub desired: i32,
}

/// What terminating an environment removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Destroyed {
    /// Its CloudFormation stack, deleted with everything in it.
    Stack(String),
    /// A group made by hand, deleted with its instances.
    Group(String),
}

/// What cycling, scaling and terminating do to an environment's group.
pub trait GroupControl: Sync {
    /// Every instance of the group with its lifecycle and release tag.
    fn members(&self, env: &EnvRef)
    -> impl Future<Output = Result<Vec<Member>, FleetError>> + Send;

    /// Terminates one instance of the group without lowering the desired
    /// capacity, so the group launches a replacement.
    fn terminate(
        &self,
        env: &EnvRef,
        id: &InstanceId,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    fn sizes(&self, env: &EnvRef) -> impl Future<Output = Result<Sizes, FleetError>> + Send;

    /// Sets the group's sizes (already validated against each other).
    fn resize(
        &self,
        env: &EnvRef,
        to: Sizes,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// Removes the environment: its stack when it has one, else the group.
    fn destroy(&self, env: &EnvRef) -> impl Future<Output = Result<Destroyed, FleetError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_checked() {
        assert!(InstanceId::parse("i-0123456789abcdef0").is_ok());
        for bad in [
            "",
            "i-",
            "0123",
            "i-01/../x",
            "i-a b",
            &format!("i-{}", "a".repeat(40)),
        ] {
            assert!(InstanceId::parse(bad).is_err(), "{bad}");
        }
    }
}
