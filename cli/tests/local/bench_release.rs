//! `scripts/bench-release`: `ship release` of a 50 MB repository against its
//! floor on the local platform's production path. The floor is what no
//! release can avoid: `git archive | zstd` of the tree, one PUT of the
//! archive into the bucket, and one read of it on the server's side (the
//! release function must read every byte to check it). `ship release`
//! does all of that and the rest: asking for an upload URL, the S3 event,
//! the release function's checks, its copy into the release's folder, the
//! CLI's wait for the answer. Both are timed over the same tree, three
//! times, medians printed. A benchmark, not a test: ignored by
//! `cargo test`, run by the script, which fails when `ship release` takes
//! more than 1.5× its floor.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use slipway_core::names::EnvRef;

use crate::support::*;

const TREE_BYTES: usize = 50 * 1000 * 1000;
const RUNS: usize = 3;
const GOAL: f64 = 1.5;

/// A deterministic stream of pseudo-random numbers (xorshift64*).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A repository as apps have them: 50 MB in 2,000 files, three fifths
/// source-like text (which compresses about fourfold) and two fifths
/// already-compressed assets (which do not), committed.
fn repository(dir: &Path) {
    example_app(dir, "web: python3 app.py\n", &[]);
    let mut noise = Noise(0x5eed);
    let words = [
        "fn", "let", "self", "match", "return", "struct", "impl", "value", "error", "request",
        "release", "deploy", "config", "{", "}", "(", ")", ";", "=", "->", "&", "\n", "    ",
    ];
    let files = 2_000;
    let per_file = TREE_BYTES / files;
    for i in 0..files {
        let sub = dir.join(format!("src/m{:02}", i % 40));
        std::fs::create_dir_all(&sub).unwrap();
        let mut bytes = Vec::with_capacity(per_file);
        if i % 5 < 3 {
            while bytes.len() < per_file {
                let w = words[(noise.next() % words.len() as u64) as usize];
                bytes.extend_from_slice(w.as_bytes());
                bytes.push(b' ');
                if noise.next().is_multiple_of(7) {
                    bytes.extend_from_slice(format!("x{}", noise.next() % 10_000).as_bytes());
                }
            }
            bytes.truncate(per_file);
            std::fs::write(sub.join(format!("f{i}.rs")), bytes).unwrap();
        } else {
            while bytes.len() < per_file {
                bytes.extend_from_slice(&noise.next().to_le_bytes());
            }
            bytes.truncate(per_file);
            std::fs::write(sub.join(format!("a{i}.bin")), bytes).unwrap();
        }
    }
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "50 MB"]);
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The floor: `git archive | zstd` to a file, one PUT of it, one read of
/// it back; each part's time.
async fn floor(
    platform: &slipway_local::Platform,
    repo: &Path,
    scratch: &Path,
    run: usize,
) -> [Duration; 3] {
    let archive = scratch.join(format!("floor-{run}.tar.zst"));
    let started = Instant::now();
    let ok = Command::new("sh")
        .arg("-c")
        .arg("git archive --format=tar HEAD | zstd -3 -q -c > \"$0\"")
        .arg(&archive)
        .current_dir(repo)
        .status()
        .unwrap()
        .success();
    assert!(ok, "git archive | zstd");
    let compressed = started.elapsed();
    let s3 = slipway_core::objects::s3_client(&platform.config);
    let key = format!("bench/floor-{run}.tar.zst");
    let started = Instant::now();
    s3.put_object()
        .bucket(&platform.bucket)
        .key(&key)
        .body(
            aws_sdk_s3::primitives::ByteStream::from_path(&archive)
                .await
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let put = started.elapsed();
    let started = Instant::now();
    let object = s3
        .get_object()
        .bucket(&platform.bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let read = object.body.collect().await.unwrap().into_bytes().len();
    assert_eq!(read as u64, std::fs::metadata(&archive).unwrap().len());
    let got = started.elapsed();
    s3.delete_object()
        .bucket(&platform.bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    [compressed, put, got]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: scripts/bench-release runs it"]
async fn bench_release() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform_with(&work.path().join("fleet"), |o| o.schedules = false).await;
    let env = EnvRef::parse("bench", "prod").unwrap();
    booted_environment(&platform, &env, 1).await;
    let repo = work.path().join("app");
    repository(&repo);
    let mut parts = [Vec::new(), Vec::new(), Vec::new()];
    let mut floors = Vec::new();
    let mut ships = Vec::new();
    for run in 0..RUNS {
        let part = floor(&platform, &repo, work.path(), run).await;
        for (all, one) in parts.iter_mut().zip(part) {
            all.push(one);
        }
        floors.push(part.iter().sum::<Duration>());
        let started = Instant::now();
        ship_ok_at(&platform, &repo, &env, &["release", "--message", "50 MB"]);
        ships.push(started.elapsed());
    }
    let archive = std::fs::metadata(work.path().join("floor-0.tar.zst"))
        .unwrap()
        .len();
    let (floor, ship) = (median(floors), median(ships));
    let ratio = secs(ship) / secs(floor);
    println!(
        "\n`ship release` of a {} MB repository ({:.1} MB compressed), median of {RUNS}",
        TREE_BYTES / 1_000_000,
        archive as f64 / 1e6
    );
    println!(
        "  git archive | zstd   {:>7.3} s",
        secs(median(parts[0].clone()))
    );
    println!(
        "  one PUT              {:>7.3} s",
        secs(median(parts[1].clone()))
    );
    println!(
        "  one read             {:>7.3} s",
        secs(median(parts[2].clone()))
    );
    println!("  floor                {:>7.3} s", secs(floor));
    println!(
        "  ship release         {:>7.3} s   {ratio:.2}× the floor (goal ≤ {GOAL}×)",
        secs(ship)
    );
    // Where the rest goes: the release function's own time for each upload.
    let log = std::fs::read_to_string(work.path().join("fleet/lambda/slipway-ReleaseFunction.log"))
        .unwrap_or_default();
    let durations: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("REPORT RequestId"))
        .filter_map(|l| l.split("Duration: ").nth(1)?.split('\t').next())
        .collect();
    println!("  release function     {}", durations.join(", "));
    assert!(ratio <= GOAL, "ship release took {ratio:.2}× its floor");
}
