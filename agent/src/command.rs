//! Running a Procfile command that must finish: `build:` on each instance
//! before the switch, `release:` once per deploy. The command runs through
//! `sh -c` in its own process group, with only the release's config and a
//! minimal base environment (never the agent's own, which may hold AWS
//! credentials), its output relayed line by line, and a timeout after
//! which the whole group is killed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{what} could not start: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} exited with {status}")]
    Failed { what: String, status: String },
    #[error("{what} did not finish within {secs} s and was killed")]
    TimedOut { what: String, secs: u64 },
}

/// The environment every app process starts from: a fixed `PATH`, `HOME`
/// and `LANG` (as a systemd unit would give it), then the config vars.
pub fn process_env(config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_owned(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned()),
    );
    env.insert("LANG".to_owned(), "C.UTF-8".to_owned());
    if let Ok(home) = std::env::var("HOME") {
        env.insert("HOME".to_owned(), home);
    }
    env.extend(config.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Field 22 of `/proc/<pid>/stat`, when the process started: with the pid
/// it names one process, even after the pid is reused. `None` once the
/// process has exited (or is a zombie).
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | None) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// This boot's id: a pid and a start time name one process only within
/// one boot.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_owned())
}

/// What a command's pidfile says: `<pid> <start ticks> <boot id>`.
fn pidfile_text(pid: u32) -> String {
    let ticks = start_ticks(pid).unwrap_or(0);
    format!("{pid} {ticks} {}", boot_id().unwrap_or_default())
}

/// Does any process of the group still run? Reaps members that are this
/// process's own exited children first, and does not count zombies (an
/// orphan's parent may take its time to reap it). A group whose leader
/// has exited lives on while any member does, and its id cannot be reused
/// meanwhile, so a live group here is still the one that was recorded.
pub fn group_alive(pgid: u32) -> bool {
    let group = Pid::from_raw(-(pgid as i32));
    while let Ok(status) = waitpid(group, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
    if killpg(Pid::from_raw(pgid as i32), None).is_err() {
        return false;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return true;
    };
    procs.flatten().any(|e| {
        let Some(stat) = e
            .file_name()
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|_| std::fs::read_to_string(e.path().join("stat")).ok())
        else {
            return false;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        fields.get(2) == Some(&pgid.to_string().as_str())
            && !matches!(fields.first(), Some(&"Z") | Some(&"X"))
    })
}

/// Kills what a command recorded in `pidfile` left running (the agent was
/// killed while it ran), and removes the pidfile. Root kills only what a
/// pidfile it wrote itself names, in this boot: one that is a link, is
/// owned by anyone else or comes from another boot (the pid may belong to
/// anything since) is removed and nothing is killed.
pub fn kill_leftover(pidfile: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let file = crate::layout::open_nofollow(pidfile, std::fs::OpenOptions::new().read(true));
    let _ = std::fs::remove_file(pidfile);
    let mut file = file.ok()?;
    if file.metadata().ok()?.uid() != nix::unistd::geteuid().as_raw() {
        return None;
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).ok()?;
    let mut fields = text.split_whitespace();
    let pid: u32 = fields.next()?.parse().ok()?;
    let ticks: u64 = fields.next()?.parse().ok()?;
    if pid <= 1 || fields.next()? != boot_id()? {
        return None;
    }
    if start_ticks(pid) == Some(ticks) || group_alive(pid) {
        let group = Pid::from_raw(pid as i32);
        let _ = killpg(group, Signal::SIGKILL);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while group_alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        return Some(pid);
    }
    None
}

/// Who a command runs as (root starts app commands as the app's user),
/// with that user's home, never root's.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub home: std::path::PathBuf,
}

pub struct Run<'a> {
    pub what: &'a str,
    pub command: &'a str,
    pub dir: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub timeout: Duration,
    pub run_as: Option<&'a RunAs>,
    /// Where to record the command's process group while it runs, so a
    /// later agent can kill it if this one dies.
    pub pidfile: Option<&'a Path>,
}

/// Runs the command to completion, relaying its output prefixed with
/// `what`; `Ok` only for exit status 0 within the timeout.
pub async fn run(run: Run<'_>) -> Result<(), CommandError> {
    let what = run.what.to_owned();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(run.command)
        .current_dir(run.dir)
        .env_clear()
        .envs(run.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(user) = run.run_as {
        cmd.uid(user.uid).gid(user.gid).env("HOME", &user.home);
    }
    let mut child = cmd.spawn().map_err(|source| CommandError::Spawn {
        what: what.clone(),
        source,
    })?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    if let (Some(path), Some(pid)) = (run.pidfile, child.id()) {
        let _ = crate::layout::write_atomic(path, pidfile_text(pid).as_bytes(), 0o644);
    }
    let out = relay(child.stdout.take(), what.clone());
    let err = relay(child.stderr.take(), what.clone());
    let waited = tokio::time::timeout(run.timeout, child.wait()).await;
    // Nothing a build starts may outlive it.
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    let _ = child.wait().await;
    if let Some(path) = run.pidfile {
        let _ = std::fs::remove_file(path);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = out.await;
        let _ = err.await;
    })
    .await;
    match waited {
        Err(_) => Err(CommandError::TimedOut {
            what,
            secs: run.timeout.as_secs(),
        }),
        Ok(Err(source)) => Err(CommandError::Spawn { what, source }),
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(CommandError::Failed {
            what,
            status: status.to_string(),
        }),
    }
}

fn relay<R: AsyncRead + Unpin + Send + 'static>(
    stream: Option<R>,
    what: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(stream) = stream else { return };
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{what}| {line}");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        process_env(&BTreeMap::from([("GREETING".into(), "hi $HOME".into())]))
    }

    #[tokio::test]
    async fn a_command_sees_its_config_and_not_the_agents_environment() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env();
        let result = run(Run {
            what: "build",
            command: r#"test "$GREETING" = 'hi $HOME' && test -z "$CARGO" && echo ok > built"#,
            dir: tmp.path(),
            env: &env,
            timeout: Duration::from_secs(10),
            run_as: None,
            pidfile: None,
        })
        .await;
        result.unwrap();
        assert!(tmp.path().join("built").exists());
    }

    #[tokio::test]
    async fn failure_and_timeout_are_told_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env();
        let fail = run(Run {
            what: "build",
            command: "exit 3",
            dir: tmp.path(),
            env: &env,
            timeout: Duration::from_secs(10),
            run_as: None,
            pidfile: None,
        })
        .await
        .unwrap_err();
        assert!(fail.to_string().contains("exit status: 3"), "{fail}");

        let started = std::time::Instant::now();
        let slow = run(Run {
            what: "build",
            command: "sleep 30 & sleep 30",
            dir: tmp.path(),
            env: &env,
            timeout: Duration::from_millis(300),
            run_as: None,
            pidfile: None,
        })
        .await
        .unwrap_err();
        assert!(matches!(slow, CommandError::TimedOut { .. }), "{slow}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_command_run_as_the_app_user_gets_that_users_home_not_roots() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: only root can run a command as another user");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let user = RunAs {
            uid: 65534,
            gid: 65534,
            home: "/home/slipway-test".into(),
        };
        let env = env();
        run(Run {
            what: "build",
            command: r#"test "$HOME" = /home/slipway-test && test "$(id -u)" = 65534"#,
            dir: tmp.path(),
            env: &env,
            timeout: Duration::from_secs(10),
            run_as: Some(&user),
            pidfile: None,
        })
        .await
        .unwrap();
    }
}
