//! The release function: S3 upload events (direct or through SQS) and the
//! releases/config HTTP API. Builds its config and clients once, then hands
//! the handler from the shared crate to the Lambda runtime. With
//! `SLIPWAY_DEPLOY_FUNCTION` set, uploads to environments with auto-deploy
//! on start a deploy by invoking the deploy function asynchronously.

use lambda_runtime::{Error, service_fn};
use slipway_core::settings::ReleaseSettings;
use slipway_http::api::{AppState, releases};

#[tokio::main]
async fn main() -> Result<(), Error> {
    slipway_http::telemetry::init();
    let settings = ReleaseSettings::from_env()?;
    let aws = slipway_control::aws::load_config().await;
    let state = AppState::load(&settings, &aws).await?;
    let deployer = slipway_control::rollout::launch::deploy_launcher_from_env(&aws);
    let store = state.store.clone();
    let router = releases::router(state);
    lambda_runtime::run(service_fn(move |event| {
        slipway_http::lambda::release_handler(
            router.clone(),
            store.clone(),
            deployer.clone(),
            event,
        )
    }))
    .await
}
