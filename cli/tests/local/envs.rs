//! `ship env` against the emulator's CloudFormation.

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn environments_are_created_and_destroyed_with_the_users_credentials() {
    let emulator = slipway_local::emulator::Emulator::start(&repo())
        .await
        .unwrap();
    let config = emulator.sdk_config().await;
    let work = tempfile::tempdir().unwrap();
    let aws = slipway_local::emulator::aws_env(&emulator.endpoint);
    let env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = |args: &[&str]| ship(work.path(), args, &env);
    let group = || async {
        slipway_control::aws::autoscaling_client(&config)
            .describe_auto_scaling_groups()
            .auto_scaling_group_names("hello-Qa")
            .send()
            .await
            .unwrap()
            .auto_scaling_groups()
            .first()
            .map(|g| {
                (
                    g.desired_capacity().unwrap_or(-1),
                    g.max_size().unwrap_or(-1),
                )
            })
    };

    let out = run(&[
        "env",
        "create",
        "hello",
        "qa",
        "--bucket",
        "b",
        "--desired",
        "2",
        "--max",
        "4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello-Qa: CREATE_COMPLETE"));
    assert_eq!(group().await, Some((2, 4)));

    let again = run(&["env", "create", "hello", "qa", "--bucket", "b"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    // (Updating is tested against the parameters it sends: the emulator's
    // UpdateStack cannot keep a value that was defaulted at creation.)
    let out = run(&["env", "update", "hello", "qa"]);
    assert!(
        stderr(&out).contains("nothing to change"),
        "{}",
        stderr(&out)
    );

    let out = run(&["env", "destroy", "hello", "qa"]);
    assert!(
        stderr(&out).contains("--confirm hello-qa"),
        "{}",
        stderr(&out)
    );
    assert!(group().await.is_some(), "nothing was deleted");
    let out = run(&["env", "destroy", "hello", "qa", "--confirm", "hello-qa"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(group().await, None);
    emulator.stop().await;
}
