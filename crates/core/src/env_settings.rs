//! `<app>/<env>/settings.json`: how an environment's instances run its app.
//!
//! The agent reads these on every deploy (port, health check, process
//! counts, timeouts, releases kept); the rollout engine adds its own fields.
//! Unknown fields are ignored so an older agent keeps working when the
//! control plane learns new settings; every known field has a default, so an
//! environment without the file runs with the original article's defaults
//! (port 8000, `/health`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::strategy::Strategy;

/// A settings file larger than this is not a settings file.
pub const MAX_SETTINGS_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvSettingsError {
    #[error("settings.json is not valid: {0}")]
    Json(String),
    #[error("settings.json: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnvSettings {
    /// The port the web process listens on (`$PORT`).
    pub port: u16,
    /// The path the health check requests; a 2xx answer means healthy.
    pub health_path: String,
    /// How long a new release has to become healthy.
    pub health_timeout_secs: u64,
    /// How long the Procfile's `build:` (and `release:`) command may run.
    pub build_timeout_secs: u64,
    /// How long a process has between SIGTERM and SIGKILL.
    pub stop_grace_secs: u64,
    /// Processes per instance by type, for types other than `web` (always
    /// one per instance: scale web by instances). Types not listed run one.
    pub processes: BTreeMap<String, u32>,
    /// Releases kept on each instance (at least 2: current and previous).
    pub releases_kept: u32,
    /// How a deploy moves through the group unless it says otherwise.
    pub strategy: Strategy,
    /// The share of instances that keeps serving during a deploy, percent.
    pub min_healthy_percent: u8,
    /// Whether a failed deploy puts the previous release back.
    pub auto_rollback: bool,
    /// How long the load balancer has to call a batch healthy.
    pub lb_health_timeout_secs: u64,
    /// A release made from an S3 upload is deployed at once.
    pub auto_deploy: bool,
    /// A Slack-compatible incoming webhook told about deploys. A secret
    /// (whoever has it can post): shown only as [`EnvSettings::redacted`].
    pub notify_url: Option<String>,
    /// A syslog-over-TLS destination (`host:port`, Papertrail-compatible)
    /// the instances forward the app's lines to, besides CloudWatch Logs.
    /// Whoever has it can write there: shown only as `host:…`.
    pub syslog: Option<String>,
    /// How a batch changes instances: out of service then back (standby),
    /// or new instances first (surge); `auto` surges where standby would
    /// break the group's minimum size or the minimum healthy share.
    pub surge: SurgeMode,
    /// What the reconciler does with a deploy whose worker died: go on
    /// from the last finished step, or roll back.
    pub on_worker_lost: OnWorkerLost,
    /// A deploy or cycle asked for while another holds the environment
    /// waits its turn (first in, first out) instead of being refused.
    pub queue: bool,
    /// With `queue`, a newly queued deploy replaces the deploys still
    /// waiting (only the latest release matters).
    pub latest_wins: bool,
    /// Before the first batch, every instance installs the release at once
    /// while it serves (`slipway-agent prepare`), so each batch only
    /// switches and restarts. Off, each batch installs in turn.
    pub prepare: bool,
}

/// How a deploy's batches replace instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SurgeMode {
    #[default]
    Auto,
    Always,
    Never,
}

/// What becomes of a deploy whose worker is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnWorkerLost {
    #[default]
    Continue,
    RollBack,
}

/// The longest a worker runs: Lambda's limit, the deploy and cycle
/// functions' `Timeout` in `infra/template.yaml` (a test keeps them equal).
pub const WORKER_LIMIT_SECS: u64 = 900;
/// What a worker keeps aside from its limit beyond one whole batch: to
/// save the record and hand over.
pub const WORKER_MARGIN_SECS: u64 = 60;
/// What the agent may take besides build and health: fetching, extracting,
/// starting.
pub const AGENT_OVERHEAD_SECS: u64 = 120;

impl Default for EnvSettings {
    fn default() -> Self {
        Self {
            port: 8000,
            health_path: "/health".into(),
            health_timeout_secs: 60,
            build_timeout_secs: 540,
            stop_grace_secs: 10,
            processes: BTreeMap::new(),
            releases_kept: 5,
            strategy: Strategy::OneAtATime,
            min_healthy_percent: 50,
            auto_rollback: true,
            lb_health_timeout_secs: 120,
            auto_deploy: false,
            notify_url: None,
            syslog: None,
            surge: SurgeMode::Auto,
            on_worker_lost: OnWorkerLost::Continue,
            queue: false,
            latest_wins: false,
            prepare: true,
        }
    }
}

/// What a webhook URL shows of itself: scheme and host, never the path
/// (Slack's carries the secret).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let host = rest.split('/').next().unwrap_or_default();
    format!("{scheme}://{host}/…")
}

/// At most this many processes of one type on one instance.
pub const MAX_PROCESSES_PER_TYPE: u32 = 32;

impl EnvSettings {
    pub fn parse(bytes: &[u8]) -> Result<Self, EnvSettingsError> {
        if bytes.len() > MAX_SETTINGS_BYTES {
            return Err(EnvSettingsError::Invalid(format!(
                "larger than {MAX_SETTINGS_BYTES} bytes"
            )));
        }
        let json = |e: serde_json::Error| EnvSettingsError::Json(e.to_string());
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(json)?;
        if !value.is_object() {
            return Err(EnvSettingsError::Json("expected a JSON object".into()));
        }
        let settings: Self = serde_json::from_value(value).map_err(json)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), EnvSettingsError> {
        let bad = |m: String| Err(EnvSettingsError::Invalid(m));
        if self.port == 0 {
            return bad("port must be between 1 and 65535".into());
        }
        let path = &self.health_path;
        if !path.starts_with('/') || path.len() > 256 || !path.bytes().all(|b| b.is_ascii_graphic())
        {
            return bad(
                "health_path must start with / and be at most 256 printable characters".into(),
            );
        }
        for (name, secs) in [
            ("health_timeout_secs", self.health_timeout_secs),
            ("build_timeout_secs", self.build_timeout_secs),
        ] {
            if !(1..=3600).contains(&secs) {
                return bad(format!("{name} must be between 1 and 3600"));
            }
        }
        if self.stop_grace_secs > 600 {
            return bad("stop_grace_secs must be at most 600".into());
        }
        if self.min_healthy_percent > 100 {
            return bad("min_healthy_percent must be between 0 and 100".into());
        }
        if !(1..=3600).contains(&self.lb_health_timeout_secs) {
            return bad("lb_health_timeout_secs must be between 1 and 3600".into());
        }
        if let Some(url) = &self.notify_url {
            // https, or plain http to this machine (a local stand-in).
            let host = url
                .strip_prefix("https://")
                .or_else(|| {
                    url.strip_prefix("http://")
                        .filter(|r| r.starts_with("127.0.0.1:") || r.starts_with("localhost:"))
                })
                .and_then(|r| r.split('/').next());
            if url.len() > 512
                || !url.bytes().all(|b| b.is_ascii_graphic())
                || host.is_none_or(str::is_empty)
            {
                return bad("notify_url must be an https:// URL of at most 512 characters".into());
            }
        }
        if let Some(destination) = &self.syslog {
            crate::syslog::SyslogDestination::parse(destination)
                .map_err(|e| EnvSettingsError::Invalid(e.to_string()))?;
        }
        let batch = self.batch_secs();
        if batch + WORKER_MARGIN_SECS > WORKER_LIMIT_SECS {
            return bad(format!(
                "one batch may take {batch} s (build_timeout_secs + health_timeout_secs + {AGENT_OVERHEAD_SECS} on the instance, then lb_health_timeout_secs), which with {WORKER_MARGIN_SECS} s to spare must fit in a worker's {WORKER_LIMIT_SECS} s: lower one of them"
            ));
        }
        if self.latest_wins && !self.queue {
            return bad("latest_wins needs queue".into());
        }
        if self.releases_kept < 2 {
            return bad("releases_kept must be at least 2 (current and previous)".into());
        }
        for (name, count) in &self.processes {
            if name == "web" && *count != 1 {
                return bad("web runs once per instance: scale it with instances".into());
            }
            if *count > MAX_PROCESSES_PER_TYPE {
                return bad(format!(
                    "processes.{name} must be at most {MAX_PROCESSES_PER_TYPE}"
                ));
            }
        }
        Ok(())
    }

    /// The settings as the API and UI show them: the webhook's secret path
    /// hidden.
    pub fn redacted(&self) -> Self {
        Self {
            notify_url: self.notify_url.as_deref().map(redact_url),
            syslog: self
                .syslog
                .as_deref()
                .map(crate::syslog::SyslogDestination::redacted),
            ..self.clone()
        }
    }

    /// The longest the agent may take on one instance.
    pub fn agent_secs(&self) -> u64 {
        self.build_timeout_secs + self.health_timeout_secs + AGENT_OVERHEAD_SECS
    }

    /// The longest preparing may take on an instance: fetching and the
    /// build.
    pub fn prepare_secs(&self) -> u64 {
        self.build_timeout_secs + AGENT_OVERHEAD_SECS
    }

    /// The longest one batch may take: the agent, then the load balancer.
    pub fn batch_secs(&self) -> u64 {
        self.agent_secs() + self.lb_health_timeout_secs
    }

    /// How many processes of `process_type` run on one instance.
    pub fn count(&self, process_type: &str) -> u32 {
        if process_type == "web" {
            return 1;
        }
        self.processes.get(process_type).copied().unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_object_means_the_original_articles_defaults() {
        let s = EnvSettings::parse(b"{}").unwrap();
        assert_eq!(s.port, 8000);
        assert_eq!(s.health_path, "/health");
        assert_eq!(s.count("web"), 1);
        assert_eq!(s.count("worker"), 1);
    }

    #[test]
    fn unknown_fields_are_ignored_and_known_ones_read() {
        let s = EnvSettings::parse(
            br#"{"port": 9000, "health_path": "/up", "processes": {"worker": 3, "clock": 0}, "future_setting": "x"}"#,
        )
        .unwrap();
        assert_eq!(s.port, 9000);
        assert_eq!(s.health_path, "/up");
        assert_eq!(s.count("worker"), 3);
        assert_eq!(s.count("clock"), 0, "a type can be switched off");
    }

    #[test]
    fn the_webhook_url_is_shown_without_its_secret_path() {
        let s = EnvSettings::parse(
            br#"{"notify_url": "https://hooks.slack.com/services/T000/B000/XXXXSECRET"}"#,
        )
        .unwrap();
        let shown = serde_json::to_string(&s.redacted()).unwrap();
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("https://hooks.slack.com/…"), "{shown}");
    }

    #[test]
    fn the_syslog_destination_is_shown_without_its_port() {
        let s = EnvSettings::parse(br#"{"syslog": "logs5.papertrailapp.com:12345"}"#).unwrap();
        let shown = serde_json::to_string(&s.redacted()).unwrap();
        assert!(!shown.contains("12345"), "{shown}");
        assert!(shown.contains("logs5.papertrailapp.com:…"), "{shown}");
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        for (json, needle) in [
            (r#"{"port": 0}"#, "port"),
            (r#"{"port": 70000}"#, "not valid"),
            (r#"{"health_path": "health"}"#, "health_path"),
            (r#"{"health_path": "/a b"}"#, "health_path"),
            (r#"{"health_timeout_secs": 0}"#, "health_timeout_secs"),
            (r#"{"releases_kept": 1}"#, "releases_kept"),
            (r#"{"build_timeout_secs": 700}"#, "must fit in a worker"),
            (
                r#"{"lb_health_timeout_secs": 700, "build_timeout_secs": 60}"#,
                "lower one of them",
            ),
            (r#"{"latest_wins": true}"#, "latest_wins needs queue"),
            (r#"{"surge": "sometimes"}"#, "not valid"),
            (r#"{"processes": {"web": 2}}"#, "web runs once"),
            (r#"{"processes": {"worker": 1000}}"#, "processes.worker"),
            (r#"{"strategy": "fast"}"#, "strategy"),
            (r#"{"min_healthy_percent": 101}"#, "min_healthy_percent"),
            ("[]", "not valid"),
            (r#"{"notify_url": "http://hooks.example/x"}"#, "notify_url"),
            (
                r#"{"notify_url": "http://127.0.0.1.evil.example/x"}"#,
                "notify_url",
            ),
            (r#"{"notify_url": "https:///x"}"#, "notify_url"),
            (r#"{"notify_url": "https://h/a b"}"#, "notify_url"),
            (r#"{"auto_deploy": "yes"}"#, "not valid"),
            (
                r#"{"syslog": "logs.example.com"}"#,
                "syslog must be host:port",
            ),
            (
                r#"{"syslog": "x\" action(type=\"omfile\"):514"}"#,
                "syslog must be host:port",
            ),
        ] {
            let err = EnvSettings::parse(json.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
