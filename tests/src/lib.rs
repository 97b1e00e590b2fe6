//! The emulator harness: one AWS emulator (moto server) per test binary.
//!
//! The first test that asks for it starts `scripts/emulator.py` from the
//! project's virtualenv on a free loopback port and waits for it. The
//! emulator's stdin is a pipe held by this process, so when the test binary
//! exits, however it exits, the emulator sees end-of-file and stops. Tests
//! share the emulator and isolate themselves by bucket.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::Credentials;
use slipway_control::aws::fleet::AwsFleet;
use slipway_control::store::{ReleaseStore, UploadOutcome};
use slipway_core::archive::Limits;
use slipway_core::names::EnvRef;
use slipway_core::objects::S3Objects;
use slipway_http::auth::Users;
use slipway_http::control_plane::ControlPlane;
use slipway_local::hosts::Hosts;

pub struct Emulator {
    pub endpoint: String,
    _child: Child,
    _stdin: ChildStdin,
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> PathBuf {
    match std::env::var_os("SLIPWAY_EMULATOR_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join(".venv/bin/python"),
    }
}

/// Where this test binary's instances register as the emulator's managed
/// nodes (a directory that lives as long as the binary).
pub fn hosts() -> Hosts {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("slipway-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for managed nodes");
        dir
    });
    Hosts::new(dir)
}

/// How much faster than AWS the test emulator's load balancer runs.
pub const EMULATOR_TIME_SCALE: f64 = 0.05;

/// The emulator of this test binary, started on first use.
pub fn emulator() -> &'static Emulator {
    static EMULATOR: OnceLock<Emulator> = OnceLock::new();
    EMULATOR.get_or_init(|| {
        let python = python();
        assert!(
            python.exists(),
            "the AWS emulator is not installed: run scripts/install-emulator (or scripts/test), looked for {}",
            python.display()
        );
        let mut child = Command::new(&python)
            .arg(workspace_root().join("scripts/emulator.py"))
            .env(slipway_local::hosts::HOSTS_VAR, hosts().dir())
            // Load balancer probes and drains of local instances, 20 times
            // faster than AWS's.
            .env(slipway_local::hosts::TIME_SCALE_VAR, EMULATOR_TIME_SCALE.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the emulator");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the emulator's READY line");
        let port = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("emulator did not start: {line:?}"));
        let stdin = child.stdin.take().expect("piped stdin");
        Emulator { endpoint: format!("http://127.0.0.1:{port}"), _child: child, _stdin: stdin }
    })
}

/// SDK config pointed at the emulator, with dummy credentials.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(slipway_core::objects::retry_config())
        .region("us-east-1")
        .endpoint_url(&emulator().endpoint)
        .credentials_provider(Credentials::new(
            "testing", "testing", None, None, "emulator",
        ))
        .load()
        .await
}

/// An SDK config that reaches nothing: for clients a test never calls.
pub fn offline_config() -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .build()
}

/// A fleet for routes that never ask it anything.
pub fn offline_fleet() -> AwsFleet {
    AwsFleet::new(&offline_config(), std::time::Duration::from_secs(1))
}

/// The control plane as a function builds it: on `store`, with `fleet`,
/// these Basic-auth users and no launchers (a test adds those it needs).
/// Its log and metrics clients point nowhere; tests of them bring their own.
pub fn control_plane<F>(store: ReleaseStore, fleet: F, users: Arc<Users>) -> ControlPlane<F> {
    let config = offline_config();
    ControlPlane {
        store,
        users: Some(users.into()),
        fleet,
        logs: slipway_control::logs::Logs::new(&config),
        metrics: None,
        deploys: None,
        cycles: None,
        chat: None,
        webhooks: Default::default(),
        response_prefixes: vec![slipway_control::rollout::notify::SLACK_RESPONSE_PREFIX.into()],
        poll: None,
    }
}

/// A bucket no other test uses.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh bucket and clients for it.
pub struct World {
    pub config: SdkConfig,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub store: ReleaseStore,
}

impl World {
    pub async fn new() -> Self {
        Self::with_limits(Limits::default()).await
    }

    pub async fn with_limits(limits: Limits) -> Self {
        let config = sdk_config().await;
        let s3 = slipway_core::objects::s3_client(&config);
        let bucket = unique_name("slipway");
        s3.create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create bucket");
        let store = ReleaseStore::new(S3Objects::new(s3.clone(), &bucket), limits);
        Self {
            config,
            s3,
            bucket,
            store,
        }
    }

    pub async fn put(&self, key: &str, body: impl Into<Vec<u8>>) {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body.into().into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }

    /// A new running EC2 instance of the emulator.
    pub async fn instance(&self) -> slipway_core::names::InstanceId {
        let out = slipway_control::aws::ec2_client(&self.config)
            .run_instances()
            .image_id("ami-12c6146b")
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .expect("run an instance");
        slipway_core::names::InstanceId::parse(out.instances()[0].instance_id().unwrap())
            .expect("an instance id")
    }

    /// The emulator's default VPC.
    pub async fn vpc(&self) -> String {
        let ec2 = slipway_control::aws::ec2_client(&self.config);
        ec2.describe_vpcs()
            .send()
            .await
            .expect("describe VPCs")
            .vpcs()[0]
            .vpc_id()
            .unwrap()
            .to_owned()
    }

    /// Puts `body` at `<app>/<env>/uploads/<name>` and turns it into a
    /// release, as the S3 event would.
    pub async fn upload(&self, env: &EnvRef, name: &str, body: Vec<u8>) -> UploadOutcome {
        let key = format!("{}uploads/{name}", env.prefix());
        self.put(&key, body).await;
        self.store
            .release_upload(env, &key, "s3:tester")
            .await
            .unwrap_or_else(|e| panic!("release {key}: {e}"))
    }

    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Some(out.body.collect().await.expect("read body").to_vec()),
            Err(_) => None,
        }
    }

    /// This world's bucket through a client that counts its requests.
    pub fn counted(&self) -> (S3Objects, Requests) {
        let requests = Requests::default();
        let config = self
            .s3
            .config()
            .to_builder()
            .interceptor(requests.clone())
            .build();
        let client = aws_sdk_s3::Client::from_conf(config);
        (S3Objects::new(client, &self.bucket), requests)
    }

    /// Deletes every object under `prefix` (as a layout from before it was
    /// there).
    pub async fn delete_all(&self, prefix: &str) {
        for key in self.keys(prefix).await {
            self.s3
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .expect("delete");
        }
    }

    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("list");
        out.contents()
            .iter()
            .filter_map(|o| o.key.clone())
            .collect()
    }
}

/// How many HTTP requests a client sent (each retry too): what a read
/// costs, to show it does not grow with the history.
#[derive(Debug, Clone, Default)]
pub struct Requests(Arc<AtomicUsize>);

impl Requests {
    /// The requests since the last call.
    pub fn take(&self) -> usize {
        self.0.swap(0, Ordering::SeqCst)
    }
}

impl aws_sdk_s3::config::Intercept for Requests {
    fn name(&self) -> &'static str {
        "Requests"
    }

    fn read_before_transmit(
        &self,
        _: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_s3::config::RuntimeComponents,
        _: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// An environment made in the emulator from `infra/environment.yaml`, the
/// template real environments are made from, as the local platform makes
/// them: a launch template, an Auto Scaling group over two subnets, an ALB
/// and a target group. The stack is named `<app>-<Env>`, like the group.
pub async fn environment_stack(config: &SdkConfig, env: &EnvRef, bucket: &str, desired: u32) {
    let template = std::fs::read_to_string(workspace_root().join("infra/environment.yaml"))
        .expect("read infra/environment.yaml");
    ship::dev::env::create_stack(config, &template, env, bucket, desired)
        .await
        .unwrap_or_else(|e| panic!("create the environment stack: {e:#}"));
}

/// The emulator's agents: tags every instance of the group that has no
/// `slipway:release` yet with `release`, as a booting agent would once its
/// release is healthy. Runs until dropped.
pub fn simulate_booting_agents(
    config: &SdkConfig,
    env: &EnvRef,
    release: &str,
) -> tokio::task::JoinHandle<()> {
    let (asg, ec2) = (
        slipway_control::aws::autoscaling_client(config),
        slipway_control::aws::ec2_client(config),
    );
    let (group, release) = (env.physical_name(), release.to_owned());
    tokio::spawn(async move {
        loop {
            if let Ok(out) = asg
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(&group)
                .send()
                .await
            {
                let ids: Vec<String> = out
                    .auto_scaling_groups()
                    .iter()
                    .flat_map(|g| g.instances())
                    .filter_map(|i| i.instance_id().map(str::to_owned))
                    .collect();
                if !ids.is_empty()
                    && let Ok(described) = ec2
                        .describe_instances()
                        .set_instance_ids(Some(ids))
                        .send()
                        .await
                {
                    let untagged: Vec<String> = described
                        .reservations()
                        .iter()
                        .flat_map(|r| r.instances())
                        .filter(|i| !i.tags().iter().any(|t| t.key() == Some("slipway:release")))
                        .filter_map(|i| i.instance_id().map(str::to_owned))
                        .collect();
                    if !untagged.is_empty() {
                        let _ = ec2
                            .create_tags()
                            .set_resources(Some(untagged))
                            .tags(
                                aws_sdk_ec2::types::Tag::builder()
                                    .key("slipway:release")
                                    .value(&release)
                                    .build(),
                            )
                            .send()
                            .await;
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
}
