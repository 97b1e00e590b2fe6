//! The local platform: Slipway end to end on one machine, no AWS account.
//!
//! One process runs the AWS emulator, the control plane (the routers of
//! every function, served together), the deploy and cycle workers as
//! tasks instead of asynchronous Lambda invocations, a poller that feeds
//! the bucket's S3 events from their queue to the release handler, and the
//! local fleet. Deploys go through `SsmRunner` and the real document, which
//! the emulator runs on each instance's host, and wait for the load
//! balancer's target health, which the emulator measures by probing them.

pub mod emulator;
pub mod fleet;
pub mod hosts;
pub mod logs;
pub mod metrics;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_config::SdkConfig;
use slipway_control::aws::fleet::AwsFleet;
use slipway_control::aws::ssm::{Polling, SsmRunners};
use slipway_control::cycle::Cycles;
use slipway_control::jobs::Launcher;
use slipway_control::rollout::Deploys;
use slipway_control::rollout::notify::WebhookPolicy;
use slipway_control::store::ReleaseStore;
use slipway_control::workers::{CycleWorker, DeployWorker, TaskLauncher};
use slipway_core::objects::S3Objects;
use slipway_http::auth::Users;
use slipway_http::chat::ChatSettings;
use slipway_http::control_plane::{ControlPlane, Function};
use tokio::task::JoinHandle;

use emulator::Emulator;
use fleet::{AgentSetup, LocalFleet, Reconciler};

pub const BUCKET: &str = "slipway-dev";
pub const USER: &str = "dev";
/// Locally, a stand-in for Slack's response URL may listen on this machine.
const LOCAL_RESPONSE_PREFIX: &str = "http://127.0.0.1:";

/// What starting the platform needs.
#[derive(Debug, Clone)]
pub struct PlatformOptions {
    /// The checkout (emulator scripts, `infra/`).
    pub repo: PathBuf,
    /// Where instance directories go.
    pub work: PathBuf,
    /// `slipway-agent`.
    pub agent: PathBuf,
    /// The control plane's port; 0 for any free one.
    pub port: u16,
    /// How often the local fleet follows the groups.
    pub fleet_every: Duration,
    /// Slack user ids that may change things from chat
    /// (`SLIPWAY_SLACK_USERS`).
    pub slack_users: Vec<String>,
    /// The emulator's load-balancer times as a share of AWS's (1: as AWS
    /// probes and drains; the tests run faster).
    pub time_scale: f64,
}

impl PlatformOptions {
    /// Defaults for `ship dev` run from `cwd`: the agent beside `ship`.
    pub fn for_cwd(cwd: &Path, port: Option<u16>) -> Self {
        Self {
            repo: emulator::repo_root(cwd),
            work: cwd.join(".slipway/dev"),
            agent: agent_binary(),
            port: port.unwrap_or(0),
            fleet_every: Duration::from_millis(500),
            slack_users: std::env::var("SLIPWAY_SLACK_USERS")
                .unwrap_or_default()
                .split(',')
                .filter(|u| !u.trim().is_empty())
                .map(|u| u.trim().to_owned())
                .collect(),
            time_scale: 1.0,
        }
    }
}

/// `SLIPWAY_AGENT_BIN`, else `slipway-agent` beside this executable.
pub fn agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLIPWAY_AGENT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("slipway-agent"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("slipway-agent"))
}

/// The running platform.
pub struct Platform {
    pub url: String,
    pub user: String,
    pub password: String,
    /// The Slack signing secret `POST /chat/slack` checks.
    pub slack_secret: String,
    pub bucket: String,
    pub config: SdkConfig,
    pub fleet: LocalFleet,
    pub store: ReleaseStore,
    emulator: Emulator,
    reconciler: Arc<Reconciler>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bucket_with_events(config: &SdkConfig, bucket: &str) -> anyhow::Result<String> {
    use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
    let s3 = slipway_core::objects::s3_client(config);
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .context("creating the bucket")?;
    let sqs = aws_sdk_sqs::Client::new(config);
    let queue = sqs
        .create_queue()
        .queue_name("slipway-uploads")
        .send()
        .await
        .context("creating the upload queue")?;
    let url = queue.queue_url.context("the queue has no URL")?;
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .context("reading the queue")?;
    let arn = attrs
        .attributes
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .context("the queue has no ARN")?;
    // No filter: S3 filters only by prefix and suffix, and uploads live
    // under <app>/<env>/uploads/; the release handler ignores other keys.
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(arn)
                        .events(Event::S3ObjectCreated)
                        .build()
                        .context("a queue configuration")?,
                )
                .build(),
        )
        .send()
        .await
        .context("routing the bucket's events to the queue")?;
    Ok(url)
}

/// Feeds the queue's S3 events to the release handler, as Lambda's SQS
/// event source does; messages it could not handle stay for a retry.
async fn poll_events(
    sqs: aws_sdk_sqs::Client,
    queue: String,
    store: ReleaseStore,
    deployer: Arc<dyn Launcher>,
) {
    use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
    loop {
        let out = match sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "could not read the upload queue");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let mut event = SqsEvent::default();
        for m in &messages {
            let mut message = SqsMessage::default();
            message.message_id = m.message_id.clone();
            message.receipt_handle = m.receipt_handle.clone();
            message.body = m.body.clone();
            message.event_source = Some("aws:sqs".into());
            event.records.push(message);
        }
        let response =
            slipway_control::events::handle_sqs_event(&store, &event, Some(deployer.as_ref()))
                .await;
        for m in &messages {
            let failed = response
                .batch_item_failures
                .iter()
                .any(|f| Some(&f.item_identifier) == m.message_id.as_ref());
            if !failed && let Some(handle) = &m.receipt_handle {
                let _ = sqs
                    .delete_message()
                    .queue_url(&queue)
                    .receipt_handle(handle)
                    .send()
                    .await;
            }
        }
    }
}

/// Run Command's results locally come within a second: poll often.
const LOCAL_POLLING: Polling = Polling {
    first: Duration::from_millis(200),
    max: Duration::from_secs(1),
    fast_for: Duration::from_secs(30),
    slow_min: Duration::from_secs(1),
};

/// The name the template gives the document by default.
const DEPLOY_DOCUMENT: &str = "Slipway-Deploy";

/// Creates `Slipway-Deploy` in the emulator from `infra/template.yaml`,
/// as the control plane's stack would, and returns its name.
async fn deploy_document(config: &aws_config::SdkConfig, bucket: &str) -> anyhow::Result<String> {
    let content = hosts::deploy_document(include_str!("../../../infra/template.yaml"), bucket)?;
    slipway_control::aws::ssm_client(config)
        .create_document()
        .name(DEPLOY_DOCUMENT)
        .content(content)
        .document_type(aws_sdk_ssm::types::DocumentType::Command)
        .document_format(aws_sdk_ssm::types::DocumentFormat::Yaml)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", aws_sdk_ssm::error::DisplayErrorContext(e)))
        .context("creating the deploy document in the emulator")?;
    Ok(DEPLOY_DOCUMENT.into())
}

impl Platform {
    pub async fn start(options: PlatformOptions) -> anyhow::Result<Self> {
        if !options.agent.is_file() {
            anyhow::bail!(
                "slipway-agent not found at {} (build it with `cargo build -p slipway-agent`, or set SLIPWAY_AGENT_BIN)",
                options.agent.display()
            );
        }
        let emulator = Emulator::start_scaled(&options.repo, options.time_scale).await?;
        let config = emulator.sdk_config().await;
        let queue = bucket_with_events(&config, BUCKET).await?;

        let password = uuid::Uuid::new_v4().simple().to_string();
        let users = Arc::new(
            Users::parse(&format!(
                "{USER}:{}\n",
                slipway_http::auth::hash_password(&password)
            ))
            .context("the dev user")?,
        );
        let store = ReleaseStore::new(
            S3Objects::new(slipway_core::objects::s3_client(&config), BUCKET),
            slipway_core::archive::Limits::default(),
        );
        let mut deploys = Deploys::new(store.clone());
        // Locally, stand-ins for Slack listen on this machine.
        deploys.webhooks = WebhookPolicy::AlsoLoopback;
        deploys.response_prefixes.push(LOCAL_RESPONSE_PREFIX.into());
        let fleet = LocalFleet::new(AwsFleet::new(&config, Duration::from_millis(250)));
        let agent = AgentSetup {
            binary: options.agent.clone(),
            endpoint: emulator.endpoint.clone(),
            bucket: BUCKET.into(),
        };
        let deploy_launcher: Arc<dyn Launcher> = Arc::new(TaskLauncher(Arc::new(DeployWorker {
            deploys: deploys.clone(),
            // The production adapters, unchanged: AwsFleet against the
            // emulator, whose load balancer probes the local instances.
            fleet: fleet.aws.clone(),
            // SSM Run Command of the real document, which the emulator runs
            // on each instance's host, as AWS runs it on the instance.
            runners: SsmRunners {
                client: slipway_control::aws::ssm_client(&config),
                document: deploy_document(&config, BUCKET).await?,
                output: deploys.objects.clone(),
                polling: LOCAL_POLLING,
            },
            bucket: BUCKET.into(),
            // Locally a worker never runs out of time: nothing to hand over to.
            next: None,
            cancel_poll: Some(Duration::from_millis(500)),
        })));
        let cycle_launcher: Arc<dyn Launcher> = Arc::new(TaskLauncher(Arc::new(CycleWorker {
            cycles: Cycles::new(store.clone()),
            fleet: fleet.aws.clone(),
            next: None,
            tune: Some(|mut options| {
                options.poll = Duration::from_millis(500);
                options
            }),
        })));
        let logs = slipway_control::logs::Logs::new(&config);
        // The local fleet samples every few seconds; points of 10 s show
        // them (CloudWatch keeps such high-resolution points too).
        let metrics = slipway_control::metrics::Metrics::from_config(&config, 10);
        let slack_secret = uuid::Uuid::new_v4().simple().to_string();
        let plane = ControlPlane {
            store: store.clone(),
            users: Some(users.into()),
            fleet: fleet.clone(),
            logs: logs.clone(),
            metrics: Some(metrics.clone()),
            deploys: Some(deploy_launcher.clone()),
            cycles: Some(cycle_launcher),
            chat: Some(Arc::new(ChatSettings {
                secret: slack_secret.clone().into_bytes(),
                users: options.slack_users.iter().cloned().collect(),
                teams: Default::default(),
                response_prefixes: deploys.response_prefixes.clone(),
            })),
            webhooks: deploys.webhooks,
        };
        let router = plane.router(&Function::ALL);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
            .await
            .context("binding the control plane's port")?;
        let url = format!("http://{}", listener.local_addr()?);

        std::fs::create_dir_all(&options.work)?;
        let reconciler = Arc::new(Reconciler {
            fleet: fleet.clone(),
            agent,
            root: options.work.clone(),
            hosts: emulator.hosts.clone(),
        });
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the control plane stopped");
            }
        })];
        tasks.push(tokio::spawn(poll_events(
            aws_sdk_sqs::Client::new(&config),
            queue,
            store.clone(),
            deploy_launcher,
        )));
        let mut sampler = metrics::MetricsSampler::new(metrics, fleet.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                if let Err(e) = sampler.step().await {
                    tracing::warn!(error = %format!("{e:#}"), "the local fleet could not publish its metrics");
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        }));
        let mut shipper = logs::LogShipper::new(logs, fleet.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                if let Err(e) = shipper.step().await {
                    tracing::warn!(error = %format!("{e:#}"), "the local fleet could not ship its logs");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
        let every = options.fleet_every;
        let follower = reconciler.clone();
        tasks.push(tokio::spawn(async move { follower.run(every).await }));
        Ok(Self {
            url,
            user: USER.into(),
            password,
            slack_secret,
            bucket: BUCKET.into(),
            config,
            fleet,
            store,
            emulator,
            reconciler,
            tasks,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.emulator.endpoint
    }

    /// Stops everything it started: the fleet's processes, the tasks, the
    /// emulator.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.reconciler.retire_all().await;
        self.emulator.stop().await;
    }
}
