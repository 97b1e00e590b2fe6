//! The release function: the releases/config HTTP API, and S3 upload
//! events (direct or through SQS), which become releases. With
//! `SLIPWAY_DEPLOY_FUNCTION` set, an upload to an environment with
//! auto-deploy on starts a deploy there. Chooses AWS's adapters and hands
//! the handler to the Lambda runtime.

use lambda_runtime::{Error, service_fn};
use slipway_http::control_plane::{ControlPlane, Function};

// A sandbox serves one event at a time: one thread drives it, and no
// idle workers are started at every cold start (blocking work still
// gets its own threads).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    slipway_http::telemetry::init();
    let aws = slipway_control::aws::load_config().await;
    let plane = ControlPlane::on_aws(&aws, Function::Release).await?;
    let router = plane.router(&[Function::Release]);
    lambda_runtime::run(service_fn(move |event| {
        slipway_http::lambda::release_handler(
            router.clone(),
            plane.store.clone(),
            plane.deploys.clone(),
            event,
        )
    }))
    .await
}
