//! `scripts/bench-rollout`: how close a one-at-a-time deploy comes to its
//! floor, on the production path of the local platform (the function
//! binaries, `SsmRunner`, `AwsFleet`, the real document, the local load
//! balancer at the environment template's settings on a declared time
//! scale). Six instances, a 30 MB release whose Procfile builds for 3 s.
//!
//! The floor is what no deploy of this shape can beat: per batch, the
//! load balancer's drain (none here: with nothing in flight the load
//! balancer ends a deregistration at once, as AWS does; the template's
//! delay is only its limit), the agent's switch and restart (as it measured
//! them itself), and the healthy threshold times the probe interval; plus
//! one prepare (the slowest instance's). The figure without prepare is
//! printed beside it. A benchmark, not a test: ignored by `cargo test`,
//! run by the script, which fails when the goal (≤ 1.10× the floor) is
//! missed.

use std::path::Path;

use slipway_control::rollout::{DeployRecord, Deploys};
use slipway_core::deploys::DeployStatus;
use slipway_core::names::EnvRef;

use crate::support::*;

/// The environment template's load-balancer settings (its defaults).
const DEREGISTRATION_DELAY_SECS: f64 = 15.0;
const INTERVAL_SECS: f64 = 5.0;
const HEALTHY_THRESHOLD: f64 = 2.0;
const GOAL: f64 = 1.10;

/// An app of 30 MB (incompressible) whose build takes 3 s.
fn big_app(dir: &Path) {
    let mut bytes = vec![0u8; 30 * 1024 * 1024];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in bytes.chunks_mut(8) {
        // xorshift: incompressible, and the same every run.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    example_app(
        dir,
        "web: python3 app.py\nbuild: sleep 3\n",
        &[("assets.bin", &bytes)],
    );
}

async fn latest(platform: &slipway_local::Platform, env: &EnvRef) -> DeployRecord {
    Deploys::new(platform.store.clone())
        .list(env, 1)
        .await
        .unwrap()
        .remove(0)
}

fn secs(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

/// How long the slowest agent of a batch took.
fn agent_secs(batch: &slipway_control::rollout::Batch) -> f64 {
    batch
        .results
        .iter()
        .map(|r| r.duration_ms)
        .max()
        .unwrap_or_default() as f64
        / 1000.0
}

/// One deploy of a new release (a config change), one instance at a time:
/// the finished record.
async fn deploy(
    platform: &slipway_local::Platform,
    app: &Path,
    env: &EnvRef,
    n: usize,
    prepare: bool,
) -> DeployRecord {
    ship_ok_at(
        platform,
        app,
        env,
        &["settings", "set", &format!("prepare={prepare}")],
    );
    ship_ok_at(platform, app, env, &["config", "set", &format!("RUN={n}")]);
    ship_ok_at(
        platform,
        app,
        env,
        &["deploy", "--strategy", "one-at-a-time"],
    );
    let record = latest(platform, env).await;
    assert_eq!(record.status, DeployStatus::Succeeded, "{record:?}");
    record
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: scripts/bench-rollout runs it"]
async fn bench_rollout() {
    let scale: f64 = std::env::var("SLIPWAY_BENCH_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.2);
    let work = tempfile::tempdir().unwrap();
    let platform = platform_with(&work.path().join("fleet"), |o| o.time_scale = scale).await;
    let app = work.path().join("app");
    big_app(&app);
    let env = EnvRef::parse("bench", "prod").unwrap();
    booted_environment(&platform, &env, 6).await;
    ship_ok_at(&platform, &app, &env, &["release"]);
    ship_ok_at(&platform, &app, &env, &["deploy"]);
    serving(&platform, &env).await;

    let prepared = deploy(&platform, &app, &env, 1, true).await;
    let unprepared = deploy(&platform, &app, &env, 2, false).await;

    let took = |r: &DeployRecord| secs(r.created_at, r.finished_at.unwrap());
    let prepare = prepared.prepare.as_ref().expect("the deploy prepared");
    let prepare_secs = secs(prepare.started_at, prepare.finished_at);
    // Nothing is in flight when a batch leaves, so its drain is over at
    // once: no drain term.
    let per_batch_lb = HEALTHY_THRESHOLD * INTERVAL_SECS * scale;
    // The agent's own switch-and-restart on each batch's instance.
    let restarts: f64 = prepared.batches.iter().map(agent_secs).sum();
    let batches = prepared.batches.len() as f64;
    let floor = batches * per_batch_lb + restarts + prepare_secs;
    let ratio = took(&prepared) / floor;
    println!(
        "bench-rollout: 6 instances, one at a time, 30 MB release, 3 s build, time scale {scale}"
    );
    println!(
        "  floor: {batches} batches × (drain 0s (nothing in flight; the delay, {:.1}s, is its limit) + healthy {:.0} × {:.1}s) + restarts {restarts:.1}s + one prepare {prepare_secs:.1}s = {floor:.1}s",
        DEREGISTRATION_DELAY_SECS * scale,
        HEALTHY_THRESHOLD,
        INTERVAL_SECS * scale
    );
    for b in &prepared.batches {
        println!(
            "  batch {}: {:.1}s (agent {:.1}s)",
            b.number,
            secs(b.started_at, b.finished_at.unwrap()),
            agent_secs(b)
        );
    }
    println!(
        "  with prepare: {:.1}s = {ratio:.2}× the floor (goal ≤ {GOAL:.2}×)",
        took(&prepared)
    );
    println!(
        "  without prepare: {:.1}s = {:.2}× the floor",
        took(&unprepared),
        took(&unprepared) / floor
    );
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
    assert!(
        ratio <= GOAL,
        "the deploy took {ratio:.2}× its floor, more than {GOAL}×"
    );
}
