//! Deploys against the emulator: the race for the lock through the real
//! start path, and the engine writing through the S3 deploy log.

use std::time::Duration;

use chrono::Utc;
use slipway_control::fleet::{Fleet, FleetError, InstanceId, Member, Sizes};
use slipway_control::rollout::{DeployError, Deploys, Options, StartDeploy, run_queued};
use slipway_control::runner::{AgentCommand, Invocation, RunStatus, Runner, RunnerError};
use slipway_control::store::UploadOutcome;
use slipway_core::deploys::DeployStatus;
use slipway_core::ids::DeployId;
use slipway_core::names::{EnvRef, ReleaseId};
use slipway_core::objects::S3Objects;
use slipway_core::testing::app_archive;
use slipway_tests::World;

fn env() -> EnvRef {
    EnvRef::parse("hello", "prod").unwrap()
}

async fn release(world: &World, n: usize) -> ReleaseId {
    let name = format!("{n}.tar.gz");
    match world
        .upload(&env(), &name, app_archive("python3 app.py"))
        .await
    {
        UploadOutcome::Created(m) => m.id,
        other => panic!("{other:?}"),
    }
}

fn deploys(world: &World) -> Deploys {
    Deploys {
        objects: S3Objects::new(world.s3.clone(), &world.bucket),
        store: world.store.clone(),
        webhooks: Default::default(),
        response_prefixes: vec!["https://hooks.slack.com/".into()],
    }
}

fn start(user: &str) -> StartDeploy {
    StartDeploy {
        user: user.into(),
        ..StartDeploy::default()
    }
}

/// The engine's options for these tests: a minute for everything, polls
/// every 20 ms, no prepare (these follow batches through the store; the
/// engine's tests and the platform's cover preparing).
fn options(release_phase: bool) -> Options {
    let mut options = Options::from_settings(&Default::default(), release_phase)
        .polling(Duration::from_millis(20));
    options.prepare = false;
    options.agent_timeout = Duration::from_secs(60);
    options.health_timeout = Duration::from_secs(60);
    options
}

struct Healthy(Vec<InstanceId>);

impl Fleet for Healthy {
    async fn in_service(&self, _: &EnvRef) -> Result<Vec<InstanceId>, FleetError> {
        Ok(self.0.clone())
    }
    async fn enter_standby(&self, _: &EnvRef, _: &[InstanceId]) -> Result<(), FleetError> {
        Ok(())
    }
    async fn exit_standby(&self, _: &EnvRef, _: &[InstanceId]) -> Result<(), FleetError> {
        Ok(())
    }
    async fn wait_healthy(
        &self,
        _: &EnvRef,
        _: &[InstanceId],
        _: Duration,
    ) -> Result<Vec<InstanceId>, FleetError> {
        Ok(Vec::new())
    }
    async fn capacity(&self, _: &EnvRef) -> Result<Sizes, FleetError> {
        Ok(Sizes {
            min: 0,
            max: 10,
            desired: self.0.len() as i32,
        })
    }
    async fn group_members(&self, _: &EnvRef) -> Result<Vec<Member>, FleetError> {
        Ok(self
            .0
            .iter()
            .map(|i| Member {
                id: i.clone(),
                lifecycle: "InService".into(),
                release: None,
            })
            .collect())
    }
    async fn suspend(&self, _: &EnvRef, p: &[&str]) -> Result<Vec<String>, FleetError> {
        Ok(p.iter().map(|p| (*p).to_owned()).collect())
    }
    async fn resume(&self, _: &EnvRef, _: &[String]) -> Result<(), FleetError> {
        Ok(())
    }
    async fn set_capacity(&self, _: &EnvRef, _: i32, _: i32) -> Result<(), FleetError> {
        unreachable!("these deploys never surge")
    }
    async fn retire(&self, _: &EnvRef, _: &[InstanceId]) -> Result<(), FleetError> {
        unreachable!("these deploys never surge")
    }
}

struct Agents {
    fail: bool,
}

impl Runner for Agents {
    async fn run(
        &self,
        targets: &[InstanceId],
        _: &AgentCommand,
        _: Duration,
        _: slipway_control::runner::Cancel<'_>,
        _: &slipway_control::runner::Gone,
    ) -> Result<Vec<Invocation>, RunnerError> {
        Ok(targets
            .iter()
            .map(|t| Invocation {
                instance: t.clone(),
                status: if self.fail {
                    RunStatus::Failed
                } else {
                    RunStatus::Success
                },
                exit_code: Some(if self.fail { 1 } else { 0 }),
                duration_ms: 1,
                output_tail: "at=done".into(),
                output_key: None,
            })
            .collect())
    }
}

async fn run(d: &Deploys, id: &DeployId, fail: bool) -> slipway_control::rollout::DeployRecord {
    let fleet = Healthy(vec![
        InstanceId::parse("i-1").unwrap(),
        InstanceId::parse("i-2").unwrap(),
    ]);
    let url = |id: ReleaseId| format!("s3://bucket/hello/prod/releases/{id}");
    let options = options(false);
    let done = run_queued(
        d,
        &env(),
        id,
        &fleet,
        &Agents { fail },
        &url,
        options.clone(),
        None,
    )
    .await
    .unwrap();
    // Launched twice (a retried invocation): the second run changes nothing.
    let again = run_queued(d, &env(), id, &fleet, &Agents { fail }, &url, options, None)
        .await
        .unwrap();
    assert_eq!(again, done);
    done
}

#[tokio::test]
async fn of_twenty_concurrent_deploy_requests_exactly_one_is_accepted() {
    let world = World::new().await;
    release(&world, 1).await;
    let d = deploys(&world);
    let now = Utc::now();

    let attempts = (0..20).map(|i| {
        let d = d.clone();
        async move { d.start(&env(), start(&format!("user{i}")), now).await }
    });
    let results = futures::future::join_all(attempts).await;

    let accepted: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(accepted.len(), 1);
    let winner = &accepted[0].0.id;
    for r in &results {
        match r {
            Ok(_) => {}
            Err(DeployError::Locked(holder)) => {
                assert_eq!(holder.job, slipway_core::ids::JobId::Deploy(winner.clone()))
            }
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(
        d.list(&env(), 100).await.unwrap().len(),
        1,
        "one record written"
    );
}

#[tokio::test]
async fn a_deploy_runs_through_the_s3_log_and_a_rollback_finds_the_last_good_release() {
    let world = World::new().await;
    let r1 = release(&world, 1).await;
    let d = deploys(&world);

    let (first, _) = d.start(&env(), start("alice"), Utc::now()).await.unwrap();
    assert_eq!(first.to, r1);
    let done = run(&d, &first.id, false).await;
    assert_eq!(done.status, DeployStatus::Succeeded);
    assert_eq!(
        d.get(&env(), &first.id).await.unwrap(),
        done,
        "the stored record is the final one"
    );
    assert_eq!(world.store.current(&env()).await.unwrap(), Some(r1));

    let r2 = release(&world, 2).await;
    let (second, _) = d.start(&env(), start("bob"), Utc::now()).await.unwrap();
    assert_eq!((second.from, second.to), (Some(r1), r2));
    assert_eq!(
        run(&d, &second.id, false).await.status,
        DeployStatus::Succeeded
    );

    release(&world, 3).await;
    let (third, _) = d.start(&env(), start("bob"), Utc::now()).await.unwrap();
    let failed = run(&d, &third.id, true).await;
    assert_eq!(
        failed.status,
        DeployStatus::RolledBack,
        "the agents went back by themselves; current goes back too"
    );
    assert_eq!(
        world.store.current(&env()).await.unwrap(),
        Some(r2),
        "current went back"
    );

    let rollback = StartDeploy {
        rollback: true,
        ..start("carol")
    };
    let (fourth, _) = d.start(&env(), rollback, Utc::now()).await.unwrap();
    assert_eq!(
        fourth.to, r1,
        "the newest release a deploy succeeded with, other than current"
    );
    d.cancel(&env(), &fourth.id).await.unwrap();
    let cancelled = run(&d, &fourth.id, false).await;
    assert_eq!(cancelled.status, DeployStatus::Cancelled);
    let listed = d.list(&env(), 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|r| &r.id).collect::<Vec<_>>(),
        [&fourth.id, &third.id, &second.id, &first.id]
    );
    // The lock is free again.
    d.start(&env(), start("dave"), Utc::now()).await.unwrap();
}

#[tokio::test]
async fn unknown_releases_and_deploys_are_clear_errors() {
    let world = World::new().await;
    let d = deploys(&world);
    let err = d
        .start(&env(), start("alice"), Utc::now())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no release to deploy yet"),
        "{err}"
    );
    release(&world, 1).await;
    let err = d
        .start(
            &env(),
            StartDeploy {
                release: Some(ReleaseId::new(9).unwrap()),
                ..start("alice")
            },
            Utc::now(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("r9 does not exist"), "{err}");
    assert!(DeployId::parse("../x").is_err(), "never becomes a key");
    let fleet = Healthy(vec![InstanceId::parse("i-1").unwrap()]);
    let url = |id: ReleaseId| format!("s3://bucket/hello/prod/releases/{id}");
    let options = Options::from_settings(&Default::default(), false);
    let missing = DeployId::parse("d20260101000000000-abcdef").unwrap();
    assert!(
        matches!(
            run_queued(
                &d,
                &env(),
                &missing,
                &fleet,
                &Agents { fail: false },
                &url,
                options,
                None
            )
            .await,
            Err(DeployError::NotFound(_))
        ),
        "a worker launched for a deploy that does not exist says so"
    );
    assert!(matches!(
        d.get(&env(), &DeployId::parse("d2026").unwrap()).await,
        Err(DeployError::NotFound(_))
    ));
}

/// Agents that run until their command is cancelled.
struct Stuck;

impl Runner for Stuck {
    async fn run(
        &self,
        targets: &[InstanceId],
        _: &AgentCommand,
        _: Duration,
        cancel: slipway_control::runner::Cancel<'_>,
        _: &slipway_control::runner::Gone,
    ) -> Result<Vec<Invocation>, RunnerError> {
        cancel.await;
        Ok(targets
            .iter()
            .map(|t| Invocation {
                instance: t.clone(),
                status: RunStatus::Cancelled,
                exit_code: None,
                duration_ms: 1,
                output_tail: String::new(),
                output_key: None,
            })
            .collect())
    }
}

#[tokio::test]
async fn a_cancel_through_the_store_stops_the_running_batch() {
    let world = World::new().await;
    release(&world, 1).await;
    let d = deploys(&world);
    let (record, _) = d.start(&env(), start("alice"), Utc::now()).await.unwrap();
    let fleet = Healthy(vec![InstanceId::parse("i-1").unwrap()]);
    let url = |id: ReleaseId| format!("s3://bucket/hello/prod/releases/{id}");
    let options = options(false);
    let canceller = {
        let (d, id) = (d.clone(), record.id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            d.cancel(&env(), &id).await.unwrap();
        })
    };

    let done = tokio::time::timeout(
        Duration::from_secs(20),
        run_queued(&d, &env(), &record.id, &fleet, &Stuck, &url, options, None),
    )
    .await
    .expect("the cancel stops the batch")
    .unwrap();
    canceller.await.unwrap();

    assert_eq!(done.status, DeployStatus::Cancelled);
    assert!(done.cause.unwrap().contains("during batch 1"));
    assert_eq!(
        d.get(&env(), &record.id).await.unwrap().status,
        DeployStatus::Cancelled
    );
}

/// Counts the workers it was asked to start.
#[derive(Default)]
struct Relay(std::sync::atomic::AtomicUsize);

impl slipway_control::jobs::Launcher for Relay {
    fn launch(
        &self,
        _: EnvRef,
        _: slipway_core::ids::JobId,
    ) -> futures::future::BoxFuture<'_, Result<(), slipway_control::jobs::LaunchError>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_deploy_longer_than_one_worker_is_handed_over_through_the_store_and_finishes() {
    let world = World::new().await;
    release(&world, 1).await;
    let d = deploys(&world);
    let (record, _) = d.start(&env(), start("alice"), Utc::now()).await.unwrap();
    let fleet = Healthy(vec![
        InstanceId::parse("i-1").unwrap(),
        InstanceId::parse("i-2").unwrap(),
        InstanceId::parse("i-3").unwrap(),
    ]);
    let url = |id: ReleaseId| format!("s3://bucket/hello/prod/releases/{id}");
    let mut options = options(false);
    options.budget = Duration::ZERO;
    let relay = std::sync::Arc::new(Relay::default());

    let mut done = None;
    for _ in 0..10 {
        let launched: std::sync::Arc<dyn slipway_control::jobs::Launcher> = relay.clone();
        let after = run_queued(
            &d,
            &env(),
            &record.id,
            &fleet,
            &Agents { fail: false },
            &url,
            options.clone(),
            Some(launched),
        )
        .await
        .unwrap();
        if after.is_finished() {
            done = Some(after);
            break;
        }
        assert!(after.handed_off, "{after:?}");
    }

    let done = done.expect("the deploy finished");
    assert_eq!(done.status, DeployStatus::Succeeded);
    assert_eq!(done.workers, 3, "one batch per worker");
    assert_eq!(relay.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(done.batches.len(), 3);
    let again = run_queued(
        &d,
        &env(),
        &record.id,
        &fleet,
        &Agents { fail: false },
        &url,
        options,
        None,
    )
    .await
    .unwrap();
    assert_eq!(again, done, "a late duplicate launch changes nothing");
}

#[tokio::test]
async fn a_stored_response_url_is_checked_again_when_it_is_read() {
    let world = World::new().await;
    release(&world, 1).await;
    let d = deploys(&world);
    let (record, _) = d.start(&env(), start("alice"), Utc::now()).await.unwrap();
    // What chat stored, or what an instance with write access put there.
    d.set_response_url(&env(), &record.id, "http://169.254.169.254/latest/")
        .await
        .unwrap();
    assert_eq!(d.response_url(&env(), &record.id).await, None);
    d.set_response_url(
        &env(),
        &record.id,
        "https://hooks.slack.com/commands/T1/2/x",
    )
    .await
    .unwrap();
    assert_eq!(
        d.response_url(&env(), &record.id).await.as_deref(),
        Some("https://hooks.slack.com/commands/T1/2/x")
    );
}

#[tokio::test]
async fn a_deploy_one_worker_claimed_is_not_claimed_by_a_second_delivery_of_its_event() {
    use slipway_control::jobs::{Claim, claim};
    use slipway_core::ids::JobId;
    let world = World::new().await;
    release(&world, 1).await;
    let d = deploys(&world);
    let (record, _) = d.start(&env(), start("alice"), Utc::now()).await.unwrap();
    let job = JobId::Deploy(record.id.clone());
    let first = claim::<slipway_control::rollout::DeployRecord>(&d.objects, &env(), &job)
        .await
        .unwrap();
    assert!(
        matches!(first, Claim::Ours(_)),
        "the first delivery runs it"
    );
    // Lambda delivers an asynchronous event at least once: the same event
    // again, once the first worker has claimed the deploy.
    let second = claim::<slipway_control::rollout::DeployRecord>(&d.objects, &env(), &job)
        .await
        .unwrap();
    let Claim::NotOurs(seen) = second else {
        panic!("a second worker claimed a deploy the first runs");
    };
    assert_eq!(seen.workers, 1);
}

#[tokio::test]
async fn the_reconciler_hands_a_deploy_whose_worker_went_silent_to_a_fresh_one_and_leaves_live_ones_alone()
 {
    use slipway_control::reconcile::Reconciler;
    let world = World::new().await;
    release(&world, 1).await;
    let d = deploys(&world);
    let (mut record, _) = d.start(&env(), start("alice"), Utc::now()).await.unwrap();
    let relay = std::sync::Arc::new(Relay::default());
    let reconciler = Reconciler {
        deploys: d.clone(),
        fleet: Healthy(vec![InstanceId::parse("i-1").unwrap()]),
        launcher: relay.clone(),
        kind: slipway_core::ids::JobKind::Deploy,
        heartbeat: Duration::from_secs(30),
        failures: None,
    };
    // A worker that beat a moment ago is alive.
    record.status = DeployStatus::Running;
    record.workers = 1;
    record.heartbeat_at = Some(Utc::now());
    record.plan = vec![vec![InstanceId::parse("i-1").unwrap()]];
    let key = slipway_core::keys::deploy_key(&env(), &record.id);
    let put = |r: &slipway_control::rollout::DeployRecord| {
        let objects = d.objects.clone();
        let (key, body) = (key.clone(), serde_json::to_vec(r).unwrap());
        async move {
            objects
                .put(
                    &key,
                    body,
                    "application/json",
                    slipway_core::objects::Write::Always,
                )
                .await
                .unwrap();
        }
    };
    put(&record).await;
    assert!(reconciler.run(Utc::now()).await.unwrap().is_empty());
    assert_eq!(relay.0.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Silent for five heartbeats: dead.
    record.heartbeat_at = Some(Utc::now() - chrono::Duration::seconds(150));
    put(&record).await;
    let done = reconciler.run(Utc::now()).await.unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(
        done[0].action.contains("launched a fresh worker"),
        "{done:?}"
    );
    assert_eq!(relay.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    let after = d.get(&env(), &record.id).await.unwrap();
    assert!(after.handed_off, "the fresh worker can claim it");
    assert!(after.notes.iter().any(|n| n.starts_with("the reconciler:")));
    // Its heartbeat is fresh again: the next round leaves it to the new worker.
    assert!(reconciler.run(Utc::now()).await.unwrap().is_empty());
}

/// An on-failure queue holding what a test put there.
#[derive(Default)]
struct FailedQueue {
    messages: std::sync::Mutex<Vec<(String, serde_json::Value)>>,
    deleted: std::sync::Mutex<Vec<String>>,
}

impl slipway_control::reconcile::FailedInvocations for FailedQueue {
    fn receive(
        &self,
    ) -> futures::future::BoxFuture<'_, Result<Vec<(String, serde_json::Value)>, String>> {
        let taken = std::mem::take(&mut *self.messages.lock().unwrap());
        Box::pin(async move { Ok(taken) })
    }
    fn delete(&self, handle: String) -> futures::future::BoxFuture<'_, Result<(), String>> {
        self.deleted.lock().unwrap().push(handle);
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_deploy_lambda_gave_up_on_is_taken_from_the_on_failure_queue_and_handed_to_a_fresh_worker()
 {
    use slipway_control::reconcile::Reconciler;
    let world = World::new().await;
    release(&world, 1).await;
    let d = deploys(&world);
    let (record, _) = d.start(&env(), start("alice"), Utc::now()).await.unwrap();
    let queue = std::sync::Arc::new(FailedQueue::default());
    let event = slipway_control::jobs::RunJob::new(&env(), &record.id.clone().into());
    queue.messages.lock().unwrap().extend([
        ("m1".to_owned(), serde_json::to_value(&event).unwrap()),
        // Not a job's event: deleted, never acted on.
        ("m2".to_owned(), serde_json::json!({"version": "2.0"})),
    ]);
    let relay = std::sync::Arc::new(Relay::default());
    let reconciler = Reconciler {
        deploys: d.clone(),
        fleet: Healthy(vec![InstanceId::parse("i-1").unwrap()]),
        launcher: relay.clone(),
        kind: slipway_core::ids::JobKind::Deploy,
        heartbeat: Duration::from_secs(30),
        failures: Some(queue.clone()),
    };

    // Queued a moment ago, so not silent for long: it is the queue that
    // says its worker is gone.
    let done = reconciler.run(Utc::now()).await.unwrap();

    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].job, record.id.to_string());
    assert_eq!(relay.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(*queue.deleted.lock().unwrap(), ["m1", "m2"]);
    assert!(reconciler.run(Utc::now()).await.unwrap().is_empty());
}

#[tokio::test]
async fn with_on_worker_lost_roll_back_the_reconciled_deploy_puts_the_previous_release_back() {
    use slipway_control::reconcile::Reconciler;
    let world = World::new().await;
    release(&world, 1).await;
    let d = deploys(&world);
    let (first, _) = d.start(&env(), start("alice"), Utc::now()).await.unwrap();
    run(&d, &first.id, false).await;
    release(&world, 2).await;
    let mut patch = serde_json::Map::new();
    patch.insert("on_worker_lost".into(), serde_json::json!("roll_back"));
    d.change_settings(&env(), patch).await.unwrap();
    let (mut record, _) = d.start(&env(), start("alice"), Utc::now()).await.unwrap();
    // Its worker moved `current`, planned, began batch 1 and died.
    world.store.set_current(&env(), record.to).await.unwrap();
    record.status = DeployStatus::Running;
    record.workers = 1;
    record.plan = vec![
        vec![InstanceId::parse("i-1").unwrap()],
        vec![InstanceId::parse("i-2").unwrap()],
    ];
    record.batches = vec![slipway_control::rollout::Batch {
        number: 1,
        instances: vec![InstanceId::parse("i-1").unwrap()],
        status: slipway_control::rollout::BatchStatus::Running,
        results: Vec::new(),
        unhealthy: Vec::new(),
        started_at: Utc::now(),
        finished_at: None,
        surge: None,
    }];
    record.heartbeat_at = Some(Utc::now() - chrono::Duration::minutes(5));
    d.objects
        .put(
            &slipway_core::keys::deploy_key(&env(), &record.id),
            serde_json::to_vec(&record).unwrap(),
            "application/json",
            slipway_core::objects::Write::Always,
        )
        .await
        .unwrap();
    let reconciler = Reconciler {
        deploys: d.clone(),
        fleet: Healthy(vec![
            InstanceId::parse("i-1").unwrap(),
            InstanceId::parse("i-2").unwrap(),
        ]),
        launcher: std::sync::Arc::new(Relay::default()),
        kind: slipway_core::ids::JobKind::Deploy,
        heartbeat: Duration::from_secs(30),
        failures: None,
    };
    let done = reconciler.run(Utc::now()).await.unwrap();
    assert!(done[0].action.contains("roll back"), "{done:?}");

    // The fresh worker the reconciler launched.
    let finished = run(&d, &record.id, false).await;
    assert_eq!(finished.status, DeployStatus::RolledBack, "{finished:?}");
    assert_eq!(
        finished.rollback.as_ref().unwrap().instances,
        [InstanceId::parse("i-1").unwrap()],
        "the batch cut short may have moved: it gets the previous release"
    );
    assert_eq!(world.store.current(&env()).await.unwrap(), Some(first.to));
}

#[tokio::test]
async fn queued_deploys_wait_in_order_the_latest_replaces_the_waiting_and_a_waiting_one_can_be_cancelled()
 {
    let world = World::new().await;
    release(&world, 1).await;
    let d = deploys(&world);
    let mut patch = serde_json::Map::new();
    patch.insert("queue".into(), serde_json::json!(true));
    patch.insert("latest_wins".into(), serde_json::json!(true));
    d.change_settings(&env(), patch).await.unwrap();
    let relay = Relay::default();
    let begin = |who: &'static str| {
        let (d, relay) = (&d, &relay);
        async move {
            d.begin(&env(), start(who), None, Utc::now(), relay)
                .await
                .unwrap()
        }
    };

    let running = begin("alice").await;
    assert_eq!(running.position, None, "the first takes the environment");
    let second = begin("bob").await;
    assert_eq!(second.position, Some(1));
    assert!(second.record.waiting);
    let third = begin("carol").await;
    assert_eq!(third.position, Some(1), "the latest replaces the waiting");
    let replaced = d.get(&env(), &second.record.id).await.unwrap();
    assert_eq!(replaced.status, DeployStatus::Cancelled);
    assert!(
        replaced.cause.unwrap().contains(third.record.id.as_str()),
        "says what replaced it"
    );

    // Cancelled while it waits: out of the queue at once.
    let cancelled = d.cancel(&env(), &third.record.id).await.unwrap();
    assert_eq!(cancelled.status, DeployStatus::Cancelled);
    assert!(d.waiting(&env()).await.unwrap().is_empty());

    let fourth = begin("dave").await;
    assert_eq!(fourth.position, Some(1));
    assert_eq!(relay.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Nothing is promoted while the first holds the environment…
    assert_eq!(d.promote(&env(), &relay).await.unwrap(), None);
    // …and the moment it is free, the head takes it and is launched.
    d.objects
        .delete(&slipway_core::keys::lock_key(&env()))
        .await
        .unwrap();
    assert_eq!(
        d.promote(&env(), &relay).await.unwrap(),
        Some(fourth.record.id.clone().into())
    );
    assert_eq!(relay.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    let promoted = d.get(&env(), &fourth.record.id).await.unwrap();
    assert!(!promoted.waiting && promoted.queue_position.is_none());
    let held = slipway_control::jobs::lock::read(&d.objects, &env())
        .await
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(held.job.to_string(), fourth.record.id.to_string());
}

/// Launches the kinds of job it is given, no other, and remembers what.
struct Kinds {
    kinds: Vec<slipway_core::ids::JobKind>,
    launched: std::sync::Mutex<Vec<slipway_core::ids::JobId>>,
}

impl Kinds {
    fn of(kinds: &[slipway_core::ids::JobKind]) -> Self {
        Self {
            kinds: kinds.to_vec(),
            launched: Default::default(),
        }
    }

    fn last(&self) -> Option<slipway_core::ids::JobId> {
        self.launched.lock().unwrap().last().cloned()
    }
}

impl slipway_control::jobs::Launcher for Kinds {
    fn launch(
        &self,
        _: EnvRef,
        job: slipway_core::ids::JobId,
    ) -> futures::future::BoxFuture<'_, Result<(), slipway_control::jobs::LaunchError>> {
        assert!(self.launches(job.kind()), "launched a {} job", job.kind());
        self.launched.lock().unwrap().push(job);
        Box::pin(async { Ok(()) })
    }

    fn launches(&self, kind: slipway_core::ids::JobKind) -> bool {
        self.kinds.contains(&kind)
    }
}

/// A group of two instances in service, for planning cycles.
struct TwoInstances;

impl slipway_control::fleet::GroupControl for TwoInstances {
    async fn members(&self, _: &EnvRef) -> Result<Vec<Member>, FleetError> {
        Ok(["i-1", "i-2"]
            .into_iter()
            .map(|id| Member {
                id: InstanceId::parse(id).unwrap(),
                lifecycle: "InService".into(),
                release: Some("r1".into()),
            })
            .collect())
    }
    async fn terminate(&self, _: &EnvRef, _: &InstanceId) -> Result<(), FleetError> {
        unreachable!("planning a cycle terminates nothing")
    }
    async fn sizes(&self, _: &EnvRef) -> Result<Sizes, FleetError> {
        unreachable!("planning a cycle reads no sizes")
    }
    async fn resize(&self, _: &EnvRef, _: Sizes) -> Result<(), FleetError> {
        unreachable!("planning a cycle resizes nothing")
    }
    async fn destroy(&self, _: &EnvRef) -> Result<slipway_control::fleet::Destroyed, FleetError> {
        unreachable!("planning a cycle destroys nothing")
    }
}

#[tokio::test]
async fn a_cycle_waits_in_the_deploys_queue_in_its_turn_and_only_a_function_that_starts_cycles_starts_it()
 {
    use slipway_core::ids::{JobId, JobKind};
    let world = World::new().await;
    release(&world, 1).await;
    let d = deploys(&world);
    let mut patch = serde_json::Map::new();
    patch.insert("queue".into(), serde_json::json!(true));
    d.change_settings(&env(), patch).await.unwrap();
    let cycles = slipway_control::cycle::Cycles::new(world.store.clone());
    let both = Kinds::of(&[JobKind::Deploy, JobKind::Cycle]);
    let deploys_only = Kinds::of(&[JobKind::Deploy]);

    let running = d
        .begin(&env(), start("alice"), None, Utc::now(), &both)
        .await
        .unwrap();
    assert_eq!(running.position, None);
    let cycle = cycles
        .begin_all(&TwoInstances, &env(), "bob", None, Utc::now(), &both)
        .await
        .unwrap();
    assert!(cycle.waiting, "{cycle:?}");
    assert_eq!(cycle.queue_position, Some(1));
    assert_eq!(cycle.steps.len(), 2);
    let deploy = d
        .begin(&env(), start("carol"), None, Utc::now(), &deploys_only)
        .await
        .unwrap();
    assert_eq!(deploy.position, Some(2), "behind the cycle asked for first");
    let listed = cycles.list(&env(), 10).await.unwrap();
    assert_eq!(listed[0].queue_position, Some(1));

    // The deploy ends: a function that starts only deploys leaves the
    // cycle at the head (and the environment free) for one that can.
    d.objects
        .delete(&slipway_core::keys::lock_key(&env()))
        .await
        .unwrap();
    assert_eq!(d.promote(&env(), &deploys_only).await.unwrap(), None);
    assert!(
        slipway_control::jobs::lock::read(&d.objects, &env())
            .await
            .unwrap()
            .is_none()
    );
    let head = JobId::Cycle(cycle.id.clone());
    assert_eq!(d.promote(&env(), &both).await.unwrap(), Some(head.clone()));
    assert_eq!(both.last(), Some(head));
    let promoted = cycles.get(&env(), &cycle.id).await.unwrap();
    assert!(!promoted.waiting && promoted.queue_position.is_none());
    assert_eq!(
        d.position(&env(), &deploy.record.id).await.unwrap(),
        Some(1),
        "the deploy is next"
    );

    // A cycle cancelled while it waits leaves the queue at once.
    let second = cycles
        .begin_all(&TwoInstances, &env(), "dave", Some(true), Utc::now(), &both)
        .await
        .unwrap();
    assert_eq!(second.queue_position, Some(2));
    let cancelled = cycles.cancel(&env(), &second.id).await.unwrap();
    assert_eq!(
        cancelled.status,
        slipway_control::cycle::CycleStatus::Cancelled
    );
    assert_eq!(
        d.waiting(&env()).await.unwrap(),
        vec![JobId::Deploy(deploy.record.id.clone())]
    );
}

/// `n` more records like `like`, each with a fresh id, written as a new
/// deploy's record is.
async fn more_records(d: &Deploys, like: &slipway_control::rollout::DeployRecord, n: usize) {
    let start = Utc::now();
    let writes = (0..n).map(|i| {
        let mut record = like.clone();
        record.id = DeployId::new(start + chrono::Duration::milliseconds(i as i64 + 1));
        let objects = d.objects.clone();
        async move {
            let id = record.id.clone().into();
            slipway_control::jobs::history::create(
                &objects,
                &env(),
                &id,
                &record,
                slipway_core::objects::Write::IfAbsent,
            )
            .await
            .unwrap();
        }
    });
    use futures::StreamExt as _;
    futures::stream::iter(writes)
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test]
async fn a_page_of_deploys_and_the_rollback_target_cost_the_same_requests_at_4_records_or_120() {
    let world = World::new().await;
    release(&world, 1).await;
    let d = deploys(&world);
    let (first, _) = d.start(&env(), start("alice"), Utc::now()).await.unwrap();
    run(&d, &first.id, false).await;
    release(&world, 2).await;
    let (second, _) = d.start(&env(), start("alice"), Utc::now()).await.unwrap();
    let done = run(&d, &second.id, false).await;
    let (objects, requests) = world.counted();
    let counted = Deploys {
        store: slipway_control::store::ReleaseStore::new(objects.clone(), Default::default()),
        objects,
        ..deploys(&world)
    };

    let mut costs = Vec::new();
    for more in [2, 116] {
        more_records(&d, &done, more).await;
        requests.take();
        assert_eq!(counted.list(&env(), 4).await.unwrap().len(), 4);
        let list = requests.take();
        let (from, to) = counted.rollback_target(&env()).await.unwrap();
        assert_eq!(
            (from, to),
            (Some(ReleaseId::new(2).unwrap()), ReleaseId::new(1))
        );
        costs.push((list, requests.take()));
    }
    assert_eq!(costs[0], costs[1], "{costs:?}");
    assert_eq!(
        costs[1],
        (1 + 4, 2),
        "a listing and four records; current and good.json"
    );
}

#[tokio::test]
async fn an_environment_from_before_the_deploy_index_and_good_json_is_indexed_on_first_use() {
    let world = World::new().await;
    let r1 = release(&world, 1).await;
    let d = deploys(&world);
    let (first, _) = d.start(&env(), start("alice"), Utc::now()).await.unwrap();
    run(&d, &first.id, false).await;
    release(&world, 2).await;
    let (second, _) = d.start(&env(), start("bob"), Utc::now()).await.unwrap();
    run(&d, &second.id, false).await;
    let index = slipway_core::keys::job_index_prefix(&env(), slipway_core::ids::JobKind::Deploy);
    world.delete_all(&index).await;
    world
        .delete_all(&slipway_core::keys::good_key(&env()))
        .await;

    let listed: Vec<DeployId> = d
        .list(&env(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, [second.id.clone(), first.id.clone()]);
    assert_eq!(world.keys(&index).await.len(), 2, "indexed on first use");
    assert_eq!(d.rollback_target(&env()).await.unwrap().1, Some(r1));
    assert!(
        world
            .get(&slipway_core::keys::good_key(&env()))
            .await
            .is_some(),
        "good.json made from the records, and kept"
    );

    world.delete_all(&index).await;
    let rollback = StartDeploy {
        rollback: true,
        ..start("carol")
    };
    let (third, _) = d.start(&env(), rollback, Utc::now()).await.unwrap();
    assert_eq!(third.to, r1);
    assert_eq!(
        world.keys(&index).await.len(),
        3,
        "a new record indexes the old ones first"
    );
}
