//! The local platform: Slipway end to end on one machine, no AWS account.
//!
//! One process runs the AWS emulator; the control plane as Lambda runs it
//! (each function of `infra/template.yaml` its own binary behind the local
//! Lambda's runtime API, with the template's environment and its own
//! role's credentials) behind the local API Gateway with the template's
//! routes; the bucket's S3 notifications, through a queue, as the
//! asynchronous invocations the template names; and the local fleet.
//! Deploys go through `SsmRunner` and the real document, which the
//! emulator runs on each instance's host, and wait for the load
//! balancer's target health, which the emulator measures by probing them.
//! Every call the functions and instances make is recorded and checked
//! against their IAM policies when the platform stops.

pub mod emulator;
pub mod fleet;
pub mod gateway;
pub mod hosts;
pub mod iam;
pub mod lambda;
pub mod logs;
pub mod metrics;
pub mod stack;
pub mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_config::SdkConfig;
use axum::body::Bytes;
use slipway_control::aws::fleet::AwsFleet;
use slipway_control::store::ReleaseStore;
use slipway_core::objects::S3Objects;
use tokio::task::JoinHandle;

use emulator::Emulator;
use fleet::{AgentSetup, LocalFleet, Reconciler};
use gateway::{Gateway, Target};
use iam::{CallLog, Principals};
use lambda::LocalLambda;

pub const BUCKET: &str = "slipway-dev";
pub const USER: &str = "dev";

/// What starting the platform needs.
#[derive(Debug, Clone)]
pub struct PlatformOptions {
    /// The checkout (emulator scripts, `infra/`).
    pub repo: PathBuf,
    /// Where instance directories, function logs and recorded calls go.
    pub work: PathBuf,
    /// `slipway-agent`.
    pub agent: PathBuf,
    /// Where the function binaries are (`release`, `deploy`, …).
    pub functions: PathBuf,
    /// The API's port; 0 for any free one.
    pub port: u16,
    /// How often the local fleet follows the groups.
    pub fleet_every: Duration,
    /// Slack user ids that may change things from chat (the template's
    /// `SlackUsers`).
    pub slack_users: Vec<String>,
    /// The emulator's load-balancer times as a share of AWS's (1: as AWS
    /// probes and drains; the tests run faster).
    pub time_scale: f64,
    /// The functions' timeouts and Lambda's retry back-offs as a share of
    /// the template's and Lambda's (1 for `ship dev`).
    pub function_time_scale: f64,
    /// Functions (by logical id) with a share of their own.
    pub function_time_scales: BTreeMap<String, f64>,
    /// Run the template's `Schedule` events (the reconcilers). A test that
    /// counts a function's asynchronous deliveries turns them off.
    pub schedules: bool,
}

impl PlatformOptions {
    /// Defaults for `ship dev` run from `cwd`: the agent and the functions
    /// beside `ship`.
    pub fn for_cwd(cwd: &Path, port: Option<u16>) -> Self {
        Self {
            repo: emulator::repo_root(cwd),
            work: cwd.join(".slipway/dev"),
            agent: agent_binary(),
            functions: stack::functions_dir(),
            port: port.unwrap_or(0),
            fleet_every: Duration::from_millis(500),
            slack_users: std::env::var("SLIPWAY_SLACK_USERS")
                .unwrap_or_default()
                .split(',')
                .filter(|u| !u.trim().is_empty())
                .map(|u| u.trim().to_owned())
                .collect(),
            time_scale: 1.0,
            function_time_scale: 1.0,
            function_time_scales: BTreeMap::new(),
            schedules: true,
        }
    }
}

/// `SLIPWAY_AGENT_BIN`, else `slipway-agent` beside this executable.
pub fn agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLIPWAY_AGENT_BIN") {
        return PathBuf::from(path);
    }
    beside_this_executable(&["slipway-agent"])
        .map(|dir| dir.join("slipway-agent"))
        .unwrap_or_else(|| PathBuf::from("slipway-agent"))
}

/// The directory beside this executable (or its parent: test binaries live
/// in `deps/`) that holds every one of `files`, where cargo puts a
/// workspace's binaries.
pub fn beside_this_executable(files: &[&str]) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .find(|d| files.iter().all(|f| d.join(f).is_file()))
        .map(Path::to_path_buf)
}

/// The running platform.
pub struct Platform {
    pub url: String,
    pub user: String,
    pub password: String,
    /// The Slack signing secret `POST /chat/slack` checks.
    pub slack_secret: String,
    pub bucket: String,
    /// The emulator's administrator (the platform's own calls).
    pub config: SdkConfig,
    pub fleet: LocalFleet,
    pub store: ReleaseStore,
    /// The control plane's functions.
    pub lambda: LocalLambda,
    /// The deploy function's name.
    pub deploy_function: String,
    pub principals: Principals,
    calls: PathBuf,
    emulator: Emulator,
    reconciler: Arc<Reconciler>,
    tasks: Vec<JoinHandle<()>>,
}

/// Hands each queue's S3 events to its function as S3 invokes it
/// (asynchronously); the local Lambda retries a failed one.
async fn poll_events(
    sqs: aws_sdk_sqs::Client,
    queue: String,
    function: String,
    lambda: LocalLambda,
) {
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
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "could not read a notification queue");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for m in out.messages.unwrap_or_default() {
            let body = m.body.unwrap_or_default();
            // S3's test event when the notification is set up carries no
            // records: S3 sends it to queues, never to functions.
            let is_event = serde_json::from_str::<serde_json::Value>(&body)
                .is_ok_and(|v| v.get("Records").is_some());
            if is_event && let Err(e) = lambda.invoke_event(&function, Bytes::from(body)) {
                tracing::error!(%function, error = %e, "could not queue an S3 event");
                continue;
            }
            if let Some(handle) = &m.receipt_handle {
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

async fn listen(port: u16) -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    let url = format!("http://{}", listener.local_addr()?);
    Ok((listener, url))
}

impl Platform {
    pub async fn start(options: PlatformOptions) -> anyhow::Result<Self> {
        if !options.agent.is_file() {
            anyhow::bail!(
                "slipway-agent not found at {} (build it with `cargo build -p slipway-agent`, or set SLIPWAY_AGENT_BIN)",
                options.agent.display()
            );
        }
        let calls = options.work.join("calls");
        std::fs::create_dir_all(&calls)?;
        let emulator = Emulator::start_recording(
            &options.repo,
            options.time_scale,
            &calls.join("emulator.jsonl"),
        )
        .await?;
        let config = emulator.sdk_config().await;
        let template = stack::read(BUCKET, &options.slack_users)?;
        let queues = stack::bucket_with_notifications(&config, BUCKET, &template).await?;
        stack::queues(&config, &template).await?;

        let password = uuid::Uuid::new_v4().simple().to_string();
        let users = format!("{USER}:{}\n", slipway_http::auth::hash_password(&password));
        stack::secure_parameter(
            &config,
            &stack::parameter(&template, "UsersParameterName")?,
            &users,
        )
        .await?;
        let slack_secret = uuid::Uuid::new_v4().simple().to_string();
        stack::secure_parameter(
            &config,
            &stack::parameter(&template, "SlackSecretParameterName")?,
            &slack_secret,
        )
        .await?;
        stack::deploy_document(&config, &template, BUCKET).await?;

        let principals = Principals::default();
        let (lambda_listener, lambda_url) = listen(0).await?;
        let mut functions = stack::functions(
            &template,
            &options.functions,
            &stack::Endpoints {
                aws: emulator.endpoint.clone(),
                lambda: lambda_url,
            },
            &principals,
        )?;
        for f in &mut functions {
            f.time_scale = options
                .function_time_scales
                .get(&f.spec.logical_id)
                .copied();
        }
        let lambda = LocalLambda::new(
            functions,
            &options.work.join("lambda"),
            options.function_time_scale,
            Some(aws_sdk_sqs::Client::new(&config)),
        )?;
        let invoke_calls = Arc::new(CallLog::create(&calls.join("lambda.jsonl"))?);
        let mut tasks = vec![tokio::spawn({
            let api = lambda::api::routes(lambda.clone(), invoke_calls);
            async move {
                if let Err(e) = axum::serve(lambda_listener, api).await {
                    tracing::error!(error = %e, "the local Lambda API stopped");
                }
            }
        })];
        lambda.warm_up().await?;

        let gateway = Gateway {
            api_id: "local".into(),
            targets: template
                .functions
                .iter()
                .flat_map(|f| {
                    f.routes.iter().map(|route| Target {
                        route: route.clone(),
                        function: f.name.clone(),
                    })
                })
                .collect(),
            lambda: lambda.clone(),
        };
        let (listener, url) = listen(options.port).await?;
        tasks.push(tokio::spawn(async move {
            let service = gateway
                .router()
                .into_make_service_with_connect_info::<std::net::SocketAddr>();
            if let Err(e) = axum::serve(listener, service).await {
                tracing::error!(error = %e, "the API Gateway stopped");
            }
        }));
        // EventBridge schedules (the reconcilers' every minute), at the
        // platform's time scale.
        let scheduled = template.functions.iter().filter(|_| options.schedules);
        for function in scheduled {
            for schedule in &function.schedules {
                let (lambda, name) = (lambda.clone(), function.name.clone());
                let every = schedule.every.mul_f64(options.time_scale);
                let input = axum::body::Bytes::from(schedule.input.to_string());
                tasks.push(tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        if let Err(e) = lambda.invoke_event(&name, input.clone()) {
                            tracing::warn!(function = %name, error = %e, "could not invoke a scheduled event");
                        }
                    }
                }));
            }
        }
        for (queue, function) in queues {
            tasks.push(tokio::spawn(poll_events(
                aws_sdk_sqs::Client::new(&config),
                queue,
                function,
                lambda.clone(),
            )));
        }

        let store = ReleaseStore::new(
            S3Objects::new(slipway_core::objects::s3_client(&config), BUCKET),
            slipway_core::archive::Limits::default(),
        );
        let fleet = LocalFleet::new(AwsFleet::new(&config, Duration::from_millis(250)));
        std::fs::create_dir_all(&options.work)?;
        let reconciler = Arc::new(Reconciler {
            fleet: fleet.clone(),
            agent: AgentSetup {
                binary: options.agent.clone(),
                endpoint: emulator.endpoint.clone(),
                bucket: BUCKET.into(),
                principals: principals.clone(),
            },
            root: options.work.clone(),
            hosts: emulator.hosts.clone(),
        });
        // The fleet's own logs and metrics, as the CloudWatch agent ships
        // them; the formation reads them back.
        let logs = slipway_control::logs::Logs::new(&config);
        let metrics = slipway_control::metrics::Metrics::from_config(&config, 10);
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
            deploy_function: stack::physical(&template, "DeployFunction")?,
            lambda,
            principals,
            calls,
            emulator,
            reconciler,
            tasks,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.emulator.endpoint
    }

    /// The emulator, for what tests do to it (fault injection).
    pub fn emulator(&self) -> &Emulator {
        &self.emulator
    }

    /// Stops everything it started (the fleet's processes, the tasks, the
    /// functions, the emulator), then checks every call the functions and
    /// instances made against their IAM policies: a call no policy allows
    /// is an error naming the principal, the call and the permission.
    pub async fn stop(self) -> anyhow::Result<()> {
        for task in &self.tasks {
            task.abort();
        }
        self.reconciler.retire_all().await;
        self.emulator.stop().await;
        drop(self.lambda);
        iam::check::check_dir(&self.calls, &self.principals)
    }
}
