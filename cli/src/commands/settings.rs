//! `ship config`, `ship settings`, `ship promote`.

use anyhow::{anyhow, bail};
use serde_json::Value;
use slipway_core::env_settings::EnvSettings;
use slipway_core::manifest::Manifest;
use slipway_http::wire::{ConfigAnswer, ConfigChanged, ConfigPatch, Environment, PromoteRequest};

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
        let config: ConfigAnswer = ctx.client.get(&path).await?;
        if !ctx.json(&config) {
            let rows: Vec<Vec<String>> = config
                .config
                .iter()
                .map(|(k, v)| vec![k.clone(), v.clone()])
                .collect();
            println!("{}", table(&["KEY", "VALUE"], &rows));
        }
        return Ok(true);
    };
    let body = match action {
        ConfigAction::Set { pairs: raw } => ConfigPatch {
            set: pairs(&raw)?.into_iter().collect(),
            ..ConfigPatch::default()
        },
        ConfigAction::Unset { keys } => ConfigPatch {
            unset: keys,
            ..ConfigPatch::default()
        },
    };
    let answer: ConfigChanged = ctx.client.patch(&ctx.path("/config"), &body).await?;
    if !ctx.json(&answer) {
        match &answer.release {
            Some(release) => println!("config changed: release {}", release.id),
            None => println!("config changed (no release yet: the next one carries it)"),
        }
        for entry in &answer.diff {
            println!("  {} {}", entry.change, entry.key);
        }
    }
    Ok(true)
}

pub async fn settings(ctx: &Ctx, action: Option<SettingsAction>) -> anyhow::Result<bool> {
    let answer: EnvSettings = match action {
        None => ctx.client.get(&ctx.path("/settings")).await?,
        Some(SettingsAction::Set { pairs: raw }) => {
            let patch: serde_json::Map<String, Value> = pairs(&raw)?
                .into_iter()
                .map(|(k, v)| {
                    let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
                    (k, value)
                })
                .collect();
            ctx.client.patch(&ctx.path("/settings"), &patch).await?
        }
    };
    if !ctx.json(&answer) {
        let rows: Vec<Vec<String>> = serde_json::to_value(&answer)?
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
            let env: Environment = ctx.client.get(&ctx.path("")).await?;
            match env.current {
                Some(r) => r.to_string(),
                None => bail!(
                    "{} has no current release: say which release to promote",
                    ctx.env
                ),
            }
        }
    };
    let answer: Manifest = ctx
        .client
        .post(
            &ctx.path(&format!("/releases/{release}/promote")),
            &PromoteRequest { to: to.to_owned() },
        )
        .await?;
    if !ctx.json(&answer) {
        println!(
            "{release} of {} is now {} of {}/{to}",
            ctx.env, answer.id, ctx.env.app
        );
    }
    Ok(true)
}
