//! Crash safety: the agent killed with SIGKILL at every step of a deploy.
//! Whatever the step, the instance serves r1 or r2 (never neither, except
//! in the window between stopping r1 and starting r2), and running the
//! same deploy again converges to r2, healthy, with no leftovers.

use crate::support::{Fixture, Spec};

const STEPS: [&str; 10] = [
    "lock", "fetch", "download", "config", "build", "switch", "stopped", "start", "health",
    "record",
];

#[test]
fn a_deploy_killed_at_any_step_converges_when_run_again() {
    for step in STEPS {
        let f = Fixture::new();
        f.publish(1, Spec::default());
        f.publish(
            2,
            Spec::procfile("web: python3 app.py\nbuild: echo built > built.txt\n"),
        );
        assert!(f.deploy(1).ok());

        let seen = f.kill_at(step, &["deploy", &f.url(2)]);

        let answering = f.answering();
        match step {
            // r1 has been stopped and r2 not started yet.
            "stopped" | "start" => assert_eq!(answering, None, "{step}"),
            // r2 was started; its health is not yet confirmed.
            "health" | "record" => assert!(
                f.answering_within(std::time::Duration::from_secs(5))
                    .is_some(),
                "{step}: nothing serves\n{seen}"
            ),
            _ => assert_eq!(answering.as_deref(), Some("r1"), "{step}"),
        }

        let run = f.deploy(2);

        assert!(run.ok(), "{step}: {}", run.all);
        assert_eq!(f.answering().as_deref(), Some("r2"), "{step}");
        let status = f.status();
        assert_eq!(status["release"], "r2", "{step}");
        assert_eq!(status["previous"], "r1", "{step}");
        assert_eq!(f.leftovers(), Vec::<String>::new(), "{step}");
        assert_eq!(f.app_process_groups().len(), 1, "{step}: stray processes");
        assert!(f.app_dir().join("current/built.txt").exists(), "{step}");
    }
}

#[test]
fn a_first_deploy_killed_mid_download_converges_too() {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    f.kill_at("download", &["deploy", &f.url(1)]);
    std::fs::create_dir_all(f.app_dir().join("releases/r1.partial/junk")).unwrap();

    let run = f.deploy(1);

    assert!(run.ok(), "{}", run.all);
    assert!(
        run.stdout.contains("at=sweep removed=r1.partial"),
        "{}",
        run.all
    );
    assert_eq!(f.answering().as_deref(), Some("r1"));
    assert_eq!(f.leftovers(), Vec::<String>::new());
}
