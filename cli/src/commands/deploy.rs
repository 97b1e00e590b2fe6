//! `ship deploy`, `ship rollback`, `ship cancel`, `ship deploys`: start a
//! deploy and follow it batch by batch, instance by instance, with the
//! agent's last lines when something fails. The exit status is 0 only
//! when the deploy succeeded.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use reqwest::Method;
use serde_json::Value;

use super::Ctx;
use crate::output::{age_of, seconds, table, text};

/// Starts a deploy (or rollback); returns its record's URL.
pub async fn start_deploy(ctx: &Ctx, route: &str, body: Value) -> anyhow::Result<(String, Value)> {
    let key = uuid::Uuid::new_v4().to_string();
    let started = ctx
        .client
        .send(
            Method::POST,
            &ctx.path(route),
            Some(&body),
            &[("Idempotency-Key", &key)],
        )
        .await?;
    let url = started["url"]
        .as_str()
        .ok_or_else(|| anyhow!("the control plane did not say where the deploy is"))?
        .to_owned();
    Ok((url, started))
}

pub async fn start_and_follow(
    ctx: &Ctx,
    route: &str,
    body: Value,
    follow_it: bool,
) -> anyhow::Result<bool> {
    let (url, started) = start_deploy(ctx, route, body).await?;
    let record = &started["deploy"];
    if !follow_it {
        if !ctx.json(&started) {
            println!(
                "deploy {} queued: {} → {}",
                text(&record["id"]),
                text(&record["from"]),
                text(&record["to"])
            );
        }
        return Ok(true);
    }
    if !ctx.json {
        println!(
            "deploy {}: {} → {}, {}{}",
            text(&record["id"]),
            text(&record["from"]),
            text(&record["to"]),
            text(&record["strategy"]),
            if record["auto_rollback"] == false {
                ", no rollback"
            } else {
                ""
            }
        );
    }
    let done = follow(ctx, &url, !ctx.json).await?;
    ctx.json(&done);
    Ok(done["status"] == "succeeded")
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

fn invocation_lines(seen: &mut Seen, prefix: &str, results: &Value) {
    for r in results.as_array().into_iter().flatten() {
        let ms = r["duration_ms"].as_u64().unwrap_or(0);
        seen.say(format!(
            "{prefix}  {}  {}  exit {}  {}",
            text(&r["instance"]),
            text(&r["status"]),
            text(&r["exit_code"]),
            seconds(Duration::from_millis(ms))
        ));
        let ok = r["status"] == "success" && r["exit_code"] == 0;
        if !ok {
            for line in r["output_tail"].as_str().unwrap_or_default().lines() {
                seen.say(format!("{prefix}    | {} {line}", text(&r["instance"])));
            }
        }
    }
}

fn batch_lines(seen: &mut Seen, name: &str, batch: &Value) {
    let instances: Vec<String> = batch["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    seen.say(format!("{name}: {}", instances.join(", ")));
    invocation_lines(seen, &format!("  {name}"), &batch["results"]);
    for u in batch["unhealthy"].as_array().into_iter().flatten() {
        seen.say(format!("  {name}  {} not healthy in time", text(u)));
    }
    if batch["status"] != "running" {
        seen.say(format!("{name} {}", text(&batch["status"])));
    }
}

/// Follows a deploy until it finishes; prints its progress when `print`.
pub async fn follow(ctx: &Ctx, url: &str, print: bool) -> anyhow::Result<Value> {
    let started = Instant::now();
    let mut seen = Seen::default();
    loop {
        let record = ctx.client.get(url).await?;
        if print {
            if !record["release_phase"].is_null() {
                invocation_lines(
                    &mut seen,
                    "release phase",
                    &Value::Array(vec![record["release_phase"].clone()]),
                );
            }
            for batch in record["batches"].as_array().into_iter().flatten() {
                batch_lines(&mut seen, &format!("batch {}", batch["number"]), batch);
            }
            if !record["rollback"].is_null() {
                batch_lines(&mut seen, "rollback", &record["rollback"]);
            }
            for note in record["notes"].as_array().into_iter().flatten() {
                seen.say(format!("note: {}", text(note)));
            }
        }
        if !record["finished_at"].is_null() {
            if print {
                let status = text(&record["status"]);
                let mut line = format!(
                    "deploy {} {status} in {}: {} → {}",
                    text(&record["id"]),
                    seconds(started.elapsed()),
                    text(&record["from"]),
                    text(&record["to"])
                );
                if let Some(cause) = record["cause"].as_str() {
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
    let list = ctx.client.get(&ctx.path("/deploys?limit=5")).await?;
    let running = list["deploys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["finished_at"].is_null())
        .ok_or_else(|| anyhow!("no deploy is running in {}", ctx.env))?;
    let id = text(&running["id"]);
    let answer = ctx
        .client
        .post(&ctx.path(&format!("/deploys/{id}/cancel")), None)
        .await?;
    if !ctx.json(&answer) {
        println!("deploy {id}: {}", text(&answer["note"]));
    }
    Ok(true)
}

pub async fn list(ctx: &Ctx, limit: usize) -> anyhow::Result<bool> {
    let list = ctx
        .client
        .get(&ctx.path(&format!("/deploys?limit={}", limit.clamp(1, 100))))
        .await?;
    if ctx.json(&list) {
        return Ok(true);
    }
    let rows: Vec<Vec<String>> = list["deploys"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                text(&d["id"]),
                text(&d["status"]),
                format!("{} → {}", text(&d["from"]), text(&d["to"])),
                text(&d["strategy"]),
                text(&d["user"]),
                age_of(&d["created_at"]),
                text(&d["cause"]),
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
