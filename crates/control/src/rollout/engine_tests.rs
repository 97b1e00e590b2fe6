//! The engine's state machine with fake ports.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;

use super::*;
use crate::fleet::FleetError;
use crate::runner::{Invocation, RunStatus, RunnerError};

fn id(n: usize) -> InstanceId {
    InstanceId::parse(&format!("i-{n:04}")).unwrap()
}

fn r(n: u64) -> ReleaseId {
    ReleaseId::new(n).unwrap()
}

#[derive(Default)]
struct FakeFleet {
    instances: Mutex<Vec<InstanceId>>,
    /// Reported unhealthy until they next leave service (the new release
    /// is bad; the old one, put back, is fine).
    unhealthy: Mutex<BTreeSet<InstanceId>>,
    /// Those reported unhealthy so far.
    reported: Mutex<BTreeSet<InstanceId>>,
    standby: Mutex<Vec<String>>,
    /// Suspend and resume calls.
    processes: Mutex<Vec<String>>,
    /// The group's minimum size (a surge needs one above it).
    min: i32,
    /// What instances a raised desired capacity launches boot: their
    /// release tag.
    boots: Option<String>,
    /// Instances launched by a raised capacity.
    launched: Mutex<Vec<InstanceId>>,
    /// After this many standby calls, add or remove an instance.
    change_after: Option<(usize, Change)>,
    /// Leaves the group the moment it comes back out of Standby.
    vanishes_on_exit: Option<InstanceId>,
}

#[derive(Clone)]
enum Change {
    Join(InstanceId),
    Vanish(InstanceId),
}

impl Fleet for FakeFleet {
    async fn in_service(&self, _: &EnvRef) -> Result<Vec<InstanceId>, FleetError> {
        Ok(self.instances.lock().unwrap().clone())
    }
    async fn enter_standby(&self, _: &EnvRef, ids: &[InstanceId]) -> Result<(), FleetError> {
        {
            let reported = self.reported.lock().unwrap();
            self.unhealthy
                .lock()
                .unwrap()
                .retain(|i| !(ids.contains(i) && reported.contains(i)));
        }
        let mut log = self.standby.lock().unwrap();
        log.push(format!("in {ids:?}"));
        if let Some((after, change)) = &self.change_after
            && log.iter().filter(|l| l.starts_with("in")).count() == *after
        {
            let mut instances = self.instances.lock().unwrap();
            match change {
                Change::Join(i) => instances.push(i.clone()),
                Change::Vanish(i) => instances.retain(|x| x != i),
            }
        }
        Ok(())
    }
    async fn exit_standby(&self, _: &EnvRef, ids: &[InstanceId]) -> Result<(), FleetError> {
        self.standby.lock().unwrap().push(format!("out {ids:?}"));
        if let Some(gone) = &self.vanishes_on_exit
            && ids.contains(gone)
        {
            self.instances.lock().unwrap().retain(|i| i != gone);
        }
        Ok(())
    }
    async fn capacity(&self, _: &EnvRef) -> Result<crate::fleet::Sizes, FleetError> {
        let n = self.instances.lock().unwrap().len() + self.launched.lock().unwrap().len();
        Ok(crate::fleet::Sizes {
            min: self.min,
            max: 100,
            desired: n as i32,
        })
    }
    async fn group_members(&self, _: &EnvRef) -> Result<Vec<crate::fleet::Member>, FleetError> {
        let member = |i: &InstanceId, release: Option<String>| crate::fleet::Member {
            id: i.clone(),
            lifecycle: "InService".into(),
            release,
        };
        let mut all: Vec<_> = self
            .instances
            .lock()
            .unwrap()
            .iter()
            .map(|i| member(i, None))
            .collect();
        all.extend(
            self.launched
                .lock()
                .unwrap()
                .iter()
                .map(|i| member(i, self.boots.clone())),
        );
        Ok(all)
    }
    async fn suspend(&self, _: &EnvRef, processes: &[&str]) -> Result<Vec<String>, FleetError> {
        self.processes
            .lock()
            .unwrap()
            .push(format!("suspend {processes:?}"));
        Ok(processes.iter().map(|p| (*p).to_owned()).collect())
    }
    async fn resume(&self, _: &EnvRef, processes: &[String]) -> Result<(), FleetError> {
        self.processes
            .lock()
            .unwrap()
            .push(format!("resume {processes:?}"));
        Ok(())
    }
    async fn set_capacity(&self, _: &EnvRef, desired: i32, max: i32) -> Result<(), FleetError> {
        self.processes
            .lock()
            .unwrap()
            .push(format!("capacity {desired}/{max}"));
        let serving = self.instances.lock().unwrap().len();
        let mut launched = self.launched.lock().unwrap();
        while serving + launched.len() < desired as usize {
            let next = 100 + launched.len();
            launched.push(id(next));
        }
        Ok(())
    }
    async fn retire(&self, _: &EnvRef, ids: &[InstanceId]) -> Result<(), FleetError> {
        self.processes
            .lock()
            .unwrap()
            .push(format!("retire {ids:?}"));
        self.instances.lock().unwrap().retain(|i| !ids.contains(i));
        self.launched.lock().unwrap().retain(|i| !ids.contains(i));
        Ok(())
    }
    async fn wait_healthy(
        &self,
        _: &EnvRef,
        ids: &[InstanceId],
        _: Duration,
    ) -> Result<Vec<InstanceId>, FleetError> {
        let unhealthy = self.unhealthy.lock().unwrap();
        let members = self.instances.lock().unwrap();
        let launched = self.launched.lock().unwrap();
        // One that left the group is no target of the load balancer's.
        let bad: Vec<InstanceId> = ids
            .iter()
            .filter(|i| unhealthy.contains(*i) || !(members.contains(*i) || launched.contains(*i)))
            .cloned()
            .collect();
        self.reported.lock().unwrap().extend(bad.iter().cloned());
        Ok(bad)
    }
}

#[derive(Default)]
struct FakeRunner {
    /// (instance, url fragment) pairs whose agent fails.
    fails: Vec<(InstanceId, &'static str)>,
    release_phase_fails: bool,
    /// Instances whose `prepare` fails.
    prepare_fails: Vec<InstanceId>,
    calls: Mutex<Vec<(Vec<InstanceId>, AgentCommand)>>,
    /// This call (1-based) runs until the deploy is cancelled.
    hangs_on_call: Option<usize>,
}

impl Runner for FakeRunner {
    async fn run(
        &self,
        targets: &[InstanceId],
        command: &AgentCommand,
        _: Duration,
        cancel: crate::runner::Cancel<'_>,
        _: &crate::runner::Gone,
    ) -> Result<Vec<Invocation>, RunnerError> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((targets.to_vec(), command.clone()));
            calls.len()
        };
        if self.hangs_on_call == Some(call) {
            // A batch that runs until it is cancelled.
            cancel.await;
            return Ok(targets
                .iter()
                .map(|t| Invocation {
                    instance: t.clone(),
                    status: RunStatus::Cancelled,
                    exit_code: None,
                    duration_ms: 5,
                    output_tail: String::new(),
                    output_key: None,
                })
                .collect());
        }
        Ok(targets
            .iter()
            .map(|t| {
                let ok = match command {
                    AgentCommand::ReleasePhase { .. } => !self.release_phase_fails,
                    AgentCommand::Prepare { .. } => !self.prepare_fails.contains(t),
                    AgentCommand::Deploy { release_url } => !self
                        .fails
                        .iter()
                        .any(|(i, frag)| i == t && release_url.ends_with(frag)),
                };
                Invocation {
                    instance: t.clone(),
                    status: if ok {
                        RunStatus::Success
                    } else {
                        RunStatus::Failed
                    },
                    exit_code: Some(if ok { 0 } else { 1 }),
                    duration_ms: 5,
                    output_tail: if ok {
                        String::new()
                    } else {
                        "build: exit status 1\nfailed step=build".into()
                    },
                    output_key: None,
                }
            })
            .collect())
    }
}

#[derive(Default)]
struct FakeLog {
    saves: Mutex<usize>,
    current: Mutex<Option<ReleaseId>>,
    released: Mutex<bool>,
    lock_lost: bool,
    cancel_after_batches: Option<usize>,
    hand_offs: Mutex<usize>,
}

impl DeployLog for FakeLog {
    async fn set_current(&self, _: &EnvRef, id: ReleaseId) -> Result<(), JobError> {
        *self.current.lock().unwrap() = Some(id);
        Ok(())
    }
}

impl JobLog<DeployRecord> for FakeLog {
    async fn save(&self, _: &DeployRecord) -> Result<(), JobError> {
        *self.saves.lock().unwrap() += 1;
        Ok(())
    }
    async fn renew_lock(&self) -> Result<(), JobError> {
        if self.lock_lost {
            Err(crate::jobs::LockError::Lost.into())
        } else {
            Ok(())
        }
    }
    async fn release_lock(&self) {
        *self.released.lock().unwrap() = true;
    }
    async fn cancel_requested(&self, record: &DeployRecord) -> bool {
        self.cancel_after_batches
            .is_some_and(|n| record.batches.len() >= n)
    }
    async fn hand_off(&self, _: &DeployRecord) -> Result<(), JobError> {
        *self.hand_offs.lock().unwrap() += 1;
        Ok(())
    }
}

fn fleet(n: usize) -> FakeFleet {
    FakeFleet {
        instances: Mutex::new((1..=n).map(id).collect()),
        ..FakeFleet::default()
    }
}

fn record(strategy: &str, auto_rollback: bool) -> DeployRecord {
    DeployRecord {
        id: "d1".parse().unwrap(),
        app: "hello".parse().unwrap(),
        env: "prod".parse().unwrap(),
        user: "alice".into(),
        from: Some(r(6)),
        to: r(7),
        strategy: strategy.parse().unwrap(),
        min_healthy_percent: 50,
        auto_rollback,
        status: DeployStatus::Queued,
        cause: None,
        created_at: Utc::now(),
        finished_at: None,
        prepare: None,
        release_phase: None,
        batches: Vec::new(),
        rollback: None,
        notes: Vec::new(),
        plan: Vec::new(),
        workers: 1,
        handed_off: false,
        heartbeat_at: None,
        suspended: Vec::new(),
        surge: false,
        roll_back_requested: false,
        waiting: false,
        queue_position: None,
    }
}

fn url(id: ReleaseId) -> String {
    format!("s3://bucket/hello/prod/releases/{id}")
}

async fn run(
    fleet: &FakeFleet,
    runner: &FakeRunner,
    log: &FakeLog,
    record: DeployRecord,
    release_phase: bool,
) -> DeployRecord {
    run_within(fleet, runner, log, record, release_phase, Duration::MAX).await
}

async fn run_within(
    fleet: &FakeFleet,
    runner: &FakeRunner,
    log: &FakeLog,
    record: DeployRecord,
    release_phase: bool,
    budget: Duration,
) -> DeployRecord {
    run_with(
        fleet,
        runner,
        log,
        record,
        release_phase,
        budget,
        SurgeMode::Auto,
    )
    .await
}

async fn run_with(
    fleet: &FakeFleet,
    runner: &FakeRunner,
    log: &FakeLog,
    record: DeployRecord,
    release_phase: bool,
    budget: Duration,
    surge: SurgeMode,
) -> DeployRecord {
    run_options(
        fleet,
        runner,
        log,
        record,
        release_phase,
        budget,
        surge,
        false,
    )
    .await
}

/// As the settings say by default: every instance prepares first.
async fn run_prepared(
    fleet: &FakeFleet,
    runner: &FakeRunner,
    log: &FakeLog,
    record: DeployRecord,
) -> DeployRecord {
    run_options(
        fleet,
        runner,
        log,
        record,
        false,
        Duration::MAX,
        SurgeMode::Auto,
        true,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn run_options(
    fleet: &FakeFleet,
    runner: &FakeRunner,
    log: &FakeLog,
    record: DeployRecord,
    release_phase: bool,
    budget: Duration,
    surge: SurgeMode,
    prepare: bool,
) -> DeployRecord {
    let engine = Engine {
        fleet,
        runner,
        log,
        release_url: &url,
        options: Options {
            release_phase,
            prepare,
            agent_timeout: Duration::from_secs(60),
            health_timeout: Duration::from_millis(300),
            budget,
            surge,
            ..Options::from_settings(&Default::default(), release_phase)
                .polling(Duration::from_millis(1))
        },
    };
    engine.run(record).await
}

#[tokio::test]
async fn a_worker_out_of_time_hands_over_between_batches_and_the_next_continues_the_plan() {
    let (fleet, log) = (fleet(4), FakeLog::default());
    let runner = FakeRunner {
        release_phase_fails: false,
        ..FakeRunner::default()
    };

    let mut record = record("one-at-a-time", true);
    let mut workers = 0;
    while !record.is_finished() {
        workers += 1;
        assert!(workers < 10, "every worker runs a batch");
        record = run_within(&fleet, &runner, &log, record, true, Duration::ZERO).await;
        if !record.is_finished() {
            assert!(record.handed_off);
            assert!(
                !*log.released.lock().unwrap(),
                "the lock is kept for the next worker"
            );
        }
    }

    assert_eq!(record.status, DeployStatus::Succeeded, "{:?}", record.cause);
    assert_eq!(workers, 5, "the release phase, then one batch each");
    assert_eq!(*log.hand_offs.lock().unwrap(), 4);
    assert_eq!(record.plan.len(), 4);
    let ran = deployed(&runner);
    assert_eq!(
        ran[0].1, "release-phase",
        "the release phase ran once, first"
    );
    assert_eq!(ran.iter().filter(|(_, w)| w == "release-phase").count(), 1);
    let batches: Vec<_> = ran
        .iter()
        .filter(|(_, w)| w == "r7")
        .map(|(ids, _)| ids.clone())
        .collect();
    assert_eq!(
        batches,
        [vec![id(1)], vec![id(2)], vec![id(3)], vec![id(4)]],
        "each batch once, in plan order"
    );
    assert!(*log.released.lock().unwrap());
}

fn deployed(runner: &FakeRunner) -> Vec<(Vec<InstanceId>, String)> {
    runner
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|(ids, c)| {
            let what = match c {
                AgentCommand::Deploy { release_url } => {
                    release_url.rsplit('/').next().unwrap().to_owned()
                }
                AgentCommand::ReleasePhase { .. } => "release-phase".into(),
                AgentCommand::Prepare { .. } => "prepare".into(),
            };
            (ids.clone(), what)
        })
        .collect()
}

#[tokio::test]
async fn a_deploy_visits_every_batch_and_succeeds() {
    let (fleet, runner, log) = (fleet(4), FakeRunner::default(), FakeLog::default());

    let done = run(&fleet, &runner, &log, record("50%", true), true).await;

    assert_eq!(done.status, DeployStatus::Succeeded);
    assert_eq!(done.batches.len(), 2);
    assert!(
        done.batches
            .iter()
            .all(|b| b.status == BatchStatus::Succeeded)
    );
    assert_eq!(
        deployed(&runner),
        [
            (vec![id(1)], "release-phase".to_owned()),
            (vec![id(1), id(2)], "r7".to_owned()),
            (vec![id(3), id(4)], "r7".to_owned())
        ]
    );
    assert_eq!(*log.current.lock().unwrap(), Some(r(7)));
    assert!(*log.released.lock().unwrap());
    assert!(done.finished_at.is_some());
    assert!(*log.saves.lock().unwrap() >= 6, "saved after every step");
    let standby = fleet.standby.lock().unwrap().clone();
    assert_eq!(
        standby.len(),
        4,
        "in and out of standby for each batch: {standby:?}"
    );
    let processes = fleet.processes.lock().unwrap().clone();
    assert_eq!(
        processes,
        [
            r#"suspend ["AZRebalance", "AlarmNotification", "ScheduledActions"]"#,
            r#"resume ["AZRebalance", "AlarmNotification", "ScheduledActions"]"#
        ],
        "scaling stays still while the deploy runs"
    );
    assert!(done.suspended.is_empty());
}

#[tokio::test]
async fn a_failing_middle_batch_stops_and_rolls_back_the_instances_already_moved() {
    let fleet = fleet(4);
    let runner = FakeRunner {
        fails: vec![(id(2), "r7")],
        ..FakeRunner::default()
    };
    let log = FakeLog::default();

    let done = run(&fleet, &runner, &log, record("one-at-a-time", true), false).await;

    assert_eq!(done.status, DeployStatus::RolledBack);
    assert_eq!(done.cause.as_deref(), Some("batch 2 failed"));
    assert_eq!(done.batches.len(), 2, "batches 3 and 4 never ran");
    assert_eq!(
        deployed(&runner),
        [
            (vec![id(1)], "r7".to_owned()),
            (vec![id(2)], "r7".to_owned()),
            (vec![id(1)], "r6".to_owned())
        ]
    );
    assert_eq!(done.rollback.unwrap().status, BatchStatus::Succeeded);
    assert_eq!(*log.current.lock().unwrap(), Some(r(6)));
}

#[tokio::test]
async fn without_auto_rollback_a_failure_leaves_the_moved_instances_and_says_failed() {
    let fleet = fleet(4);
    let runner = FakeRunner {
        fails: vec![(id(2), "r7")],
        ..FakeRunner::default()
    };
    let log = FakeLog::default();

    let done = run(&fleet, &runner, &log, record("one-at-a-time", false), false).await;

    assert_eq!(done.status, DeployStatus::Failed);
    assert!(done.rollback.is_none());
    assert_eq!(deployed(&runner).len(), 2);
    assert_eq!(*log.current.lock().unwrap(), Some(r(7)));
}

#[tokio::test]
async fn an_instance_the_load_balancer_never_calls_healthy_fails_its_batch() {
    let fleet = FakeFleet {
        unhealthy: Mutex::new(BTreeSet::from([id(3)])),
        ..fleet(4)
    };
    let (runner, log) = (FakeRunner::default(), FakeLog::default());

    let done = run(&fleet, &runner, &log, record("one-at-a-time", true), false).await;

    assert_eq!(done.status, DeployStatus::RolledBack);
    assert_eq!(done.batches[2].unhealthy, [id(3)]);
    let rollback = done.rollback.unwrap();
    assert_eq!(rollback.instances, [id(1), id(2), id(3)]);
}

#[tokio::test]
async fn a_cancel_stops_before_the_next_batch() {
    let (fleet, runner) = (fleet(4), FakeRunner::default());
    let log = FakeLog {
        cancel_after_batches: Some(1),
        ..FakeLog::default()
    };

    let done = run(&fleet, &runner, &log, record("one-at-a-time", true), false).await;

    assert_eq!(done.status, DeployStatus::Cancelled);
    assert_eq!(done.batches.len(), 1);
    assert!(done.cause.unwrap().contains("before batch 2"));
    assert!(*log.released.lock().unwrap());
}

#[tokio::test]
async fn a_cancel_during_a_batch_cancels_its_command_and_rolls_nothing_back() {
    let fleet = fleet(4);
    let runner = FakeRunner {
        hangs_on_call: Some(2),
        ..FakeRunner::default()
    };
    // The cancel arrives while batch 2 runs.
    let log = FakeLog {
        cancel_after_batches: Some(2),
        ..FakeLog::default()
    };

    let done = run(&fleet, &runner, &log, record("one-at-a-time", true), false).await;

    assert_eq!(done.status, DeployStatus::Cancelled);
    assert!(done.cause.unwrap().contains("during batch 2"));
    assert_eq!(done.batches.len(), 2);
    assert!(done.rollback.is_none(), "a cancel is not a failure");
    assert_eq!(deployed(&runner).len(), 2, "no batch after the cancel");
    let standby = fleet.standby.lock().unwrap();
    assert_eq!(
        standby.last().unwrap(),
        &format!("out {:?}", [id(2)]),
        "the cancelled batch is back in service"
    );
    assert!(*log.released.lock().unwrap());
}

#[tokio::test]
async fn a_lost_lock_stops_the_deploy() {
    let (fleet, runner) = (fleet(2), FakeRunner::default());
    let log = FakeLog {
        lock_lost: true,
        ..FakeLog::default()
    };

    let done = run(&fleet, &runner, &log, record("one-at-a-time", true), false).await;

    assert_eq!(done.status, DeployStatus::Failed);
    assert!(done.cause.unwrap().contains("lock was lost"));
    assert!(done.batches.is_empty());
    assert_eq!(*log.current.lock().unwrap(), Some(r(6)), "current restored");
}

#[tokio::test]
async fn instances_that_join_or_vanish_mid_deploy_are_noted_and_handled() {
    let fleet = FakeFleet {
        change_after: Some((1, Change::Join(id(9)))),
        ..fleet(2)
    };
    let (runner, log) = (FakeRunner::default(), FakeLog::default());
    let done = run(&fleet, &runner, &log, record("one-at-a-time", true), false).await;
    assert_eq!(done.status, DeployStatus::Succeeded);
    assert!(
        done.notes
            .iter()
            .any(|n| n.contains("i-0009 joined") && n.contains("boots r7")),
        "{:?}",
        done.notes
    );

    let fleet = FakeFleet {
        change_after: Some((1, Change::Vanish(id(2)))),
        ..self::fleet(3)
    };
    let (runner, log) = (FakeRunner::default(), FakeLog::default());
    let done = run(&fleet, &runner, &log, record("one-at-a-time", true), false).await;
    assert_eq!(done.status, DeployStatus::Succeeded);
    assert_eq!(
        done.batches.len(),
        2,
        "the vanished instance's batch is skipped"
    );
    assert!(
        done.notes
            .iter()
            .any(|n| n.contains("i-0002 left the group")),
        "{:?}",
        done.notes
    );
}

#[tokio::test]
async fn an_instance_that_leaves_after_its_batch_came_back_in_service_adds_no_capacity() {
    let fleet = FakeFleet {
        vanishes_on_exit: Some(id(2)),
        ..fleet(3)
    };
    let (runner, log) = (FakeRunner::default(), FakeLog::default());

    let done = run(&fleet, &runner, &log, record("one-at-a-time", true), false).await;

    assert_eq!(done.status, DeployStatus::Succeeded, "{:?}", done.cause);
    let second = &done.batches[1];
    assert_eq!(second.results[0].status, RunStatus::Vanished, "{second:?}");
    let processes = fleet.processes.lock().unwrap().clone();
    assert!(
        !processes.iter().any(|p| p.starts_with("capacity")),
        "ExitStandby gave its capacity back, and the group replaces it: {processes:?}"
    );
}

#[tokio::test]
async fn a_first_batch_whose_agents_went_back_by_themselves_is_rolled_back_by_restoring_current() {
    let fleet = fleet(3);
    let runner = FakeRunner {
        fails: vec![(id(1), "r7")],
        ..FakeRunner::default()
    };
    let log = FakeLog::default();

    let done = run(&fleet, &runner, &log, record("one-at-a-time", true), false).await;

    assert_eq!(done.status, DeployStatus::RolledBack);
    assert_eq!(done.cause.as_deref(), Some("batch 1 failed"));
    assert!(
        done.rollback.is_none(),
        "no instance needed the previous release"
    );
    assert_eq!(*log.current.lock().unwrap(), Some(r(6)));

    let log = FakeLog::default();
    let done = run(&fleet, &runner, &log, record("one-at-a-time", false), false).await;
    assert_eq!(done.status, DeployStatus::Failed, "without auto-rollback");
}

#[tokio::test]
async fn a_failed_release_phase_or_a_refused_plan_moves_no_instance() {
    let fleet = fleet(2);
    let runner = FakeRunner {
        release_phase_fails: true,
        ..FakeRunner::default()
    };
    let log = FakeLog::default();
    let done = run(&fleet, &runner, &log, record("one-at-a-time", true), true).await;
    assert_eq!(done.status, DeployStatus::Failed);
    assert_eq!(done.cause.as_deref(), Some("the release phase failed"));
    assert_eq!(deployed(&runner).len(), 1, "only the release phase ran");
    assert_eq!(*log.current.lock().unwrap(), Some(r(6)));

    // Standby only (surge off): a plan that breaks the minimum healthy
    // share is refused.
    let (fleet, runner, log) = (self::fleet(4), FakeRunner::default(), FakeLog::default());
    let done = run_with(
        &fleet,
        &runner,
        &log,
        record("all-at-once", true),
        false,
        Duration::MAX,
        SurgeMode::Never,
    )
    .await;
    assert_eq!(done.status, DeployStatus::Failed);
    assert!(done.cause.unwrap().contains("minimum healthy"));
    assert!(deployed(&runner).is_empty());
    assert_eq!(*log.current.lock().unwrap(), Some(r(6)));
}

#[tokio::test]
async fn a_group_at_its_minimum_surges_new_instances_first_and_retires_the_old_once_they_serve() {
    let fleet = FakeFleet {
        min: 1,
        boots: Some("r7".into()),
        ..fleet(1)
    };
    let (runner, log) = (FakeRunner::default(), FakeLog::default());

    let done = run(&fleet, &runner, &log, record("one-at-a-time", true), false).await;

    assert_eq!(done.status, DeployStatus::Succeeded, "{:?}", done.cause);
    assert!(done.surge);
    assert!(deployed(&runner).is_empty(), "no instance left service");
    let surge = done.batches[0].surge.as_ref().unwrap();
    assert_eq!(surge.launched, [id(100)]);
    assert_eq!((surge.desired_before, surge.raised_to), (1, 2));
    assert_eq!(*fleet.instances.lock().unwrap(), Vec::<InstanceId>::new());
    assert!(fleet.standby.lock().unwrap().is_empty(), "no standby");
    let processes = fleet.processes.lock().unwrap().clone();
    assert!(
        processes.contains(&"capacity 2/100".to_owned())
            && processes.contains(&format!("retire {:?}", [id(1)])),
        "{processes:?}"
    );
}

#[tokio::test]
async fn a_surge_whose_new_instance_comes_up_on_another_release_fails_and_takes_it_away() {
    let fleet = FakeFleet {
        min: 1,
        // The agent fell back to the previous release.
        boots: Some("r6".into()),
        ..fleet(1)
    };
    let (runner, log) = (FakeRunner::default(), FakeLog::default());

    let done = run(&fleet, &runner, &log, record("one-at-a-time", true), false).await;

    // Nothing moved: putting `current` back is the whole rollback.
    assert_eq!(done.status, DeployStatus::RolledBack);
    assert!(
        done.notes
            .iter()
            .any(|n| n.contains("came up with r6 instead of r7")),
        "{:?}",
        done.notes
    );
    assert_eq!(
        *fleet.instances.lock().unwrap(),
        [id(1)],
        "the old one serves on"
    );
    assert!(
        fleet.launched.lock().unwrap().is_empty(),
        "the new one is gone"
    );
    assert_eq!(*log.current.lock().unwrap(), Some(r(6)));
}

#[tokio::test]
async fn every_instance_prepares_at_once_before_the_first_batch_leaves_service() {
    let (fleet, runner, log) = (fleet(4), FakeRunner::default(), FakeLog::default());

    let done = run_prepared(&fleet, &runner, &log, record("one-at-a-time", true)).await;

    assert_eq!(done.status, DeployStatus::Succeeded, "{:?}", done.cause);
    let ran = deployed(&runner);
    assert_eq!(
        ran[0],
        (vec![id(1), id(2), id(3), id(4)], "prepare".to_owned()),
        "one command to every instance, first"
    );
    assert_eq!(
        ran[1..],
        [
            (vec![id(1)], "r7".to_owned()),
            (vec![id(2)], "r7".to_owned()),
            (vec![id(3)], "r7".to_owned()),
            (vec![id(4)], "r7".to_owned()),
        ]
    );
    let prepare = done.prepare.expect("recorded");
    assert_eq!((prepare.instances, prepare.failed.len()), (4, 0));
}

#[tokio::test]
async fn a_prepare_that_fails_on_one_instance_fails_the_deploy_before_any_leaves_service() {
    let (fleet, log) = (fleet(4), FakeLog::default());
    let runner = FakeRunner {
        prepare_fails: vec![id(3)],
        ..FakeRunner::default()
    };

    let done = run_prepared(&fleet, &runner, &log, record("one-at-a-time", true)).await;

    assert_eq!(done.status, DeployStatus::Failed);
    let cause = done.cause.clone().unwrap();
    assert!(
        cause.contains(id(3).as_str()) && cause.contains("failed step=build"),
        "names the instance and what it said: {cause}"
    );
    assert!(done.batches.is_empty(), "no batch ran");
    assert!(
        fleet.standby.lock().unwrap().is_empty(),
        "nothing left service"
    );
    assert_eq!(deployed(&runner).len(), 1, "only the prepare ran");
    assert_eq!(
        *log.current.lock().unwrap(),
        Some(r(6)),
        "current is back on what serves"
    );
    let prepare = done.prepare.unwrap();
    assert_eq!(prepare.failed[0].instance, id(3));
    assert!(*log.released.lock().unwrap());
}

#[tokio::test]
async fn a_worker_out_of_time_after_preparing_hands_over_and_the_next_does_not_prepare_again() {
    let (fleet, runner, log) = (fleet(2), FakeRunner::default(), FakeLog::default());
    let mut record = record("one-at-a-time", true);

    record = run_options(
        &fleet,
        &runner,
        &log,
        record,
        false,
        Duration::ZERO,
        SurgeMode::Auto,
        true,
    )
    .await;
    assert!(record.handed_off && !record.is_finished(), "{record:?}");
    assert!(record.batches.is_empty(), "it handed over before batch 1");
    let mut workers = 1;
    while !record.is_finished() {
        workers += 1;
        assert!(workers < 10);
        record = run_options(
            &fleet,
            &runner,
            &log,
            record,
            false,
            Duration::ZERO,
            SurgeMode::Auto,
            true,
        )
        .await;
    }
    assert_eq!(record.status, DeployStatus::Succeeded, "{:?}", record.cause);
    let ran = deployed(&runner);
    assert_eq!(
        ran.iter().filter(|(_, w)| w == "prepare").count(),
        1,
        "{ran:?}"
    );
    assert_eq!(workers, 3, "the prepare, then one batch each");
}
