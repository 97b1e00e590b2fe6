//! The one wiring of the control plane. Every function binary and the
//! local platform build their service here from the adapters they chose:
//! which routes each function serves, behind which auth, with which state,
//! and the worker a launched job runs in. A function's `main` picks AWS's
//! adapters ([`ControlPlane::on_aws`], [`deploy_worker_on_aws`],
//! [`cycle_worker_on_aws`]) and hands the result to the Lambda runtime;
//! `ship dev` picks the local platform's and serves every function at once.

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::origin::{Provenance, cross_site_refusal, provenance};
use crate::api::{self, AppState, FleetState};
use crate::auth::{USERS_MAX_AGE, UserSource, UsersError};
use crate::chat::{Chat, ChatSettings};
use slipway_control::aws::fleet::AwsFleet;
use slipway_control::aws::lambda::{
    CYCLE_FUNCTION_VAR, DEPLOY_FUNCTION_VAR, LambdaLauncher, launcher_from_env,
};
use slipway_control::aws::sqs::{FAILURE_QUEUE_VAR, FailureQueue};
use slipway_control::aws::ssm::{Polling, SsmRunners};
use slipway_control::cycle::Cycles;
use slipway_control::fleet::ControlFleet;
use slipway_control::jobs::{Launcher, Launchers};
use slipway_control::logs::Logs;
use slipway_control::metrics::Metrics;
use slipway_control::rollout::Deploys;
use slipway_control::rollout::notify::WebhookPolicy;
use slipway_control::store::ReleaseStore;
use slipway_control::workers::{CycleWorker, DeployWorker};
use slipway_core::ids::JobKind;
use slipway_core::objects::S3Objects;
use slipway_core::on_first_use::OnFirstUse;
use slipway_core::settings::{ReleaseSettings, SettingsError};

/// The control plane's functions; in AWS each is a Lambda function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Releases, config, uploads; S3 upload events.
    Release,
    /// Deploys, rollback, settings; the rollout worker.
    Deploy,
    /// Cycle, scale, terminate; the cycle worker.
    Cycle,
    /// Apps, formation, logs and the web UI.
    Formation,
    /// Slack's slash commands.
    Chat,
}

impl Function {
    pub const ALL: [Function; 5] = [
        Function::Release,
        Function::Deploy,
        Function::Cycle,
        Function::Formation,
        Function::Chat,
    ];

    /// Its resource in `infra/template.yaml`.
    pub fn logical_id(self) -> &'static str {
        match self {
            Function::Release => "ReleaseFunction",
            Function::Deploy => "DeployFunction",
            Function::Cycle => "CycleFunction",
            Function::Formation => "FormationFunction",
            Function::Chat => "ChatFunction",
        }
    }

    /// The environment variables the function's code reads that the
    /// template must give it: the local platform refuses to start when
    /// the template does not, naming both (a test keeps this list whole).
    pub fn settings(self) -> &'static [&'static str] {
        match self {
            Function::Release => &[
                "SLIPWAY_BUCKET",
                "SLIPWAY_USERS_PARAM",
                "RUST_LOG",
                DEPLOY_FUNCTION_VAR,
            ],
            Function::Deploy => &[
                "SLIPWAY_BUCKET",
                "SLIPWAY_USERS_PARAM",
                "RUST_LOG",
                DEPLOY_DOCUMENT_VAR,
                FAILURE_QUEUE_VAR,
                CYCLE_FUNCTION_VAR,
            ],
            Function::Cycle => &[
                "SLIPWAY_BUCKET",
                "SLIPWAY_USERS_PARAM",
                "RUST_LOG",
                FAILURE_QUEUE_VAR,
                DEPLOY_FUNCTION_VAR,
            ],
            Function::Formation => &[
                "SLIPWAY_BUCKET",
                "SLIPWAY_USERS_PARAM",
                "RUST_LOG",
                DEPLOY_FUNCTION_VAR,
            ],
            Function::Chat => &[
                "SLIPWAY_BUCKET",
                "RUST_LOG",
                DEPLOY_FUNCTION_VAR,
                SLACK_SECRET_PARAM_VAR,
                "SLIPWAY_SLACK_USERS",
                "SLIPWAY_SLACK_TEAMS",
            ],
        }
    }
}

/// The document the deploy function sends (`!Ref DeployDocument`).
pub const DEPLOY_DOCUMENT_VAR: &str = "SLIPWAY_DEPLOY_DOCUMENT";
/// The Slack signing secret's parameter, for the chat function.
pub const SLACK_SECRET_PARAM_VAR: &str = "SLIPWAY_SLACK_SECRET_PARAM";

/// The two seams only the local platform sets (the template never does,
/// a test makes sure): Slack and webhook stand-ins on this machine (plain
/// HTTP to 127.0.0.1), and how often workers poll SSM, target health and
/// cancel markers (local results come within a second, where AWS's take
/// seconds).
pub const LOCAL_LOOPBACK_HOOKS_VAR: &str = "SLIPWAY_LOCAL_LOOPBACK_HOOKS";
pub const LOCAL_POLL_MS_VAR: &str = "SLIPWAY_LOCAL_POLL_MS";

/// A response URL prefix a local stand-in for Slack may have.
pub const LOCAL_RESPONSE_PREFIX: &str = "http://127.0.0.1:";

#[derive(Debug, Clone, Copy)]
struct LocalSeams {
    loopback_hooks: bool,
    poll: Option<Duration>,
}

impl LocalSeams {
    fn from_env() -> Self {
        Self {
            loopback_hooks: std::env::var(LOCAL_LOOPBACK_HOOKS_VAR).is_ok_and(|v| v == "1"),
            poll: std::env::var(LOCAL_POLL_MS_VAR)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
        }
    }

    fn webhooks(self) -> WebhookPolicy {
        if self.loopback_hooks {
            WebhookPolicy::AlsoLoopback
        } else {
            WebhookPolicy::Public
        }
    }

    fn response_prefixes(self) -> Vec<String> {
        let mut prefixes = vec![slipway_control::rollout::notify::SLACK_RESPONSE_PREFIX.to_owned()];
        if self.loopback_hooks {
            prefixes.push(LOCAL_RESPONSE_PREFIX.into());
        }
        prefixes
    }
}

/// Why a function could not start: a setting is missing or bad, or a
/// secret could not be read. Names the setting, never a value.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Users(#[from] UsersError),
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("the Slack signing secret: {0}")]
    Secret(#[from] slipway_control::aws::SecretError),
}

/// The adapters a binary chose: everything the routers are built from.
#[derive(Clone)]
pub struct ControlPlane<F> {
    pub store: ReleaseStore,
    /// Basic-auth users; `None` where no route needs them (the chat
    /// function, which checks Slack's signature instead).
    pub users: Option<UserSource>,
    pub fleet: F,
    pub logs: Logs,
    /// Instance CPU and memory for the formation, where configured.
    pub metrics: Option<Metrics>,
    /// Starts deploy workers: the deploy function, or a task locally.
    pub deploys: Option<Arc<dyn Launcher>>,
    /// Starts cycle workers.
    pub cycles: Option<Arc<dyn Launcher>>,
    /// Slack's signing secret and who may change things from chat.
    pub chat: Option<Arc<ChatSettings>>,
    /// Where webhooks may point (public HTTPS on AWS).
    pub webhooks: WebhookPolicy,
    /// What chat commands' response URLs must start with.
    pub response_prefixes: Vec<String>,
    /// How often workers and the fleet poll (AWS's pace unless the local
    /// platform says otherwise).
    pub poll: Option<Duration>,
}

impl<F> ControlPlane<F> {
    /// The function's launchers as one, if it has any: each job goes to
    /// the function that runs its kind.
    pub fn launchers(&self) -> Option<Arc<dyn Launcher>> {
        if self.deploys.is_none() && self.cycles.is_none() {
            return None;
        }
        Some(Arc::new(Launchers {
            deploys: self.deploys.clone(),
            cycles: self.cycles.clone(),
        }))
    }

    /// The deploy service over this store, posting webhooks as this
    /// control plane allows.
    pub fn deploys_service(&self) -> Deploys {
        let mut deploys = Deploys::new(self.store.clone());
        deploys.webhooks = self.webhooks;
        deploys.response_prefixes = self.response_prefixes.clone();
        deploys
    }
}

impl<F: ControlFleet> ControlPlane<F> {
    fn app(&self, launcher: &Option<Arc<dyn Launcher>>) -> AppState {
        AppState {
            store: self.store.clone(),
            launcher: launcher.clone(),
            webhooks: self.webhooks,
        }
    }

    fn fleet_state(
        &self,
        launcher: &Option<Arc<dyn Launcher>>,
        metrics: Option<Metrics>,
    ) -> FleetState<F> {
        FleetState {
            app: self.app(launcher),
            fleet: self.fleet.clone(),
            metrics,
        }
    }

    /// One function's routes: those behind Basic auth, and those that
    /// check their own credentials (Slack's signature).
    fn routes(&self, function: Function) -> (Router, Router) {
        match function {
            Function::Release => (
                api::releases::routes().with_state(self.app(&None)),
                Router::new(),
            ),
            Function::Deploy => (
                api::deploys::routes().with_state(self.app(&self.launchers())),
                Router::new(),
            ),
            Function::Cycle => (
                api::cycle::routes().with_state(self.fleet_state(&self.launchers(), None)),
                Router::new(),
            ),
            Function::Formation => (
                api::formation::routes()
                    .merge(crate::web::routes())
                    .with_state(self.fleet_state(&self.launchers(), self.metrics.clone()))
                    .merge(
                        api::logs::routes()
                            .merge(crate::web::log_routes())
                            .with_state(self.logs.clone()),
                    ),
                Router::new(),
            ),
            Function::Chat => {
                let open = match (&self.chat, &self.deploys) {
                    (Some(settings), Some(launcher)) => api::chat::routes(Chat {
                        deploys: self.deploys_service(),
                        fleet: self.fleet.clone(),
                        launcher: launcher.clone(),
                        settings: settings.clone(),
                    }),
                    _ => Router::new(),
                };
                (Router::new(), open)
            }
        }
    }

    /// The finished service of `functions`: one in a Lambda function,
    /// every one of them on the local platform.
    pub fn router(&self, functions: &[Function]) -> Router {
        // Merging copies every route of the router merged in, so a single
        // function's routes (a Lambda function's) are taken as they are.
        let mut each = functions.iter().map(|f| self.routes(*f));
        let (mut authenticated, mut open) = each.next().unwrap_or_default();
        for (a, o) in each {
            authenticated = authenticated.merge(a);
            open = open.merge(o);
        }
        serve(authenticated, open, self.users.clone())
    }
}

/// The service around a function's routes: Basic auth on the
/// authenticated ones and the fallback (so unknown paths reveal nothing),
/// cross-site changes refused, `open` routes beside them, `/healthz` open,
/// request tracing. Without `users` no authenticated route is served:
/// every path but the open ones is a 404.
pub fn serve(authenticated: Router, open: Router, users: Option<UserSource>) -> Router {
    let rest = match users {
        Some(users) => authenticated
            .fallback(not_found)
            .layer(middleware::from_fn(refuse_cross_site))
            .layer(middleware::from_fn_with_state(
                users,
                api::require_basic_auth,
            )),
        None => Router::new().fallback(not_found),
    };
    // The few open routes are merged into the many others, not the other
    // way round: a merge copies the routes merged in.
    rest.merge(Router::new().route("/healthz", get(healthz)).merge(open))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &Request| {
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), user = tracing::field::Empty)
            }),
        )
}

async fn healthz() -> axum::Json<crate::wire::Health> {
    axum::Json(crate::wire::Health {
        status: "ok".into(),
    })
}

async fn not_found() -> api::ApiError {
    api::ApiError::NotFound("no such route".into())
}

/// Layer for every authenticated route: a state-changing request a browser
/// marks as cross-site is refused before its handler runs, in HTML for the
/// web UI's pages and in JSON for the API.
async fn refuse_cross_site(request: Request, next: Next) -> Response {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe && provenance(request.headers()) == Provenance::CrossSite {
        return if request.uri().path().starts_with("/ui/") {
            crate::web::PageError::from(cross_site_refusal()).into_response()
        } else {
            cross_site_refusal().into_response()
        };
    }
    next.run(request).await
}

/// Run Command's polling: AWS's, or every `poll` at most.
fn ssm_polling(poll: Option<Duration>) -> Polling {
    match poll {
        None => Polling::default(),
        Some(poll) => Polling {
            first: poll.min(Duration::from_millis(200)),
            max: poll,
            fast_for: Duration::from_secs(30),
            slow_min: poll,
        },
    }
}

/// How often the AWS fleet looks at target health while it waits.
const AWS_HEALTH_POLL: Duration = Duration::from_secs(5);
/// The period of the formation's metrics on AWS (the CloudWatch agent's).
const AWS_METRICS_PERIOD: i32 = 60;

/// A launcher of jobs of `kind` in this very function (the deploy and
/// cycle functions start their own workers, and hand over to themselves).
pub fn own_launcher(aws: &SdkConfig, kind: JobKind) -> Result<Arc<dyn Launcher>, StartError> {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
        .map_err(|_| StartError::Missing("AWS_LAMBDA_FUNCTION_NAME"))?;
    Ok(Arc::new(LambdaLauncher::new(
        OnFirstUse::new(aws, slipway_control::aws::lambda_client),
        function,
        kind,
    )))
}

impl ControlPlane<AwsFleet> {
    /// The control plane on AWS for `function`: the release store on the
    /// configured bucket, the Basic-auth users from their SecureString
    /// parameter (none for chat), the fleet, logs and metrics, and the
    /// launchers the function uses: its own for its own jobs, the deploy
    /// function (`SLIPWAY_DEPLOY_FUNCTION`) for deploys it only starts.
    pub async fn on_aws(aws: &SdkConfig, function: Function) -> Result<Self, StartError> {
        let settings = ReleaseSettings::from_env()?;
        let seams = LocalSeams::from_env();
        for name in function.settings() {
            if std::env::var_os(name).is_none() {
                return Err(StartError::Missing(name));
            }
        }
        // Every client is built on first use: a request needs one or two.
        // The users and the Slack secret are read through the fleet's SSM
        // client, so a request that needs both builds one.
        let fleet = AwsFleet::new(aws, seams.poll.unwrap_or(AWS_HEALTH_POLL));
        let users = match function {
            Function::Chat => None,
            _ => Some(UserSource::start(
                &fleet.ssm,
                settings.users_param.as_deref(),
                settings.users_inline.as_deref(),
                USERS_MAX_AGE,
            )?),
        };
        // Each function starts its own kind of job; the deploy and cycle
        // functions also start the other kind, when one waiting in the
        // queue is next as their job ends.
        let deploys = match function {
            Function::Deploy => Some(own_launcher(aws, JobKind::Deploy)?),
            Function::Release | Function::Formation | Function::Chat | Function::Cycle => Some(
                launcher_from_env(aws, DEPLOY_FUNCTION_VAR, JobKind::Deploy)
                    .ok_or(StartError::Missing(DEPLOY_FUNCTION_VAR))?,
            ),
        };
        let cycles = match function {
            Function::Cycle => Some(own_launcher(aws, JobKind::Cycle)?),
            Function::Deploy => Some(
                launcher_from_env(aws, CYCLE_FUNCTION_VAR, JobKind::Cycle)
                    .ok_or(StartError::Missing(CYCLE_FUNCTION_VAR))?,
            ),
            Function::Release | Function::Formation | Function::Chat => None,
        };
        let chat = match function {
            Function::Chat => {
                let secret = slipway_control::aws::Secret::new(
                    &fleet.ssm,
                    std::env::var(SLACK_SECRET_PARAM_VAR).ok().as_deref(),
                    std::env::var("SLIPWAY_SLACK_SECRET").ok().as_deref(),
                )?;
                let mut chat = ChatSettings::from_lookup(secret, |k| std::env::var(k).ok());
                chat.response_prefixes = seams.response_prefixes();
                Some(Arc::new(chat))
            }
            _ => None,
        };
        Ok(Self {
            store: ReleaseStore::new(
                S3Objects::on_first_use(aws, &settings.bucket),
                settings.limits,
            ),
            users,
            fleet,
            logs: Logs::new(aws),
            metrics: Some(Metrics::from_config(aws, AWS_METRICS_PERIOD)),
            deploys,
            cycles,
            chat,
            webhooks: seams.webhooks(),
            response_prefixes: seams.response_prefixes(),
            poll: seams.poll,
        })
    }
}

/// The deploy function's worker: the rollout through SSM Run Command with
/// the document `SLIPWAY_DEPLOY_DOCUMENT`, handing over to a fresh
/// invocation of this function.
pub fn deploy_worker_on_aws(
    aws: &SdkConfig,
    plane: &ControlPlane<AwsFleet>,
) -> DeployWorker<AwsFleet, SsmRunners> {
    let bucket = plane.store.objects().bucket().to_owned();
    DeployWorker {
        deploys: plane.deploys_service(),
        fleet: plane.fleet.clone(),
        runners: SsmRunners {
            client: plane.fleet.ssm.clone(),
            // Checked present at start (`Function::settings`).
            document: std::env::var(DEPLOY_DOCUMENT_VAR).unwrap_or_default(),
            output: plane.store.objects().clone(),
            polling: ssm_polling(plane.poll),
        },
        bucket,
        next: plane.launchers(),
        poll: plane.poll,
        failures: failure_queue(aws),
    }
}

/// The function's on-failure queue (`SLIPWAY_FAILURE_QUEUE`, checked
/// present at start), which its reconciler drains.
fn failure_queue(
    aws: &SdkConfig,
) -> Option<Arc<dyn slipway_control::reconcile::FailedInvocations>> {
    let url = std::env::var(FAILURE_QUEUE_VAR).ok()?;
    Some(Arc::new(FailureQueue::new(aws, url)))
}

/// The cycle function's worker, handing over to a fresh invocation of this
/// function.
pub fn cycle_worker_on_aws(
    aws: &SdkConfig,
    plane: &ControlPlane<AwsFleet>,
) -> CycleWorker<AwsFleet> {
    CycleWorker {
        cycles: Cycles::new(plane.store.clone()),
        fleet: plane.fleet.clone(),
        next: plane.launchers(),
        poll: plane.poll,
        failures: failure_queue(aws),
    }
}

#[cfg(test)]
#[path = "control_plane_tests.rs"]
mod tests;
