//! `ship demo`: the local platform and this story, told with `ship`'s own
//! commands, each step printed and timed:
//! 1. create `hello/production` with 3 instances; release `examples/hello`
//!    as r1; deploy it one at a time; show the formation;
//! 2. change a config var (a new release, r2) and deploy it 50% at a time;
//! 3. release a broken r3 (its health check fails); the deploy fails, is
//!    rolled back to r2, and every instance is fetched to prove it serves r2;
//! 4. cycle an instance: the group replaces it and the replacement boots r2;
//! 5. a summary.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use slipway_control::rollout::DeployRecord;
use slipway_core::deploys::DeployStatus;
use slipway_core::env_settings::EnvSettings;
use slipway_core::names::EnvRef;
use slipway_core::names::InstanceId;
use slipway_core::strategy::Strategy;
use slipway_http::wire::{ConfigChanged, ConfigPatch, CycleAnswer, Environment, StartRequest};

use crate::client::Client;
use crate::commands::{Ctx, ReleaseOptions, print_formation, release, start_deploy};
use crate::context::Target;
use crate::output::{opt, seconds, table, word};
use slipway_local::{Platform, PlatformOptions};

struct Story {
    rows: Vec<Vec<String>>,
}

impl Story {
    fn title(&self, n: usize, text: &str) {
        println!("\n== {n}. {text}");
    }

    fn done(&mut self, what: &str, started: Instant, result: &str) {
        self.rows.push(vec![
            what.to_owned(),
            seconds(started.elapsed()),
            result.to_owned(),
        ]);
    }
}

/// Runs the demo on a fresh local platform; stops it whatever happens.
pub async fn run() -> anyhow::Result<bool> {
    let cwd = std::env::current_dir()?;
    let options = PlatformOptions::for_cwd(&cwd, None);
    let repo = options.repo.clone();
    println!("starting the local platform (AWS emulator, control plane, local fleet)…");
    let platform = Platform::start(options).await?;
    let state_file = crate::dev::state(&platform).write(&cwd)?;
    println!(
        "control plane at {} (user {}, password in {})",
        platform.url,
        platform.user,
        state_file.display()
    );
    let result = tell(&platform, &repo).await;
    let checked = platform.stop().await;
    let _ = std::fs::remove_file(&state_file);
    result?;
    checked?;
    Ok(true)
}

/// The local instances of `env` and their ports.
fn instances(platform: &Platform, env: &EnvRef) -> Vec<(InstanceId, u16)> {
    platform
        .fleet
        .instances
        .lock()
        .map(|m| {
            m.iter()
                .filter(|(_, i)| &i.env == env)
                .map(|(id, i)| (id.clone(), i.port))
                .collect()
        })
        .unwrap_or_default()
}

async fn fetch(port: u16) -> anyhow::Result<String> {
    let body = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await?
        .text()
        .await?;
    Ok(body.trim().to_owned())
}

/// Tells the story on a running platform; fails at the first step that
/// does not go as the story says.
pub async fn tell(platform: &Platform, repo: &std::path::Path) -> anyhow::Result<()> {
    let env = EnvRef::parse("hello", "production")?;
    let ctx = Ctx {
        client: Client::new(Target {
            url: platform.url.clone(),
            user: platform.user.clone(),
            password: platform.password.clone(),
        }),
        env: env.clone(),
        json: false,
    };
    let mut story = Story { rows: Vec::new() };

    story.title(
        1,
        "create hello/production (3 instances over 2 AZs), release r1, deploy one at a time",
    );
    let t = Instant::now();
    let template = std::fs::read_to_string(repo.join("infra/environment.yaml"))
        .context("reading infra/environment.yaml")?;
    crate::dev::env::create_stack(&platform.config, &template, &env, &platform.bucket, 3).await?;
    wait_until(Duration::from_secs(30), "3 local instances", || async {
        instances(platform, &env).len() == 3
    })
    .await?;
    println!("$ ship dev env create hello production --instances 3");
    story.done("create the environment", t, "3 instances");
    // The broken release of step 3 should fail in seconds, not a minute.
    let _: EnvSettings = ctx
        .client
        .patch(&ctx.path("/settings"), &json!({"health_timeout_secs": 10}))
        .await?;
    println!("$ ship settings set health_timeout_secs=10");
    let t = Instant::now();
    println!("$ ship release examples/hello -m \"the hello app\"");
    let r1 = release(
        &ctx,
        &ReleaseOptions {
            dir: repo.join("examples/hello"),
            message: Some("the hello app".into()),
            git_ref: "HEAD".into(),
            allow_dirty: true,
            tag: false,
            progress: true,
        },
    )
    .await?;
    println!("{r1}");
    story.done("release examples/hello", t, &r1);
    let t = Instant::now();
    println!("$ ship deploy --strategy one-at-a-time");
    deploy(&ctx, Some(Strategy::OneAtATime), true).await?;
    story.done("deploy r1 one at a time", t, "succeeded");
    println!("$ ship ps");
    print_formation(&ctx.client.get::<Environment>(&ctx.path("")).await?);

    story.title(
        2,
        "change config (a new release, r2) and deploy it 50% at a time",
    );
    let t = Instant::now();
    println!("$ ship config set GREETING=Howdy");
    let r2 = change_config(&ctx, "GREETING", "Howdy").await?;
    println!("config changed: release {r2}");
    println!("$ ship deploy --strategy 50%");
    deploy(&ctx, Some(Strategy::Percent(50)), true).await?;
    story.done("config change, deploy 50%", t, &format!("{r2} succeeded"));

    story.title(
        3,
        "release a broken r3 (its health check fails) and deploy it",
    );
    let t = Instant::now();
    println!("$ ship config set BREAK=health");
    let r3 = change_config(&ctx, "BREAK", "health").await?;
    println!("config changed: release {r3}");
    println!("$ ship deploy");
    let record = deploy(&ctx, None, false).await?;
    if record.status != DeployStatus::RolledBack {
        bail!(
            "the broken deploy was not rolled back: {}",
            serde_json::to_string(&record)?
        );
    }
    println!(
        "ship deploy exits non-zero: rolled back to {r2} ({})",
        record.cause.as_deref().unwrap_or("no cause")
    );
    for (id, port) in instances(platform, &env) {
        let body = fetch(port).await?;
        println!("  {id} (port {port}): {body}");
        if !body.contains(&format!("release {r2}")) {
            bail!("{id} does not serve {r2} after the rollback: {body}");
        }
    }
    story.done(
        "broken deploy, auto-rollback",
        t,
        &format!("rolled back to {r2}"),
    );

    story.title(
        4,
        "cycle an instance: the group replaces it, the replacement boots r2",
    );
    let t = Instant::now();
    let (victim, _) = instances(platform, &env)
        .into_iter()
        .next()
        .context("no instance to cycle")?;
    println!("$ ship cycle {victim}");
    let _: CycleAnswer = ctx
        .client
        .post_empty(&ctx.path(&format!("/instances/{victim}/cycle")))
        .await?;
    let mut replacement = None;
    wait_until(
        Duration::from_secs(120),
        "a replacement serving r2",
        || async {
            let now = instances(platform, &env);
            for (id, port) in &now {
                if *id != victim
                    && fetch(*port)
                        .await
                        .is_ok_and(|b| b.contains(&format!("release {r2}")))
                    && now.len() == 3
                    && !now.iter().any(|(i, _)| *i == victim)
                {
                    let env: Option<Environment> = ctx.client.get(&ctx.path("")).await.ok();
                    let tagged = env.and_then(|e| e.formation).is_some_and(|f| {
                        f.instances
                            .iter()
                            .filter(|i| i.release.as_deref() == Some(r2.as_str()))
                            .count()
                            == 3
                    });
                    if tagged {
                        return true;
                    }
                }
            }
            false
        },
    )
    .await?;
    for (id, port) in instances(platform, &env) {
        let body = fetch(port).await?;
        println!("  {id} (port {port}): {body}");
        replacement.get_or_insert(id);
    }
    story.done("cycle one instance", t, "replaced, serves r2");

    story.title(5, "summary");
    println!("{}", table(&["STEP", "TOOK", "RESULT"], &story.rows));
    println!();
    print_formation(&ctx.client.get::<Environment>(&ctx.path("")).await?);
    Ok(())
}

/// `ship config set KEY=VALUE`; the release it made.
async fn change_config(ctx: &Ctx, key: &str, value: &str) -> anyhow::Result<String> {
    let patch = ConfigPatch {
        set: [(key.to_owned(), value.to_owned())].into(),
        ..ConfigPatch::default()
    };
    let changed: ConfigChanged = ctx.client.patch(&ctx.path("/config"), &patch).await?;
    let release = changed
        .release
        .context("the config change made no release")?
        .id
        .to_string();
    Ok(release)
}

/// Deploys and follows; fails unless the outcome is what the story wants.
async fn deploy(
    ctx: &Ctx,
    strategy: Option<Strategy>,
    must_succeed: bool,
) -> anyhow::Result<DeployRecord> {
    let request = StartRequest {
        strategy,
        ..StartRequest::default()
    };
    let started = start_deploy(ctx, "/deploys", &request).await?;
    let record = &started.deploy;
    println!(
        "deploy {}: {} → {}, {}",
        record.id,
        opt(record.from),
        record.to,
        record.strategy
    );
    let done = crate::commands::follow(ctx, &started.url, true).await?;
    let succeeded = done.status == DeployStatus::Succeeded;
    if succeeded != must_succeed {
        bail!(
            "the deploy {} when the demo expected it to {}",
            word(&done.status),
            if must_succeed { "succeed" } else { "fail" }
        );
    }
    Ok(done)
}

async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        if started.elapsed() > limit {
            bail!("waited {}s for {what}", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}
