//! Deploys on this machine with the direct supervisor and the example app:
//! successes, every kind of failure, and what serves afterwards.

use std::os::unix::fs::PermissionsExt;

use slipway_core::archive::ArchiveFormat;
use slipway_core::testing::{TarBuilder, gzip};

use crate::support::{Fixture, Spec};

/// After a failed deploy of r2: r1 still answers, `status` says so, the
/// agent said why, and nothing is left half-done.
fn assert_r1_still_serves(f: &Fixture, run: &crate::support::Run, step: &str) {
    assert_eq!(run.code, 1, "{}", run.all);
    assert!(
        run.last().starts_with(&format!("at=failed step={step}")),
        "{}",
        run.all
    );
    assert!(run.last().contains("serving=r1"), "{}", run.all);
    assert_eq!(f.answering().as_deref(), Some("r1"));
    let status = f.status();
    assert_eq!(status["release"], "r1");
    assert_eq!(status["serving"], "r1");
    assert_eq!(status["health"]["ok"], true);
    assert_eq!(status["processes"][0]["running"], true);
    assert_eq!(f.leftovers(), Vec::<String>::new());
    assert_eq!(f.app_process_groups().len(), 1, "one web process group");
}

#[test]
fn a_first_deploy_serves_the_release_and_status_says_so() {
    let f = Fixture::new();
    f.publish(1, Spec::config("GREETING=Bonjour\nSECRET_TOKEN=hunter2\n"));

    let run = f.deploy(1);

    assert!(run.ok(), "{}", run.all);
    let (status, body) = f.get("/").unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "Bonjour! This is release r1.\n");
    for step in [
        "at=lock",
        "at=fetch",
        "at=download",
        "at=config",
        "at=switch",
        "at=start",
        "at=health",
    ] {
        assert!(run.stdout.contains(step), "missing {step}:\n{}", run.all);
    }
    assert!(run.last().starts_with("at=done release=r1"), "{}", run.all);
    assert!(
        !run.all.contains("hunter2"),
        "a config value reached the output"
    );

    let env_file = f.app_dir().join("env/r1.env");
    let mode = std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        std::fs::read_to_string(&env_file)
            .unwrap()
            .contains("SECRET_TOKEN=\"hunter2\"")
    );
    assert!(!f.app_dir().join("releases/r1/.env").exists());

    let status = f.status();
    assert_eq!(status["app"], "hello");
    assert_eq!(status["env"], "prod");
    assert_eq!(status["release"], "r1");
    assert_eq!(status["supervisor"], "direct");
    assert_eq!(status["processes"][0]["name"], "web.1");
    assert_eq!(status["processes"][0]["running"], true);
    assert!(status["processes"][0]["pid"].as_u64().unwrap() > 0);
    assert_eq!(status["health"]["ok"], true);
    assert!(status["since"].is_string());
}

#[test]
fn a_second_release_replaces_the_first_and_the_same_release_again_is_a_no_op() {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    f.publish(2, Spec::config("GREETING=Two\n"));
    assert!(f.deploy(1).ok());

    let run = f.deploy(2);
    assert!(run.ok(), "{}", run.all);
    assert_eq!(f.get("/").unwrap().1, "Two! This is release r2.\n");
    let status = f.status();
    assert_eq!(
        (status["release"].as_str(), status["previous"].as_str()),
        (Some("r2"), Some("r1"))
    );
    let pid = status["processes"][0]["pid"].clone();

    let again = f.deploy(2);
    assert!(again.ok(), "{}", again.all);
    assert!(again.last().contains("already=serving"), "{}", again.all);
    assert!(!again.stdout.contains("at=switch"), "{}", again.all);
    assert_eq!(
        f.status()["processes"][0]["pid"],
        pid,
        "the process was not restarted"
    );
    assert_eq!(f.app_process_groups().len(), 1);
}

#[test]
fn a_zstd_release_with_a_worker_and_a_build_step_runs_all_of_it() {
    let f = Fixture::new();
    f.settings(r#"{"health_timeout_secs": 5, "stop_grace_secs": 2, "processes": {"worker": 2}}"#);
    let spec = Spec {
        procfile: "web: python3 app.py\nworker: exec sleep 300\nbuild: echo \"built for $SLIPWAY_RELEASE\" > built.txt\n".into(),
        format: ArchiveFormat::Zstd,
        ..Spec::default()
    };
    f.publish(1, spec);

    let run = f.deploy(1);

    assert!(run.ok(), "{}", run.all);
    assert!(run.stdout.contains("at=build release=r1"), "{}", run.all);
    assert_eq!(
        std::fs::read_to_string(f.app_dir().join("current/built.txt")).unwrap(),
        "built for r1\n"
    );
    let names: Vec<String> = f.status()["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}={}", p["name"].as_str().unwrap(), p["running"]))
        .collect();
    assert_eq!(names, ["web.1=true", "worker.1=true", "worker.2=true"]);
    assert_eq!(f.app_process_groups().len(), 3);
}

#[test]
fn a_release_whose_build_fails_is_never_switched_to() {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    f.publish(
        2,
        Spec::procfile("web: python3 app.py\nbuild: echo compiling; exit 4\n"),
    );
    assert!(f.deploy(1).ok());

    let run = f.deploy(2);

    assert_r1_still_serves(&f, &run, "build");
    assert!(run.stdout.contains("build| compiling"), "{}", run.all);
    assert!(run.last().contains("exit status: 4"), "{}", run.all);
    assert!(!run.stdout.contains("at=switch"), "{}", run.all);
    assert!(!f.app_dir().join("releases/r2").exists());
}

#[test]
fn a_web_process_that_crashes_at_start_fails_at_once_and_the_previous_release_returns() {
    let f = Fixture::new();
    f.settings(r#"{"health_timeout_secs": 60, "stop_grace_secs": 2}"#);
    f.publish(1, Spec::default());
    f.publish(2, Spec::config("BREAK=start\n"));
    assert!(f.deploy(1).ok());

    let started = std::time::Instant::now();
    let run = f.deploy(2);

    assert!(
        started.elapsed().as_secs() < 20,
        "waited for the health timeout"
    );
    assert_r1_still_serves(&f, &run, "health");
    assert!(run.last().contains("web.1"), "{}", run.all);
    assert!(run.last().contains("rolled back to r1"), "{}", run.all);
    let log = std::fs::read_to_string(f.app_dir().join("log/web.1.log")).unwrap();
    assert!(log.contains("exiting at start-up on purpose"), "{log}");
}

#[test]
fn a_release_whose_health_check_never_passes_is_rolled_back_after_the_timeout() {
    let f = Fixture::new();
    f.settings(r#"{"health_timeout_secs": 2, "stop_grace_secs": 2}"#);
    f.publish(1, Spec::default());
    f.publish(2, Spec::config("BREAK=health\n"));
    assert!(f.deploy(1).ok());

    let run = f.deploy(2);

    assert_r1_still_serves(&f, &run, "health");
    assert!(run.last().contains("answered 503"), "{}", run.all);
    assert_eq!(
        f.status()["previous"],
        serde_json::Value::Null,
        "r2 never served"
    );
}

#[test]
fn a_corrupt_archive_is_refused_before_anything_is_unpacked() {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    let spec = Spec::default();
    let archive = spec.archive();
    f.publish_archive(2, &spec, &archive);
    // The object changes after the manifest was written: one flipped byte.
    let mut corrupt = archive.clone();
    let last = corrupt.len() - 10;
    corrupt[last] ^= 0xff;
    f.put(
        &format!("{}releases/r2/source.tar.gz", f.env.prefix()),
        &corrupt,
    );
    assert!(f.deploy(1).ok());

    let run = f.deploy(2);

    assert_r1_still_serves(&f, &run, "download");
    assert!(!f.app_dir().join("releases/r2").exists());
}

#[test]
fn a_hostile_archive_is_refused_and_writes_nothing_outside_its_directory() {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    let mut tar = TarBuilder::new();
    tar.file("Procfile", b"web: python3 app.py\n");
    tar.file("app.py", &crate::support::example("app.py"));
    tar.raw_file("../../escaped.txt", b"owned");
    let archive = gzip(&tar.finish());
    f.publish_archive(2, &Spec::default(), &archive);
    assert!(f.deploy(1).ok());

    let run = f.deploy(2);

    assert_r1_still_serves(&f, &run, "download");
    assert!(run.last().contains("escaped.txt"), "{}", run.all);
    assert!(!f.app_dir().join("escaped.txt").exists());
    assert!(!f.root.join("escaped.txt").exists());
}

#[test]
fn a_failed_first_deploy_leaves_nothing_running_and_says_so() {
    let f = Fixture::new();
    f.publish(1, Spec::config("BREAK=start\n"));

    let run = f.deploy(1);

    assert_eq!(run.code, 1, "{}", run.all);
    assert!(
        run.last().contains("nothing was serving before"),
        "{}",
        run.all
    );
    assert!(f.get("/").is_none());
    assert!(!f.app_dir().join("current").exists());
    assert_eq!(f.app_process_groups(), Vec::<i32>::new());
    assert_eq!(f.status()["release"], serde_json::Value::Null);
}

#[test]
fn a_bad_url_or_a_missing_release_is_a_clear_error() {
    let f = Fixture::new();
    let run = f.run(&["deploy", "s3://bucket/../etc/releases/r1"]);
    assert_eq!(run.code, 2, "{}", run.all);
    assert!(run.all.contains("not a release URL"), "{}", run.all);

    let run = f.run(&["deploy", &f.url(1), "--instance-id", "i-1; rm -rf /"]);
    assert_eq!(run.code, 2, "{}", run.all);
    assert!(run.all.contains("is not an instance id"), "{}", run.all);

    let run = f.deploy(9);
    assert_eq!(run.code, 1, "{}", run.all);
    assert!(
        run.last().contains("release r9 does not exist"),
        "{}",
        run.all
    );
}

#[test]
fn rollback_switches_to_the_previous_release_and_back_again() {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    f.publish(2, Spec::default());
    assert!(f.deploy(1).ok());
    assert!(f.deploy(2).ok());

    let run = f.run(&["rollback"]);

    assert!(run.ok(), "{}", run.all);
    assert_eq!(f.answering().as_deref(), Some("r1"));
    let status = f.status();
    assert_eq!(
        (status["release"].as_str(), status["previous"].as_str()),
        (Some("r1"), Some("r2"))
    );

    assert!(f.run(&["rollback", "--app", "hello"]).ok());
    assert_eq!(f.answering().as_deref(), Some("r2"));
}

#[test]
fn the_processes_come_from_the_verified_procfile_not_the_one_in_the_release_tree() {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    f.publish(2, Spec::default());
    assert!(f.deploy(1).ok());
    assert!(f.deploy(2).ok());
    // The app user owns the unpacked tree and may rewrite its Procfile.
    let tree = f.app_dir().join("releases/r1/Procfile");
    std::fs::write(&tree, "web: touch rewritten; sleep 600\n").unwrap();

    let run = f.run(&["rollback"]);

    assert!(run.ok(), "{}", run.all);
    assert_eq!(f.answering().as_deref(), Some("r1"));
    assert!(
        !f.app_dir().join("releases/r1/rewritten").exists(),
        "the rewritten command never ran"
    );
}

#[test]
fn stop_ends_the_apps_processes_and_boot_or_deploy_starts_them_again() {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    assert!(f.deploy(1).ok());
    assert_eq!(f.answering().as_deref(), Some("r1"));

    let run = f.run(&["stop"]);

    assert!(run.ok(), "{}", run.all);
    assert!(run.stdout.contains("at=stopped app=hello"), "{}", run.all);
    assert_eq!(f.answering(), None, "nothing answers after stop");
    let status = f.status();
    let processes = status["processes"].as_array().unwrap();
    assert!(processes.iter().all(|p| p["running"] != true), "{status}");
    assert!(f.deploy(1).ok(), "the release is still installed");
    assert_eq!(f.answering().as_deref(), Some("r1"));
}

#[test]
fn old_releases_are_pruned_but_never_current_or_previous() {
    let f = Fixture::new();
    f.settings(r#"{"health_timeout_secs": 5, "stop_grace_secs": 2, "releases_kept": 2}"#);
    for n in 1..=4 {
        f.publish(n, Spec::default());
    }
    for n in [1, 2, 3, 4] {
        let run = f.deploy(n);
        assert!(run.ok(), "{}", run.all);
    }
    let rollback = f.run(&["rollback"]);
    assert!(rollback.ok(), "{}", rollback.all);

    let mut left: Vec<String> = std::fs::read_dir(f.app_dir().join("releases"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["r3", "r3.ok", "r4", "r4.ok"]);
    let mut envs: Vec<String> = std::fs::read_dir(f.app_dir().join("env"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    envs.sort();
    assert_eq!(envs, ["r3.env", "r3.procfile", "r4.env", "r4.procfile"]);
}

#[test]
fn the_release_phase_runs_once_in_a_scratch_copy_with_the_config() {
    let f = Fixture::new();
    let marker = f.tmp.path().join("migrated");
    f.publish(
        1,
        Spec {
            procfile: "web: python3 app.py\nbuild: echo built > built.txt\nrelease: cat built.txt > \"$MARKER\"; echo \"$SLIPWAY_RELEASE $GREETING\" >> \"$MARKER\"; pwd >> \"$MARKER\"\n".into(),
            config: format!("GREETING=Hi\nMARKER={}\n", marker.display()),
            ..Spec::default()
        },
    );

    let run = f.run(&["release-phase", &f.url(1)]);

    assert!(run.ok(), "{}", run.all);
    let text = std::fs::read_to_string(&marker).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..2], ["built", "r1 Hi"]);
    assert!(lines[2].contains("/scratch/r1-"), "{text}");
    assert_eq!(f.leftovers(), Vec::<String>::new());
    assert!(f.get("/").is_none(), "the release phase starts no process");

    f.publish(2, Spec::procfile("web: python3 app.py\nrelease: exit 7\n"));
    let run = f.run(&["release-phase", &f.url(2)]);
    assert_eq!(run.code, 1, "{}", run.all);
    assert!(
        run.last().starts_with("at=failed step=release"),
        "{}",
        run.all
    );
    assert_eq!(f.leftovers(), Vec::<String>::new());
}

#[test]
fn two_agents_at_once_take_turns() {
    let f = Fixture::new();
    f.publish(1, Spec::procfile("web: python3 app.py\nbuild: sleep 1\n"));
    f.publish(2, Spec::default());
    let first = f
        .command()
        .args(["deploy", &f.url(1)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let the first take the lock.
    let lock = f.app_dir().join("lock");
    while std::fs::read_to_string(&lock)
        .map(|s| s.is_empty())
        .unwrap_or(true)
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    let second = f.deploy(2);
    let first = first.wait_with_output().unwrap();

    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    assert!(second.ok(), "{}", second.all);
    let holder = first_pid_line(&second.stdout);
    assert!(holder.contains("waiting=true"), "{}", second.all);
    assert_eq!(f.answering().as_deref(), Some("r2"));
    assert_eq!(f.status()["previous"], "r1");
    assert_eq!(f.app_process_groups().len(), 1);
}

fn first_pid_line(out: &str) -> String {
    out.lines()
        .find(|l| l.starts_with("at=lock"))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn when_the_previous_release_cannot_come_back_either_the_exit_status_says_so() {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    f.publish(2, Spec::config("BREAK=start\n"));
    assert!(f.deploy(1).ok());
    // Something outside the agent damages the installed r1.
    std::fs::remove_file(f.app_dir().join("releases/r1/app.py")).unwrap();

    let run = f.deploy(2);

    assert_eq!(run.code, 3, "{}", run.all);
    assert!(
        run.last().contains("rolling back to r1 failed too"),
        "{}",
        run.all
    );
    assert!(f.get("/").is_none());
}

#[test]
fn redeploying_the_serving_release_when_it_breaks_goes_back_to_the_one_before() {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    f.publish(2, Spec::default());
    assert!(f.deploy(1).ok());
    assert!(f.deploy(2).ok());
    // r2's tree is damaged and its process dies: it no longer serves.
    std::fs::remove_file(f.app_dir().join("releases/r2/app.py")).unwrap();
    for pgid in f.app_process_groups() {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    let run = f.deploy(2);

    assert_eq!(run.code, 1, "{}", run.all);
    assert!(run.last().contains("rolled back to r1"), "{}", run.all);
    assert_eq!(f.answering().as_deref(), Some("r1"));
}

#[test]
fn config_vars_cannot_override_what_the_agent_sets() {
    let f = Fixture::new();
    f.publish(
        1,
        Spec::config("PORT=1\nSLIPWAY_RELEASE=r99\nGREETING=Hi\n"),
    );

    let run = f.deploy(1);

    assert!(run.ok(), "{}", run.all);
    assert!(
        run.stdout.contains("ignored=PORT,SLIPWAY_RELEASE"),
        "{}",
        run.all
    );
    assert_eq!(f.answering().as_deref(), Some("r1"));
}

#[test]
fn a_build_left_running_by_a_killed_agent_is_killed_by_the_next_one() {
    let f = Fixture::new();
    f.publish(1, Spec::procfile("web: python3 app.py\nbuild: sleep 60\n"));
    f.publish(2, Spec::default());
    let mut agent = f
        .command()
        .args(["deploy", &f.url(1)])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pidfile = f.app_dir().join("command.pid");
    let started = std::time::Instant::now();
    while !pidfile.exists() {
        assert!(started.elapsed().as_secs() < 10, "the build never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let build: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(build), None).is_ok(),
        "the build outlived its agent"
    );

    let run = f.deploy(2);

    assert!(run.ok(), "{}", run.all);
    assert!(
        run.stdout.contains(&format!("killed_command_pid={build}")),
        "{}",
        run.all
    );
    // Killed: nothing of the group runs (a zombie may wait for its reaper).
    assert!(!slipway_agent::command::group_alive(build as u32));
    assert_eq!(f.answering().as_deref(), Some("r2"));
}

#[test]
fn prepare_installs_and_builds_beside_what_serves_and_the_deploy_after_it_only_switches() {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    f.publish(
        2,
        Spec {
            procfile: "web: python3 app.py\nbuild: echo built > built.txt\n".into(),
            config: "GREETING=Two\n".into(),
            ..Spec::default()
        },
    );
    assert!(f.deploy(1).ok());
    let pid = f.status()["processes"][0]["pid"].clone();

    let prepared = f.run(&["prepare", &f.url(2)]);

    assert!(prepared.ok(), "{}", prepared.all);
    assert!(
        prepared.stdout.contains("at=build release=r2"),
        "{}",
        prepared.all
    );
    assert!(!prepared.stdout.contains("at=switch"), "{}", prepared.all);
    assert!(f.app_dir().join("releases/r2/built.txt").is_file());
    assert_eq!(f.answering().as_deref(), Some("r1"), "r1 serves on");
    let status = f.status();
    assert_eq!(status["release"].as_str(), Some("r1"));
    assert_eq!(status["processes"][0]["pid"], pid, "nothing restarted");

    let deployed = f.deploy(2);
    assert!(deployed.ok(), "{}", deployed.all);
    assert!(deployed.stdout.contains("cached=true"), "{}", deployed.all);
    assert!(
        !deployed.stdout.contains("at=build"),
        "built once: {}",
        deployed.all
    );
    assert_eq!(f.get("/").unwrap().1, "Two! This is release r2.\n");
}

#[test]
fn a_prepare_whose_build_fails_leaves_what_serves_and_nothing_half_installed() {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    f.publish(
        2,
        Spec::procfile("web: python3 app.py\nbuild: echo compiling; exit 4\n"),
    );
    assert!(f.deploy(1).ok());

    let run = f.run(&["prepare", &f.url(2)]);

    assert_eq!(run.code, 1, "{}", run.all);
    assert!(
        run.last().starts_with("at=failed step=build"),
        "{}",
        run.all
    );
    assert!(!f.app_dir().join("releases/r2").exists());
    assert_eq!(f.answering().as_deref(), Some("r1"));
    assert_eq!(f.leftovers(), Vec::<String>::new());
}
