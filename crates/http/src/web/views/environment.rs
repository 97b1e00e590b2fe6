//! The environment page: formation by zone with sparklines, releases to
//! deploy, history, masked config, the way to terminate it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::{
    POLL, deploy_url, env_crumbs, env_url, instance_healthy, page, release_text, status, time, took,
};
use crate::api::logs::SearchParams;
use slipway_control::fleet::{Formation, InstanceView};
use slipway_control::jobs::lock::Lock;
use slipway_control::metrics::{Point, ProcessUsage, Series, WINDOW_MINUTES};
use slipway_control::rollout::Strategy;
use slipway_control::rollout::record::DeployRecord;
use slipway_core::ids::JobId;
use slipway_core::maintenance::{DEFAULT_MESSAGE, Maintenance};
use slipway_core::manifest::Manifest;
use slipway_core::names::{EnvRef, ReleaseId};

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

fn lock_line(env: &EnvRef, lock: &Lock) -> Markup {
    html! {
        p.notice role="status" {
            @match &lock.job {
                JobId::Deploy(id) => {
                    "Deploy " a href=(deploy_url(env, id)) { (id) }
                }
                JobId::Cycle(id) => {
                    "Cycle " span.mono { (id) }
                }
            }
            " by " (lock.user) " holds this environment; deploys and terminations wait for it."
        }
    }
}

const SPARK_W: f64 = 120.0;
const SPARK_H: f64 = 24.0;

/// A percent series as a small inline SVG (0–100% bottom to top over the
/// last minutes), deploy times marked, and the latest value in words.
/// `3.2% CPU · 41 MB`, or what is missing said in words.
fn process_usage(usage: &ProcessUsage) -> String {
    let cpu = match usage.cpu_percent {
        Some(v) if v < 10.0 => format!("{v:.1}% CPU"),
        Some(v) => format!("{v:.0}% CPU"),
        None => "CPU not reported".to_owned(),
    };
    let memory = match usage.memory_bytes {
        Some(b) if b >= 1024.0 * 1024.0 * 1024.0 => format!("{:.1} GB", b / 1024f64.powi(3)),
        Some(b) => format!("{:.0} MB", b / 1024f64.powi(2)),
        None => "memory not reported".to_owned(),
    };
    format!("{cpu} · {memory}")
}

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

/// Maintenance mode: what the page says and who gets through, with the
/// form that takes it down; else the form that puts it up.
fn maintenance_section(env: &EnvRef, maintenance: Option<&Maintenance>) -> Markup {
    let action = format!("{}/maintenance", env_url(env));
    html! {
        @if let Some(m) = maintenance {
            div.notice.error #maintenance role="status" {
                strong { "Maintenance on." }
                " The load balancer answers 503 “" (m.message) "” to everyone"
                @if m.allow.is_empty() { "." } @else {
                    " but " span.mono { (m.allowed()) } "."
                }
                form.inline method="post" action=(action) {
                    input type="hidden" name="state" value="off";
                    " "
                    button type="submit" { "Turn maintenance off" }
                }
            }
        } @else {
            details #maintenance {
                summary { "Maintenance mode" }
                form method="post" action=(action) {
                    input type="hidden" name="state" value="on";
                    p {
                        label for="maintenance-message" { "Message" }
                        br;
                        input #maintenance-message type="text" name="message" maxlength="900" placeholder=(DEFAULT_MESSAGE);
                    }
                    p {
                        label for="maintenance-allow" { "Addresses that still reach the app (up to five, comma-separated)" }
                        br;
                        input #maintenance-allow type="text" name="allow" placeholder="203.0.113.0/24";
                    }
                    button.danger type="submit" { "Turn maintenance on" }
                }
            }
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
        @if !formation.load_balancers.is_empty() {
            (maintenance_section(env, formation.maintenance.as_ref()))
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
                                        @if !series.processes.is_empty() {
                                            ul.processes aria-label={ "Processes on " (i.id) } {
                                                @for (name, usage) in &series.processes {
                                                    li { (name) " " span.muted { (process_usage(usage)) } }
                                                }
                                            }
                                        }
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
                                td { (status(d.status)) @if let Some(n) = d.queue_position.filter(|_| d.waiting) { " (number " (n) " in the queue)" } }
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
        (super::logs::search_form(env, &SearchParams::default()))
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_process_says_its_cpu_and_memory_in_words_and_what_did_not_report() {
        let both = ProcessUsage {
            cpu_percent: Some(3.24),
            memory_bytes: Some(41.0 * 1024.0 * 1024.0),
        };
        let busy_and_big = ProcessUsage {
            cpu_percent: Some(151.0),
            memory_bytes: Some(2.5 * 1024.0 * 1024.0 * 1024.0),
        };
        assert_eq!(process_usage(&both), "3.2% CPU · 41 MB");
        assert_eq!(process_usage(&busy_and_big), "151% CPU · 2.5 GB");
        assert_eq!(
            process_usage(&ProcessUsage::default()),
            "CPU not reported · memory not reported"
        );
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
}
