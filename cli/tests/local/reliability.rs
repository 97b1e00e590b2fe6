//! Deploys that survive what happens to them on AWS, on the production
//! path of the local platform (the function binaries, `SsmRunner`,
//! `AwsFleet`, the real document, the local load balancer): a one-instance
//! group that must surge, a worker killed mid-batch and finished by the
//! reconciler, S3 answering `503 SlowDown` to a fifth of its calls, the
//! group scaling out mid-deploy, releases that fail, deploys and a cycle
//! asked for at once, waiting their turn. Each runs a request
//! loop through the load balancer and checks that no request failed, that
//! the fleet ends on one release with nothing in Standby, and that the
//! group's sizes and processes are as before (or as the scale-out left
//! them). Each prints its failed-request count and duration.

use std::time::{Duration, Instant};

use slipway_control::fleet::{Fleet, Sizes};
use slipway_control::rollout::{DeployRecord, Deploys};
use slipway_core::deploys::DeployStatus;
use slipway_core::names::EnvRef;

use crate::support::*;

/// The group as a deploy must leave it: its sizes, suspended processes,
/// and each member's lifecycle and release.
struct GroupState {
    sizes: Sizes,
    suspended: Vec<String>,
    members: Vec<(String, String, Option<String>)>,
}

async fn group_state(platform: &slipway_local::Platform, env: &EnvRef) -> GroupState {
    let group = platform.fleet.aws.group(env).await.unwrap();
    let members = platform.fleet.aws.group_members(env).await.unwrap();
    GroupState {
        sizes: Sizes {
            min: group.min_size().unwrap_or_default(),
            max: group.max_size().unwrap_or_default(),
            desired: group.desired_capacity().unwrap_or_default(),
        },
        suspended: group
            .suspended_processes()
            .iter()
            .filter_map(|p| p.process_name().map(str::to_owned))
            .collect(),
        members: members
            .into_iter()
            .map(|m| (m.id.to_string(), m.lifecycle, m.release))
            .collect(),
    }
}

/// Nothing left in Standby or suspended, the sizes as `sizes`, every
/// member InService on `release`.
async fn assert_left_whole(
    platform: &slipway_local::Platform,
    env: &EnvRef,
    sizes: Sizes,
    release: &str,
) {
    // Instances retired at the end may still be draining: wait for them.
    let started = Instant::now();
    let state = loop {
        let state = group_state(platform, env).await;
        let settled = state.members.len() == sizes.desired as usize
            && state.members.iter().all(|(_, l, _)| l == "InService");
        if settled || started.elapsed() > Duration::from_secs(20) {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(state.sizes, sizes, "the group's sizes are as before");
    assert!(
        state.suspended.is_empty(),
        "suspended: {:?}",
        state.suspended
    );
    for (id, lifecycle, on) in &state.members {
        assert_eq!(lifecycle, "InService", "{id}");
        assert_eq!(on.as_deref(), Some(release), "{id} is on {on:?}");
    }
    assert_eq!(
        state.members.len(),
        sizes.desired as usize,
        "{:?}",
        state.members
    );
}

async fn latest_deploy(platform: &slipway_local::Platform, env: &EnvRef) -> DeployRecord {
    Deploys::new(platform.store.clone())
        .list(env, 1)
        .await
        .unwrap()
        .remove(0)
}

/// Waits for the newest deploy to finish.
async fn finished(
    platform: &slipway_local::Platform,
    env: &EnvRef,
    within: Duration,
) -> DeployRecord {
    let started = Instant::now();
    loop {
        let record = latest_deploy(platform, env).await;
        if record.is_finished() {
            return record;
        }
        assert!(
            started.elapsed() < within,
            "the deploy did not finish within {within:?}: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn report(case: &str, answers: &Answers, took: Duration) {
    println!(
        "case: {case}: {} failed of {} requests, deploy took {:.1}s",
        answers.failed().len(),
        answers.all.len(),
        took.as_secs_f64()
    );
}

/// `hello/<name>` with `instances` booted and r1 serving through the load
/// balancer: the environment, the load balancer's address, the group's
/// sizes.
async fn serving_r1(
    platform: &slipway_local::Platform,
    name: &str,
    instances: usize,
) -> (EnvRef, String, Sizes) {
    let env = EnvRef::parse("hello", name).unwrap();
    booted_environment(platform, &env, instances).await;
    ship_ok(platform, &env, &["release", "--allow-dirty"]);
    ship_ok(platform, &env, &["deploy"]);
    let address = serving(platform, &env).await;
    let sizes = group_state(platform, &env).await.sizes;
    (env, address, sizes)
}

/// Waits until the newest deploy has begun batch `number`: its instances.
async fn batch_begun(
    platform: &slipway_local::Platform,
    env: &EnvRef,
    number: usize,
) -> Vec<slipway_core::names::InstanceId> {
    let started = Instant::now();
    loop {
        let record = latest_deploy(platform, env).await;
        if let Some(batch) = record.batches.iter().find(|b| b.number == number) {
            return batch.instances.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{record:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_instance_group_at_its_minimum_deploys_by_surging_and_fails_no_request() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;
    let env = EnvRef::parse("hello", "solo").unwrap();
    booted_sized(&platform, &env, 1, 1, 1).await;
    ship_ok(&platform, &env, &["release", "--allow-dirty"]);
    ship_ok(&platform, &env, &["deploy"]);
    let address = serving(&platform, &env).await;
    let before = group_state(&platform, &env).await.sizes;

    let requests = RequestLoop::start(&address);
    ship_ok(&platform, &env, &["config", "set", "GREETING=Surged"]);
    let started = Instant::now();
    ship_ok(&platform, &env, &["deploy"]);
    let took = started.elapsed();
    let answers = requests.stop().await;
    report("one instance, min 1, desired 1, surge", &answers, took);

    let record = latest_deploy(&platform, &env).await;
    assert_eq!(record.status, DeployStatus::Succeeded, "{record:?}");
    assert!(record.surge, "a group at its minimum surges");
    answers.assert_none_failed("a surge deploy");
    assert!(
        answers
            .all
            .last()
            .unwrap()
            .as_ref()
            .unwrap()
            .1
            .contains("r2"),
        "the new release serves"
    );
    assert_left_whole(&platform, &env, before, "r2").await;
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_whose_worker_is_killed_mid_batch_is_finished_by_the_reconciler() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;
    let (env, address, before) = serving_r1(&platform, "orphan", 3).await;

    let requests = RequestLoop::start(&address);
    ship_ok(&platform, &env, &["config", "set", "GREETING=Orphaned"]);
    let started = Instant::now();
    ship_ok(&platform, &env, &["deploy", "--no-follow"]);
    // Batch 2 is running: its instance is in Standby, its agent at work.
    batch_begun(&platform, &env, 2).await;
    // This platform's sandboxes only: a test beside it runs the same
    // binary, and killing its deploy fails that test's `ship deploy`.
    let killed = platform
        .lambda
        .kill_sandboxes(&platform.deploy_function)
        .unwrap();
    assert!(killed > 0, "the deploy function's sandboxes run");
    let record = finished(&platform, &env, Duration::from_secs(120)).await;
    let took = started.elapsed();
    let answers = requests.stop().await;
    report("worker killed mid-batch", &answers, took);

    assert_eq!(record.status, DeployStatus::Succeeded, "{record:?}");
    assert!(
        record.notes.iter().any(|n| n.contains("the reconciler")),
        "the reconciler says what it did: {:?}",
        record.notes
    );
    assert!(record.workers >= 2, "a fresh worker finished it");
    answers.assert_none_failed("a deploy whose worker died");
    assert_left_whole(&platform, &env, before, "r2").await;
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_rides_over_s3_answering_slow_down_to_a_fifth_of_its_calls() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;
    let (env, address, before) = serving_r1(&platform, "slow", 2).await;
    ship_ok(&platform, &env, &["config", "set", "GREETING=Throttled"]);

    let requests = RequestLoop::start(&address);
    platform
        .emulator()
        .set_s3_faults(0.2, Some(19))
        .await
        .unwrap();
    let started = Instant::now();
    let out = ship_in(&platform, &env, &["deploy"]);
    let took = started.elapsed();
    let faults = platform.emulator().s3_faults().await.unwrap();
    platform.emulator().set_s3_faults(0.0, None).await.unwrap();
    let answers = requests.stop().await;
    report("20% of S3 calls 503 SlowDown", &answers, took);
    println!(
        "S3 answered SlowDown to {} of {} requests",
        faults.s3_injected, faults.s3_requests
    );

    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert!(faults.s3_injected >= 10, "{faults:?}");
    let record = latest_deploy(&platform, &env).await;
    assert_eq!(record.status, DeployStatus::Succeeded, "{record:?}");
    answers.assert_none_failed("a deploy under S3 throttling");
    assert_left_whole(&platform, &env, before, "r2").await;
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_launched_by_a_scale_out_during_a_deploy_boot_the_new_release() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;
    let (env, address, before) = serving_r1(&platform, "grow", 2).await;

    let requests = RequestLoop::start(&address);
    ship_ok(&platform, &env, &["config", "set", "GREETING=Grown"]);
    let started = Instant::now();
    ship_ok(&platform, &env, &["deploy", "--no-follow"]);
    batch_begun(&platform, &env, 1).await;
    // Two more, as a scaling policy would ask: desired counts the batch
    // in Standby out (the deploy decremented it).
    let autoscaling = slipway_control::aws::autoscaling_client(&platform.config);
    let group = platform.fleet.aws.group(&env).await.unwrap();
    autoscaling
        .set_desired_capacity()
        .auto_scaling_group_name(group.auto_scaling_group_name().unwrap())
        .desired_capacity(group.desired_capacity().unwrap() + 2)
        .send()
        .await
        .unwrap();
    let record = finished(&platform, &env, Duration::from_secs(120)).await;
    let took = started.elapsed();
    // The new instances come up healthy on r2.
    let grown = Sizes {
        desired: before.desired + 2,
        ..before
    };
    assert_left_whole(&platform, &env, grown, "r2").await;
    let answers = requests.stop().await;
    report("scale-out of two during the deploy", &answers, took);

    assert_eq!(record.status, DeployStatus::Succeeded, "{record:?}");
    answers.assert_none_failed("a deploy while the group grows");
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_whose_build_fails_is_refused_by_prepare_before_any_instance_leaves_the_load_balancer()
 {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(&work.path().join("fleet")).await;
    let app = work.path().join("app");
    // The build fails when the config says so.
    example_app(
        &app,
        "web: python3 app.py\nbuild: test \"${BREAK:-}\" != build\n",
        &[],
    );
    let env = EnvRef::parse("hello", "prepare").unwrap();
    booted_environment(&platform, &env, 3).await;
    ship_ok_at(&platform, &app, &env, &["release"]);
    ship_ok_at(&platform, &app, &env, &["deploy"]);
    let address = serving(&platform, &env).await;
    let before = group_state(&platform, &env).await.sizes;
    let first = latest_deploy(&platform, &env).await;
    let prepared = first.prepare.as_ref().expect("the first deploy prepared");
    assert_eq!((prepared.instances, prepared.failed.len()), (3, 0));

    let requests = RequestLoop::start(&address);
    ship_ok_at(&platform, &app, &env, &["config", "set", "BREAK=build"]);
    let started = Instant::now();
    let out = ship_at(&platform, &app, &env, &["deploy"]);
    let took = started.elapsed();
    // Refused within a second: the loop goes on a while after, still r1.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answers = requests.stop().await;
    report("build fails, refused by prepare", &answers, took);
    assert!(!out.status.success());
    let record = latest_deploy(&platform, &env).await;
    assert_eq!(record.status, DeployStatus::Failed, "{record:?}");
    assert!(record.batches.is_empty(), "no batch ran: {record:?}");
    let prepare = record.prepare.as_ref().unwrap();
    assert_eq!(prepare.failed.len(), 3, "every instance's build failed");
    let cause = record.cause.clone().unwrap();
    assert!(
        cause.contains(prepare.failed[0].instance.as_str()) && cause.contains("step=build"),
        "names the instance and what it said: {cause}"
    );
    assert_eq!(
        platform.store.current(&env).await.unwrap(),
        Some(first.to),
        "current is back on what serves"
    );
    answers.assert_none_failed("build fails, refused by prepare");
    assert_left_whole(&platform, &env, before, "r1").await;
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}

#[tokio::test(flavor = "multi_thread")]
async fn releases_that_fail_their_health_check_or_crash_at_start_fail_no_request() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;
    let (env, address, before) = serving_r1(&platform, "bad", 3).await;

    for (case, breaks) in [
        ("health check fails", "health"),
        ("crashes at start", "start"),
    ] {
        let requests = RequestLoop::start(&address);
        ship_ok(
            &platform,
            &env,
            &["config", "set", &format!("BREAK={breaks}")],
        );
        let started = Instant::now();
        let out = ship_in(&platform, &env, &["deploy"]);
        let took = started.elapsed();
        // A crash fails within a second or so: the loop goes on a while
        // after, and r1 must still answer.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let answers = requests.stop().await;
        report(case, &answers, took);
        assert!(!out.status.success(), "{case}: the deploy fails");
        let record = latest_deploy(&platform, &env).await;
        assert!(
            matches!(
                record.status,
                DeployStatus::Failed | DeployStatus::RolledBack
            ),
            "{case}: {record:?}"
        );
        answers.assert_none_failed(case);
        assert_left_whole(&platform, &env, before, "r1").await;
        ship_ok(&platform, &env, &["config", "unset", "BREAK"]);
    }
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_deploys_at_once_run_in_order_with_queueing_and_the_second_is_refused_without() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;
    let (env, address, before) = serving_r1(&platform, "queue", 2).await;

    // Without queueing, the second is refused naming the holder.
    ship_ok(&platform, &env, &["config", "set", "GREETING=First"]);
    ship_ok(&platform, &env, &["deploy", "--no-follow"]);
    let refused = ship_in(&platform, &env, &["deploy", "--no-follow"]);
    assert!(!refused.status.success());
    let said = stderr(&refused);
    let holder = latest_deploy(&platform, &env).await;
    assert!(
        said.contains(holder.id.as_str()) && said.contains("holds the environment"),
        "{said}"
    );
    finished(&platform, &env, Duration::from_secs(60)).await;

    // With it, the second waits its turn and runs after the first.
    let requests = RequestLoop::start(&address);
    let started = Instant::now();
    ship_ok(&platform, &env, &["config", "set", "GREETING=Second"]);
    ship_ok(&platform, &env, &["deploy", "--no-follow"]);
    let first = latest_deploy(&platform, &env).await;
    ship_ok(&platform, &env, &["config", "set", "GREETING=Third"]);
    let queued = ship_ok(&platform, &env, &["deploy", "--wait", "--no-follow"]);
    let shown = String::from_utf8_lossy(&queued.stdout).into_owned();
    assert!(
        shown.contains("number 1 in the environment's queue"),
        "{shown}"
    );
    let listed = ship_ok(&platform, &env, &["deploys"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("waiting (#1)"),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    let second = finished(&platform, &env, Duration::from_secs(120)).await;
    let took = started.elapsed();
    let answers = requests.stop().await;
    report("two deploys at once, queued", &answers, took);
    let first = Deploys::new(platform.store.clone())
        .get(&env, &first.id)
        .await
        .unwrap();
    assert_ne!(first.id, second.id);
    assert_eq!(first.status, DeployStatus::Succeeded, "{first:?}");
    assert_eq!(second.status, DeployStatus::Succeeded, "{second:?}");
    assert!(
        second.batches[0].started_at >= first.finished_at.unwrap(),
        "the second ran after the first"
    );
    answers.assert_none_failed("two queued deploys");
    assert_left_whole(&platform, &env, before, &second.to.to_string()).await;
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}

/// `ship_in` in a blocking task, for a command that waits (`--wait`).
fn ship_spawned(
    platform: &slipway_local::Platform,
    env: &EnvRef,
    args: &[&str],
) -> tokio::task::JoinHandle<std::process::Output> {
    let creds = credentials(platform);
    let mut all: Vec<String> = vec![
        "-a".into(),
        env.app.to_string(),
        "-e".into(),
        env.env.to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        let creds: Vec<(&str, &str)> = creds.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        ship(&repo().join("examples/hello"), &all, &creds)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cycle_asked_for_during_a_deploy_waits_its_turn_and_a_deploy_queued_behind_it_runs_after()
{
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;
    let (env, address, before) = serving_r1(&platform, "cyclequeue", 2).await;
    let cycles = slipway_control::cycle::Cycles::new(platform.store.clone());

    let requests = RequestLoop::start(&address);
    let started = Instant::now();
    ship_ok(&platform, &env, &["config", "set", "GREETING=Second"]);
    ship_ok(&platform, &env, &["deploy", "--no-follow"]);
    let first = latest_deploy(&platform, &env).await;
    // Without --wait the cycle is refused, naming the deploy.
    let refused = ship_in(&platform, &env, &["cycle", "--all"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains(first.id.as_str()),
        "{}",
        stderr(&refused)
    );
    // With it, the cycle waits behind the deploy (the deploy function
    // starts it in the cycle function as the deploy ends)…
    let cycle = ship_spawned(&platform, &env, &["cycle", "--all", "--wait"]);
    let waiting = loop {
        if let Some(c) = cycles.list(&env, 1).await.unwrap().pop() {
            break c;
        }
        assert!(started.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // …and a deploy asked for after it waits behind it (the cycle
    // function starts that one as the cycle ends).
    ship_ok(&platform, &env, &["config", "set", "GREETING=Third"]);
    let queued = ship_ok(&platform, &env, &["deploy", "--wait", "--no-follow"]);
    let shown = String::from_utf8_lossy(&queued.stdout).into_owned();
    assert!(shown.contains("in the environment's queue"), "{shown}");
    let cycled = cycle.await.unwrap();
    let said = String::from_utf8_lossy(&cycled.stdout).into_owned();
    assert!(cycled.status.success(), "{said}{}", stderr(&cycled));
    assert!(
        said.contains("number 1 in the environment's queue"),
        "{said}"
    );
    let last = finished(&platform, &env, Duration::from_secs(180)).await;
    let took = started.elapsed();
    let answers = requests.stop().await;
    report("a cycle queued between two deploys", &answers, took);

    let deploys = Deploys::new(platform.store.clone());
    let first = deploys.get(&env, &first.id).await.unwrap();
    let cycle = cycles.get(&env, &waiting.id).await.unwrap();
    assert!(waiting.waiting, "{waiting:?}");
    assert_eq!(first.status, DeployStatus::Succeeded, "{first:?}");
    assert_eq!(
        cycle.status,
        slipway_control::cycle::CycleStatus::Succeeded,
        "{cycle:?}"
    );
    assert_eq!(last.status, DeployStatus::Succeeded, "{last:?}");
    assert_ne!(last.id, first.id);
    // Planned when its turn came: its replacements booted what the first
    // deploy made current, not what was current when it was asked for.
    assert_eq!(
        cycle.release.as_deref(),
        Some(first.to.to_string().as_str())
    );
    let cycle_started = cycle
        .steps
        .iter()
        .filter_map(|s| s.started_at)
        .min()
        .unwrap();
    assert!(
        cycle_started >= first.finished_at.unwrap(),
        "the cycle ran after the first deploy"
    );
    assert!(
        last.batches[0].started_at >= cycle.finished_at.unwrap(),
        "the last deploy ran after the cycle"
    );
    answers.assert_none_failed("a cycle queued between two deploys");
    assert_left_whole(&platform, &env, before, &last.to.to_string()).await;
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_terminated_mid_batch_is_noticed_and_replaced_and_the_deploy_goes_on() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;
    let (env, address, before) = serving_r1(&platform, "vanish", 3).await;

    let requests = RequestLoop::start(&address);
    ship_ok(&platform, &env, &["config", "set", "GREETING=Vanished"]);
    let started = Instant::now();
    ship_ok(&platform, &env, &["deploy", "--no-follow"]);
    let victim = batch_begun(&platform, &env, 2).await.remove(0);
    // Out of the load balancer, its agent sent the command.
    loop {
        let state = group_state(&platform, &env).await;
        if state
            .members
            .iter()
            .any(|(id, lifecycle, _)| *id == victim.to_string() && lifecycle == "Standby")
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let autoscaling = slipway_control::aws::autoscaling_client(&platform.config);
    autoscaling
        .terminate_instance_in_auto_scaling_group()
        .instance_id(victim.as_str())
        .should_decrement_desired_capacity(false)
        .send()
        .await
        .unwrap();
    let record = finished(&platform, &env, Duration::from_secs(120)).await;
    let took = started.elapsed();
    assert_eq!(record.status, DeployStatus::Succeeded, "{record:?}");
    assert_left_whole(&platform, &env, before, "r2").await;
    let answers = requests.stop().await;
    report("instance terminated mid-batch", &answers, took);

    let batch = record.batches.iter().find(|b| b.number == 2).unwrap();
    assert_eq!(
        batch.results[0].status,
        slipway_control::runner::RunStatus::Vanished,
        "{batch:?}"
    );
    assert!(
        took < Duration::from_secs(60),
        "noticed at once, not at the agent's timeout"
    );
    answers.assert_none_failed("a deploy losing an instance");
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}
