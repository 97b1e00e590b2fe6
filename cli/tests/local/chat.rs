//! A Slack slash command on the local platform, with a stand-in for
//! Slack's response URL and for a chat webhook.

use std::time::{Duration, Instant};

use slipway_local::Platform;

use crate::support::*;

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

pub async fn slash(
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
    let signature = slipway_http::chat::slack::signature(
        platform.slack_secret.as_bytes(),
        &ts,
        body.as_bytes(),
    );
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
    let env = slipway_core::names::EnvRef::parse("hello", "prod").unwrap();
    booted_environment(&platform, &env, 2).await;
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
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}
