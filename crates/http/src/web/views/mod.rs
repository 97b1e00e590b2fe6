//! The pages, as pure functions from what a handler gathered to HTML.
//!
//! maud escapes every interpolated value, so names, descriptions and agent
//! output cannot inject markup. Config values never reach this module: it
//! is handed config keys only. Status is always said in words (with a
//! symbol); colour only repeats it.

mod deploy;
mod environment;
mod logs;

pub use deploy::{deploy, deploy_logs_url};
pub use environment::{EnvPage, environment};
pub use logs::{logs, logs_url};

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use slipway_control::fleet::InstanceView;
use slipway_control::rollout::record::DeployRecord;
use slipway_core::deploys::DeployStatus;
use slipway_core::names::InstanceId;
use slipway_core::names::{EnvRef, ReleaseId};

use super::HTMX;

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

pub fn env_url(env: &EnvRef) -> String {
    format!("/ui/apps/{}/envs/{}", env.app, env.env)
}

pub fn deploy_url(env: &EnvRef, id: &slipway_core::ids::DeployId) -> String {
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

    #[test]
    fn ages_are_short_and_never_negative() {
        let now = Utc::now();
        assert_eq!(ago(now, now - chrono::Duration::seconds(59)), "59s");
        assert_eq!(ago(now, now - chrono::Duration::minutes(5)), "5m");
        assert_eq!(ago(now, now - chrono::Duration::hours(3)), "3h");
        assert_eq!(ago(now, now + chrono::Duration::seconds(5)), "0s");
    }
}
