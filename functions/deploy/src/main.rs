//! The deploy function: the deploys, rollback and settings HTTP API, and
//! the rollout worker it starts by invoking itself asynchronously. Builds
//! its config and clients once, then hands the handler from the shared
//! crate to the Lambda runtime.

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{Error, service_fn};
use slipway_control::fleet::aws::AwsFleet;
use slipway_control::rollout::engine::release_url;
use slipway_control::rollout::launch::{JobKind, LambdaLauncher};
use slipway_control::rollout::{Deploys, Launcher, Options, run_queued};
use slipway_control::runner::ssm::SsmRunner;
use slipway_core::names::{EnvRef, ReleaseId};
use slipway_core::settings::ReleaseSettings;
use slipway_http::api::{AppState, deploys};

#[tokio::main]
async fn main() -> Result<(), Error> {
    slipway_http::telemetry::init();
    let settings = ReleaseSettings::from_env()?;
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
        .map_err(|_| "AWS_LAMBDA_FUNCTION_NAME is not set (Lambda sets it)")?;
    let document =
        std::env::var("SLIPWAY_DEPLOY_DOCUMENT").unwrap_or_else(|_| "Slipway-Deploy".into());
    let aws = slipway_control::aws::load_config().await;
    let ssm = slipway_control::aws::ssm_client(&aws);
    let mut state = AppState::load(&settings, &aws).await?;
    let launcher: Arc<dyn Launcher> = Arc::new(LambdaLauncher::new(
        slipway_control::aws::lambda_client(&aws),
        function,
        JobKind::Deploy,
    ));
    state.launcher = Some(launcher.clone());
    let store = state.store.clone();
    let router = deploys::router(state);
    let fleet = AwsFleet::new(&aws, Duration::from_secs(5));
    let deploys = Deploys::new(store);
    let bucket = settings.bucket.clone();
    lambda_runtime::run(service_fn(move |event| {
        let (deploys, fleet, ssm, bucket, document, launcher) = (
            deploys.clone(),
            fleet.clone(),
            ssm.clone(),
            bucket.clone(),
            document.clone(),
            Some(launcher.clone()),
        );
        slipway_http::lambda::worker_handler(
            router.clone(),
            JobKind::Deploy,
            move |env: EnvRef, id: String, time_left| async move {
                let runner = SsmRunner::new(
                    ssm,
                    document,
                    bucket.clone(),
                    slipway_core::keys::deploy_output_prefix(&env, &id),
                );
                let env_settings = deploys.settings(&env).await?;
                let record = deploys.get(&env, &id).await?;
                let manifest = deploys.store.release(&env, record.to).await?;
                let options =
                    Options::from_settings(&env_settings, manifest.procfile.release().is_some())
                        .within(time_left);
                let of = env.clone();
                let url = move |r: ReleaseId| release_url(&bucket, &of, r);
                let done = run_queued(
                    &deploys, &env, &id, &fleet, &runner, &url, options, launcher,
                )
                .await?;
                Ok(serde_json::to_value(done)?)
            },
            event,
        )
    }))
    .await
}
