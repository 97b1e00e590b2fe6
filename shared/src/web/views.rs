//! The pages, as pure functions from what a handler gathered to HTML.
//!
//! maud escapes every interpolated value, so names, descriptions and agent
//! output cannot inject markup. Config values never reach this module: it
//! is handed config keys only. Status is always said in words (with a
//! symbol); colour only repeats it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use crate::deploys::DeployStatus;
use crate::fleet::InstanceId;
use crate::fleet::aws::{Formation, InstanceView};
use crate::names::{EnvRef, ReleaseId};
use crate::rollout::Strategy;
use crate::rollout::lock::Lock;
use crate::rollout::record::{Batch, BatchStatus, DeployRecord};
use crate::store::Manifest;

use super::HTMX;
use crate::api::logs::SearchParams;
use crate::logs::LogPage;
use crate::metrics::{Point, Series, WINDOW_MINUTES};

/// How often live parts of a page refresh (with JavaScript).
const POLL: &str = "every 2s";

/// One environment in the overview.
pub struct EnvSummary {
    pub env: EnvRef,
    pub current: Option<ReleaseId>,
    pub last_deploy: Option<DeployRecord>,
    /// Healthy and total instances; `None` without a group.
    pub instances: Option<(usize, usize)>,
    pub terminated: bool,
}

/// Everything the environment page shows.
pub struct EnvPage {
    pub env: EnvRef,
    pub current: Option<ReleaseId>,
    pub formation: Option<Formation>,
    pub lock: Option<Lock>,
    pub metrics: BTreeMap<String, Series>,
    pub releases: Vec<Manifest>,
    pub deploys: Vec<DeployRecord>,
    pub config_keys: Vec<String>,
    pub strategy: Strategy,
    pub notice: Option<String>,
    pub now: DateTime<Utc>,
}

pub fn env_url(env: &EnvRef) -> String {
    format!("/ui/apps/{}/envs/{}", env.app, env.env)
}

pub fn deploy_url(env: &EnvRef, id: &str) -> String {
    format!("{}/deploys/{id}", env_url(env))
}

fn page(title: &str, crumbs: &[(String, String)], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // No eval, no inline styles: the pages' CSP allows neither.
                meta name="htmx-config" content=r#"{"allowEval":false,"includeIndicatorStyles":false}"#;
                title { (title) " · Slipway" }
                link rel="stylesheet" href="/ui/assets/style.css";
                script src={ "/ui/assets/" (HTMX) } defer {}
            }
            body {
                header.top {
                    a.brand href="/ui" { "Slipway" }
                    @if !crumbs.is_empty() {
                        nav.crumbs aria-label="Breadcrumb" {
                            ol {
                                li { a href="/ui" { "Apps" } }
                                @for (text, url) in crumbs {
                                    li { a href=(url) { (text) } }
                                }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn env_crumbs(env: &EnvRef) -> Vec<(String, String)> {
    vec![(env.to_string(), env_url(env))]
}

/// Words, a symbol and a colour class for a deploy or cycle status.
pub fn status(s: DeployStatus) -> Markup {
    let (symbol, word, class) = match s {
        DeployStatus::Queued => ("⏳", "queued", "status-run"),
        DeployStatus::Running => ("⟳", "running", "status-run"),
        DeployStatus::Succeeded => ("✓", "succeeded", "status-ok"),
        DeployStatus::Failed => ("✗", "failed", "status-bad"),
        DeployStatus::RolledBack => ("↩", "rolled back", "status-warn"),
        DeployStatus::Cancelled => ("⊘", "cancelled", "status-warn"),
        DeployStatus::Unknown => ("?", "unknown", "muted"),
    };
    html! { span class={ "status " (class) } { span aria-hidden="true" { (symbol) } " " (word) } }
}

fn ago(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let s = (now - then).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn time(t: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(t.to_rfc3339()) title=(t.format("%Y-%m-%d %H:%M:%S UTC")) {
            (ago(now, t)) " ago"
        }
    }
}

fn took(record: &DeployRecord, now: DateTime<Utc>) -> String {
    let end = record.finished_at.unwrap_or(now);
    let s = (end - record.created_at).num_seconds().max(0);
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m {}s", s / 60, s % 60)
    }
}

fn release_text(r: Option<ReleaseId>) -> String {
    r.map_or_else(|| "none".into(), |r| r.to_string())
}

/// Serving and healthy in the group's check and every load balancer's.
pub fn instance_healthy(i: &InstanceView) -> bool {
    i.lifecycle == "InService"
        && i.health == "Healthy"
        && i.target_health.values().all(|h| h == "healthy")
}

pub fn overview(envs: &[EnvSummary], notice: Option<&str>, now: DateTime<Utc>) -> Markup {
    let body = html! {
        h1 { "Apps and environments" }
        @if let Some(n) = notice { p.notice role="status" { (n) } }
        @if envs.is_empty() {
            p { "No environments yet. Create one with " code { "ship env create APP ENV" } "." }
        } @else {
            div.table-wrap {
                table {
                    caption.visually-hidden { "Every environment, its release, last deploy and instances" }
                    thead { tr {
                        th scope="col" { "Environment" }
                        th scope="col" { "Current release" }
                        th scope="col" { "Last deploy" }
                        th scope="col" { "Healthy instances" }
                    } }
                    tbody {
                        @for e in envs {
                            tr {
                                th scope="row" { a href=(env_url(&e.env)) { (e.env) } }
                                td { (release_text(e.current)) }
                                td {
                                    @match &e.last_deploy {
                                        Some(d) => {
                                            a href=(deploy_url(&e.env, &d.id)) { (d.to) } " "
                                            (status(d.status)) " "
                                            span.muted { (time(d.created_at, now)) }
                                        }
                                        None => span.muted { "never deployed" },
                                    }
                                }
                                td {
                                    @match (e.instances, e.terminated) {
                                        (Some((healthy, total)), _) => { (healthy) " of " (total) " healthy" }
                                        (None, true) => span.muted { "terminated" },
                                        (None, false) => span.muted { "no group" },
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Apps", &[], body)
}

fn lock_line(env: &EnvRef, lock: &Lock) -> Markup {
    html! {
        p.notice role="status" {
            @if lock.deploy_id.starts_with('d') {
                "Deploy " a href=(deploy_url(env, &lock.deploy_id)) { (lock.deploy_id) }
            } @else {
                "Cycle " span.mono { (lock.deploy_id) }
            }
            " by " (lock.user) " holds this environment; deploys and terminations wait for it."
        }
    }
}

const SPARK_W: f64 = 120.0;
const SPARK_H: f64 = 24.0;

/// A percent series as a small inline SVG (0–100% bottom to top over the
/// last minutes), deploy times marked, and the latest value in words.
fn sparkline(
    what: &str,
    points: &[Point],
    deploys: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Markup {
    let start = now - chrono::Duration::minutes(WINDOW_MINUTES);
    let span = (WINDOW_MINUTES * 60_000) as f64;
    let x = |t: DateTime<Utc>| {
        ((t - start).num_milliseconds() as f64 / span * SPARK_W).clamp(0.0, SPARK_W)
    };
    let y = |v: f64| SPARK_H - (v.clamp(0.0, 100.0) / 100.0 * SPARK_H);
    let line: Vec<String> = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.t), y(p.v)))
        .collect();
    let latest = points.last().map(|p| {
        if p.v < 10.0 {
            format!("{:.1}%", p.v)
        } else {
            format!("{:.0}%", p.v)
        }
    });
    let label = match &latest {
        Some(l) => format!("{what} over the last {WINDOW_MINUTES} minutes, now {l}"),
        None => format!("no {what} figures in the last {WINDOW_MINUTES} minutes"),
    };
    html! {
        span.spark {
            svg width=(SPARK_W) height=(SPARK_H) viewBox={ "0 0 " (SPARK_W) " " (SPARK_H) } role="img" aria-label=(label) {
                title { (label) }
                rect x="0" y="0" width=(SPARK_W) height=(SPARK_H) fill="none" stroke="#d8dde5" {}
                @for t in deploys.iter().filter(|t| **t >= start) {
                    line.deploy x1=(format!("{:.1}", x(*t))) x2=(format!("{:.1}", x(*t))) y1="0" y2=(SPARK_H) stroke="#8a5a00" stroke-dasharray="2 2" {}
                }
                @if !line.is_empty() {
                    polyline points=(line.join(" ")) fill="none" stroke="currentColor" stroke-width="1.5" {}
                }
            }
            " " span.muted { (what) " " (latest.as_deref().unwrap_or("—")) }
        }
    }
}

fn formation_section(
    env: &EnvRef,
    formation: &Formation,
    metrics: &BTreeMap<String, Series>,
    deploy_times: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Markup {
    let mut by_zone: BTreeMap<&str, Vec<&InstanceView>> = BTreeMap::new();
    for z in &formation.availability_zones {
        by_zone.entry(z.as_str()).or_default();
    }
    for i in &formation.instances {
        by_zone
            .entry(i.availability_zone.as_str())
            .or_default()
            .push(i);
    }
    let healthy = formation
        .instances
        .iter()
        .filter(|i| instance_healthy(i))
        .count();
    html! {
        h2 { "Formation" }
        p {
            (healthy) " of " (formation.instances.len()) " instances healthy; group "
            span.mono { (formation.group) } " wants " (formation.desired)
            " (" (formation.min) "–" (formation.max) ")."
        }
        @for lb in &formation.load_balancers {
            p { "Load balancer " strong { (lb.name) } ": " a.mono href={ "http://" (lb.dns_name) } { (lb.dns_name) } }
        }
        @for (zone, instances) in &by_zone {
            h3 { "Availability zone " (zone) }
            @if instances.is_empty() {
                p.muted { "No instances." }
            } @else {
                div.table-wrap {
                    table {
                        thead { tr {
                            th scope="col" { "Instance" }
                            th scope="col" { "Lifecycle" }
                            th scope="col" { "Health" }
                            th scope="col" { "Release" }
                            th scope="col" { "Age" }
                            th scope="col" { "Last " (WINDOW_MINUTES) " minutes" }
                            th scope="col" { span.visually-hidden { "Actions" } }
                        } }
                        tbody {
                            @for i in instances {
                                tr data-instance=(i.id) {
                                    th.mono scope="row" { (i.id) }
                                    td { (i.lifecycle) }
                                    td {
                                        @if instance_healthy(i) {
                                            span class="status status-ok" { span aria-hidden="true" { "✓" } " healthy" }
                                        } @else {
                                            span class="status status-bad" { span aria-hidden="true" { "✗" } " not serving" }
                                            br; span.muted { "group check: " (i.health) }
                                        }
                                        @for (tg, h) in &i.target_health {
                                            br; span.muted { "load balancer: " (h) } span.visually-hidden { " in " (tg) }
                                        }
                                    }
                                    td { (i.release.as_deref().unwrap_or("—")) }
                                    td { @if let Some(t) = i.launched_at { (time(t, now)) } }
                                    td.metrics {
                                        @let series = metrics.get(i.id.as_str()).cloned().unwrap_or_default();
                                        (sparkline("CPU", &series.cpu, deploy_times, now))
                                        br;
                                        (sparkline("memory", &series.memory, deploy_times, now))
                                    }
                                    td {
                                        a href=(i.session_url) aria-label={ "Open a session on " (i.id) } { "Session" }
                                        " "
                                        a.button.danger id={ "terminate-" (i.id) }
                                            href={ (env_url(env)) "/instances/" (i.id) "/terminate" }
                                            aria-label={ "Terminate " (i.id) } { "Terminate…" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn history(env: &EnvRef, deploys: &[DeployRecord], now: DateTime<Utc>) -> Markup {
    html! {
        h2 { "Deploys" }
        @if deploys.is_empty() {
            p.muted { "No deploys yet." }
        } @else {
            div.table-wrap {
                table {
                    thead { tr {
                        th scope="col" { "Deploy" }
                        th scope="col" { "Release" }
                        th scope="col" { "Status" }
                        th scope="col" { "By" }
                        th scope="col" { "Started" }
                        th scope="col" { "Took" }
                    } }
                    tbody {
                        @for d in deploys {
                            tr {
                                th scope="row" { a.mono href=(deploy_url(env, &d.id)) { (d.id) } }
                                td { (release_text(d.from)) " → " (d.to) }
                                td { (status(d.status)) }
                                td { (d.user) }
                                td { (time(d.created_at, now)) }
                                td { (took(d, now)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

const STRATEGIES: [&str; 4] = ["one-at-a-time", "25%", "50%", "all-at-once"];

fn strategy_select(id: &str, label: &str, default: Strategy) -> Markup {
    let default = default.to_string();
    html! {
        label.visually-hidden for=(id) { (label) }
        select id=(id) name="strategy" {
            @for s in STRATEGIES {
                option value=(s) selected[s == default] { (s) }
            }
            @if !STRATEGIES.contains(&default.as_str()) {
                option value=(default) selected { (default) }
            }
        }
    }
}

fn releases_section(page: &EnvPage) -> Markup {
    let env = &page.env;
    html! {
        h2 { "Releases" }
        @if page.releases.is_empty() {
            p { "No releases yet. Make one with " code { "ship release" } "." }
        } @else {
            form.inline method="post" action={ (env_url(env)) "/rollback" } {
                button.secondary #rollback type="submit" { "Roll back" }
                span.muted { "to the release deployed successfully before " (release_text(page.current)) }
            }
            div.table-wrap {
                table {
                    thead { tr {
                        th scope="col" { "Release" }
                        th scope="col" { "Description" }
                        th scope="col" { "Made" }
                        th scope="col" { "By" }
                        th scope="col" { "Deploy" }
                    } }
                    tbody {
                        @for m in &page.releases {
                            tr {
                                th scope="row" {
                                    (m.id)
                                    @if Some(m.id) == page.current { " " span.status.status-ok { "(current)" } }
                                }
                                td {
                                    (m.description.as_deref().unwrap_or(""))
                                    @if let Some(r) = &m.git_ref { " " span.mono.muted { (r) } }
                                }
                                td { (time(m.created_at, page.now)) }
                                td { (m.created_by) }
                                td {
                                    form.inline method="post" action={ (env_url(env)) "/deploys" } {
                                        input type="hidden" name="release" value=(m.id);
                                        (strategy_select(&format!("strategy-{}", m.id), &format!("Strategy for {}", m.id), page.strategy))
                                        button id={ "deploy-" (m.id) } type="submit" { "Deploy " (m.id) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn environment(p: &EnvPage) -> Markup {
    let env = &p.env;
    let body = html! {
        h1 { (env) }
        @if let Some(n) = &p.notice { p.notice role="status" { (n) } }
        (search_form(env, &SearchParams::default()))
        div #live hx-get=(env_url(env)) hx-trigger=(POLL) hx-select="#live" hx-swap="outerHTML" {
            dl.facts {
                dt { "Current release" } dd #current { (release_text(p.current)) }
            }
            @if let Some(lock) = &p.lock { (lock_line(env, lock)) }
            @match &p.formation {
                Some(f) => (formation_section(env, f, &p.metrics, &p.deploys.iter().map(|d| d.created_at).collect::<Vec<_>>(), p.now)),
                None => { h2 { "Formation" } p.muted { "No Auto Scaling group: create one with " code { "ship env create" } "." } },
            }
            (history(env, &p.deploys, p.now))
        }
        (releases_section(p))
        h2 { "Config vars" }
        @if p.config_keys.is_empty() {
            p.muted { "None." }
        } @else {
            p.muted { "Values are hidden; " code { "ship config --reveal" } " shows them to those allowed." }
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Value" } } }
                    tbody {
                        @for k in &p.config_keys {
                            tr { th.mono scope="row" { (k) } td { span aria-label="hidden" { "••••••" } } }
                        }
                    }
                }
            }
        }
        section.danger-zone aria-labelledby="danger" {
            h2 #danger { "Terminate the environment" }
            p { "Deletes the load balancer and every instance. Releases, config and history stay." }
            a.button.danger href={ (env_url(env)) "/terminate" } { "Terminate " (env) "…" }
        }
    };
    page(&env.to_string(), &env_crumbs(env), body)
}

fn batch_rows(title: &str, batch: &Batch) -> Markup {
    let state = match batch.status {
        BatchStatus::Running => DeployStatus::Running,
        BatchStatus::Succeeded => DeployStatus::Succeeded,
        BatchStatus::Failed => DeployStatus::Failed,
    };
    html! {
        h3 { (title) " " (status(state)) }
        ul {
            @for id in &batch.instances {
                li {
                    span.mono { (id) } ": "
                    @match batch.results.iter().find(|r| &r.instance == id) {
                        Some(r) if r.succeeded() && !batch.unhealthy.contains(id) => {
                            span class="status status-ok" { span aria-hidden="true" { "✓" } " deployed" }
                            span.muted { " in " (r.duration_ms / 1000) "s" }
                        }
                        Some(r) if r.succeeded() => {
                            span class="status status-bad" { span aria-hidden="true" { "✗" } " not healthy in time" }
                        }
                        Some(r) => {
                            span class="status status-bad" {
                                span aria-hidden="true" { "✗" } " failed"
                                @if let Some(code) = r.exit_code { " (exit " (code) ")" }
                            }
                            @if !r.output_tail.is_empty() {
                                details open {
                                    summary { "Output of " (id) }
                                    pre { (r.output_tail) }
                                }
                            }
                        }
                        None if batch.status == BatchStatus::Running => {
                            span class="status status-run" { span aria-hidden="true" { "⟳" } " deploying" }
                        }
                        None => span.muted { "not run" },
                    }
                }
            }
        }
    }
}

/// From a minute before the deploy to a minute after it ended (or now).
pub fn deploy_logs_url(env: &EnvRef, d: &DeployRecord, now: DateTime<Utc>) -> String {
    let margin = chrono::Duration::minutes(1);
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let until = d.finished_at.map_or(now, |f| (f + margin).min(now));
    format!(
        "{}?since={}&until={}&limit=1000",
        logs_url(env),
        fmt(d.created_at - margin),
        fmt(until)
    )
}

pub fn deploy(env: &EnvRef, d: &DeployRecord, now: DateTime<Utc>) -> Markup {
    let url = deploy_url(env, &d.id);
    let live = !d.is_finished();
    let body = html! {
        h1 { "Deploy " span.mono { (d.id) } }
        div #live hx-get=[live.then_some(&url)] hx-trigger=[live.then_some(POLL)]
            hx-select=[live.then_some("#live")] hx-swap=[live.then_some("outerHTML")] {
            p #deploy-status role="status" { (status(d.status)) @if let Some(c) = &d.cause { " — " (c) } }
            dl.facts {
                dt { "Release" } dd { (release_text(d.from)) " → " (d.to) }
                dt { "Strategy" } dd { (d.strategy) ", keeping " (d.min_healthy_percent) "% healthy" }
                dt { "By" } dd { (d.user) }
                dt { "Started" } dd { (time(d.created_at, now)) }
                dt { "Took" } dd { (took(d, now)) @if live { " so far" } }
            }
            @if live {
                form.inline method="post" action={ (url) "/cancel" } {
                    button.danger #cancel type="submit" { "Cancel deploy" }
                    span.muted { "stops after cancelling the running batch; nothing is rolled back" }
                }
            }
            @if let Some(r) = &d.release_phase {
                h2 { "Release phase" }
                p { @if r.succeeded() { "✓ succeeded on " } @else { "✗ failed on " } span.mono { (r.instance) } }
                @if !r.succeeded() && !r.output_tail.is_empty() { pre { (r.output_tail) } }
            }
            h2 { "Batches" }
            @if d.batches.is_empty() && d.plan.is_empty() { p.muted { "Not started yet." } }
            @for b in &d.batches { (batch_rows(&format!("Batch {}", b.number), b)) }
            @for (n, planned) in d.plan.iter().enumerate().skip(d.batches.len()) {
                h3 { "Batch " (n + 1) " " span.muted { "waiting" } }
                ul { @for id in planned { li.mono { (id) } } }
            }
            @if let Some(b) = &d.rollback { (batch_rows("Rollback", b)) }
            @if !d.notes.is_empty() {
                h2 { "Notes" }
                ul { @for n in &d.notes { li { (n) } } }
            }
        }
        p {
            a #deploy-logs href=(deploy_logs_url(env, d, now)) { "Log lines around this deploy" }
            " · "
            a href=(env_url(env)) { "Back to " (env) }
        }
    };
    page(&format!("Deploy {}", d.id), &env_crumbs(env), body)
}

pub fn confirm_instance(env: &EnvRef, id: &InstanceId) -> Markup {
    let body = html! {
        h1 { "Terminate " span.mono { (id) } "?" }
        p { "The Auto Scaling group of " (env) " replaces it with a new instance, which boots the current release. Its load balancer stops sending it traffic first." }
        form.inline method="post" {
            button.danger type="submit" { "Terminate " (id) }
            a.button.secondary href=(env_url(env)) { "Keep it" }
        }
    };
    page(&format!("Terminate {id}"), &env_crumbs(env), body)
}

pub fn confirm_environment(env: &EnvRef, error: Option<&str>) -> Markup {
    let name = env.qualified();
    let body = html! {
        h1 { "Terminate " (env) "?" }
        p { "This deletes the environment's load balancer, Auto Scaling group and every instance. Releases, config and deploy history stay in the bucket." }
        @if let Some(e) = error { p.notice.error role="alert" { (e) } }
        form method="post" {
            p {
                label for="confirm" { "Type " code { (name) } " to confirm" }
                br;
                input #confirm type="text" name="confirm" autocomplete="off" required;
            }
            button.danger type="submit" { "Terminate " (env) }
            " "
            a.button.secondary href=(env_url(env)) { "Keep it" }
        }
    };
    page(&format!("Terminate {env}"), &env_crumbs(env), body)
}

pub fn logs_url(env: &EnvRef) -> String {
    format!("{}/logs", env_url(env))
}

fn search_form(env: &EnvRef, p: &SearchParams) -> Markup {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    html! {
        form.inline method="get" action=(logs_url(env)) role="search" {
            label for="log-q" { "Search logs" }
            input #log-q type="text" name="q" value=(v(&p.q)) placeholder="text in the line";
            label for="log-process" { "Process" }
            input #log-process type="text" name="process" value=(v(&p.process)) placeholder="web" size="8";
            label for="log-since" { "Since" }
            input #log-since type="text" name="since" value=(p.since.clone().unwrap_or_else(|| "1h".into())) size="8";
            @if let Some(u) = &p.until { input type="hidden" name="until" value=(u); }
            @if let Some(i) = &p.instance { input type="hidden" name="instance" value=(i); }
            button type="submit" { "Search" }
        }
    }
}

pub fn logs(env: &EnvRef, p: &SearchParams, result: &Result<LogPage, String>) -> Markup {
    let body = html! {
        h1 { "Logs of " (env) }
        (search_form(env, p))
        @match result {
            Err(e) => p.notice.error role="alert" { (e) },
            Ok(page) if page.events.is_empty() => p.muted { "No lines match." },
            Ok(page) => {
                p.muted { (page.events.len()) " lines, oldest first." }
                div.table-wrap {
                    table.logs {
                        thead { tr {
                            th scope="col" { "Time (UTC)" }
                            th scope="col" { "Instance" }
                            th scope="col" { "Process" }
                            th scope="col" { "Line" }
                        } }
                        tbody {
                            @for e in &page.events {
                                tr {
                                    td.mono { (e.timestamp.format("%m-%d %H:%M:%S%.3f")) }
                                    td.mono { (e.instance) }
                                    td.mono { (e.process) }
                                    td.mono { (e.message) }
                                }
                            }
                        }
                    }
                }
                @if let Some(next) = &page.next {
                    form method="get" action=(logs_url(env)) {
                        @for (k, val) in [("q", &p.q), ("process", &p.process), ("since", &p.since), ("until", &p.until), ("instance", &p.instance)] {
                            @if let Some(val) = val { input type="hidden" name=(k) value=(val); }
                        }
                        input type="hidden" name="next" value=(next);
                        button.secondary type="submit" { "More" }
                    }
                }
            }
        }
    };
    page(&format!("Logs of {env}"), &env_crumbs(env), body)
}

pub fn error_page(status: u16, message: &str, back: Option<&str>) -> Markup {
    let body = html! {
        h1 { "That did not work" }
        p.notice.error role="alert" { (message) }
        p.muted { "HTTP " (status) }
        p { a href=(back.unwrap_or("/ui")) { "Back" } }
    };
    page("Error", &[], body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_said_in_words_not_only_colour() {
        let html = status(DeployStatus::RolledBack).into_string();
        assert!(html.contains("rolled back"), "{html}");
        assert!(html.contains("status-warn"), "{html}");
    }

    fn manifest(description: &str) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "id": "r3", "app": "hello", "env": "web",
            "source": { "key": "hello/web/releases/r3/source.tar.zst", "sha256": "00", "size": 1, "format": "tar.zst" },
            "config_sha256": "00", "procfile": { "web": "run" },
            "description": description,
            "created_at": "2026-11-29T00:00:00Z", "created_by": "alice",
            "origin": { "kind": "config", "from": "r2" },
        }))
        .unwrap()
    }

    #[test]
    fn the_environment_page_escapes_what_users_wrote_and_shows_no_config_values() {
        let env = EnvRef::parse("hello", "web").unwrap();
        let html = environment(&EnvPage {
            env,
            current: None,
            formation: None,
            lock: None,
            metrics: BTreeMap::new(),
            releases: vec![manifest("<script>alert(1)</script>")],
            deploys: vec![],
            config_keys: vec!["API_TOKEN".into()],
            strategy: Strategy::Percent(25),
            notice: None,
            now: Utc::now(),
        })
        .into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("API_TOKEN") && html.contains("••••••"));
        assert!(html.contains(r#"<option value="25%" selected>"#), "{html}");
        assert!(html.contains(r#"id="deploy-r3""#));
    }

    #[test]
    fn ages_are_short_and_never_negative() {
        let now = Utc::now();
        assert_eq!(ago(now, now - chrono::Duration::seconds(59)), "59s");
        assert_eq!(ago(now, now - chrono::Duration::minutes(5)), "5m");
        assert_eq!(ago(now, now - chrono::Duration::hours(3)), "3h");
        assert_eq!(ago(now, now + chrono::Duration::seconds(5)), "0s");
    }
}
