//! The `direct` supervisor: the local platform's and the tests' stand-in
//! for systemd. Each process runs `sh -c <command>` in its own process
//! group, started in `current`, with output appended to
//! `log/<type>.<n>.log` and a pidfile `run/<type>.<n>.pid` that records the
//! pid and the kernel's start time of the process, so a recycled pid is
//! never mistaken for ours. Processes outlive the agent; the next deploy
//! stops them (SIGTERM to the group, SIGKILL after the grace period) and
//! starts the new ones. Nothing restarts a crashed process until then.

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use slipway_core::names::ReleaseId;

use super::{Plan, ProcessStatus, SupervisorError, io_err};
use crate::command::process_env;
use crate::layout::{Layout, open_nofollow, read_nofollow, remove_if_exists, write_atomic};

#[derive(Debug, Clone, Default)]
pub struct Direct {
    /// Overrides the environment's stop grace period (tests).
    pub grace: Option<Duration>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PidFile {
    pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: when the process started.
    start_ticks: u64,
    release: ReleaseId,
    #[serde(default)]
    grace_secs: u64,
}

use crate::command::{group_alive, start_ticks};

fn is_ours(p: &PidFile) -> bool {
    start_ticks(p.pid) == Some(p.start_ticks)
}

/// Should `stop` signal this group? If its leader is the process we
/// started, or the leader is gone but members remain.
fn ours_to_stop(p: &PidFile) -> bool {
    is_ours(p) || (start_ticks(p.pid).is_none() && group_alive(p.pid))
}

impl Direct {
    fn pidfiles(layout: &Layout) -> Vec<(String, PidFile)> {
        let mut found: Vec<(String, PidFile)> = fs::read_dir(layout.run_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".pid")?.to_owned();
                let pid = serde_json::from_slice(&read_nofollow(&e.path()).ok()?).ok()?;
                Some((name, pid))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    pub async fn stop(&self, layout: &Layout) -> Result<(), SupervisorError> {
        let running: Vec<(String, PidFile)> = Self::pidfiles(layout);
        let grace = running
            .iter()
            .map(|(_, p)| Duration::from_secs(p.grace_secs))
            .max()
            .unwrap_or_default();
        let grace = self.grace.unwrap_or(grace);
        let running: Vec<(String, PidFile)> = running
            .into_iter()
            .filter(|(_, p)| ours_to_stop(p))
            .collect();
        for (_, p) in &running {
            let _ = killpg(Pid::from_raw(p.pid as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while running.iter().any(|(_, p)| group_alive(p.pid)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (_, p) in &running {
            let _ = killpg(Pid::from_raw(p.pid as i32), Signal::SIGKILL);
        }
        while running.iter().any(|(_, p)| group_alive(p.pid)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Every pidfile goes, a link or a damaged one too.
        for entry in fs::read_dir(layout.run_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with(".pid") {
                remove_if_exists(&entry.path()).map_err(io_err("removing a pidfile"))?;
            }
        }
        Ok(())
    }

    pub async fn start(&self, layout: &Layout, plan: &Plan) -> Result<(), SupervisorError> {
        let text = read_nofollow(&plan.env_file)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(io_err(format!("reading {}", plan.env_file.display())))?;
        let config = crate::envfile::parse(&text)?;
        let base = process_env(&config);
        for proc in plan.processes() {
            let name = proc.name();
            let log_path = layout.log_dir().join(format!("{name}.log"));
            let log = open_nofollow(&log_path, OpenOptions::new().create(true).append(true))
                .map_err(io_err(format!("opening {}", log_path.display())))?;
            let err_log = log
                .try_clone()
                .map_err(io_err("duplicating a log handle"))?;
            let child = Command::new("/bin/sh")
                .arg("-c")
                .arg(&proc.command)
                .current_dir(layout.current())
                .env_clear()
                .envs(&base)
                .envs(plan.extra_env(&proc))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err_log)
                .process_group(0)
                .spawn()
                .map_err(io_err(format!("starting {name}")))?;
            let pid = child.id();
            let record = PidFile {
                pid,
                start_ticks: start_ticks(pid).unwrap_or(0),
                release: plan.release,
                grace_secs: plan.settings.stop_grace_secs,
            };
            let json = serde_json::to_vec(&record).map_err(|e| SupervisorError::Io {
                what: "writing a pidfile".into(),
                source: std::io::Error::other(e),
            })?;
            write_atomic(&layout.run_dir().join(format!("{name}.pid")), &json, 0o644)
                .map_err(io_err(format!("writing the pidfile of {name}")))?;
        }
        Ok(())
    }

    pub fn check(&self, layout: &Layout) -> Result<(), String> {
        for (name, p) in Self::pidfiles(layout) {
            if !is_ours(&p) {
                return Err(format!(
                    "{name} (pid {}) exited; its output is in log/{name}.log",
                    p.pid
                ));
            }
        }
        Ok(())
    }

    pub fn processes(&self, layout: &Layout) -> Vec<ProcessStatus> {
        Self::pidfiles(layout)
            .into_iter()
            .map(|(name, p)| ProcessStatus {
                running: is_ours(&p),
                name,
                pid: Some(p.pid),
                unit: None,
                release: Some(p.release),
            })
            .collect()
    }
}
