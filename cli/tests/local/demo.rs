//! The demo's story, and `ship dev` as a process.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_story_runs_on_the_local_platform_and_leaves_nothing_behind() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;

    let told = ship::demo::tell(&platform, &repo()).await;
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");

    told.expect("every step of the story went as it says");
    assert_eq!(processes_under(work.path()), Vec::<String>::new());
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
    // The last one replaced may still be draining, listed `Terminating`
    // as AWS lists it.
    let instances: Vec<_> = ps["formation"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["lifecycle"] != "Terminating")
        .collect();
    assert_eq!(instances.len(), 2, "{ps}");
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
