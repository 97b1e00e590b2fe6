//! `ship dev` runs the production path: a deploy is SSM Run Command of the
//! real document, which the emulator runs on each local instance; its
//! invocations carry real statuses and exit codes and its full output is in
//! the bucket at SSM's layout; the load balancer serves it from this machine,
//! from healthy instances only.

use slipway_core::names::EnvRef;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_on_ship_dev_is_a_run_command_of_the_real_document_on_each_instance() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;
    let env = EnvRef::parse("hello", "ssm").unwrap();
    booted_environment(&platform, &env, 2).await;
    ship_ok(&platform, &env, &["release", "--allow-dirty"]);
    ship_ok(&platform, &env, &["deploy"]);

    let ssm = slipway_control::aws::ssm_client(&platform.config);
    let listed = ssm
        .list_command_invocations()
        .details(true)
        .send()
        .await
        .unwrap();
    let instances: Vec<String> = platform
        .fleet
        .instances
        .lock()
        .unwrap()
        .keys()
        .map(|i| i.to_string())
        .collect();
    let mine: Vec<_> = listed
        .command_invocations()
        .iter()
        .filter(|i| i.document_name() == Some("Slipway-Deploy"))
        .collect();
    let mut expected = instances.clone();
    expected.sort();
    // Every instance prepared first (all at once), then deployed in its
    // batch: one invocation of each per instance, no other.
    for action in ["prepare", "deploy"] {
        let mut targeted: Vec<String> = mine
            .iter()
            .filter(|i| i.comment() == Some(&format!("slipway {action}")))
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        targeted.sort();
        assert_eq!(targeted, expected, "one {action} per instance, no other");
    }
    assert_eq!(
        mine.len(),
        2 * expected.len(),
        "nothing but prepare and deploy"
    );
    for invocation in &mine {
        let plugin = &invocation.command_plugins()[0];
        assert_eq!(
            (
                invocation.status().map(|s| s.as_str()),
                plugin.response_code()
            ),
            (Some("Success"), 0),
            "{:?}",
            plugin.output()
        );
    }

    let keys = platform
        .store
        .objects()
        .list_keys(&format!("{}ssm-output/", env.prefix()))
        .await
        .unwrap();
    for id in &instances {
        let key = keys
            .iter()
            .find(|k| k.ends_with(&format!("/{id}/awsrunShellScript/agent/stdout")))
            .unwrap_or_else(|| panic!("no output of {id} at SSM's layout: {keys:?}"));
        let output = platform.store.objects().get(key).await.unwrap().unwrap();
        assert!(
            String::from_utf8_lossy(&output.body).contains("at=done"),
            "{key}"
        );
        // The document's systemd-cat reached the instance's journal, and
        // wrote nothing to stderr.
        assert!(
            !keys
                .iter()
                .any(|k| k.contains(id.as_str()) && k.ends_with("/stderr")),
            "{keys:?}"
        );
        let dir = platform.fleet.instances.lock().unwrap()
            [&slipway_core::names::InstanceId::parse(id).unwrap()]
            .dir
            .clone();
        let journal = std::fs::read_to_string(dir.join("journal.log")).unwrap_or_default();
        assert!(journal.contains("at=done"), "{journal}");
    }

    // The load balancer is an address on this machine that sends requests
    // to the instances once its own probes call them healthy.
    let formation = platform.fleet.aws.formation(&env).await.unwrap();
    let address = format!("http://{}/", formation.load_balancers[0].dns_name);
    let started = std::time::Instant::now();
    let answer = loop {
        if let Ok(response) = reqwest::get(&address).await
            && response.status() == 200
        {
            break response.text().await.unwrap();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{address} never served the app"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(answer.contains("r1"), "{answer}");
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_at_a_time_deploy_of_four_instances_fails_no_request_through_the_load_balancer() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;
    let env = EnvRef::parse("hello", "lb").unwrap();
    let (_, address) = serving_r1(&platform, &env, 4).await;

    let requests = RequestLoop::start(&address);
    ship_ok(&platform, &env, &["config", "set", "GREETING=Again"]);
    ship_ok(&platform, &env, &["deploy"]);
    let answers = requests.stop().await;
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");

    assert!(
        answers.all.len() > 50,
        "only {} requests",
        answers.all.len()
    );
    answers.assert_none_failed("a one-at-a-time deploy");
    let answers = answers.all;
    let last = answers.last().unwrap().as_ref().unwrap();
    assert!(last.1.contains("r2"), "{}", last.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_instance_is_failed_with_its_exit_code_and_a_killed_app_leaves_the_load_balancer()
{
    use std::time::{Duration, Instant};

    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;
    let env = EnvRef::parse("hello", "kill").unwrap();
    let (ids, address) = serving_r1(&platform, &env, 2).await;
    let fleet = &platform.fleet.aws;

    // A release whose app exits at start fails on the first instance it
    // reaches; SSM reports that instance Failed with the agent's exit code.
    ship_ok(&platform, &env, &["config", "set", "BREAK=start"]);
    let out = ship_in(&platform, &env, &["deploy"]);
    assert!(!out.status.success(), "the deploy fails");
    let ssm = slipway_control::aws::ssm_client(&platform.config);
    let listed = ssm
        .list_command_invocations()
        .details(true)
        .send()
        .await
        .unwrap();
    let failed: Vec<_> = listed
        .command_invocations()
        .iter()
        .filter(|i| i.status().map(|s| s.as_str()) == Some("Failed"))
        .collect();
    assert_eq!(failed.len(), 1, "one instance failed: {listed:?}");
    let code = failed[0].command_plugins()[0].response_code();
    assert!(code > 0, "its exit code: {code}");
    let shown = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
    assert!(
        shown.contains(failed[0].instance_id().unwrap()),
        "ship names the failed instance: {shown}"
    );
    let answer = reqwest::get(&address).await.unwrap().text().await.unwrap();
    assert!(answer.contains("release r1"), "r1 still serves: {answer}");

    // Killing an instance's app makes its target unhealthy within interval
    // x unhealthy threshold (5 s x 2, scaled by 0.2: 2 s), give or take a
    // probe, and the load balancer sends it nothing more.
    let victim = &ids[0];
    let dir = platform.fleet.instances.lock().unwrap()[victim].dir.clone();
    let killed = Instant::now();
    for (pid, cmdline) in pids_under(&dir) {
        // Its shell may already be gone with it: not an error.
        if cmdline.contains("app.py") {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
    let elb = slipway_control::aws::elb_client(&platform.config);
    let group = fleet.group(&env).await.unwrap();
    let target_group = group.target_group_arns()[0].clone();
    loop {
        let health = elb
            .describe_target_health()
            .target_group_arn(&target_group)
            .send()
            .await
            .unwrap();
        let state = health
            .target_health_descriptions()
            .iter()
            .find(|d| d.target().and_then(|t| t.id()) == Some(victim.as_str()))
            .and_then(|d| d.target_health())
            .and_then(|h| h.state())
            .map(|s| s.as_str().to_owned());
        if state.as_deref() == Some("unhealthy") {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(4),
            "still {state:?} after {:?}",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("target unhealthy {:?} after the kill", killed.elapsed());
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let response = client.get(&address).send().await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "only the live instance is sent requests"
        );
    }
    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}
