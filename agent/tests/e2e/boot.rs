//! Boot: a new instance deploys the environment's `current` release, and
//! falls back, loudly, to the newest successfully deployed release when
//! `current` cannot become healthy.

use crate::support::{Fixture, Spec};

fn boot(f: &Fixture) -> crate::support::Run {
    let agent_env = f.tmp.path().join("agent.env");
    std::fs::write(
        &agent_env,
        format!(
            "SLIPWAY_BUCKET=file://{}\nSLIPWAY_APP=hello\nSLIPWAY_ENV=prod\n",
            f.store.display()
        ),
    )
    .unwrap();
    crate::support::Run::from(
        f.command()
            .arg("boot")
            .env("SLIPWAY_AGENT_CONFIG", &agent_env)
            .output()
            .unwrap(),
    )
}

#[test]
fn boot_deploys_the_current_release_from_the_settings_file() {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    f.publish(2, Spec::default());
    f.put("hello/prod/current", b"r2");

    let run = boot(&f);

    assert!(run.ok(), "{}", run.all);
    assert_eq!(f.answering().as_deref(), Some("r2"));
}

#[test]
fn a_bad_current_release_falls_back_to_the_last_successful_deploy_loudly() {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    f.publish(2, Spec::default());
    f.publish(3, Spec::config("BREAK=start\n"));
    f.put("hello/prod/current", b"r3");
    f.put(
        "hello/prod/deploys/d1.json",
        br#"{"id":"d1","to":"r1","status":"succeeded","finished_at":"2026-11-01T10:00:00Z"}"#,
    );
    f.put(
        "hello/prod/deploys/d2.json",
        br#"{"id":"d2","to":"r2","status":"succeeded","finished_at":"2026-11-02T10:00:00Z","batches":[]}"#,
    );
    f.put(
        "hello/prod/deploys/d3.json",
        br#"{"id":"d3","to":"r3","status":"failed","finished_at":"2026-11-03T10:00:00Z"}"#,
    );
    f.put("hello/prod/deploys/d3/output/i-1.txt", b"not a record");

    let run = boot(&f);

    assert!(
        run.ok(),
        "the instance serves, so boot succeeds: {}",
        run.all
    );
    assert!(
        run.stdout
            .contains("WARNING=\"current release r3 failed; falling back to r2\""),
        "{}",
        run.all
    );
    assert!(run.last().contains("fallback_from=r3"), "{}", run.all);
    assert_eq!(f.answering().as_deref(), Some("r2"));
    assert_eq!(f.status()["fallback_from"], "r3");

    // A normal deploy afterwards clears the fallback.
    assert!(f.deploy(1).ok());
    assert_eq!(f.status()["fallback_from"], serde_json::Value::Null);
}

#[test]
fn boot_without_any_good_release_fails_and_runs_nothing() {
    let f = Fixture::new();
    f.publish(1, Spec::config("BREAK=start\n"));
    f.put("hello/prod/current", b"r1");

    let run = boot(&f);

    assert_eq!(run.code, 1, "{}", run.all);
    assert!(run.stdout.contains("fallback=none"), "{}", run.all);
    assert!(f.get("/").is_none());
}

#[test]
fn a_booting_instance_takes_its_fallback_from_good_json_not_from_every_record() {
    let f = Fixture::new();
    f.publish(1, Spec::default());
    f.publish(2, Spec::default());
    f.publish(3, Spec::config("BREAK=start\n"));
    f.put("hello/prod/current", b"r3");
    f.put(
        "hello/prod/good.json",
        br#"{"releases":[
            {"release":"r3","deploy":"d3","finished_at":"2026-11-03T10:00:00Z"},
            {"release":"r1","deploy":"d1","finished_at":"2026-11-01T10:00:00Z"}]}"#,
    );
    // A record good.json does not list: were the records walked, r2 would win.
    f.put(
        "hello/prod/deploys/d2.json",
        br#"{"id":"d2","to":"r2","status":"succeeded","finished_at":"2026-11-02T10:00:00Z"}"#,
    );

    let run = boot(&f);

    assert!(run.ok(), "{}", run.all);
    assert!(
        run.stdout
            .contains("WARNING=\"current release r3 failed; falling back to r1\""),
        "{}",
        run.all
    );
    assert_eq!(f.answering().as_deref(), Some("r1"));
}
