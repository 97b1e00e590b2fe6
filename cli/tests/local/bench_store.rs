//! `scripts/bench-store`: what each read that once walked an environment's
//! history costs, at a page's worth of records and at 10,000, on the production path of
//! the local platform (API Gateway, the function binaries, the emulator's
//! S3). The environment first has 21 releases and 21 deploy records (the
//! smallest history that fills every page: with 10, a page reads only 10
//! records and is cheaper still); then
//! 1,000 releases and 10,000 deploy records, each with its SSM output
//! object, written as the control plane writes them. For each read (a page
//! of releases, a page of deploys, the rollback target, the overview, the
//! environment page that refreshes every 2 s) it prints the S3 requests the
//! functions made (from the emulator's call record) and the median latency
//! of five requests. A benchmark, not a test: ignored by `cargo test`, run
//! by the script, which fails when a read's S3 requests differ between the
//! two sizes or its latency grows by more than 1.5×.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use slipway_control::rollout::Deploys;
use slipway_control::store::index;
use slipway_core::ids::DeployId;
use slipway_core::keys::{deploy_output_prefix, release_index_key, release_key};
use slipway_core::names::{EnvRef, ReleaseId};
use slipway_core::objects::{S3Objects, Write};

use crate::support::*;

/// The smallest history whose every page is full (a page holds 20 and reads
/// one more to know whether another follows): below it a page is cheaper.
const SMALL: (u64, usize) = (21, 21);
const LARGE: (u64, usize) = (1_000, 10_000);
const RUNS: usize = 5;
const LATENCY_GOAL: f64 = 1.5;

/// Where the record ends now: the offset the next call's line starts at.
fn offset(calls: &Path) -> u64 {
    std::fs::metadata(calls).unwrap().len()
}

/// The call records between two byte offsets of the record (to its end
/// when `to` is None).
fn records(calls: &Path, from: u64, to: Option<u64>) -> Vec<serde_json::Value> {
    let text = std::fs::read(calls).unwrap();
    let to = to.map_or(text.len(), |t| t as usize);
    String::from_utf8_lossy(&text[from as usize..to])
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The S3 requests recorded since `from`; only those about `env` unless
/// `all`.
fn s3_requests(calls: &Path, from: u64, env: &EnvRef, all: bool) -> usize {
    let needle = env.prefix();
    records(calls, from, None)
        .iter()
        .filter(|v| v["service"] == "s3")
        .filter(|v| all || v.to_string().contains(&needle))
        .count()
}

/// Where the emulator's time went between two offsets of the record: each
/// operation (of any service, the platform's background work included)
/// with its count and total milliseconds, the costliest first.
fn emulator_time(calls: &Path, from: u64, to: u64) -> Vec<(String, usize, f64)> {
    let mut by: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
    for v in records(calls, from, Some(to)) {
        let e = by
            .entry(format!(
                "{} {}",
                v["service"].as_str().unwrap_or("?"),
                v["operation"].as_str().unwrap_or("?")
            ))
            .or_default();
        e.0 += 1;
        e.1 += v["ms"].as_f64().unwrap_or(0.0);
    }
    let mut out: Vec<_> = by.into_iter().map(|(k, (n, ms))| (k, n, ms)).collect();
    out.sort_by(|a, b| b.2.total_cmp(&a.2));
    out
}

struct Read {
    name: &'static str,
    path: String,
    /// Counts every S3 request (a page about every environment).
    all: bool,
}

struct Cost {
    requests: Vec<usize>,
    median: Duration,
    /// The emulator's time during the median request's window.
    emulator: Vec<(String, usize, f64)>,
}

async fn measure(
    platform: &slipway_local::Platform,
    calls: &Path,
    env: &EnvRef,
    read: &Read,
) -> Cost {
    let client = reqwest::Client::new();
    let get = || async {
        let answer = client
            .get(format!("{}{}", platform.url, read.path))
            .basic_auth(&platform.user, Some(&platform.password))
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_success(),
            "{}: {}",
            read.path,
            answer.status()
        );
        answer.bytes().await.unwrap();
    };
    get().await; // a warm function, as a page refreshing every 2 s has
    let mut times = Vec::new();
    let mut requests = Vec::new();
    for _ in 0..RUNS {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let start = offset(calls);
        let began = Instant::now();
        get().await;
        let took = began.elapsed();
        let end = offset(calls);
        times.push((took, start, end));
        // The record is written as each call is answered.
        tokio::time::sleep(Duration::from_millis(300)).await;
        requests.push(s3_requests(calls, start, env, read.all));
    }
    times.sort();
    let (median, start, end) = times[RUNS / 2];
    Cost {
        requests,
        median,
        emulator: emulator_time(calls, start, end),
    }
}

/// The platform's bucket, as its own calls reach it.
fn objects(platform: &slipway_local::Platform) -> S3Objects {
    S3Objects::new(
        slipway_core::objects::s3_client(&platform.config),
        &platform.bucket,
    )
}

/// Runs `writes`, 32 at a time.
async fn all(writes: impl Iterator<Item = impl std::future::Future<Output = ()>>) {
    futures::stream::iter(writes)
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

/// The median time of one listing of a page of the release index, straight
/// to the emulator: what S3 itself costs at this size (moto filters every
/// key of the bucket for a listing; S3 does not).
async fn emulator_listing(platform: &slipway_local::Platform, env: &EnvRef) -> Duration {
    let objects = objects(platform);
    let prefix = slipway_core::keys::release_index_prefix(env);
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let began = Instant::now();
        objects.list_page(&prefix, None, 21).await.unwrap();
        times.push(began.elapsed());
    }
    times.sort();
    times[RUNS / 2]
}

/// Grows the environment's history to `releases` and `deploys` records the
/// way the control plane writes them: release manifests with their index
/// entries, deploy records through `jobs::history::create`, and one SSM
/// output object per deploy.
async fn grow(platform: &slipway_local::Platform, env: &EnvRef, releases: u64, deploys: usize) {
    let objects = objects(platform);
    let r1 = ReleaseId::FIRST;
    let manifest: serde_json::Value = serde_json::from_slice(
        &objects
            .get(&release_key(env, r1, "release.json"))
            .await
            .unwrap()
            .unwrap()
            .body,
    )
    .unwrap();
    let have = platform.store.list_releases(env, None, 1).await.unwrap();
    let top = have.releases[0].id.number();
    let writes = (top + 1..=releases).map(|n| {
        let (objects, mut manifest) = (objects.clone(), manifest.clone());
        async move {
            let id = ReleaseId::new(n).unwrap();
            manifest["id"] = id.to_string().into();
            index::add(&objects, &release_index_key(env, id))
                .await
                .unwrap();
            objects
                .put(
                    &release_key(env, id, "release.json"),
                    serde_json::to_vec(&manifest).unwrap(),
                    "application/json",
                    Write::IfAbsent,
                )
                .await
                .unwrap();
        }
    });
    all(writes).await;

    let d = Deploys::new(platform.store.clone());
    let existing = d.list(env, usize::MAX).await.unwrap();
    let like = existing[0].clone();
    let start = like.created_at - chrono::Duration::days(400);
    let writes = (existing.len()..deploys).map(|i| {
        let (objects, mut record) = (objects.clone(), like.clone());
        async move {
            record.id = DeployId::new(start + chrono::Duration::seconds(i as i64));
            let id = record.id.clone().into();
            slipway_control::jobs::history::create(&objects, env, &id, &record, Write::IfAbsent)
                .await
                .unwrap();
            let output = format!(
                "{}i-0123456789abcdef0/stdout",
                deploy_output_prefix(env, &record.id)
            );
            objects
                .put(
                    &output,
                    b"step=done\n".to_vec(),
                    "text/plain",
                    Write::Always,
                )
                .await
                .unwrap();
        }
    });
    all(writes).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: scripts/bench-store runs it"]
async fn bench_store() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform_with(&work.path().join("fleet"), |o| o.schedules = false).await;
    let app = work.path().join("app");
    example_app(&app, "web: python3 app.py\n", &[]);
    let env = EnvRef::parse("bench", "prod").unwrap();
    let calls = work.path().join("fleet/calls/emulator.jsonl");
    booted_environment(&platform, &env, 1).await;
    // Two real releases and deploys: a rollback target exists.
    ship_ok_at(&platform, &app, &env, &["release"]);
    ship_ok_at(&platform, &app, &env, &["deploy"]);
    ship_ok_at(&platform, &app, &env, &["config", "set", "N=2"]);
    ship_ok_at(&platform, &app, &env, &["deploy"]);

    let base = format!("/apps/{}/envs/{}", env.app, env.env);
    let reads = [
        Read {
            name: "releases page",
            path: format!("{base}/releases"),
            all: false,
        },
        Read {
            name: "deploys page",
            path: format!("{base}/deploys"),
            all: false,
        },
        Read {
            name: "rollback target",
            path: format!("{base}/rollback"),
            all: false,
        },
        Read {
            name: "overview",
            path: "/ui".into(),
            all: true,
        },
        Read {
            name: "environment page",
            path: format!("/ui{base}"),
            all: false,
        },
    ];
    let mut sizes = Vec::new();
    for (releases, deploys) in [SMALL, LARGE] {
        let began = Instant::now();
        grow(&platform, &env, releases, deploys).await;
        println!(
            "bench-store: {releases} releases, {deploys} deploy records (grown in {:.0}s)",
            began.elapsed().as_secs_f64()
        );
        let listing = emulator_listing(&platform, &env).await;
        println!(
            "  the emulator's own ListObjectsV2 of one page: median {:.1} ms",
            listing.as_secs_f64() * 1000.0
        );
        let mut costs = Vec::new();
        for read in &reads {
            let cost = measure(&platform, &calls, &env, read).await;
            println!(
                "  {:<17} S3 requests {:?}, median {:.1} ms",
                read.name,
                cost.requests,
                cost.median.as_secs_f64() * 1000.0
            );
            let top: Vec<String> = cost
                .emulator
                .iter()
                .take(4)
                .map(|(op, n, ms)| format!("{op} {n}× {ms:.1} ms"))
                .collect();
            println!("    emulator: {}", top.join(", "));
            costs.push(cost);
        }
        sizes.push(costs);
    }
    let mut missed = Vec::new();
    println!(
        "bench-store: 10,000 records against a page's worth (goal: the same S3 requests, latency ≤ {LATENCY_GOAL}×)"
    );
    for (i, read) in reads.iter().enumerate() {
        let (small, large) = (&sizes[0][i], &sizes[1][i]);
        let ratio = large.median.as_secs_f64() / small.median.as_secs_f64();
        let same = small.requests.iter().max() == large.requests.iter().max()
            && small.requests.iter().min() == large.requests.iter().min();
        println!(
            "  {:<17} requests {} → {} {}, latency {:.2}×",
            read.name,
            small.requests[RUNS - 1],
            large.requests[RUNS - 1],
            if same { "(same)" } else { "(DIFFERENT)" },
            ratio
        );
        if !same || ratio > LATENCY_GOAL {
            missed.push(read.name);
        }
    }
    assert!(missed.is_empty(), "over the goal: {missed:?}");
}
