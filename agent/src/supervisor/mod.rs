//! Process supervision: what starts, stops and watches an app's processes.
//!
//! `systemd` on instances (units generated from the Procfile, output to the
//! journal) and `direct` for the local platform and tests (process groups,
//! pidfiles and log files). Both run the same plan: every long-running
//! Procfile type, as many times as the environment's settings say (`web`
//! once, on `$PORT`), in `<root>/<app>/current` with the release's env file.

pub mod cloudwatch;
pub mod direct;
pub mod rsyslog;
pub mod systemd;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use slipway_core::env_settings::EnvSettings;
use slipway_core::names::{AppName, EnvName, ReleaseId};
use slipway_core::procfile::Procfile;

use crate::layout::Layout;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Systemctl(String),
    #[error("the env file is damaged: {0}")]
    EnvFile(#[from] crate::envfile::EnvFileError),
    /// What the agent will not do, in words.
    #[error("{0}")]
    Refused(String),
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SupervisorError {
    let what = what.into();
    move |source| SupervisorError::Io { what, source }
}

/// Runs a tool the instance's services are managed with (rsyslogd,
/// systemctl, the CloudWatch agent's ctl); `Err` says which failed and
/// why, in its own words: the first line of its errors that says `error`,
/// else the last thing it said.
pub(crate) async fn run_tool(program: &std::path::Path, args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| format!("running {}: {e}", program.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let (stderr, stdout) = (
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
    );
    let last = |text: &str| {
        text.lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(str::to_owned)
    };
    let reason = stderr
        .lines()
        .map(str::trim)
        .find(|l| l.contains("error"))
        .map(str::to_owned)
        .or_else(|| last(&stderr))
        .or_else(|| last(&stdout))
        .unwrap_or_else(|| "no output".to_owned());
    Err(format!(
        "{} failed ({}): {reason}",
        program.display(),
        out.status
    ))
}

/// What to run: one release of one app.
#[derive(Debug, Clone)]
pub struct Plan {
    pub app: AppName,
    pub env: EnvName,
    pub release: ReleaseId,
    pub procfile: Procfile,
    pub settings: EnvSettings,
    pub port: u16,
    pub env_file: PathBuf,
}

/// One process to run: `web.1`, `worker.2`, …
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub process_type: String,
    pub n: u32,
    pub command: String,
}

impl Proc {
    pub fn name(&self) -> String {
        format!("{}.{}", self.process_type, self.n)
    }
}

impl Plan {
    pub fn processes(&self) -> Vec<Proc> {
        self.procfile
            .processes()
            .flat_map(|(t, command)| {
                (1..=self.settings.count(t)).map(move |n| Proc {
                    process_type: t.to_owned(),
                    n,
                    command: command.to_owned(),
                })
            })
            .collect()
    }

    /// Variables every process gets besides the config (`PORT` only for
    /// web; the rest tell a process who it is).
    pub fn extra_env(&self, proc: &Proc) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([
            ("SLIPWAY_APP".to_owned(), self.app.to_string()),
            ("SLIPWAY_ENV".to_owned(), self.env.to_string()),
            ("SLIPWAY_RELEASE".to_owned(), self.release.to_string()),
            ("SLIPWAY_PROCESS".to_owned(), proc.name()),
        ]);
        if proc.process_type == "web" {
            env.insert("PORT".to_owned(), self.port.to_string());
        }
        env
    }
}

/// One process as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessStatus {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    pub running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseId>,
}

pub enum Supervisor {
    Direct(direct::Direct),
    Systemd(systemd::Systemd),
}

impl Supervisor {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Direct(_) => "direct",
            Self::Systemd(_) => "systemd",
        }
    }

    /// Stops every process of the app; waits until they are gone.
    pub async fn stop(&self, layout: &Layout) -> Result<(), SupervisorError> {
        match self {
            Self::Direct(d) => d.stop(layout).await,
            Self::Systemd(s) => s.stop(layout).await,
        }
    }

    /// Starts the plan's processes (none of the app's may be running).
    pub async fn start(&self, layout: &Layout, plan: &Plan) -> Result<(), SupervisorError> {
        match self {
            Self::Direct(d) => d.start(layout, plan).await,
            Self::Systemd(s) => s.start(layout, plan).await,
        }
    }

    /// `Err` with the reason as soon as a started process has exited.
    pub async fn check(&self, layout: &Layout) -> Result<(), String> {
        match self {
            Self::Direct(d) => d.check(layout),
            Self::Systemd(s) => s.check(layout).await,
        }
    }

    /// Tells the metrics collector which processes run: the CloudWatch
    /// agent on instances; `None` where nothing needs telling (the local
    /// fleet reads the direct supervisor's pidfiles itself).
    pub async fn watch(
        &self,
        layout: &Layout,
        plan: &Plan,
    ) -> Option<Result<cloudwatch::Applied, String>> {
        match self {
            Self::Direct(_) => None,
            Self::Systemd(s) => s.watch(layout, plan).await,
        }
    }

    /// Forwards the app's lines to the environment's `syslog` destination
    /// (instances only: the local fleet has no rsyslog).
    pub async fn forward_logs(&self, plan: &Plan) -> Option<Result<rsyslog::Forward, String>> {
        match self {
            Self::Direct(_) => None,
            Self::Systemd(s) => s.forward_logs(plan).await,
        }
    }

    pub async fn processes(&self, layout: &Layout) -> Vec<ProcessStatus> {
        match self {
            Self::Direct(d) => d.processes(layout),
            Self::Systemd(s) => s.processes(layout).await,
        }
    }
}

/// The plan the supervisor's tests render: web, two workers and a build
/// step, with a command that needs quoting.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn plan() -> Plan {
        let mut settings = EnvSettings::default();
        settings.processes.insert("worker".into(), 2);
        Plan {
            app: "hello".parse().unwrap(),
            env: "prod".parse().unwrap(),
            release: ReleaseId::new(7).unwrap(),
            procfile: Procfile::parse(
                "web: python3 app.py --port $PORT --name \"100%\"\nworker: ./work\nbuild: make\n",
            )
            .unwrap(),
            settings,
            port: 8000,
            env_file: "/srv/slipway/hello/env/r7.env".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_runs_web_once_and_other_types_by_their_counts() {
        let mut settings = EnvSettings::default();
        settings.processes.insert("worker".into(), 2);
        settings.processes.insert("clock".into(), 0);
        let plan = Plan {
            app: "hello".parse().unwrap(),
            env: "prod".parse().unwrap(),
            release: ReleaseId::new(3).unwrap(),
            procfile: Procfile::parse(
                "web: ./serve\nworker: ./work\nclock: ./tick\nbuild: make\nrelease: ./migrate\n",
            )
            .unwrap(),
            settings,
            port: 9000,
            env_file: "/x/env/r3.env".into(),
        };
        let names: Vec<String> = plan.processes().iter().map(Proc::name).collect();
        assert_eq!(names, ["web.1", "worker.1", "worker.2"]);
        let web = &plan.processes()[0];
        assert_eq!(plan.extra_env(web)["PORT"], "9000");
        assert_eq!(plan.extra_env(web)["SLIPWAY_RELEASE"], "r3");
        assert!(!plan.extra_env(&plan.processes()[1]).contains_key("PORT"));
    }
}
