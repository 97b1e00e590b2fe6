//! The release function: S3 upload events (direct or through SQS) and the
//! releases/config HTTP API. Builds its config and clients once, then hands
//! the handler from the shared crate to the Lambda runtime.

use std::sync::Arc;

use lambda_runtime::{Error, service_fn};
use slipway::api::{AppState, releases};
use slipway::auth::Users;
use slipway::settings::ReleaseSettings;
use slipway::store::{ReleaseStore, S3Objects};

#[tokio::main]
async fn main() -> Result<(), Error> {
    slipway::telemetry::init();
    let settings = ReleaseSettings::from_env()?;
    let aws = slipway::aws::load_config().await;
    let users = Users::load(
        &slipway::aws::ssm_client(&aws),
        settings.users_param.as_deref(),
        settings.users_inline.as_deref(),
    )
    .await?;
    let store = ReleaseStore::new(
        S3Objects::new(slipway::aws::s3_client(&aws), &settings.bucket),
        settings.limits,
    );
    let router = releases::router(AppState {
        store: store.clone(),
        users: Arc::new(users),
        launcher: None,
    });
    lambda_runtime::run(service_fn(move |event| {
        slipway::lambda::release_handler(router.clone(), store.clone(), event)
    }))
    .await
}
