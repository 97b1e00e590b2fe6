//! The agent's speed, measured against the floors its issue sets:
//!
//! 1. Installing a release of about 100 MB in 10,000 files from a local
//!    `file://` store takes at most 1.1× what `tar -xzf` takes on the same
//!    archive, and the zstd variant at most half of `tar -xzf`.
//! 2. From start to healthy for `examples/hello`, the agent's own overhead
//!    (everything but the app's start-up) stays under 300 ms.
//!
//! Run with `scripts/bench-agent` (or `cargo bench -p slipway-agent`); it
//! prints each figure, the median of several runs, and whether the floor
//! holds. Set `SLIPWAY_BENCH_RUNS` to change the number of runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use slipway_agent::install::install_source;
use slipway_agent::layout::Layout;
use slipway_agent::source::{Location, ReleaseUrl, Store};
use slipway_core::archive::{ArchiveFormat, Limits};
use slipway_core::names::{AppName, EnvRef, ReleaseId};

const FILES: usize = 10_000;
const TARGET_BYTES: usize = 100 * 1024 * 1024;

/// A deterministic corpus: source-like text (compresses ~4×) and some
/// binary-looking files (do not compress), 100 per directory.
fn corpus(dir: &Path) -> u64 {
    let words = [
        "fn ",
        "let ",
        "self",
        ".map(",
        "return ",
        "struct ",
        "impl ",
        "{\n",
        "}\n",
        "    ",
        "async ",
        "await",
        "Result<",
        "Option<",
        "String",
        "// a comment about it\n",
        "match ",
        "=> ",
        "Some(",
        "None",
        "Ok(",
        "Err(",
        "pub ",
        "use crate::",
        "::new()",
        ";\n",
    ];
    let mut seed: u64 = 0x2545F4914F6CDD1D;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut total = 0u64;
    let avg = TARGET_BYTES / FILES;
    for i in 0..FILES {
        let sub = dir.join(format!("pkg{:03}/mod{}", i / 100, (i / 10) % 10));
        std::fs::create_dir_all(&sub).unwrap();
        let size = avg / 4 + (next() as usize % (avg * 3 / 2));
        let mut data = Vec::with_capacity(size);
        if i % 5 == 0 {
            while data.len() < size {
                data.extend_from_slice(&next().to_le_bytes());
            }
        } else {
            while data.len() < size {
                data.extend_from_slice(words[next() as usize % words.len()].as_bytes());
            }
        }
        data.truncate(size);
        total += size as u64;
        std::fs::write(sub.join(format!("file{i}.rs")), data).unwrap();
    }
    std::fs::write(dir.join("Procfile"), "web: python3 app.py\n").unwrap();
    total
}

/// Disk activity so far: sectors written and discarded, I/Os in flight.
fn disk_activity() -> (u64, u64, u64) {
    let stats = std::fs::read_to_string("/proc/diskstats").unwrap_or_default();
    let mut total = (0, 0, 0);
    for line in stats.lines() {
        let f: Vec<u64> = line
            .split_whitespace()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .filter_map(|(_, v)| v.parse().ok())
            .collect();
        // major minor | reads … sectors_written(8) … in_flight(10) … sectors_discarded(15)
        total.0 += f.get(8).copied().unwrap_or(0);
        total.1 += f.get(15).copied().unwrap_or(0);
        total.2 += f.get(10).copied().unwrap_or(0);
    }
    total
}

/// `sync`, then waits (up to two minutes) until the disks have been idle
/// for half a second: a VM's disk may still be discarding what an earlier
/// run deleted, and every timed run should start from the same quiet
/// state. Returns how long it waited.
fn settle() -> Duration {
    let started = Instant::now();
    sh(&mut Command::new("sync"));
    let mut before = disk_activity();
    while started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(500));
        let now = disk_activity();
        if now.0 == before.0 && now.1 == before.1 && now.2 == 0 {
            break;
        }
        before = now;
    }
    started.elapsed()
}

/// CPU time (user, system) in ms of this process's waited-for children.
fn children_cpu() -> (f64, f64) {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 * 1e3 + tv.tv_usec() as f64 / 1e3;
    (t(u.user_time()), t(u.system_time()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Puts `archive` into a file:// store as release r1 of hello/bench.
fn store_release(store: &Path, archive: &[u8], format: ArchiveFormat) -> ReleaseUrl {
    let env = EnvRef::parse("hello", "bench").unwrap();
    let id = ReleaseId::new(1).unwrap();
    let dir = store.join(env.prefix()).join("releases/r1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format.source_file_name()), archive).unwrap();
    let manifest = serde_json::json!({
        "state": "ready", "id": "r1", "app": "hello", "env": "bench",
        "source": {
            "key": format!("{}releases/r1/{}", env.prefix(), format.source_file_name()),
            "format": format.extension(),
            "sha256": hex::encode(Sha256::digest(archive)),
            "size": archive.len(),
        },
        "config_sha256": hex::encode(Sha256::digest(b"")),
        "procfile": {"web": "python3 app.py"},
        "created_at": "2026-11-28T00:00:00Z", "created_by": "bench",
        "origin": {"kind": "config", "from": "r1"},
    });
    std::fs::write(dir.join("release.json"), manifest.to_string()).unwrap();
    std::fs::write(dir.join("env"), b"").unwrap();
    ReleaseUrl {
        location: Location::Dir(store.to_owned()),
        env,
        id,
    }
}

fn bench_install(work: &Path, runs: usize) -> bool {
    let src = work.join("corpus");
    let bytes = corpus(&src);
    let tar_path = work.join("release.tar");
    sh(Command::new("tar")
        .arg("-cf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&src)
        .arg("."));
    let tar = std::fs::read(&tar_path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::stream::encode_all(&tar[..], 3).unwrap();
    let gz_path = work.join("release.tar.gz");
    std::fs::write(&gz_path, &gz).unwrap();
    std::fs::remove_dir_all(&src).unwrap();
    println!(
        "corpus: {FILES} files, {:.1} MB; tar.gz {:.1} MB, tar.zst {:.1} MB",
        bytes as f64 / 1e6,
        gz.len() as f64 / 1e6,
        zst.len() as f64 / 1e6
    );

    let gz_store = work.join("store-gz");
    let zst_store = work.join("store-zst");
    let gz_url = store_release(&gz_store, &gz, ArchiveFormat::Gzip);
    let zst_url = store_release(&zst_store, &zst, ArchiveFormat::Zstd);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = AppName::parse("hello").unwrap();
    let limits = Limits::default();

    let cpu = || {
        let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 * 1e3 + tv.tv_usec() as f64 / 1e3;
        (t(u.user_time()), t(u.system_time()))
    };
    let install = |url: &ReleaseUrl, root: &Path| -> Duration {
        let before = cpu();
        let layout = Layout::new(root, &app);
        layout.create().unwrap();
        runtime.block_on(async {
            let store = Store::new(&url.location, || unreachable!());
            let manifest = slipway_agent::install::manifest(&store, url).await.unwrap();
            let started = Instant::now();
            install_source(&store, &manifest, &layout, limits)
                .await
                .unwrap();
            let took = started.elapsed();
            let after = cpu();
            if std::env::var_os("SLIPWAY_BENCH_CPU").is_some() {
                println!(
                    "  {:?}: wall {:.0} ms, user {:.0} ms, sys {:.0} ms",
                    url.location,
                    ms(took),
                    after.0 - before.0,
                    after.1 - before.1
                );
            }
            took
        })
    };

    // Every timed run writes into a fresh directory and starts from a
    // settled disk, so no run pays for another's writeback; nothing is
    // deleted until the end (on this VM's disk, deleting 100 MB makes the
    // next writes crawl while the freed blocks are discarded).
    let (mut tar_times, mut gz_times, mut zst_times) = (vec![], vec![], vec![]);
    let mut waited = Duration::ZERO;
    for run in 0..runs {
        let dest = |what: &str| work.join(format!("out-{run}-{what}"));
        std::fs::create_dir_all(dest("tar")).unwrap();
        waited += settle();
        let started = Instant::now();
        let before = children_cpu();
        sh(Command::new("tar")
            .arg("-xzf")
            .arg(&gz_path)
            .arg("-C")
            .arg(dest("tar")));
        tar_times.push(started.elapsed());
        if std::env::var_os("SLIPWAY_BENCH_CPU").is_some() {
            let after = children_cpu();
            println!(
                "  tar -xzf: wall {:.0} ms, user {:.0} ms, sys {:.0} ms",
                ms(started.elapsed()),
                after.0 - before.0,
                after.1 - before.1
            );
        }
        waited += settle();
        gz_times.push(install(&gz_url, &dest("gz")));
        waited += settle();
        zst_times.push(install(&zst_url, &dest("zst")));
    }
    println!(
        "(waited {:.1} s in all for the disk to settle between runs)",
        waited.as_secs_f64()
    );
    let (t, g, z) = (median(tar_times), median(gz_times), median(zst_times));
    let gz_ok = g.as_secs_f64() <= 1.1 * t.as_secs_f64();
    let zst_ok = z.as_secs_f64() <= 0.5 * t.as_secs_f64();
    println!(
        "tar -xzf:               {:8.1} ms (median of {runs})",
        ms(t)
    );
    println!(
        "agent install, gzip:    {:8.1} ms = {:.2}× tar -xzf (floor 1.10×) {}",
        ms(g),
        g.as_secs_f64() / t.as_secs_f64(),
        if gz_ok { "ok" } else { "MISSED" }
    );
    println!(
        "agent install, zstd:    {:8.1} ms = {:.2}× tar -xzf (floor 0.50×) {}",
        ms(z),
        z.as_secs_f64() / t.as_secs_f64(),
        if zst_ok { "ok" } else { "MISSED" }
    );
    gz_ok && zst_ok
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn healthy(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = write!(s, "GET /health HTTP/1.0\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200")
}

/// The example app alone: spawn to first 2xx, polled every millisecond.
fn app_startup(hello: &Path) -> Duration {
    let port = free_port();
    let started = Instant::now();
    let mut child = Command::new("python3")
        .arg("app.py")
        .current_dir(hello)
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while !healthy(port) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = started.elapsed();
    child.kill().unwrap();
    child.wait().unwrap();
    took
}

fn bench_overhead(work: &Path, runs: usize) -> bool {
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello");
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_dir_all(".", &hello).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    let archive = gz.finish().unwrap();
    let store = work.join("hello-store");
    let url = store_release(&store, &archive, ArchiveFormat::Gzip);
    // Release r2: the same app, to time a deploy that replaces a running one.
    let r2 = store.join("hello/bench/releases/r2");
    std::fs::create_dir_all(&r2).unwrap();
    for f in ["source.tar.gz", "env"] {
        std::fs::copy(store.join("hello/bench/releases/r1").join(f), r2.join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(store.join("hello/bench/releases/r1/release.json"))
        .unwrap()
        .replace("\"r1\"", "\"r2\"")
        .replace("releases/r1/", "releases/r2/");
    std::fs::write(r2.join("release.json"), manifest).unwrap();
    let url2 = format!("file://{}/hello/bench/releases/r2", store.display());

    let agent = PathBuf::from(env!("CARGO_BIN_EXE_slipway-agent"));
    let (mut first, mut next, mut app) = (vec![], vec![], vec![]);
    for run in 0..runs {
        let root = work.join(format!("root{run}"));
        let port = free_port();
        let deploy = |u: &str| {
            let started = Instant::now();
            let out = Command::new(&agent)
                .args([
                    "--supervisor",
                    "direct",
                    "--port",
                    &port.to_string(),
                    "--root",
                ])
                .arg(&root)
                .args(["deploy", u])
                .env("SLIPWAY_AGENT_CONFIG", "/nonexistent")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
            started.elapsed()
        };
        first.push(deploy(&url.to_string()));
        next.push(deploy(&url2));
        app.push(app_startup(&hello));
        // Stop what the agent started.
        for pid in std::fs::read_dir(root.join("hello/run")).unwrap().flatten() {
            let text = std::fs::read_to_string(pid.path()).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let _ = Command::new("kill")
                .arg("--")
                .arg(format!("-{}", v["pid"]))
                .status();
        }
    }
    let (f, n, a) = (median(first), median(next), median(app));
    let over_first = f.saturating_sub(a);
    let over_next = n.saturating_sub(a);
    println!(
        "examples/hello start-up alone:     {:7.1} ms (median of {runs})",
        ms(a)
    );
    println!(
        "first deploy, start to healthy:    {:7.1} ms → agent overhead {:6.1} ms (floor 300) {}",
        ms(f),
        ms(over_first),
        if over_first < Duration::from_millis(300) {
            "ok"
        } else {
            "MISSED"
        }
    );
    println!(
        "next release, start to healthy:    {:7.1} ms → agent overhead {:6.1} ms (floor 300) {}",
        ms(n),
        ms(over_next),
        if over_next < Duration::from_millis(300) {
            "ok"
        } else {
            "MISSED"
        }
    );
    over_first < Duration::from_millis(300) && over_next < Duration::from_millis(300)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing
    // useful either: this file is only a benchmark.
    let runs: usize = std::env::var("SLIPWAY_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let work =
        tempfile::tempdir_in(std::env::var("SLIPWAY_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))
            .unwrap();
    println!("== slipway-agent benchmarks ({runs} runs each)");
    let install_ok = bench_install(work.path(), runs);
    let overhead_ok = bench_overhead(work.path(), runs.max(5));
    // Remove the work directory before exiting (exit skips destructors).
    drop(work);
    if !(install_ok && overhead_ok) {
        std::process::exit(1);
    }
}
