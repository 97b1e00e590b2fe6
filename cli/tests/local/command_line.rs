//! The command line's answers: errors that say what to do next, config,
//! settings, promote, users.

use std::process::Command;

use crate::support::*;

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

    let env = slipway_core::names::EnvRef::parse("cli", "prod").unwrap();
    let now = chrono::Utc::now();
    slipway_control::jobs::lock::acquire(
        platform.store.objects(),
        &env,
        slipway_control::jobs::lock::Lock::new(
            slipway_core::ids::JobId::parse("d1-held").unwrap(),
            "bob",
            now,
        ),
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
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
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

    let users = slipway_http::auth::Users::parse(&line).unwrap();
    let header = slipway_http::auth::basic_header("alice", "correct horse battery staple");
    assert_eq!(users.authenticate(Some(&header)).as_deref(), Some("alice"));
    let wrong = slipway_http::auth::basic_header("alice", "wrong");
    assert_eq!(users.authenticate(Some(&wrong)), None);
}

#[test]
fn open_prints_the_environments_page_in_the_web_ui_or_the_overview() {
    let dir = tempfile::tempdir().unwrap();
    let target = [
        ("SLIPWAY_URL", "http://127.0.0.1:9/"),
        ("SLIPWAY_USER", "alice"),
        ("SLIPWAY_PASSWORD", "not-used-here"),
    ];
    let out = ship(dir.path(), &["-a", "hello", "-e", "web", "open"], &target);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "http://127.0.0.1:9/ui/apps/hello/envs/web\n"
    );
    let out = ship(dir.path(), &["open"], &target);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "http://127.0.0.1:9/ui\n"
    );
}
