//! Per-process metrics on instances, through the CloudWatch agent.
//!
//! The CloudWatch agent's `procstat` finds a process by pid file,
//! executable name or command line; a Procfile type has none of these of
//! its own (every web process is `/bin/sh -c …` running whatever the app
//! runs). So each unit keeps a pid file of its main process
//! (`<root>/<app>/run/<type>.<n>.pid`, written by `ExecStartPost` from
//! `$MAINPID`, removed by `ExecStopPost`), and after every start the agent
//! writes a procstat fragment naming those files, each with its
//! `slipway:process` dimension, and hands it to the CloudWatch agent with
//! `append-config` (which restarts it). The base settings aggregate to
//! `InstanceId` + `slipway:app` + `slipway:env` + `slipway:process`, the
//! dimensions the formation reads. The fragment is only re-applied when it
//! changes (a new process type or count), so an ordinary deploy does not
//! restart the CloudWatch agent.
//!
//! What procstat measures is the main process only: for a Procfile line
//! that is one command, `sh -c` hands over to it (bash execs a lone
//! command), so that is the app; workers it forks are not counted.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use slipway_core::metric_names::{PROCESS_CPU, PROCESS_DIMENSION, PROCESS_MEMORY};

use super::{Plan, run_tool};
use crate::layout::write_atomic;

/// The CloudWatch agent on this instance.
#[derive(Debug, Clone)]
pub struct CloudWatchAgent {
    /// `amazon-cloudwatch-agent-ctl`.
    pub ctl: PathBuf,
}

/// What [`CloudWatchAgent::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The settings were new or changed; the CloudWatch agent reloaded.
    Reloaded,
    /// The same settings are already in place.
    Unchanged,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reloaded => "reloaded",
            Self::Unchanged => "unchanged",
        }
    }
}

/// The pid file of process `name` (`web.1`) in `run_dir`.
pub fn pid_file(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(format!("{name}.pid"))
}

/// The procstat settings of a plan: one entry per process.
pub fn procstat(plan: &Plan, run_dir: &Path) -> Value {
    let entries: Vec<Value> = plan
        .processes()
        .iter()
        .map(|p| {
            json!({
                "pid_file": pid_file(run_dir, &p.name()),
                "measurement": [
                    { "name": "cpu_usage", "rename": PROCESS_CPU, "unit": "Percent" },
                    { "name": "memory_rss", "rename": PROCESS_MEMORY, "unit": "Bytes" },
                ],
                "append_dimensions": {
                    "slipway:app": plan.app.as_str(),
                    "slipway:env": plan.env.as_str(),
                    PROCESS_DIMENSION: p.name(),
                },
            })
        })
        .collect();
    json!({ "metrics": { "metrics_collected": { "procstat": entries } } })
}

impl CloudWatchAgent {
    /// Where a plan's fragment is kept. The CloudWatch agent names its
    /// copy after the file, so the app's name is in it.
    pub fn fragment_path(app_root: &Path, app: &str) -> PathBuf {
        app_root.join(format!("cloudwatch-procstat-{app}.json"))
    }

    /// Writes `config` to `path` and has the CloudWatch agent append it,
    /// unless the same settings are already there. `Err` says why not
    /// (the CloudWatch agent's own words); the previous file is kept
    /// then, so the next start tries again.
    pub async fn apply(&self, path: &Path, config: &Value) -> Result<Applied, String> {
        let text = serde_json::to_string_pretty(config).map_err(|e| e.to_string())?;
        if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
            return Ok(Applied::Unchanged);
        }
        let staged = path.with_extension("json.tmp");
        write_atomic(&staged, text.as_bytes(), 0o644)
            .map_err(|e| format!("writing {}: {e}", staged.display()))?;
        let file = format!("file:{}", staged.display());
        let args = ["-a", "append-config", "-m", "ec2", "-s", "-c", &file];
        let result = match run_tool(&self.ctl, &args).await {
            Err(e) => Err(e),
            Ok(()) => std::fs::rename(&staged, path)
                .map(|()| Applied::Reloaded)
                .map_err(|e| format!("keeping {}: {e}", path.display())),
        };
        let _ = std::fs::remove_file(&staged);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::fixtures::plan;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in `amazon-cloudwatch-agent-ctl` that records its
    /// arguments and the file it was given, and exits with `code`.
    fn fake_ctl(dir: &Path, code: i32) -> CloudWatchAgent {
        let ctl = dir.join("amazon-cloudwatch-agent-ctl");
        let script = format!(
            "#!/bin/sh\necho \"$@\" >> {calls}\nfor a; do case $a in file:*) cp \"${{a#file:}}\" {seen};; esac; done\n\
             [ {code} -eq 0 ] || echo 'E! invalid json config' >&2\nexit {code}\n",
            calls = dir.join("calls").display(),
            seen = dir.join("seen.json").display(),
        );
        std::fs::write(&ctl, script).unwrap();
        std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        CloudWatchAgent { ctl }
    }

    #[test]
    fn every_process_gets_its_pid_file_and_its_own_dimensions() {
        let config = procstat(&plan(), Path::new("/srv/slipway/hello/run"));
        let expected: Value =
            serde_json::from_str(include_str!("snapshots/cloudwatch-procstat-hello.json")).unwrap();
        assert_eq!(config, expected, "{config:#}");
    }

    #[test]
    fn the_base_settings_aggregate_each_process_to_the_dimensions_the_formation_reads() {
        let base: Value = serde_json::from_str(include_str!(
            "../../../infra/base-image/cloudwatch-agent.json"
        ))
        .unwrap();
        let config = procstat(&plan(), Path::new("/srv/slipway/hello/run"));

        let entry = &config["metrics"]["metrics_collected"]["procstat"][0];
        let mut dims: Vec<&str> = entry["append_dimensions"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        dims.insert(0, "InstanceId");
        let aggregations = base["metrics"]["aggregation_dimensions"]
            .as_array()
            .unwrap();
        assert!(
            aggregations.iter().any(|a| a == &json!(dims)),
            "{dims:?} in {aggregations:?}"
        );
        assert!(
            base["metrics"]["metrics_collected"]
                .get("procstat")
                .is_none(),
            "only the fragment has procstat, so the two merge without a conflict"
        );
        assert_eq!(
            config.as_object().unwrap().len(),
            1,
            "the fragment only adds metrics"
        );
    }

    #[tokio::test]
    async fn the_cloudwatch_agent_is_reloaded_only_when_the_settings_change() {
        let dir = tempfile::tempdir().unwrap();
        let agent = fake_ctl(dir.path(), 0);
        let path = CloudWatchAgent::fragment_path(dir.path(), "hello");
        let config = procstat(&plan(), Path::new("/srv/slipway/hello/run"));

        let first = agent.apply(&path, &config).await.unwrap();
        let second = agent.apply(&path, &config).await.unwrap();
        let mut fewer = plan();
        fewer.settings.processes.insert("worker".into(), 1);
        let third = agent
            .apply(
                &path,
                &procstat(&fewer, Path::new("/srv/slipway/hello/run")),
            )
            .await
            .unwrap();

        assert_eq!(
            (first, second, third),
            (Applied::Reloaded, Applied::Unchanged, Applied::Reloaded)
        );
        let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
        assert_eq!(calls.lines().count(), 2, "{calls}");
        assert!(
            calls.starts_with("-a append-config -m ec2 -s -c file:"),
            "{calls}"
        );
        let seen: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("seen.json")).unwrap()).unwrap();
        assert_eq!(
            seen["metrics"]["metrics_collected"]["procstat"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[tokio::test]
    async fn a_refused_fragment_is_not_kept_so_the_next_start_tries_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = CloudWatchAgent::fragment_path(dir.path(), "hello");
        let config = procstat(&plan(), Path::new("/srv/slipway/hello/run"));

        let refused = fake_ctl(dir.path(), 1).apply(&path, &config).await;
        let missing = CloudWatchAgent {
            ctl: dir.path().join("not-installed"),
        }
        .apply(&path, &config)
        .await;

        let refused = refused.unwrap_err();
        assert!(refused.contains("E! invalid json config"), "{refused}");
        assert!(missing.unwrap_err().contains("not-installed"));
        assert!(!path.exists() && !path.with_extension("json.tmp").exists());
    }
}
