//! `SsmRunner` against the emulator's Run Command, as it will run in an
//! account: the `Slipway-Deploy` document made from `infra/template.yaml`,
//! the real agent on each registered local host, every invocation's status
//! and exit code from `ListCommandInvocations`, the output in the bucket at
//! SSM's own layout.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::{DocumentFormat, DocumentType};
use futures::FutureExt;
use slipway_control::aws::ssm::{Polling, SsmRunner};
use slipway_control::runner::{AgentCommand, RunStatus, Runner};
use slipway_core::names::{EnvRef, InstanceId};
use slipway_local::hosts::{AGENT_PATH, LocalHost, deploy_document};
use slipway_tests::{World, emulator, hosts, unique_name, workspace_root};

struct Setup {
    world: World,
    ssm: aws_sdk_ssm::Client,
    document: String,
    env: EnvRef,
    tmp: tempfile::TempDir,
}

async fn setup() -> Setup {
    let world = World::new().await;
    let ssm = slipway_control::aws::ssm_client(&world.config);
    let template = std::fs::read_to_string(workspace_root().join("infra/template.yaml")).unwrap();
    let document = unique_name("Slipway-Deploy");
    ssm.create_document()
        .name(&document)
        .content(deploy_document(&template, &world.bucket).unwrap())
        .document_type(DocumentType::Command)
        .document_format(DocumentFormat::Yaml)
        .send()
        .await
        .unwrap();
    Setup {
        world,
        ssm,
        document,
        env: EnvRef::parse("hello", "prod").unwrap(),
        tmp: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    async fn instance(&self) -> InstanceId {
        self.world.instance().await
    }

    /// The agent's settings on a local host whose agent root is `root`.
    fn host(&self, id: &InstanceId, root: &Path) -> LocalHost {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = self.tmp.path().join(id.as_str());
        std::fs::create_dir_all(&dir).unwrap();
        let mut env: BTreeMap<String, String> =
            slipway_local::emulator::aws_env(&emulator().endpoint)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
        for (k, v) in [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("SLIPWAY_ROOT", root.display().to_string()),
            ("SLIPWAY_SUPERVISOR", "direct".into()),
            ("SLIPWAY_PORT", port.to_string()),
            ("SLIPWAY_INSTANCE_ID", id.to_string()),
            (
                "SLIPWAY_AGENT_CONFIG",
                dir.join("agent.env").display().to_string(),
            ),
        ] {
            env.insert(k.into(), v);
        }
        LocalHost {
            dir,
            env,
            programs: BTreeMap::from([(AGENT_PATH.into(), slipway_local::agent_binary())]),
            port: Some(port),
        }
    }

    fn runner(&self, prefix: &str) -> SsmRunner {
        SsmRunner::new(
            self.ssm.clone(),
            &self.document,
            self.world.store.objects().clone(),
            prefix,
        )
        .with_polling(Polling {
            first: Duration::from_millis(100),
            max: Duration::from_millis(300),
            fast_for: Duration::from_secs(60),
            slow_min: Duration::from_millis(300),
        })
    }

    fn release_url(&self) -> String {
        format!(
            "s3://{}/{}releases/r1",
            self.world.bucket,
            self.env.prefix()
        )
    }
}

/// The example app with a build whose output is longer than SSM keeps
/// inline, so the agent's summary is only in the full output.
fn example_archive() -> Vec<u8> {
    let app = std::fs::read(workspace_root().join("examples/hello/app.py")).unwrap();
    let mut tar = slipway_core::testing::TarBuilder::new();
    tar.file("Procfile", b"web: python3 app.py\nbuild: seq 1 1500\n");
    tar.file("app.py", &app);
    slipway_core::testing::gzip(&tar.finish())
}

#[tokio::test]
async fn a_deploy_runs_the_real_document_and_agent_on_each_instance_with_its_exit_code_and_output()
{
    let s = setup().await;
    s.world
        .upload(&s.env, "src.tar.gz", example_archive())
        .await;
    let (good, bad) = (s.instance().await, s.instance().await);
    let good_host = s.host(&good, &s.tmp.path().join("good-root"));
    hosts().register(&good, &good_host).unwrap();
    // An agent root that is a file: the agent fails at its first step.
    let broken = s.tmp.path().join("broken-root");
    std::fs::write(&broken, "not a directory").unwrap();
    hosts().register(&bad, &s.host(&bad, &broken)).unwrap();
    let prefix = format!("{}ssm-output/d1/", s.env.prefix());

    let results = s
        .runner(&prefix)
        .run(
            &[good.clone(), bad.clone()],
            &AgentCommand::Deploy {
                release_url: s.release_url(),
            },
            Duration::from_secs(120),
            futures::future::pending().boxed(),
            &Default::default(),
        )
        .await
        .unwrap();

    let stop = std::process::Command::new(slipway_local::agent_binary())
        .args(["stop", "--app", "hello"])
        .env_clear()
        .envs(&good_host.env)
        .output()
        .unwrap();
    assert!(stop.status.success(), "{stop:?}");
    let by_instance: BTreeMap<_, _> = results.iter().map(|r| (r.instance.clone(), r)).collect();
    let (ok, failed) = (by_instance[&good], by_instance[&bad]);
    assert_eq!(
        (ok.status, ok.exit_code),
        (RunStatus::Success, Some(0)),
        "{}",
        ok.output_tail
    );
    assert!(ok.output_tail.contains("at=done"), "{}", ok.output_tail);
    assert_eq!(
        (failed.status, failed.exit_code),
        (RunStatus::Failed, Some(1)),
        "{}",
        failed.output_tail
    );
    assert!(
        failed.output_tail.contains("at=failed"),
        "{}",
        failed.output_tail
    );

    let keys = s.world.keys(&prefix).await;
    for (id, needle) in [(&good, "at=done"), (&bad, "at=failed")] {
        let key = keys
            .iter()
            .find(|k| k.ends_with(&format!("/{id}/awsrunShellScript/agent/stdout")))
            .unwrap_or_else(|| panic!("no output of {id} at SSM's layout in {keys:?}"));
        let text = String::from_utf8(s.world.get(key).await.unwrap()).unwrap();
        assert!(text.contains(needle), "{key}: {text}");
    }
}

#[tokio::test]
async fn the_document_refuses_a_release_outside_the_bucket_and_an_unknown_action() {
    let s = setup().await;
    let id = s.instance().await;
    hosts()
        .register(&id, &s.host(&id, &s.tmp.path().join("root")))
        .unwrap();
    let outside = format!("s3://other-bucket/{}releases/r1", s.env.prefix());
    for (action, url) in [
        ("deploy", outside.as_str()),
        ("rm -rf /", s.release_url().as_str()),
        ("deploy", &format!("{}; reboot", s.release_url())),
    ] {
        let err = s
            .ssm
            .send_command()
            .document_name(&s.document)
            .instance_ids(id.as_str())
            .parameters("Action", vec![action.into()])
            .parameters("ReleaseUrl", vec![url.into()])
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            err.as_service_error().and_then(|e| e.code()),
            Some("InvalidParameters"),
            "{action} {url}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_command_to_an_instance_that_is_not_a_managed_node_is_refused_whole() {
    let s = setup().await;
    let (known, unknown) = (s.instance().await, s.instance().await);
    hosts()
        .register(&known, &s.host(&known, &s.tmp.path().join("root")))
        .unwrap();

    let err = s
        .ssm
        .send_command()
        .document_name(&s.document)
        .instance_ids(known.as_str())
        .instance_ids(unknown.as_str())
        .parameters("Action", vec!["deploy".into()])
        .parameters("ReleaseUrl", vec![s.release_url()])
        .send()
        .await
        .unwrap_err();

    assert_eq!(
        err.as_service_error().and_then(|e| e.code()),
        Some("InvalidInstanceId"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_node_that_lost_its_connection_is_delayed_then_runs_when_back_or_times_out_delivering() {
    let s = setup().await;
    let (late, lost) = (s.instance().await, s.instance().await);
    // Agent roots that are files: an agent that runs fails at once, which
    // is enough to tell that it ran.
    let broken = s.tmp.path().join("broken-root");
    std::fs::write(&broken, "not a directory").unwrap();
    let (late_host, lost_host) = (s.host(&late, &broken), s.host(&lost, &broken));
    for (id, host) in [(&late, &late_host), (&lost, &lost_host)] {
        hosts().register(id, host).unwrap();
        // A node whose directory is gone has lost its connection.
        std::fs::remove_dir_all(&host.dir).unwrap();
    }
    let runner = s.runner(&format!("{}ssm-output/d2/", s.env.prefix()));
    let command = AgentCommand::Deploy {
        release_url: s.release_url(),
    };
    // 30 s to deliver (SSM's least), 1.5 s in the emulator's time.
    let both = [late.clone(), lost.clone()];
    let gone = Default::default();
    let run = runner.run(
        &both,
        &command,
        Duration::from_secs(30),
        futures::future::pending().boxed(),
        &gone,
    );
    let watch = async {
        let started = std::time::Instant::now();
        loop {
            let out = s
                .ssm
                .list_command_invocations()
                .instance_id(late.as_str())
                .send()
                .await
                .unwrap();
            let status = out
                .command_invocations()
                .first()
                .and_then(|i| i.status())
                .map(|s| s.as_str().to_owned());
            if status.as_deref() == Some("Delayed") {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(1), "{status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let info = s.ssm.describe_instance_information().send().await.unwrap();
        let ping = info
            .instance_information_list()
            .iter()
            .find(|i| i.instance_id() == Some(lost.as_str()))
            .and_then(|i| i.ping_status())
            .map(|p| p.as_str().to_owned());
        assert_eq!(ping.as_deref(), Some("ConnectionLost"));
        // Back online before the delivery timeout.
        std::fs::create_dir_all(&late_host.dir).unwrap();
    };
    let (results, ()) = futures::join!(run, watch);

    let results = results.unwrap();
    let status = |id: &InstanceId| {
        let r = results.iter().find(|r| &r.instance == id).unwrap();
        (r.status, r.exit_code)
    };
    assert_eq!(
        status(&late),
        (RunStatus::Failed, Some(1)),
        "it ran: {results:?}"
    );
    assert_eq!(status(&lost).0, RunStatus::DeliveryTimedOut, "{results:?}");
}
