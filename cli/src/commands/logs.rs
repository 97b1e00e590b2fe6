//! `ship logs`: search an environment's log lines, or follow them (`-f`)
//! by polling with a cursor: each poll asks from the newest timestamp seen
//! and skips the lines already printed at it, so nothing is shown twice
//! and nothing between polls is missed.

use std::collections::HashSet;

use slipway_http::wire::{LogEvent, LogPage};

use super::Ctx;
use crate::output::word;

/// What to search for.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Keep printing new lines as they arrive
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only lines containing this text
    #[arg(long)]
    pub grep: Option<String>,
    /// How far back: 15m, 2h, 7d, or an RFC 3339 time
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// Only this instance's lines
    #[arg(long)]
    pub instance: Option<String>,
    /// Only this process type (web) or process (web.2)
    #[arg(long)]
    pub process: Option<String>,
    /// At most this many lines per search
    #[arg(long, default_value_t = 500)]
    pub limit: usize,
}

fn query(args: &LogArgs, since: &str, next: Option<&str>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("since", since);
    q.append_pair("limit", &args.limit.to_string());
    for (k, v) in [
        ("q", &args.grep),
        ("instance", &args.instance),
        ("process", &args.process),
    ] {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    if let Some(n) = next {
        q.append_pair("next", n);
    }
    q.finish()
}

fn print_line(event: &LogEvent, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(event).expect("a log line serialises")
        );
    } else {
        println!(
            "{} {} {}: {}",
            word(&event.timestamp),
            event.instance,
            event.process,
            event.message
        );
    }
}

/// One search, following `next` until the span is exhausted.
async fn search(ctx: &Ctx, args: &LogArgs, since: &str) -> anyhow::Result<Vec<LogEvent>> {
    let mut events = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page: LogPage = ctx
            .client
            .get(&ctx.path(&format!("/logs?{}", query(args, since, next.as_deref()))))
            .await?;
        events.extend(page.events);
        next = page.next;
        if next.is_none() || events.len() >= args.limit {
            return Ok(events);
        }
    }
}

pub async fn logs(ctx: &Ctx, args: LogArgs) -> anyhow::Result<bool> {
    let mut since = args.since.clone();
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let events = search(ctx, &args, &since).await?;
        let newest = events.iter().map(|e| e.timestamp).max();
        for e in &events {
            if seen.insert(e.id.clone()) {
                print_line(e, ctx.json);
            }
        }
        if !args.follow {
            return Ok(true);
        }
        if let Some(newest) = newest {
            // Keep only the ids at the newest timestamp: the next poll
            // starts there and sees them again.
            seen = events
                .iter()
                .filter(|e| e.timestamp == newest)
                .map(|e| e.id.clone())
                .collect();
            since = newest.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        }
        tokio::time::sleep(slipway_control::logs::FOLLOW_EVERY).await;
    }
}
