//! Links planted in an app's directory never make the agent, which runs as
//! root on an instance, read, write or kill anything outside the tree.
//! Each test plants a symbolic link where the agent opens something —
//! the lock, a pidfile, a log, the env and releases directories, the app's
//! directory itself — pointing at a file or directory outside, deploys,
//! and checks that what is outside is exactly as it was.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use slipway_agent::command::start_ticks;

use crate::support::*;

/// Something outside the app's tree the agent must never touch.
struct Outside {
    dir: tempfile::TempDir,
}

impl Outside {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn empty_dir(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir(&path).unwrap();
        path
    }
}

/// A process in its own group that nothing of the app started, reaped
/// by a thread of its own so that a kill shows at once.
struct Bystander {
    pid: u32,
    exited: Arc<AtomicBool>,
}

impl Bystander {
    fn start() -> Self {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let exited = Arc::new(AtomicBool::new(false));
        let flag = exited.clone();
        std::thread::spawn(move || {
            let _ = child.wait();
            flag.store(true, Ordering::SeqCst);
        });
        Self { pid, exited }
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    fn ticks(&self) -> u64 {
        start_ticks(self.pid).unwrap()
    }

    fn alive(&self) -> bool {
        std::thread::sleep(Duration::from_millis(50));
        !self.exited.load(Ordering::SeqCst)
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        if !self.exited.load(Ordering::SeqCst) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn plant(link: &Path, target: &Path) {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let _ = std::fs::remove_file(link);
    let _ = std::fs::remove_dir_all(link);
    symlink(target, link).unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A fixture serving r1, with r2 published.
fn serving_r1() -> Fixture {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    f.publish(2, Spec::config("GREETING=Two\n"));
    let run = f.deploy(1);
    assert!(run.ok(), "{}", run.all);
    f
}

#[test]
fn a_lock_file_linked_outside_is_never_written_through() {
    let f = serving_r1();
    let outside = Outside::new();
    let target = outside.file("passwd", "root:x:0:0\n");
    plant(&f.app_dir().join("lock"), &target);

    let run = f.deploy(2);

    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "root:x:0:0\n",
        "{}",
        run.all
    );
    assert!(!run.ok(), "{}", run.all);
    assert!(run.all.contains("lock"), "{}", run.all);
}

#[test]
fn a_command_pidfile_linked_outside_never_chooses_what_is_killed() {
    let f = serving_r1();
    let outside = Outside::new();
    let bystander = Bystander::start();
    let text = format!("{} {}", bystander.pid(), bystander.ticks());
    let target = outside.file("command.pid", &text);
    plant(&f.app_dir().join("command.pid"), &target);

    let run = f.deploy(2);

    assert!(bystander.alive(), "{}", run.all);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), text);
}

#[test]
fn a_command_pidfile_from_another_boot_never_chooses_what_is_killed() {
    let f = serving_r1();
    let bystander = Bystander::start();
    // The old format, and this format with another boot's id: the pid may
    // since have been given to anything.
    for text in [
        format!("{} 1", bystander.pid()),
        format!("{} 1 00000000-0000-4000-8000-000000000000", bystander.pid()),
    ] {
        std::fs::write(f.app_dir().join("command.pid"), &text).unwrap();
        let run = f.deploy(2);
        assert!(bystander.alive(), "{text}: {}", run.all);
    }
}

#[test]
fn a_process_pidfile_linked_outside_never_chooses_what_is_stopped() {
    let f = serving_r1();
    let outside = Outside::new();
    let bystander = Bystander::start();
    let text = format!(
        r#"{{"pid":{},"start_ticks":{},"release":"r1","grace_secs":1}}"#,
        bystander.pid(),
        bystander.ticks()
    );
    let target = outside.file("worker.pid", &text);
    plant(&f.app_dir().join("run/worker.1.pid"), &target);

    let run = f.deploy(2);

    assert!(bystander.alive(), "{}", run.all);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), text);
}

#[test]
fn a_process_log_linked_outside_is_never_appended_to() {
    let f = serving_r1();
    let outside = Outside::new();
    let target = outside.file("shadow", "root:*:19000::::::\n");
    plant(&f.app_dir().join("log/web.1.log"), &target);

    let run = f.deploy(2);

    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "root:*:19000::::::\n",
        "{}",
        run.all
    );
}

#[test]
fn env_and_releases_directories_linked_outside_get_nothing_written_into_them() {
    for place in ["env", "releases"] {
        let f = serving_r1();
        let outside = Outside::new();
        let target = outside.empty_dir(place);
        plant(&f.app_dir().join(place), &target);

        let run = f.deploy(2);

        assert_eq!(
            entries(&target),
            Vec::<String>::new(),
            "{place}: {}",
            run.all
        );
        assert!(!run.ok(), "{place}: {}", run.all);
        assert!(run.all.contains(place), "{place}: {}", run.all);
    }
}

#[test]
fn an_app_directory_linked_outside_gets_nothing_written_into_it() {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    let outside = Outside::new();
    let target = outside.empty_dir("etc");
    plant(&f.app_dir(), &target);

    let run = f.deploy(1);

    assert_eq!(entries(&target), Vec::<String>::new(), "{}", run.all);
    assert!(!run.ok(), "{}", run.all);
    assert!(run.all.contains("link"), "{}", run.all);
}
