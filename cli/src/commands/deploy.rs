//! `ship deploy`, `ship rollback`, `ship cancel`, `ship deploys`: start a
//! deploy and follow it batch by batch, instance by instance, with the
//! agent's last lines when something fails. The exit status is 0 only
//! when the deploy succeeded.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use reqwest::Method;
use serde::Serialize;
use slipway_control::rollout::{Batch, BatchStatus, DeployRecord};
use slipway_control::runner::Invocation;
use slipway_core::deploys::DeployStatus;
use slipway_http::wire::{DeployAccepted, DeployCancelled, DeployList};

use super::Ctx;
use crate::output::{age, opt, seconds, table, word};

/// Starts a deploy (or rollback) with `body` (a `StartRequest` or a
/// `RollbackRequest`).
pub async fn start_deploy(
    ctx: &Ctx,
    route: &str,
    body: &impl Serialize,
) -> anyhow::Result<DeployAccepted> {
    let key = uuid::Uuid::new_v4().to_string();
    Ok(ctx
        .client
        .send(
            Method::POST,
            &ctx.path(route),
            Some(body),
            &[("Idempotency-Key", &key)],
        )
        .await?)
}

pub async fn start_and_follow(
    ctx: &Ctx,
    route: &str,
    body: &impl Serialize,
    follow_it: bool,
) -> anyhow::Result<bool> {
    let started = start_deploy(ctx, route, body).await?;
    let record = &started.deploy;
    if let Some(position) = record.queue_position.filter(|_| record.waiting)
        && !ctx.json
    {
        println!(
            "deploy {} waits its turn: number {position} in the environment's queue",
            record.id
        );
    }
    if !follow_it {
        if !ctx.json(&started) {
            println!(
                "deploy {} queued: {} → {}",
                record.id,
                opt(record.from),
                record.to
            );
        }
        return Ok(true);
    }
    if !ctx.json {
        println!(
            "deploy {}: {} → {}, {}{}",
            record.id,
            opt(record.from),
            record.to,
            record.strategy,
            if record.auto_rollback {
                ""
            } else {
                ", no rollback"
            }
        );
    }
    let done = follow(ctx, &started.url, !ctx.json).await?;
    ctx.json(&done);
    Ok(done.status == DeployStatus::Succeeded)
}

/// What has been printed of a record already.
#[derive(Default)]
struct Seen {
    lines: BTreeSet<String>,
}

impl Seen {
    fn say(&mut self, line: String) {
        if self.lines.insert(line.clone()) {
            println!("{line}");
        }
    }
}

fn invocation_lines<'a>(
    seen: &mut Seen,
    prefix: &str,
    results: impl IntoIterator<Item = &'a Invocation>,
) {
    for r in results {
        seen.say(format!(
            "{prefix}  {}  {}  exit {}  {}",
            r.instance,
            word(&r.status),
            opt(r.exit_code),
            seconds(Duration::from_millis(r.duration_ms))
        ));
        if !r.succeeded() {
            for line in r.output_tail.lines() {
                seen.say(format!("{prefix}    | {} {line}", r.instance));
            }
        }
    }
}

fn batch_lines(seen: &mut Seen, name: &str, batch: &Batch) {
    let instances: Vec<String> = batch.instances.iter().map(|i| i.to_string()).collect();
    seen.say(format!("{name}: {}", instances.join(", ")));
    invocation_lines(seen, &format!("  {name}"), &batch.results);
    for u in &batch.unhealthy {
        seen.say(format!("  {name}  {u} not healthy in time"));
    }
    if batch.status != BatchStatus::Running {
        seen.say(format!("{name} {}", word(&batch.status)));
    }
}

/// Follows a deploy until it finishes; prints its progress when `print`.
/// How many 5xx answers in a row following a deploy rides over.
const FOLLOW_RETRIES: u64 = 5;

pub async fn follow(ctx: &Ctx, url: &str, print: bool) -> anyhow::Result<DeployRecord> {
    let started = Instant::now();
    let mut seen = Seen::default();
    // A poll answered 5xx (API Gateway or Lambda throttling, a cold start
    // that failed) is tried again: the deploy goes on regardless.
    let mut errors = 0;
    loop {
        let record: DeployRecord = match ctx.client.get(url).await {
            Ok(record) => record,
            Err(e) if e.status().is_some_and(|s| s >= 500) && errors < FOLLOW_RETRIES => {
                errors += 1;
                tokio::time::sleep(Duration::from_secs(errors)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        errors = 0;
        if print {
            invocation_lines(&mut seen, "release phase", &record.release_phase);
            for batch in &record.batches {
                batch_lines(&mut seen, &format!("batch {}", batch.number), batch);
            }
            if let Some(rollback) = &record.rollback {
                batch_lines(&mut seen, "rollback", rollback);
            }
            for note in &record.notes {
                seen.say(format!("note: {note}"));
            }
        }
        if record.finished_at.is_some() {
            if print {
                let mut line = format!(
                    "deploy {} {} in {}: {} → {}",
                    record.id,
                    word(&record.status),
                    seconds(started.elapsed()),
                    opt(record.from),
                    record.to
                );
                if let Some(cause) = &record.cause {
                    line.push_str(&format!(" ({cause})"));
                }
                println!("{line}");
            }
            return Ok(record);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn cancel(ctx: &Ctx) -> anyhow::Result<bool> {
    let list: DeployList = ctx.client.get(&ctx.path("/deploys?limit=5")).await?;
    let running = list
        .deploys
        .iter()
        .find(|d| d.finished_at.is_none())
        .ok_or_else(|| anyhow!("no deploy is running in {}", ctx.env))?;
    let id = &running.id;
    let answer: DeployCancelled = ctx
        .client
        .post_empty(&ctx.path(&format!("/deploys/{id}/cancel")))
        .await?;
    if !ctx.json(&answer) {
        println!("deploy {id}: {}", answer.note);
    }
    Ok(true)
}

pub async fn list(ctx: &Ctx, limit: usize) -> anyhow::Result<bool> {
    let list: DeployList = ctx
        .client
        .get(&ctx.path(&format!("/deploys?limit={}", limit.clamp(1, 100))))
        .await?;
    if ctx.json(&list) {
        return Ok(true);
    }
    let now = chrono::Utc::now();
    let rows: Vec<Vec<String>> = list
        .deploys
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                match d.queue_position.filter(|_| d.waiting) {
                    Some(position) => format!("waiting (#{position})"),
                    None => word(&d.status),
                },
                format!("{} → {}", opt(d.from), d.to),
                d.strategy.to_string(),
                d.user.clone(),
                age(d.created_at, now),
                opt(d.cause.as_deref()),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "DEPLOY", "STATUS", "RELEASES", "STRATEGY", "BY", "AGE", "CAUSE"
            ],
            &rows
        )
    );
    Ok(true)
}
