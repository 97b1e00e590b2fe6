//! A deploy's page: status, batches and each instance's result, live
//! while it runs.

use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::{
    POLL, deploy_url, env_crumbs, env_url, logs_url, page, release_text, status, time, took,
};
use slipway_control::rollout::record::{Batch, BatchStatus, DeployRecord};
use slipway_core::deploys::DeployStatus;
use slipway_core::names::EnvRef;

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
            p #deploy-status role="status" {
                (status(d.status))
                @if let Some(n) = d.queue_position.filter(|_| d.waiting) { " — waiting its turn, number " (n) " in the queue" }
                @if let Some(c) = &d.cause { " — " (c) }
            }
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
            @if let Some(p) = &d.prepare {
                h2 { "Prepare" }
                p {
                    @if p.failed.is_empty() { "✓ installed on " (p.instances) " instances at once" }
                    @else { "✗ failed on " (p.failed.len()) " of " (p.instances) " instances" }
                    span.muted { " in " ((p.finished_at - p.started_at).num_milliseconds() as f64 / 1000.0) " s" }
                }
                @for r in p.failed.iter().take(3) {
                    p.mono { (r.instance) }
                    @if !r.output_tail.is_empty() { pre { (r.output_tail) } }
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
                h3 { "Batch " (n + 1) " " span.muted { @if live { "waiting" } @else { "not run" } } }
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
