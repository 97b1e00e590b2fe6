//! What the end-to-end tests share: the checkout, the agent, a platform,
//! running `ship`, and the processes left under a directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use slipway_local::{Platform, PlatformOptions, agent_binary};

pub fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

pub fn agent() -> PathBuf {
    let agent = agent_binary();
    assert!(
        agent.is_file(),
        "slipway-agent is not built beside the tests ({}): run `cargo build -p slipway-agent` or scripts/test",
        agent.display()
    );
    agent
}

pub async fn platform(work: &Path) -> Platform {
    platform_with(work, |_| {}).await
}

/// A platform with the tests' options as `adjust` changes them.
pub async fn platform_with(work: &Path, adjust: impl FnOnce(&mut PlatformOptions)) -> Platform {
    let mut options = PlatformOptions {
        repo: repo(),
        work: work.to_path_buf(),
        agent: agent(),
        functions: slipway_local::stack::functions_dir(),
        port: 0,
        fleet_every: Duration::from_millis(200),
        slack_users: vec!["U2CERLKJA".into()],
        // Load balancer probes every second instead of every five.
        time_scale: 0.2,
        // The functions' deadlines as the template sets them.
        function_time_scale: 1.0,
        function_time_scales: Default::default(),
    };
    adjust(&mut options);
    Platform::start(options)
        .await
        .expect("the local platform starts")
}

/// Creates `env` with `instances` instances from the environment template
/// and waits until the local fleet has booted them all.
pub async fn booted_environment(
    platform: &Platform,
    env: &slipway_core::names::EnvRef,
    instances: usize,
) {
    ship::dev::env::create_stack(
        &platform.config,
        ship::commands::envs::TEMPLATE,
        env,
        &platform.bucket,
        instances as u32,
    )
    .await
    .unwrap();
    let booted = std::time::Instant::now();
    while platform.fleet.instances.lock().unwrap().len() < instances {
        assert!(
            booted.elapsed() < Duration::from_secs(30),
            "the local fleet boots"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The environment variables that point `ship` at `platform`.
pub fn credentials(platform: &Platform) -> [(&'static str, String); 3] {
    [
        ("SLIPWAY_URL", platform.url.clone()),
        ("SLIPWAY_USER", platform.user.clone()),
        ("SLIPWAY_PASSWORD", platform.password.clone()),
    ]
}

/// Runs `ship -a <app> -e <env> ARGS` in `examples/hello` against
/// `platform`, whatever comes of it.
pub fn ship_in(platform: &Platform, env: &slipway_core::names::EnvRef, args: &[&str]) -> Output {
    let creds = credentials(platform);
    let creds: Vec<(&str, &str)> = creds.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut all = vec!["-a", env.app.as_str(), "-e", env.env.as_str()];
    all.extend_from_slice(args);
    ship(&repo().join("examples/hello"), &all, &creds)
}

/// `ship_in`, expected to succeed.
pub fn ship_ok(platform: &Platform, env: &slipway_core::names::EnvRef, args: &[&str]) -> Output {
    let out = ship_in(platform, env, args);
    assert!(
        out.status.success(),
        "ship {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    out
}

/// Processes whose working directory is under `dir`: their command lines.
pub fn processes_under(dir: &Path) -> Vec<String> {
    pids_under(dir)
        .into_iter()
        .map(|(_, cmdline)| cmdline)
        .collect()
}

/// Processes whose working directory is under `dir`: each pid and command
/// line.
pub fn pids_under(dir: &Path) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if cwd.starts_with(dir) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}

pub fn ship(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ship"));
    cmd.current_dir(cwd)
        .args(args)
        .env_remove("SLIPWAY_URL")
        .env_remove("SLIPWAY_USER")
        .env_remove("SLIPWAY_PASSWORD")
        .env("XDG_CONFIG_HOME", cwd.join(".no-config"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("ship runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

pub fn nix_kill(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}
