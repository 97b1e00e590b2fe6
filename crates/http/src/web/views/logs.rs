//! The log search page and the search form the environment page shows.

use maud::{Markup, html};

use super::{env_crumbs, env_url, page};
use crate::api::logs::SearchParams;
use slipway_control::logs::LogPage;
use slipway_core::names::EnvRef;

pub fn logs_url(env: &EnvRef) -> String {
    format!("{}/logs", env_url(env))
}

pub(super) fn search_form(env: &EnvRef, p: &SearchParams) -> Markup {
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
