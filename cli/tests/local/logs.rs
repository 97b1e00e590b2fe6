//! Logs and metrics on the local platform: the fleet ships each instance's
//! process output to the emulator's CloudWatch Logs and samples its
//! processes into the emulator's CloudWatch metrics; `ship logs`, the API
//! and the formation find them as they would in AWS.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use slipway_core::names::EnvRef;

use crate::support::*;

/// Asks an instance's app for `path`: the app logs one line per request.
async fn request(port: u16, path: &str) {
    let _ = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_are_found_by_grep_and_followed_once_each_and_the_formation_has_instance_and_process_metrics()
 {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;
    let env = EnvRef::parse("hello", "logs").unwrap();
    booted_environment(&platform, &env, 2).await;
    let creds = credentials(&platform);
    let creds: Vec<(&str, &str)> = creds.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let hello = repo().join("examples/hello");
    let ship_here = |args: &[&str]| ship_ok(&platform, &env, args);
    ship_here(&["release", "--allow-dirty"]);
    ship_here(&["deploy"]);

    let instances: Vec<(String, u16)> = platform
        .fleet
        .instances
        .lock()
        .unwrap()
        .iter()
        .map(|(id, i)| (id.to_string(), i.port))
        .collect();
    let (first, port) = instances[0].clone();
    let marker = format!("find-me-{}", uuid::Uuid::new_v4().simple());
    request(port, &format!("/{marker}")).await;

    // Found by --grep, with its instance and process.
    let started = Instant::now();
    let found = loop {
        let out = ship_here(&["logs", "--grep", &marker, "--since", "10m"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !text.is_empty() {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the line reaches the logs"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(found.lines().count(), 1, "{found}");
    assert!(
        found.contains(&first) && found.contains("web.1: ") && found.contains(&marker),
        "{found}"
    );

    // The API filters by instance and process, and refuses a bad query.
    let client = reqwest::Client::new();
    let api = |query: String| {
        client
            .get(format!(
                "{}/apps/hello/envs/logs/logs?{query}",
                platform.url
            ))
            .basic_auth(&platform.user, Some(&platform.password))
            .send()
    };
    let other = &instances[1].0;
    let none: serde_json::Value = api(format!("q={marker}&instance={other}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["events"], serde_json::json!([]), "{none}");
    let worker: serde_json::Value = api(format!("q={marker}&process=worker"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(worker["events"], serde_json::json!([]), "{worker}");
    let bad = api("since=yesterday".into()).await.unwrap();
    assert_eq!(bad.status(), 400);

    // -f prints each new line once, across many polls.
    let follow = format!("follow-{}", uuid::Uuid::new_v4().simple());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ship"))
        .current_dir(&hello)
        .args([
            "-a", "hello", "-e", "logs", "logs", "-f", "--grep", &follow, "--since", "1m",
        ])
        .envs(creds.iter().copied())
        .env("XDG_CONFIG_HOME", hello.join(".no-config"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    for n in 1..=3 {
        request(port, &format!("/{follow}-{n}")).await;
        request(instances[1].1, &format!("/{follow}-{n}")).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let mut seen = Vec::new();
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    for n in 1..=3 {
        let hits = seen
            .iter()
            .filter(|l| l.contains(&format!("/{follow}-{n} ")))
            .count();
        assert_eq!(hits, 2, "each instance's line {n} once: {seen:#?}");
    }
    assert_eq!(seen.len(), 6, "{seen:#?}");

    // The formation carries CPU and memory series for every instance.
    let started = Instant::now();
    loop {
        let env: serde_json::Value = client
            .get(format!("{}/apps/hello/envs/logs", platform.url))
            .basic_auth(&platform.user, Some(&platform.password))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let complete = instances.iter().all(|(id, _)| {
            let series = &env["metrics"][id];
            series["cpu"].as_array().is_some_and(|a| !a.is_empty())
                && series["memory"].as_array().is_some_and(|a| {
                    a.iter()
                        .all(|p| p["v"].as_f64().is_some_and(|v| v > 0.0 && v < 100.0))
                        && !a.is_empty()
                })
                // The web process on its own: the hello app is a small
                // Python server, some megabytes resident.
                && series["processes"]["web.1"]["memory_bytes"]
                    .as_f64()
                    .is_some_and(|b| b > 1_000_000.0)
                && series["processes"]["web.1"]["cpu_percent"]
                    .as_f64()
                    .is_some_and(|v| v >= 0.0)
        });
        if complete {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "metric series for every instance: {}",
            env["metrics"]
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}
