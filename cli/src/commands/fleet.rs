//! `ship ps`, `ship cycle`, `ship scale`: the formation and what changes
//! it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};

use super::Ctx;
use crate::output::{age_of, table, text};

/// The formation as a table grouped by availability zone.
pub fn print_formation(env: &Value) {
    println!(
        "{}/{}: current release {}",
        text(&env["app"]),
        text(&env["env"]),
        text(&env["current"])
    );
    if let Some(lock) = env["lock"].as_object() {
        println!(
            "in progress: {} by {}",
            text(&lock["deploy_id"]),
            text(&lock["user"])
        );
    }
    let formation = &env["formation"];
    if formation.is_null() {
        println!("no Auto Scaling group");
        return;
    }
    println!(
        "group {}: {} desired (min {}, max {}), launch template {}",
        text(&formation["group"]),
        formation["desired"],
        formation["min"],
        formation["max"],
        text(&formation["launch_template"])
    );
    for lb in formation["load_balancers"].as_array().into_iter().flatten() {
        println!(
            "load balancer {}: {}",
            text(&lb["name"]),
            text(&lb["dns_name"])
        );
    }
    let mut by_az: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for i in formation["instances"].as_array().into_iter().flatten() {
        let health: Vec<String> = i["target_health"]
            .as_object()
            .map(|m| m.values().map(text).collect())
            .unwrap_or_default();
        let health = if health.is_empty() {
            text(&i["health"]).to_lowercase()
        } else {
            health.join(",")
        };
        by_az
            .entry(text(&i["availability_zone"]))
            .or_default()
            .push(vec![
                text(&i["id"]),
                text(&i["lifecycle"]),
                health,
                text(&i["release"]),
                age_of(&i["launched_at"]),
                text(&i["session_url"]),
            ]);
    }
    for (az, rows) in by_az {
        println!("\n{az}");
        println!(
            "{}",
            table(
                &["INSTANCE", "STATE", "HEALTH", "RELEASE", "AGE", "SESSION"],
                &rows
            )
        );
    }
}

pub async fn ps(ctx: &Ctx) -> anyhow::Result<bool> {
    let env = ctx.client.get(&ctx.path("")).await?;
    if !ctx.json(&env) {
        print_formation(&env);
    }
    Ok(true)
}

pub async fn cycle(ctx: &Ctx, instance: Option<String>, all: bool) -> anyhow::Result<bool> {
    match (instance, all) {
        (Some(id), false) => {
            let answer = ctx
                .client
                .post(&ctx.path(&format!("/instances/{id}/cycle")), None)
                .await?;
            if !ctx.json(&answer) {
                println!(
                    "{id} terminated; the group launches a replacement that boots the current release"
                );
            }
            Ok(true)
        }
        (None, true) => {
            let started = ctx.client.post(&ctx.path("/cycle"), None).await?;
            let url = text(&started["url"]);
            if !ctx.json {
                println!(
                    "cycle {}: every instance, one at a time",
                    text(&started["id"])
                );
            }
            let mut printed = 0;
            loop {
                let record = ctx.client.get(&url).await?;
                let steps = record["steps"].as_array().cloned().unwrap_or_default();
                let done: Vec<&Value> = steps
                    .iter()
                    .filter(|s| !matches!(s["status"].as_str(), Some("pending" | "replacing")))
                    .collect();
                if !ctx.json {
                    for s in done.iter().skip(printed) {
                        println!(
                            "  {} {} {}",
                            text(&s["instance"]),
                            text(&s["status"]),
                            s["replacement"]
                                .as_str()
                                .map(|r| format!("by {r}"))
                                .unwrap_or_default()
                        );
                    }
                }
                printed = done.len();
                if !record["finished_at"].is_null() {
                    if !ctx.json(&record) {
                        println!(
                            "cycle {}{}",
                            text(&record["status"]),
                            record["cause"]
                                .as_str()
                                .map(|c| format!(": {c}"))
                                .unwrap_or_default()
                        );
                    }
                    return Ok(record["status"] == "succeeded");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        _ => bail!("say which instance to cycle, or --all"),
    }
}

pub async fn scale(
    ctx: &Ctx,
    desired: Option<i32>,
    min: Option<i32>,
    max: Option<i32>,
) -> anyhow::Result<bool> {
    let mut body = serde_json::Map::new();
    for (k, v) in [("desired", desired), ("min", min), ("max", max)] {
        if let Some(v) = v {
            body.insert(k.into(), json!(v));
        }
    }
    let answer = ctx.client.patch(&ctx.path("/scale"), &body.into()).await?;
    if !ctx.json(&answer) {
        let (from, to) = (&answer["scale"]["from"], &answer["scale"]["to"]);
        println!(
            "{}: {} → {} instances (min {}, max {})",
            ctx.env, from["desired"], to["desired"], to["min"], to["max"]
        );
    }
    Ok(true)
}
