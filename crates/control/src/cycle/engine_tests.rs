//! The cycle engine's state machine with a fake group and log.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::cycle::{CycleMode, CycleStep};
use crate::fleet::{Destroyed, FleetError, Sizes};
use crate::jobs::JobError;

fn id(n: usize) -> InstanceId {
    InstanceId::parse(&format!("i-{n:04}")).unwrap()
}

/// A group that launches a replacement for every terminated instance; the
/// replacement shows up after `boot_polls` looks at the group, tagged with
/// `boots` (the release its agent comes up with).
struct FakeGroup {
    members: Mutex<Vec<Member>>,
    next: AtomicUsize,
    boots: Option<String>,
    boot_polls: usize,
    /// Replacements launched but not yet visible: (id, polls left).
    booting: Mutex<Vec<(InstanceId, usize)>>,
    terminated: Mutex<Vec<InstanceId>>,
    unhealthy: bool,
    /// The most instances missing at once (terminated, replacement not in
    /// service yet).
    most_missing: AtomicUsize,
    size: usize,
    /// The group's suspended processes (one suspended by someone else).
    suspended: Mutex<Vec<String>>,
}

impl FakeGroup {
    fn new(n: usize, boots: Option<&str>) -> Self {
        Self {
            members: Mutex::new(
                (0..n)
                    .map(|i| Member {
                        id: id(i),
                        lifecycle: "InService".into(),
                        release: Some("r1".into()),
                    })
                    .collect(),
            ),
            next: AtomicUsize::new(100),
            boots: boots.map(str::to_owned),
            boot_polls: 1,
            booting: Mutex::default(),
            terminated: Mutex::default(),
            unhealthy: false,
            most_missing: AtomicUsize::new(0),
            size: n,
            suspended: Mutex::new(vec!["AZRebalance".into()]),
        }
    }

    fn terminated(&self) -> Vec<InstanceId> {
        self.terminated.lock().unwrap().clone()
    }
}

impl Fleet for FakeGroup {
    async fn in_service(&self, _: &EnvRef) -> Result<Vec<InstanceId>, FleetError> {
        Ok(self
            .members
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.id.clone())
            .collect())
    }
    async fn enter_standby(&self, _: &EnvRef, _: &[InstanceId]) -> Result<(), FleetError> {
        unreachable!("cycling never uses standby")
    }
    async fn exit_standby(&self, _: &EnvRef, _: &[InstanceId]) -> Result<(), FleetError> {
        unreachable!("cycling never uses standby")
    }
    async fn capacity(&self, _: &EnvRef) -> Result<Sizes, FleetError> {
        unreachable!("cycling never surges")
    }
    async fn group_members(&self, env: &EnvRef) -> Result<Vec<Member>, FleetError> {
        GroupControl::members(self, env).await
    }
    async fn suspend(&self, _: &EnvRef, processes: &[&str]) -> Result<Vec<String>, FleetError> {
        let mut suspended = self.suspended.lock().unwrap();
        let new: Vec<String> = processes
            .iter()
            .map(|p| (*p).to_owned())
            .filter(|p| !suspended.contains(p))
            .collect();
        suspended.extend(new.iter().cloned());
        Ok(new)
    }
    async fn resume(&self, _: &EnvRef, processes: &[String]) -> Result<(), FleetError> {
        self.suspended
            .lock()
            .unwrap()
            .retain(|p| !processes.contains(p));
        Ok(())
    }
    async fn set_capacity(&self, _: &EnvRef, _: i32, _: i32) -> Result<(), FleetError> {
        unreachable!("cycling never surges")
    }
    async fn retire(&self, _: &EnvRef, _: &[InstanceId]) -> Result<(), FleetError> {
        unreachable!("cycling never surges")
    }
    async fn wait_healthy(
        &self,
        _: &EnvRef,
        ids: &[InstanceId],
        _: Duration,
    ) -> Result<Vec<InstanceId>, FleetError> {
        Ok(if self.unhealthy {
            ids.to_vec()
        } else {
            Vec::new()
        })
    }
}

impl GroupControl for FakeGroup {
    async fn members(&self, _: &EnvRef) -> Result<Vec<Member>, FleetError> {
        let mut booting = self.booting.lock().unwrap();
        let mut members = self.members.lock().unwrap();
        for (new, left) in booting.iter_mut() {
            if *left == 0 {
                members.push(Member {
                    id: new.clone(),
                    lifecycle: "InService".into(),
                    release: self.boots.clone(),
                });
            }
            *left = left.saturating_sub(1);
        }
        booting.retain(|(new, _)| !members.iter().any(|m| m.id == *new));
        Ok(members.clone())
    }
    async fn terminate(&self, _: &EnvRef, old: &InstanceId) -> Result<(), FleetError> {
        let mut members = self.members.lock().unwrap();
        members.retain(|m| m.id != *old);
        self.terminated.lock().unwrap().push(old.clone());
        let new = id(self.next.fetch_add(1, Ordering::SeqCst));
        self.booting.lock().unwrap().push((new, self.boot_polls));
        let missing = self.size - members.len();
        self.most_missing.fetch_max(missing, Ordering::SeqCst);
        Ok(())
    }
    async fn sizes(&self, _: &EnvRef) -> Result<Sizes, FleetError> {
        unreachable!()
    }
    async fn resize(&self, _: &EnvRef, _: Sizes) -> Result<(), FleetError> {
        unreachable!()
    }
    async fn destroy(&self, _: &EnvRef) -> Result<Destroyed, FleetError> {
        unreachable!()
    }
}

#[derive(Default)]
struct FakeLog {
    saves: Mutex<Vec<CycleRecord>>,
    cancel_after_saves: Option<usize>,
    released: AtomicBool,
    hand_offs: AtomicUsize,
}

impl JobLog<CycleRecord> for FakeLog {
    async fn save(&self, record: &CycleRecord) -> Result<(), JobError> {
        self.saves.lock().unwrap().push(record.clone());
        Ok(())
    }
    async fn renew_lock(&self) -> Result<(), JobError> {
        Ok(())
    }
    async fn release_lock(&self) {
        self.released.store(true, Ordering::SeqCst);
    }
    async fn cancel_requested(&self, _: &CycleRecord) -> bool {
        self.cancel_after_saves
            .is_some_and(|n| self.saves.lock().unwrap().len() >= n)
    }
    async fn hand_off(&self, _: &CycleRecord) -> Result<(), JobError> {
        self.hand_offs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn record(n: usize, release: Option<&str>) -> CycleRecord {
    CycleRecord {
        id: "c1-abc".parse().unwrap(),
        app: "hello".parse().unwrap(),
        env: "prod".parse().unwrap(),
        user: "alice".into(),
        mode: CycleMode::All,
        status: CycleStatus::Queued,
        release: release.map(str::to_owned),
        steps: (0..n).map(|i| CycleStep::pending(id(i))).collect(),
        cause: None,
        notes: Vec::new(),
        workers: 1,
        handed_off: false,
        heartbeat_at: None,
        suspended: Vec::new(),
        waiting: false,
        queue_position: None,
        created_at: Utc::now(),
        finished_at: None,
    }
}

fn options() -> CycleOptions {
    CycleOptions {
        replace_timeout: Duration::from_millis(200),
        health_timeout: Duration::from_millis(10),
        poll: Duration::from_millis(1),
        budget: Duration::from_secs(60),
    }
}

async fn run(
    group: &FakeGroup,
    log: &FakeLog,
    record: CycleRecord,
    options: CycleOptions,
) -> CycleRecord {
    CycleEngine {
        fleet: group,
        log,
        options,
    }
    .run(record)
    .await
}

#[tokio::test]
async fn cycling_all_replaces_every_instance_one_at_a_time_with_the_current_release() {
    let group = FakeGroup::new(3, Some("r2"));
    let log = FakeLog::default();

    let done = run(&group, &log, record(3, Some("r2")), options()).await;

    assert_eq!(done.status, CycleStatus::Succeeded, "{:?}", done.cause);
    assert_eq!(group.terminated(), [id(0), id(1), id(2)]);
    assert!(done.steps.iter().all(|s| s.status == StepStatus::Replaced));
    let replacements: Vec<_> = done
        .steps
        .iter()
        .filter_map(|s| s.replacement.clone())
        .collect();
    assert_eq!(replacements, [id(100), id(101), id(102)]);
    assert_eq!(
        group.most_missing.load(Ordering::SeqCst),
        1,
        "never more than one down"
    );
    assert!(log.released.load(Ordering::SeqCst));
    assert!(done.finished_at.is_some());
}

#[tokio::test]
async fn a_cycle_suspends_the_scaling_processes_while_it_runs_and_resumes_only_those_it_suspended()
{
    let group = FakeGroup::new(2, Some("r2"));
    let log = FakeLog::default();

    let done = run(&group, &log, record(2, Some("r2")), options()).await;

    assert_eq!(done.status, CycleStatus::Succeeded, "{:?}", done.cause);
    let first = &log.saves.lock().unwrap()[0];
    assert_eq!(
        first.suspended,
        ["AlarmNotification", "ScheduledActions"],
        "AZRebalance was suspended by someone else already"
    );
    assert!(done.suspended.is_empty());
    assert_eq!(*group.suspended.lock().unwrap(), ["AZRebalance"]);
}

#[tokio::test]
async fn a_replacement_that_does_not_come_up_with_the_release_fails_the_cycle_and_stops_it() {
    let group = FakeGroup::new(3, Some("r1"));
    let log = FakeLog::default();

    let done = run(&group, &log, record(3, Some("r2")), options()).await;

    assert_eq!(done.status, CycleStatus::Failed);
    assert_eq!(group.terminated(), [id(0)], "nothing else is terminated");
    let cause = done.cause.unwrap();
    assert!(cause.contains("did not come up with r2"), "{cause}");
    assert_eq!(done.steps[0].status, StepStatus::Failed);
    assert_eq!(done.steps[1].status, StepStatus::Pending);
    assert!(log.released.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_replacement_the_load_balancer_never_calls_healthy_fails_the_cycle() {
    let group = FakeGroup {
        unhealthy: true,
        ..FakeGroup::new(2, Some("r2"))
    };
    let log = FakeLog::default();

    let done = run(&group, &log, record(2, Some("r2")), options()).await;

    assert_eq!(done.status, CycleStatus::Failed);
    assert!(done.cause.unwrap().contains("did not become healthy"));
    assert_eq!(group.terminated(), [id(0)]);
}

#[tokio::test]
async fn without_a_current_release_any_replacement_in_service_will_do() {
    let group = FakeGroup::new(2, None);
    let log = FakeLog::default();

    let done = run(&group, &log, record(2, None), options()).await;

    assert_eq!(done.status, CycleStatus::Succeeded, "{:?}", done.cause);
}

#[tokio::test]
async fn a_cancel_stops_the_cycle_before_the_next_instance() {
    let group = FakeGroup::new(3, Some("r2"));
    // Saves: running, step 1 replacing, step 1 replaced; then cancelled.
    let log = FakeLog {
        cancel_after_saves: Some(3),
        ..FakeLog::default()
    };

    let done = run(&group, &log, record(3, Some("r2")), options()).await;

    assert_eq!(done.status, CycleStatus::Cancelled);
    assert_eq!(group.terminated(), [id(0)]);
    assert!(done.cause.unwrap().contains("1 of 3"));
    assert!(log.released.load(Ordering::SeqCst));
}

#[tokio::test]
async fn an_instance_gone_before_its_turn_is_noted_and_skipped() {
    let group = FakeGroup::new(3, Some("r2"));
    group.members.lock().unwrap().retain(|m| m.id != id(1));
    let log = FakeLog::default();

    let done = run(&group, &log, record(3, Some("r2")), options()).await;

    assert_eq!(done.status, CycleStatus::Succeeded);
    assert_eq!(done.steps[1].status, StepStatus::Vanished);
    assert!(
        done.notes
            .iter()
            .any(|n| n.contains("i-0001 left the group"))
    );
    assert_eq!(group.terminated(), [id(0), id(2)]);
}

#[tokio::test]
async fn a_worker_out_of_time_hands_over_and_the_next_resumes_without_terminating_twice() {
    let group = FakeGroup {
        boot_polls: 3,
        ..FakeGroup::new(2, Some("r2"))
    };
    let log = FakeLog::default();
    let out_of_time = CycleOptions {
        budget: Duration::ZERO,
        ..options()
    };

    let mut record = record(2, Some("r2"));
    let mut workers = 0;
    while !record.is_finished() {
        workers += 1;
        assert!(workers < 20, "every worker makes progress");
        record = run(&group, &log, record, out_of_time.clone()).await;
        if !record.is_finished() {
            assert!(record.handed_off);
            assert!(
                !log.released.load(Ordering::SeqCst),
                "the lock is kept for the next worker"
            );
        }
    }

    assert_eq!(record.status, CycleStatus::Succeeded, "{:?}", record.cause);
    assert!(workers > 2, "it was handed over: {workers}");
    assert_eq!(log.hand_offs.load(Ordering::SeqCst), workers - 1);
    assert_eq!(group.terminated(), [id(0), id(1)], "each terminated once");
}
