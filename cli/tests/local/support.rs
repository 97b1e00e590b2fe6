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
        schedules: true,
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

/// `env` created with the group's sizes as given, its instances booted.
pub async fn booted_sized(
    platform: &Platform,
    env: &slipway_core::names::EnvRef,
    min: u32,
    max: u32,
    desired: u32,
) {
    ship::dev::env::create_stack_sized(
        &platform.config,
        ship::commands::envs::TEMPLATE,
        env,
        &platform.bucket,
        min,
        max,
        desired,
    )
    .await
    .unwrap();
    let booted = std::time::Instant::now();
    while platform.fleet.instances.lock().unwrap().len() < desired as usize {
        assert!(
            booted.elapsed() < Duration::from_secs(30),
            "the local fleet boots"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `env` with `instances` booted, r1 released and deployed, every target
/// healthy: its instances and the load balancer's address.
pub async fn serving_r1(
    platform: &slipway_local::Platform,
    env: &slipway_core::names::EnvRef,
    instances: usize,
) -> (Vec<slipway_core::names::InstanceId>, String) {
    use slipway_control::fleet::Fleet;
    booted_environment(platform, env, instances).await;
    ship_ok(platform, env, &["release", "--allow-dirty"]);
    ship_ok(platform, env, &["deploy"]);
    let ids: Vec<_> = platform
        .fleet
        .instances
        .lock()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let unhealthy = platform
        .fleet
        .aws
        .wait_healthy(env, &ids, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert!(unhealthy.is_empty(), "never healthy: {unhealthy:?}");
    let formation = platform.fleet.aws.formation(env).await.unwrap();
    let address = format!("http://{}/", formation.load_balancers[0].dns_name);
    (ids, address)
}

/// Requests through the load balancer's local address, one every 20 ms,
/// until stopped: each answer's status and body, or the error.
pub struct RequestLoop {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Result<(u16, String), String>>>,
}

/// What a request loop saw.
#[derive(Debug)]
pub struct Answers {
    pub all: Vec<Result<(u16, String), String>>,
}

impl Answers {
    pub fn failed(&self) -> Vec<&Result<(u16, String), String>> {
        self.all
            .iter()
            .filter(|a| !matches!(a, Ok((200, _))))
            .collect()
    }

    /// Asserts that many requests were made and none failed.
    pub fn assert_none_failed(&self, what: &str) {
        let failed = self.failed();
        assert!(
            self.all.len() > 20,
            "{what}: only {} requests",
            self.all.len()
        );
        assert!(
            failed.is_empty(),
            "{what}: {} of {} requests failed: {:?}",
            failed.len(),
            self.all.len(),
            &failed[..failed.len().min(5)]
        );
    }
}

impl RequestLoop {
    pub fn start(address: &str) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, address) = (stop.clone(), address.to_owned());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut answers = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                let answer = match client.get(&address).send().await {
                    Ok(r) => Ok((r.status().as_u16(), r.text().await.unwrap_or_default())),
                    Err(e) => Err(e.to_string()),
                };
                answers.push(answer);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        });
        Self { stop, task }
    }

    pub async fn stop(self) -> Answers {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        Answers {
            all: self.task.await.unwrap(),
        }
    }
}

/// The load balancer's local address for `env`.
pub async fn load_balancer(platform: &Platform, env: &slipway_core::names::EnvRef) -> String {
    let formation = platform.fleet.aws.formation(env).await.unwrap();
    format!("http://{}/", formation.load_balancers[0].dns_name)
}

/// Waits until every InService instance of `env` is healthy and the load
/// balancer answers 200.
pub async fn serving(platform: &Platform, env: &slipway_core::names::EnvRef) -> String {
    use slipway_control::fleet::Fleet;
    let ids = platform.fleet.aws.in_service(env).await.unwrap();
    let unhealthy = platform
        .fleet
        .aws
        .wait_healthy(env, &ids, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(unhealthy.is_empty(), "never healthy: {unhealthy:?}");
    let address = load_balancer(platform, env).await;
    let started = std::time::Instant::now();
    loop {
        if let Ok(r) = reqwest::get(&address).await
            && r.status() == 200
        {
            return address;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{address} never served"
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
    ship_at(platform, &repo().join("examples/hello"), env, args)
}

/// `ship_in`, in the app at `dir`.
pub fn ship_at(
    platform: &Platform,
    dir: &Path,
    env: &slipway_core::names::EnvRef,
    args: &[&str],
) -> Output {
    let creds = credentials(platform);
    let creds: Vec<(&str, &str)> = creds.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut all = vec!["-a", env.app.as_str(), "-e", env.env.as_str()];
    all.extend_from_slice(args);
    ship(dir, &all, &creds)
}

/// `ship_in`, expected to succeed.
pub fn ship_ok(platform: &Platform, env: &slipway_core::names::EnvRef, args: &[&str]) -> Output {
    ship_ok_at(platform, &repo().join("examples/hello"), env, args)
}

/// `ship_at`, expected to succeed.
pub fn ship_ok_at(
    platform: &Platform,
    dir: &Path,
    env: &slipway_core::names::EnvRef,
    args: &[&str],
) -> Output {
    let out = ship_at(platform, dir, env, args);
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
    output_within(cmd, SHIP_DEADLINE)
}

/// How long one `ship` may run before a test calls it hung: the longest
/// deploy the tests make takes a few minutes on a loaded two-core machine.
/// A hang then fails its test with what `ship` printed, instead of holding
/// the whole run until CI gives up on it.
pub const SHIP_DEADLINE: Duration = Duration::from_secs(600);

/// `cmd`'s output, or a panic with its output so far once it has run past
/// `deadline` (it and its process group are killed).
pub fn output_within(mut cmd: Command, deadline: Duration) -> Output {
    use std::io::Read;
    use std::process::Stdio;

    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }

    let shown = format!("{cmd:?}");
    // Its own process group, so what it started goes with it (and the
    // pipes close).
    let mut child = std::os::unix::process::CommandExt::process_group(&mut cmd, 0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the command") {
            break Some(status);
        }
        if started.elapsed() > deadline {
            let group = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let Some(status) = status else {
        panic!(
            "{shown} ran past {deadline:?} and was killed\n--- its stdout:\n{}\n--- its stderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

/// A git checkout at `dir` of the example app with `procfile`, and
/// `extra` files beside it.
pub fn example_app(dir: &Path, procfile: &str, extra: &[(&str, &[u8])]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(repo().join("examples/hello/app.py"), dir.join("app.py")).unwrap();
    std::fs::write(dir.join("Procfile"), procfile).unwrap();
    for (name, bytes) in extra {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    git(dir, &["init", "-q"]);
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "app"]);
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

/// The middle of `samples` (the upper one of an even count).
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[test]
#[should_panic(expected = "ran past 200ms and was killed")]
fn a_command_past_its_deadline_is_killed_and_fails_its_test_with_its_output() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo started; sleep 30"]);
    output_within(cmd, Duration::from_millis(200));
}

#[test]
fn a_command_within_its_deadline_gives_its_status_and_output() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
    let out = output_within(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        (&out.stdout[..], &out.stderr[..]),
        (&b"out\n"[..], &b"err\n"[..])
    );
}
