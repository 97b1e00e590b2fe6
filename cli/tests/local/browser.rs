//! The web UI in a real browser: Debian's headless Chromium driven through
//! chromedriver (WebDriver) against the local platform. The test clicks
//! what a person would click and waits for what htmx updates in place, so
//! it proves the pages, the forms, the live updates and the same-origin
//! rule together. Screenshots of every page are kept under
//! `$CARGO_TARGET_TMPDIR/browser-screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use slipway_core::names::EnvRef;
use slipway_local::Platform;

use crate::support::*;

fn program(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} is not installed (set {var}, or run scripts/test, which installs Debian's chromium and chromium-driver)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver in its own process group (so Chromium goes with it), and
/// a WebDriver session on it.
struct Browser {
    client: Client,
    driver: Child,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        use std::os::unix::process::CommandExt;
        let chromium = program("CHROME_BIN", "/usr/bin/chromium");
        let port = free_port();
        let driver = Command::new(program("CHROMEDRIVER", "/usr/bin/chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver listens"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        // This machine's network is closed: without the background
        // networking flags Chromium keeps trying to reach Google.
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1100,1400",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session on Chromium");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Self {
            client,
            driver,
            shots,
            _profile: profile,
        }
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    async fn click(&self, css: &str) {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} is on the page: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Types `text` into the field `css` and presses its form's danger
    /// button.
    async fn submit_typed(&self, css: &str, text: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
        self.click("form button.danger").await;
    }

    async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits (without reloading: htmx refreshes the page) until the text
    /// of `css` satisfies `ok`.
    async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let text = self.text(css).await;
            if ok(&text) {
                return text;
            }
            if started.elapsed() > Duration::from_secs(90) {
                self.shot(&format!("timeout-{what}")).await;
                panic!("waited for {what} in {css}; it says {text:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn instances(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for row in self
            .client
            .find_all(Locator::Css("tr[data-instance]"))
            .await
            .unwrap_or_default()
        {
            if let Ok(Some(id)) = row.attr("data-instance").await {
                ids.push(id);
            }
        }
        ids
    }
}

impl Drop for Browser {
    /// chromedriver and whatever Chromium it left (its process group).
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        let group = self.driver.id() as i32;
        // Never 0 or 1: killpg on those would hit this process's own group
        // or every process.
        if group > 1 {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

/// A page of another origin whose form posts a deploy to the platform, as
/// a malicious site would: the browser holds the platform's credentials.
async fn hostile_site(target: &str) -> String {
    let page = format!(
        r#"<!doctype html><title>Free kittens</title>
<form method="post" action="{target}"><input type="hidden" name="release" value="r1">
<button id="go" type="submit">See kittens</button></form>"#
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { axum::response::Html(page) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // `localhost` is another origin than the platform's `127.0.0.1`.
    format!("http://localhost:{port}/")
}

async fn current_of(platform: &Platform, env: &EnvRef) -> Option<String> {
    platform
        .store
        .current(env)
        .await
        .unwrap()
        .map(|r| r.to_string())
}

async fn deploys_of(platform: &Platform, env: &EnvRef) -> usize {
    slipway_control::rollout::Deploys::new(platform.store.clone())
        .list(env, 100)
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_ui_deploys_rolls_back_and_terminates_in_a_real_browser() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;
    let env = EnvRef::parse("hello", "web").unwrap();
    booted_environment(&platform, &env, 2).await;
    ship_ok(&platform, &env, &["release", "--allow-dirty"]);
    ship_ok(
        &platform,
        &env,
        &["config", "set", "API_TOKEN=tok-7a91-secret"],
    );

    // Without credentials nothing is shown.
    let anonymous = reqwest::get(format!("{}/ui", platform.url)).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));

    let browser = Browser::start().await;
    let authed = platform.url.replacen(
        "http://",
        &format!("http://{}:{}@", platform.user, platform.password),
        1,
    );
    browser.client.goto(&format!("{authed}/ui")).await.unwrap();
    let listed = browser.text("a[href='/ui/apps/hello/envs/web']").await;
    assert_eq!(listed, "hello/web", "the overview lists the environment");
    browser.shot("01-overview").await;

    // Deploy r1 with its button, 50% at a time; the page follows it live.
    browser.click("a[href='/ui/apps/hello/envs/web']").await;
    browser
        .wait_text("h1", "the environment page", |t| t == "hello/web")
        .await;
    let page = browser.client.source().await.unwrap();
    assert!(
        !page.contains("tok-7a91-secret"),
        "config values are masked"
    );
    assert!(page.contains("API_TOKEN"));
    browser.shot("02-environment").await;
    // Readable on a phone: nothing wider than the screen but the tables,
    // which scroll in their own box.
    browser.client.set_window_size(390, 844).await.unwrap();
    let wider = browser
        .client
        .execute(
            "const w = document.documentElement.clientWidth;
             const wider = [...document.querySelectorAll('body *')]
               .filter(e => !e.closest('.table-wrap') && e.getBoundingClientRect().right > w + 1)
               .map(e => e.tagName + '.' + e.className + ' ' + e.textContent.slice(0, 30));
             if (document.documentElement.scrollWidth > w) wider.push('the page scrolls sideways');
             return wider;",
            vec![],
        )
        .await
        .unwrap();
    browser.shot("02-environment-phone").await;
    assert_eq!(
        wider,
        serde_json::json!([]),
        "only tables scroll on a phone"
    );
    browser.client.set_window_size(1100, 1400).await.unwrap();
    browser
        .client
        .find(Locator::Css("#strategy-r1"))
        .await
        .unwrap()
        .select_by_value("50%")
        .await
        .unwrap();
    browser.click("#deploy-r1").await;
    browser
        .wait_text("#deploy-status", "r1 deployed", |t| t.contains("succeeded"))
        .await;
    let facts = browser.text("dl.facts").await;
    assert!(
        facts.contains("none → r1") && facts.contains("50%"),
        "{facts}"
    );
    browser.shot("03-deploy-r1").await;

    // r2, then roll back to r1.
    browser.click("a[href='/ui/apps/hello/envs/web']").await;
    browser.click("#deploy-r2").await;
    browser
        .wait_text("#deploy-status", "r2 deployed", |t| t.contains("succeeded"))
        .await;
    browser.shot("04-deploy-r2").await;
    browser.click("a[href='/ui/apps/hello/envs/web']").await;
    browser.click("#rollback").await;
    browser
        .wait_text("#deploy-status", "the rollback", |t| {
            t.contains("succeeded")
        })
        .await;
    assert!(browser.text("dl.facts").await.contains("r2 → r1"));
    browser.shot("05-rollback").await;
    assert_eq!(current_of(&platform, &env).await, Some("r1".into()));

    // A release whose health check fails: the page shows the agent's
    // output for the failed batch, and the deploy ends rolled back.
    ship_ok(
        &platform,
        &env,
        &["settings", "set", "health_timeout_secs=5"],
    );
    ship_ok(&platform, &env, &["config", "set", "BREAK=health"]);
    browser.click("a[href='/ui/apps/hello/envs/web']").await;
    browser.click("#deploy-r3").await;
    browser
        .wait_text("#deploy-status", "the failed deploy", |t| {
            t.contains("rolled back") || t.contains("failed")
        })
        .await;
    let output = browser.text("details pre").await;
    assert!(
        !output.trim().is_empty(),
        "the failed batch's output is shown"
    );
    assert!(browser.text("#live").await.contains("failed (exit"));
    browser.shot("05b-deploy-failed").await;
    assert_eq!(
        current_of(&platform, &env).await,
        Some("r1".into()),
        "a failed deploy leaves the previous release current"
    );

    // Terminate an instance; the page shows its replacement arrive.
    browser.click("a[href='/ui/apps/hello/envs/web']").await;
    browser
        .wait_text("#current", "the current release", |t| t == "r1")
        .await;
    let before = browser.instances().await;
    assert_eq!(before.len(), 2, "{before:?}");
    browser.click(&format!("#terminate-{}", before[0])).await;
    browser
        .wait_text("h1", "the confirmation", |t| t.starts_with("Terminate i-"))
        .await;
    browser.shot("06-confirm-terminate").await;
    browser.click("form button.danger").await;
    let notice = browser
        .wait_text("p.notice", "the notice", |t| t.contains("Terminating"))
        .await;
    assert!(notice.contains(&before[0]), "{notice}");
    let started = Instant::now();
    let after = loop {
        let now = browser.instances().await;
        if now.len() == 2 && !now.contains(&before[0]) {
            break now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "a replacement appears: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(after.contains(&before[1]));
    let replacement = after.iter().find(|i| **i != before[1]).unwrap();
    browser
        .wait_text(
            &format!("tr[data-instance='{replacement}']"),
            "the replacement serving r1",
            |t| t.contains("r1"),
        )
        .await;
    browser
        .wait_text("#live", "the replacement serving r1", |t| {
            t.contains("2 of 2 instances healthy")
        })
        .await;
    browser.shot("07-replacement").await;

    // Another site's form cannot deploy, though the browser is logged in.
    let deploys = deploys_of(&platform, &env).await;
    let target = format!("{}/ui/apps/hello/envs/web/deploys", platform.url);
    browser
        .client
        .goto(&hostile_site(&target).await)
        .await
        .unwrap();
    browser.click("#go").await;
    let refused = browser
        .wait_text("body", "the answer", |t| {
            !t.trim().is_empty() && !t.contains("See kittens")
        })
        .await;
    assert!(
        refused.contains("cross-site requests may not change anything"),
        "{refused}"
    );
    browser.shot("08-cross-site-refused").await;
    assert_eq!(
        deploys_of(&platform, &env).await,
        deploys,
        "no deploy started"
    );

    // Hostile form input, sent from this origin with the credentials, gets
    // a clear refusal and changes nothing.
    let client = reqwest::Client::new();
    let form = |path: &str, body: &'static str| {
        client
            .post(format!("{}{path}", platform.url))
            .basic_auth(&platform.user, Some(&platform.password))
            .header("origin", &platform.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    for (path, body, status, says) in [
        (
            "/ui/apps/hello/envs/web/deploys",
            "release=..%2Fr1",
            400,
            "release",
        ),
        (
            "/ui/apps/hello/envs/web/deploys",
            "release=r1&strategy=999%25",
            400,
            "strategy",
        ),
        (
            "/ui/apps/hello/envs/web/deploys",
            "release=r1&force=yes",
            400,
            "form",
        ),
        ("/ui/apps/hello/envs/web/deploys", "release=r99", 404, "r99"),
        (
            "/ui/apps/Hello%21/envs/web/deploys",
            "release=r1",
            400,
            "name",
        ),
        (
            "/ui/apps/hello/envs/web/instances/i-..%2Fetc/terminate",
            "",
            400,
            "instance",
        ),
        (
            "/ui/apps/hello/envs/web/instances/i-0123456789abcdef0/terminate",
            "",
            404,
            "i-0123456789abcdef0",
        ),
    ] {
        let response = form(path, body).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path} {body}");
        let page = response.text().await.unwrap();
        assert!(
            page.contains("That did not work") && page.contains(says),
            "{path} {body}: {page}"
        );
    }
    let unproven = client
        .post(format!("{}/ui/apps/hello/envs/web/rollback", platform.url))
        .basic_auth(&platform.user, Some(&platform.password))
        .send()
        .await
        .unwrap();
    assert_eq!(unproven.status(), 403, "a form without Origin or Referer");
    assert_eq!(
        deploys_of(&platform, &env).await,
        deploys,
        "no deploy started"
    );

    // Terminating the environment takes its name.
    browser
        .client
        .goto(&format!("{authed}/ui/apps/hello/envs/web/terminate"))
        .await
        .unwrap();
    browser.submit_typed("#confirm", "hello-wrong").await;
    browser
        .wait_text("p.notice", "the refusal", |t| {
            t.contains("nothing was terminated")
        })
        .await;
    browser.shot("09-terminate-wrong-name").await;
    browser.submit_typed("#confirm", "hello-web").await;
    browser
        .wait_text("p.notice", "the termination", |t| {
            t.contains("is being terminated")
        })
        .await;
    browser.shot("10-environment-terminated").await;

    browser.client.clone().close().await.unwrap();
    drop(browser);
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}
