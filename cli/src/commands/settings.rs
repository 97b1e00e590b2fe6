//! `ship config`, `ship settings`, `ship promote`.

use anyhow::{anyhow, bail};
use serde_json::{Value, json};

use super::{ConfigAction, Ctx, SettingsAction};
use crate::output::{table, text};

fn pairs(raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    raw.iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("{p:?} is not KEY=VALUE"))
        })
        .collect()
}

pub async fn config(ctx: &Ctx, action: Option<ConfigAction>, reveal: bool) -> anyhow::Result<bool> {
    let Some(action) = action else {
        let path = ctx.path(if reveal {
            "/config?reveal=true"
        } else {
            "/config"
        });
        let config = ctx.client.get(&path).await?;
        if !ctx.json(&config) {
            let rows: Vec<Vec<String>> = config["config"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| vec![k.clone(), text(v)])
                .collect();
            println!("{}", table(&["KEY", "VALUE"], &rows));
        }
        return Ok(true);
    };
    let body = match action {
        ConfigAction::Set { pairs: raw } => {
            let set: serde_json::Map<String, Value> = pairs(&raw)?
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect();
            json!({ "set": set })
        }
        ConfigAction::Unset { keys } => json!({ "unset": keys }),
    };
    let answer = ctx.client.patch(&ctx.path("/config"), &body).await?;
    if !ctx.json(&answer) {
        match answer["release"]["id"].as_str() {
            Some(release) => println!("config changed: release {release}"),
            None => println!("config changed (no release yet: the next one carries it)"),
        }
        for entry in answer["diff"].as_array().into_iter().flatten() {
            println!("  {} {}", text(&entry["change"]), text(&entry["key"]));
        }
    }
    Ok(true)
}

pub async fn settings(ctx: &Ctx, action: Option<SettingsAction>) -> anyhow::Result<bool> {
    let answer = match action {
        None => ctx.client.get(&ctx.path("/settings")).await?,
        Some(SettingsAction::Set { pairs: raw }) => {
            let patch: serde_json::Map<String, Value> = pairs(&raw)?
                .into_iter()
                .map(|(k, v)| {
                    let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
                    (k, value)
                })
                .collect();
            ctx.client
                .patch(&ctx.path("/settings"), &patch.into())
                .await?
        }
    };
    if !ctx.json(&answer) {
        let rows: Vec<Vec<String>> = answer
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| vec![k.clone(), text(v)])
            .collect();
        println!("{}", table(&["SETTING", "VALUE"], &rows));
    }
    Ok(true)
}

pub async fn promote(ctx: &Ctx, to: &str, release: Option<String>) -> anyhow::Result<bool> {
    let release = match release {
        Some(r) => r,
        None => {
            let env = ctx.client.get(&ctx.path("")).await?;
            match env["current"].as_str() {
                Some(r) => r.to_owned(),
                None => bail!(
                    "{} has no current release: say which release to promote",
                    ctx.env
                ),
            }
        }
    };
    let answer = ctx
        .client
        .post(
            &ctx.path(&format!("/releases/{release}/promote")),
            Some(&json!({ "to": to })),
        )
        .await?;
    if !ctx.json(&answer) {
        println!(
            "{release} of {} is now {} of {}/{to}",
            ctx.env,
            text(&answer["id"]),
            ctx.env.app
        );
    }
    Ok(true)
}
