//! Log search over CloudWatch Logs.
//!
//! Every environment's lines go to the log group `/slipway/<app>/<env>`, one
//! stream per instance (named by its id), each line `<process> <message>`
//! where the process is `<type>.<n>` (`web.1`) or `agent`. Instances ship
//! them with the CloudWatch agent; the local platform's fleet ships its
//! processes' output the same way into the emulator. Search is
//! `FilterLogEvents`, bounded in time, calls and results, so one request
//! never scans a whole group.

use std::time::Duration as StdDuration;

use aws_sdk_cloudwatchlogs::Client;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use slipway_core::names::EnvRef;
use slipway_core::names::InstanceId;
use slipway_core::on_first_use::OnFirstUse;

/// The most lines one search returns.
pub const MAX_LIMIT: usize = 1000;
/// FilterLogEvents calls one search may make (each reads up to 1 MB).
const MAX_CALLS: usize = 10;
/// The longest span one search covers.
const MAX_SPAN_DAYS: i64 = 31;

pub fn group_name(env: &EnvRef) -> String {
    format!("/slipway/{}/{}", env.app, env.env)
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{0}")]
    BadQuery(String),
    #[error("CloudWatch Logs: {0}")]
    Aws(String),
}

/// One line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEvent {
    /// CloudWatch's id of the line: a follower skips the ones it has seen.
    pub id: String,
    pub timestamp: DateTime<Utc>,
    pub instance: String,
    pub process: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    pub events: Vec<LogEvent>,
    /// More lines in the span: pass as `next` to continue.
    pub next: Option<String>,
}

/// A search, parsed: the API and the UI build it from the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// Lines containing this text (a literal phrase).
    pub text: Option<String>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub instance: Option<InstanceId>,
    /// `web` matches every `web.<n>`; `web.2` only that one.
    pub process: Option<String>,
    pub limit: usize,
    pub next: Option<String>,
}

/// `15m`, `2h`, `7d`, `30s` ago, or an RFC 3339 time.
pub fn parse_time(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, LogError> {
    let bad = || {
        LogError::BadQuery(format!(
            "time {:?} is neither a duration such as 15m, 2h, 7d nor an RFC 3339 time",
            raw.chars().take(40).collect::<String>()
        ))
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    let split = raw.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = raw.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let span = match unit {
        "s" => Duration::try_seconds(n),
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        _ => None,
    }
    .filter(|d| *d <= Duration::days(MAX_SPAN_DAYS * 12))
    .ok_or_else(bad)?;
    Ok(now - span)
}

impl LogQuery {
    /// Checks and bounds what a client asked for; `since` defaults to an
    /// hour ago, `until` to now, `limit` to 200.
    #[allow(clippy::too_many_arguments)]
    pub fn parse(
        text: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
        instance: Option<&str>,
        process: Option<&str>,
        limit: Option<usize>,
        next: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Self, LogError> {
        let text = match nonempty(text) {
            Some(t) if t.chars().count() > 200 => {
                return Err(LogError::BadQuery(
                    "the search text is longer than 200 characters".into(),
                ));
            }
            Some(t) if t.chars().any(|c| c.is_control() || c == '"') => {
                return Err(LogError::BadQuery(
                    "the search text may not contain quotes or control characters".into(),
                ));
            }
            t => t.map(str::to_owned),
        };
        let since = match nonempty(since) {
            Some(s) => parse_time(s, now)?,
            None => now - Duration::hours(1),
        };
        let until = match nonempty(until) {
            Some(u) => parse_time(u, now)?,
            None => now,
        };
        if until < since {
            return Err(LogError::BadQuery("until is before since".into()));
        }
        if until - since > Duration::days(MAX_SPAN_DAYS) {
            return Err(LogError::BadQuery(format!(
                "one search covers at most {MAX_SPAN_DAYS} days"
            )));
        }
        let instance = nonempty(instance)
            .map(InstanceId::parse)
            .transpose()
            .map_err(|e| LogError::BadQuery(e.to_string()))?;
        let process = match nonempty(process) {
            Some(p) if valid_process(p) => Some(p.to_owned()),
            Some(_) => {
                return Err(LogError::BadQuery(
                    "a process is a type such as web, or web.2".into(),
                ));
            }
            None => None,
        };
        let next = match nonempty(next) {
            Some(n) if n.len() <= 2048 && n.bytes().all(|b| b.is_ascii_graphic()) => {
                Some(n.to_owned())
            }
            Some(_) => {
                return Err(LogError::BadQuery(
                    "next is not a token this API gave".into(),
                ));
            }
            None => None,
        };
        Ok(Self {
            text,
            since,
            until,
            instance,
            process,
            limit: limit.unwrap_or(200).clamp(1, MAX_LIMIT),
            next,
        })
    }

    fn matches_process(&self, process: &str) -> bool {
        match &self.process {
            None => true,
            Some(p) => {
                process == p
                    || process
                        .strip_prefix(p.as_str())
                        .is_some_and(|r| r.starts_with('.'))
            }
        }
    }
}

fn nonempty(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty())
}

fn valid_process(p: &str) -> bool {
    p.len() <= 64
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Splits `<process> <message>`; a line without a process is the agent's.
pub fn split_line(line: &str) -> (&str, &str) {
    match line.split_once(' ') {
        Some((p, m)) if !p.is_empty() && valid_process(p) => (p, m),
        _ => ("", line),
    }
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// CloudWatch Logs, as log search needs it.
#[derive(Clone, Debug)]
pub struct Logs {
    client: OnFirstUse<Client>,
}

impl Logs {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            client: OnFirstUse::new(config, Client::new),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Lines of `env` matching `query`, oldest first.
    pub async fn search(&self, env: &EnvRef, query: &LogQuery) -> Result<LogPage, LogError> {
        let mut events = Vec::new();
        let mut token = query.next.clone();
        for _ in 0..MAX_CALLS {
            let mut call = self
                .client
                .filter_log_events()
                .log_group_name(group_name(env))
                .start_time(millis(query.since))
                .end_time(millis(query.until))
                .limit((query.limit - events.len()).clamp(1, 10_000) as i32)
                .set_next_token(token.take());
            if let Some(text) = &query.text {
                call = call.filter_pattern(format!("\"{text}\""));
            }
            if let Some(id) = &query.instance {
                call = call.log_stream_names(id.as_str());
            }
            let out = match call.send().await {
                Ok(out) => out,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
                {
                    // No line was ever shipped for this environment.
                    return Ok(LogPage {
                        events: Vec::new(),
                        next: None,
                    });
                }
                Err(e) => {
                    return Err(LogError::Aws(
                        aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
                    ));
                }
            };
            for e in out.events.unwrap_or_default() {
                let message = e.message.unwrap_or_default();
                let (process, text) = split_line(message.trim_end());
                if !query.matches_process(process) {
                    continue;
                }
                events.push(LogEvent {
                    id: e.event_id.unwrap_or_default(),
                    timestamp: Utc
                        .timestamp_millis_opt(e.timestamp.unwrap_or_default())
                        .single()
                        .unwrap_or_default(),
                    instance: e.log_stream_name.unwrap_or_default(),
                    process: if process.is_empty() {
                        "agent".into()
                    } else {
                        process.to_owned()
                    },
                    message: text.to_owned(),
                });
            }
            token = out.next_token;
            if token.is_none() || events.len() >= query.limit {
                break;
            }
        }
        events.sort_by(|a, b| (a.timestamp, &a.id).cmp(&(b.timestamp, &b.id)));
        events.truncate(query.limit);
        Ok(LogPage {
            events,
            next: token,
        })
    }
}

/// How long a follower (`ship logs -f`) waits between searches.
pub const FOLLOW_EVERY: StdDuration = StdDuration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-29T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn times_are_durations_ago_or_rfc3339() {
        assert_eq!(
            parse_time("15m", now()).unwrap(),
            now() - Duration::minutes(15)
        );
        assert_eq!(parse_time("2d", now()).unwrap(), now() - Duration::days(2));
        assert_eq!(
            parse_time("2026-11-29T11:00:00Z", now()).unwrap(),
            now() - Duration::hours(1)
        );
        for bad in [
            "",
            "15",
            "m",
            "15w",
            "-5m",
            "99999999999999999999h",
            "yesterday",
        ] {
            assert!(parse_time(bad, now()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_query_is_bounded_and_its_inputs_checked() {
        let q = LogQuery::parse(None, None, None, None, None, Some(5000), None, now()).unwrap();
        assert_eq!(q.limit, MAX_LIMIT);
        assert_eq!(q.since, now() - Duration::hours(1));
        let parse = |text, since, process| {
            LogQuery::parse(text, since, None, None, process, None, None, now())
        };
        assert!(parse(Some("say \"hi\""), None, None).is_err());
        assert!(parse(Some("a\nb"), None, None).is_err());
        assert!(parse(None, Some("60d"), None).is_err(), "more than 31 days");
        assert!(parse(None, None, Some("web;rm")).is_err());
        assert!(
            LogQuery::parse(None, None, None, Some("i-../x"), None, None, None, now()).is_err()
        );
        assert!(parse(Some("GET /"), Some("2h"), Some("web")).is_ok());
    }

    #[test]
    fn a_process_type_matches_each_of_its_processes_only() {
        let q = LogQuery::parse(None, None, None, None, Some("web"), None, None, now()).unwrap();
        assert!(q.matches_process("web.1") && q.matches_process("web"));
        assert!(!q.matches_process("webhook.1") && !q.matches_process("worker.1"));
    }

    #[test]
    fn lines_split_into_process_and_message() {
        assert_eq!(split_line("web.1 GET / 200"), ("web.1", "GET / 200"));
        assert_eq!(split_line("no-space"), ("", "no-space"));
        assert_eq!(split_line("\"quoted\" x"), ("", "\"quoted\" x"));
    }
}
