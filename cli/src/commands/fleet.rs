//! `ship ps`, `ship cycle`, `ship scale`: the formation and what changes
//! it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use slipway_control::cycle::{CycleRecord, CycleStatus, StepStatus};
use slipway_http::wire::{
    CycleAccepted, CycleAnswer, CycleRequest, Environment, MaintenanceAnswer, ScaleAnswer,
    ScaleRequest,
};

use super::Ctx;
use crate::cli::MaintenanceAction;
use crate::output::{age_opt, opt, table};
use slipway_core::maintenance::Maintenance;

/// The formation as a table grouped by availability zone.
pub fn print_formation(env: &Environment) {
    println!(
        "{}/{}: current release {}",
        env.app,
        env.env,
        opt(env.current)
    );
    if let Some(lock) = &env.lock {
        println!("in progress: {} by {}", lock.job, lock.user);
    }
    let Some(formation) = &env.formation else {
        println!("no Auto Scaling group");
        return;
    };
    println!(
        "group {}: {} desired (min {}, max {}), launch template {}",
        formation.group,
        formation.desired,
        formation.min,
        formation.max,
        opt(formation.launch_template.as_deref())
    );
    for lb in &formation.load_balancers {
        println!("load balancer {}: {}", lb.name, lb.dns_name);
    }
    if let Some(m) = &formation.maintenance {
        println!("{}", maintenance_line(m));
    }
    let mut by_az: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for i in &formation.instances {
        let health: Vec<String> = i.target_health.values().cloned().collect();
        let health = if health.is_empty() {
            i.health.to_lowercase()
        } else {
            health.join(",")
        };
        by_az
            .entry(i.availability_zone.clone())
            .or_default()
            .push(vec![
                i.id.to_string(),
                i.lifecycle.clone(),
                health,
                opt(i.release.as_deref()),
                age_opt(i.launched_at),
                i.session_url.clone(),
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
    let env: Environment = ctx.client.get(&ctx.path("")).await?;
    if !ctx.json(&env) {
        print_formation(&env);
    }
    Ok(true)
}

pub async fn cycle(
    ctx: &Ctx,
    instance: Option<String>,
    all: bool,
    wait: bool,
) -> anyhow::Result<bool> {
    match (instance, all) {
        (Some(id), false) => {
            let answer: CycleAnswer = ctx
                .client
                .post_empty(&ctx.path(&format!("/instances/{id}/cycle")))
                .await?;
            if !ctx.json(&answer) {
                println!(
                    "{id} terminated; the group launches a replacement that boots the current release"
                );
            }
            Ok(true)
        }
        (None, true) => {
            let request = CycleRequest {
                queue: wait.then_some(true),
            };
            let started: CycleAccepted = ctx.client.post(&ctx.path("/cycle"), &request).await?;
            if !ctx.json {
                match started
                    .cycle
                    .queue_position
                    .filter(|_| started.cycle.waiting)
                {
                    Some(position) => println!(
                        "cycle {} waits its turn: number {position} in the environment's queue",
                        started.id
                    ),
                    None => println!("cycle {}: every instance, one at a time", started.id),
                }
            }
            let mut printed = 0;
            let mut waited = started.cycle.waiting;
            loop {
                let record: CycleRecord = ctx.client.get(&started.url).await?;
                if waited && !record.waiting {
                    waited = false;
                    if !ctx.json && record.finished_at.is_none() {
                        println!(
                            "cycle {}: its turn came, every instance, one at a time",
                            record.id
                        );
                    }
                }
                let done: Vec<_> = record
                    .steps
                    .iter()
                    .filter(|s| !matches!(s.status, StepStatus::Pending | StepStatus::Replacing))
                    .collect();
                if !ctx.json {
                    for s in done.iter().skip(printed) {
                        println!(
                            "  {} {} {}",
                            s.instance,
                            crate::output::word(&s.status),
                            s.replacement
                                .as_ref()
                                .map(|r| format!("by {r}"))
                                .unwrap_or_default()
                        );
                    }
                }
                printed = done.len();
                if record.finished_at.is_some() {
                    if !ctx.json(&record) {
                        println!(
                            "cycle {}{}",
                            crate::output::word(&record.status),
                            record
                                .cause
                                .as_deref()
                                .map(|c| format!(": {c}"))
                                .unwrap_or_default()
                        );
                    }
                    return Ok(record.status == CycleStatus::Succeeded);
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
    let request = ScaleRequest { desired, min, max };
    let answer: ScaleAnswer = ctx.client.patch(&ctx.path("/scale"), &request).await?;
    if !ctx.json(&answer) {
        let (from, to) = (answer.scale.from, answer.scale.to);
        println!(
            "{}: {} → {} instances (min {}, max {})",
            ctx.env, from.desired, to.desired, to.min, to.max
        );
    }
    Ok(true)
}

/// How `ps` and `maintenance on` say maintenance mode is up.
fn maintenance_line(m: &Maintenance) -> String {
    let allowed = match m.allowed() {
        none if none.is_empty() => "no one".to_owned(),
        blocks => blocks,
    };
    format!(
        "maintenance on: the load balancer answers 503 \"{}\" to everyone but {allowed}",
        m.message
    )
}

pub async fn maintenance(ctx: &Ctx, action: MaintenanceAction) -> anyhow::Result<bool> {
    let answer: MaintenanceAnswer = match action {
        MaintenanceAction::On { message, allow } => {
            let maintenance = Maintenance::new(message.as_deref(), allow)?;
            ctx.client
                .put(&ctx.path("/maintenance"), &maintenance)
                .await?
        }
        MaintenanceAction::Off => ctx.client.delete(&ctx.path("/maintenance")).await?,
    };
    if !ctx.json(&answer) {
        match &answer.maintenance {
            Some(m) => println!("{}: {}", ctx.env, maintenance_line(m)),
            None => println!(
                "{}: maintenance off; every request reaches the app",
                ctx.env
            ),
        }
    }
    Ok(true)
}
