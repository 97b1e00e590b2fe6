//! `ship` and the local platform end to end: the demo's story as a test,
//! the command line's errors, and `ship dev` stopping everything it started.
//! These need `slipway-agent` built beside the test binary (`cargo test
//! --workspace` builds it) and the emulator installed (`scripts/test`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ship::dev::{Platform, PlatformOptions, agent_binary};

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn agent() -> PathBuf {
    let agent = agent_binary();
    assert!(
        agent.is_file(),
        "slipway-agent is not built beside the tests ({}): run `cargo build -p slipway-agent` or scripts/test",
        agent.display()
    );
    agent
}

async fn platform(work: &Path) -> Platform {
    Platform::start(PlatformOptions {
        repo: repo(),
        work: work.to_path_buf(),
        agent: agent(),
        port: 0,
        fleet_every: Duration::from_millis(200),
        slack_users: vec!["U2CERLKJA".into()],
    })
    .await
    .expect("the local platform starts")
}

/// Processes whose working directory is under `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if cwd.starts_with(dir) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_story_runs_on_the_local_platform_and_leaves_nothing_behind() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;

    let told = ship::demo::tell(&platform, &repo()).await;
    platform.stop().await;

    told.expect("every step of the story went as it says");
    assert_eq!(processes_under(work.path()), Vec::<String>::new());
}

fn ship(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
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

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn git(dir: &Path, args: &[&str]) {
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

#[tokio::test(flavor = "multi_thread")]
async fn the_command_line_says_what_to_do_next_when_something_is_wrong() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(&work.path().join("fleet")).await;
    let app = work.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("Procfile"), "web: python3 -m http.server $PORT\n").unwrap();
    std::fs::write(app.join(".slipway.toml"), "app = \"cli\"\nenv = \"prod\"\n").unwrap();
    git(&app, &["init", "-q"]);
    git(&app, &["add", "."]);
    git(&app, &["commit", "-q", "-m", "first"]);
    let url = platform.url.clone();
    let good = [
        ("SLIPWAY_URL", url.as_str()),
        ("SLIPWAY_USER", "dev"),
        ("SLIPWAY_PASSWORD", platform.password.as_str()),
    ];

    let out = ship(
        &app,
        &["releases"],
        &[good[0], good[1], ("SLIPWAY_PASSWORD", "wrong")],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refused the credentials of dev"),
        "{}",
        stderr(&out)
    );

    let out = ship(
        &app,
        &["releases"],
        &[("SLIPWAY_URL", "http://127.0.0.1:9"), good[1], good[2]],
    );
    assert!(
        stderr(&out).contains("is `ship dev` running?"),
        "{}",
        stderr(&out)
    );

    let elsewhere = work.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = ship(&elsewhere, &["releases"], &good);
    assert!(stderr(&out).contains("which app?"), "{}", stderr(&out));

    let out = ship(&app, &["deploy"], &good);
    assert!(
        stderr(&out).contains("make one with `ship release`"),
        "{}",
        stderr(&out)
    );

    std::fs::write(app.join("Procfile"), "web: changed\n").unwrap();
    let out = ship(&app, &["release"], &good);
    assert!(
        stderr(&out).contains("uncommitted changes"),
        "{}",
        stderr(&out)
    );
    let out = ship(&app, &["release", "--allow-dirty", "--tag"], &good);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "r1");
    let tags = Command::new("git")
        .current_dir(&app)
        .args(["tag"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&tags.stdout).trim(), "r1");

    let env = slipway::names::EnvRef::parse("cli", "prod").unwrap();
    let now = chrono::Utc::now();
    slipway::rollout::lock::acquire(
        platform.store.objects(),
        &env,
        slipway::rollout::lock::Lock::new("d1-held", "bob", now),
        now,
    )
    .await
    .unwrap();
    let out = ship(&app, &["deploy"], &good);
    let said = stderr(&out);
    assert!(
        said.contains("deploy d1-held by bob holds the environment")
            && said.contains("ship cancel"),
        "{said}"
    );

    let out = ship(&app, &["--json", "releases"], &good);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["releases"][0]["id"], "r1");

    // Config: a new release; masked unless revealed.
    let out = ship(&app, &["config", "set", "TOKEN=s3cr3t", "MODE=fast"], &good);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("release r2") && !said.contains("s3cr3t"),
        "{said}"
    );
    let out = ship(&app, &["config"], &good);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cr3t"));
    let out = ship(&app, &["config", "--reveal"], &good);
    assert!(String::from_utf8_lossy(&out.stdout).contains("s3cr3t"));
    let out = ship(&app, &["config", "unset", "MODE"], &good);
    assert!(String::from_utf8_lossy(&out.stdout).contains("release r3"));

    // Settings take JSON values where they parse, strings otherwise.
    let out = ship(
        &app,
        &["settings", "set", "strategy=25%", "health_timeout_secs=30"],
        &good,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ship(&app, &["--json", "settings"], &good);
    let settings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            settings["strategy"].as_str(),
            settings["health_timeout_secs"].as_u64()
        ),
        (Some("25%"), Some(30))
    );
    let out = ship(&app, &["settings", "set", "port=0"], &good);
    assert!(stderr(&out).contains("port"), "{}", stderr(&out));

    // Promote a release to another environment of the app.
    let out = ship(&app, &["promote", "--to", "staging", "r1"], &good);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ship(&app, &["-e", "staging", "--json", "releases"], &good);
    let staged: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(staged["releases"][0]["origin"]["kind"], "promote");
    platform.stop().await;
}

#[test]
fn ship_dev_runs_a_cycle_of_every_instance_and_stops_everything_on_ctrl_c() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let mut dev = Command::new(env!("CARGO_BIN_EXE_ship"))
        .current_dir(dir)
        .arg("dev")
        .env("SLIPWAY_AGENT_BIN", agent())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state_file = dir.join(".slipway/dev.json");
    let started = Instant::now();
    while !state_file.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "ship dev did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let out = ship(
        dir,
        &["dev", "env", "create", "hello", "prod", "--instances", "2"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let hello = repo().join("examples/hello");
    let url = state["url"].as_str().unwrap();
    let env = [
        ("SLIPWAY_URL", url),
        ("SLIPWAY_USER", "dev"),
        ("SLIPWAY_PASSWORD", state["password"].as_str().unwrap()),
    ];
    let out = ship(
        &hello,
        &["-a", "hello", "-e", "prod", "release", "--allow-dirty"],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ship(&hello, &["-a", "hello", "-e", "prod", "deploy"], &env);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let apps = processes_under(dir)
        .into_iter()
        .filter(|p| p.contains("app.py"))
        .count();
    assert_eq!(apps, 4, "two instances, each sh and python");

    let out = ship(
        &hello,
        &["-a", "hello", "-e", "prod", "cycle", "--all"],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.matches(" replaced by i-").count(), 2, "{said}");
    let out = ship(&hello, &["-a", "hello", "-e", "prod", "--json", "ps"], &env);
    let ps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let instances = ps["formation"]["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    assert!(instances.iter().all(|i| i["release"] == "r1"), "{ps}");

    nix_kill(dev.id(), "INT");
    let status = dev.wait().unwrap();

    assert!(status.success());
    assert_eq!(processes_under(dir), Vec::<String>::new());
    assert!(!state_file.exists(), "the state file is removed");
    let endpoint = state["aws_endpoint"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://");
    assert!(
        std::net::TcpStream::connect(endpoint).is_err(),
        "the emulator is stopped"
    );
}

fn nix_kill(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn environments_are_created_and_destroyed_with_the_users_credentials() {
    let emulator = ship::dev::emulator::Emulator::start(&repo()).await.unwrap();
    let config = emulator.sdk_config().await;
    let work = tempfile::tempdir().unwrap();
    let aws = ship::dev::emulator::aws_env(&emulator.endpoint);
    let env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = |args: &[&str]| ship(work.path(), args, &env);
    let group = || async {
        slipway::aws::autoscaling_client(&config)
            .describe_auto_scaling_groups()
            .auto_scaling_group_names("hello-qa")
            .send()
            .await
            .unwrap()
            .auto_scaling_groups()
            .first()
            .map(|g| {
                (
                    g.desired_capacity().unwrap_or(-1),
                    g.max_size().unwrap_or(-1),
                )
            })
    };

    let out = run(&[
        "env",
        "create",
        "hello",
        "qa",
        "--bucket",
        "b",
        "--desired",
        "2",
        "--max",
        "4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello-qa: CREATE_COMPLETE"));
    assert_eq!(group().await, Some((2, 4)));

    let again = run(&["env", "create", "hello", "qa", "--bucket", "b"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    // (Updating is tested against the parameters it sends: the emulator's
    // UpdateStack cannot keep a value that was defaulted at creation.)
    let out = run(&["env", "update", "hello", "qa"]);
    assert!(
        stderr(&out).contains("nothing to change"),
        "{}",
        stderr(&out)
    );

    let out = run(&["env", "destroy", "hello", "qa"]);
    assert!(
        stderr(&out).contains("--confirm hello-qa"),
        "{}",
        stderr(&out)
    );
    assert!(group().await.is_some(), "nothing was deleted");
    let out = run(&["env", "destroy", "hello", "qa", "--confirm", "hello-qa"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(group().await, None);
    emulator.stop().await;
}

#[test]
fn a_users_file_line_is_made_from_a_password_on_stdin_and_authenticates() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ship"))
        .args(["user", "alice"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery staple\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("alice:$argon2"), "{line}");
    assert!(!line.contains("horse"));

    let users = slipway::auth::Users::parse(&line).unwrap();
    let header = slipway::auth::basic_header("alice", "correct horse battery staple");
    assert_eq!(users.authenticate(Some(&header)).as_deref(), Some("alice"));
    let wrong = slipway::auth::basic_header("alice", "wrong");
    assert_eq!(users.authenticate(Some(&wrong)), None);
}

/// A stand-in for Slack's response URL and a chat webhook: keeps what is
/// posted to it.
async fn stand_in() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    use axum::extract::{Path, State};
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;
    let seen: Seen = Default::default();
    let app = axum::Router::new()
        .route(
            "/{what}",
            axum::routing::post(
                |State(seen): State<Seen>, Path(what): Path<String>, body: String| async move {
                    let text = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["text"].as_str().map(str::to_owned))
                        .unwrap_or(body);
                    seen.lock().unwrap().push((what, text));
                    "ok"
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

async fn slash(
    platform: &Platform,
    user: &str,
    text: &str,
    response_url: &str,
    age: i64,
) -> (u16, serde_json::Value) {
    let body = format!(
        "token=x&team_id=T1&user_id={user}&user_name=someone&command=%2Fship&text={}&response_url={}",
        text.replace(' ', "+"),
        response_url.replace(':', "%3A").replace('/', "%2F")
    );
    let ts = (chrono::Utc::now().timestamp() - age).to_string();
    let signature =
        slipway::chat::slack::signature(platform.slack_secret.as_bytes(), &ts, body.as_bytes());
    let response = reqwest::Client::new()
        .post(format!("{}/chat/slack", platform.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", &ts)
        .header("x-slack-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slash_command_deploys_and_its_progress_reaches_slack_and_the_webhook() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;
    let env = slipway::names::EnvRef::parse("hello", "prod").unwrap();
    ship::dev::env::create_stack(
        &platform.config,
        ship::commands::envs::TEMPLATE,
        &env,
        &platform.bucket,
        2,
    )
    .await
    .unwrap();
    let booted = Instant::now();
    while platform.fleet.instances.lock().unwrap().len() < 2 {
        assert!(
            booted.elapsed() < Duration::from_secs(30),
            "the local fleet boots"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (hooks, seen) = stand_in().await;
    let good = [
        ("SLIPWAY_URL", platform.url.as_str()),
        ("SLIPWAY_USER", "dev"),
        ("SLIPWAY_PASSWORD", platform.password.as_str()),
    ];
    let hello = repo().join("examples/hello");
    let out = ship(
        &hello,
        &["-a", "hello", "-e", "prod", "release", "--allow-dirty"],
        &good,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let webhook = format!("notify_url={hooks}/webhook");
    let out = ship(
        &hello,
        &["-a", "hello", "-e", "prod", "settings", "set", &webhook],
        &good,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let response_url = format!("{hooks}/response");

    // Not signed right, or too old: refused before anything else.
    let (status, _) = slash(
        &platform,
        "U2CERLKJA",
        "deploy hello prod",
        &response_url,
        600,
    )
    .await;
    assert_eq!(status, 401);
    // Someone not on the list may look, not change.
    let (_, answer) = slash(
        &platform,
        "U0STRANGER",
        "deploy hello prod",
        &response_url,
        0,
    )
    .await;
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains("may not change environments"),
        "{answer}"
    );

    let (status, answer) = slash(
        &platform,
        "U2CERLKJA",
        "deploy hello prod",
        &response_url,
        0,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["response_type"], "ephemeral");
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .starts_with("Deploying r1 to hello/prod"),
        "{answer}"
    );

    let started = Instant::now();
    loop {
        let done = seen
            .lock()
            .unwrap()
            .iter()
            .any(|(what, text)| what == "response" && text.contains("succeeded: nothing → r1"));
        if done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|(w, t)| w == "response" && t.starts_with("batch 1")),
        "{seen:?}"
    );
    let webhook: Vec<&String> = seen
        .iter()
        .filter(|(w, _)| w == "webhook")
        .map(|(_, t)| t)
        .collect();
    assert_eq!(webhook.len(), 2, "started and succeeded: {webhook:?}");
    assert!(webhook[0].contains("started") && webhook[0].contains("by slack:U2CERLKJA"));

    let (_, answer) = slash(
        &platform,
        "U0STRANGER",
        "status hello prod",
        &response_url,
        0,
    )
    .await;
    let text = answer["text"].as_str().unwrap();
    assert!(
        text.contains("current release r1") && text.contains("2/2 instances healthy"),
        "{text}"
    );
    let (_, answer) = slash(
        &platform,
        "U0STRANGER",
        "launch hello prod",
        &response_url,
        0,
    )
    .await;
    assert!(
        answer["text"].as_str().unwrap().contains("Usage: /ship"),
        "{answer}"
    );
    platform.stop().await;
}
