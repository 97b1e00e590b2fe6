//! The control plane as Lambda runs it: the deploy worker is the deploy
//! function's binary, invoked asynchronously through the local Lambda with
//! the deadline the template's `Timeout` sets (scaled) and killed past it;
//! an event is delivered at least once, so a delivery made twice must run
//! the deploy once.

use std::time::{Duration, Instant};

use slipway_control::rollout::Deploys;
use slipway_core::deploys::DeployStatus;
use slipway_core::names::EnvRef;

use crate::support::*;

/// The deploy function's timeout at this share of the template's: its
/// 900 s become 5.4 s, less than a deploy of four instances takes here and
/// more than one batch.
const SHORT: f64 = 0.006;

async fn last_deploy(
    platform: &slipway_local::Platform,
    env: &EnvRef,
) -> slipway_control::rollout::record::DeployRecord {
    Deploys::new(platform.store.clone())
        .list(env, 1)
        .await
        .unwrap()
        .pop()
        .expect("a deploy")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_longer_than_the_deploy_functions_deadline_is_handed_over_and_finishes() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform_with(work.path(), |o| {
        o.function_time_scales
            .insert("DeployFunction".into(), SHORT);
    })
    .await;
    let deadline = platform
        .lambda
        .spec(&platform.deploy_function)
        .unwrap()
        .timeout
        .mul_f64(SHORT);
    let env = EnvRef::parse("handoff", "prod").unwrap();
    booted_environment(&platform, &env, 4).await;
    ship_ok(&platform, &env, &["release", "--allow-dirty"]);
    let started = Instant::now();
    ship_ok(&platform, &env, &["deploy"]);
    let took = started.elapsed();

    let record = last_deploy(&platform, &env).await;
    println!(
        "deploy of 4 took {took:?}; deadline {deadline:?}; {} workers",
        record.workers
    );
    assert_eq!(record.status, DeployStatus::Succeeded, "{record:?}");
    assert!(
        took > deadline,
        "the deploy ({took:?}) outlasted one invocation's deadline ({deadline:?})"
    );
    assert!(
        record.workers >= 2,
        "handed over to fresh invocations: {} workers",
        record.workers
    );
    let stats = platform.lambda.stats(&platform.deploy_function);
    assert!(
        stats.deliveries >= record.workers as usize,
        "each worker was an asynchronous invocation of the deploy function: {stats:?}"
    );
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_event_delivered_twice_runs_the_deploy_once() {
    let work = tempfile::tempdir().unwrap();
    // No reconciler: its scheduled events would be deliveries too (and
    // might be the one delivered twice).
    let platform = platform_with(work.path(), |o| o.schedules = false).await;
    let env = EnvRef::parse("twice", "prod").unwrap();
    booted_environment(&platform, &env, 2).await;
    ship_ok(&platform, &env, &["release", "--allow-dirty"]);
    let before = platform.lambda.stats(&platform.deploy_function).deliveries;
    platform
        .lambda
        .deliver_next_event_twice(&platform.deploy_function)
        .unwrap();
    let out = ship_in(&platform, &env, &["deploy"]);
    let record = last_deploy(&platform, &env).await;
    assert!(
        out.status.success(),
        "ship deploy: {}{}\n{record:?}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );

    assert_eq!(record.status, DeployStatus::Succeeded, "{record:?}");
    // With the default timeouts a worker may start batches for its first
    // 60 s (900 s less one whole batch of 840 s): these few seconds of
    // batches are one worker's. The duplicate added none, and was a
    // delivery more.
    assert_eq!(
        record.workers, 1,
        "of the two deliveries of the first event, one worker ran: {record:?}"
    );
    let deliveries = platform.lambda.stats(&platform.deploy_function).deliveries - before;
    assert_eq!(
        deliveries,
        record.workers as usize + 1,
        "the first event was delivered twice"
    );
    let ssm = slipway_control::aws::ssm_client(&platform.config);
    let listed = ssm.list_command_invocations().send().await.unwrap();
    let runs = |comment: &str| {
        listed
            .command_invocations()
            .iter()
            .filter(|i| i.document_name() == Some("Slipway-Deploy") && i.comment() == Some(comment))
            .count()
    };
    assert_eq!(
        (runs("slipway prepare"), runs("slipway deploy")),
        (2, 2),
        "each instance prepared once and deployed once"
    );
    // The second delivery may still be finishing its refusal.
    tokio::time::sleep(Duration::from_millis(200)).await;
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}
