//! The deploy function: the deploys, rollback and settings HTTP API, and
//! the rollout worker it starts by invoking itself asynchronously (SSM Run
//! Command, the document `SLIPWAY_DEPLOY_DOCUMENT`). Chooses AWS's
//! adapters and hands the handler to the Lambda runtime.

use std::sync::Arc;

use lambda_runtime::{Error, service_fn};
use slipway_http::control_plane::{ControlPlane, Function, deploy_worker_on_aws};

// A sandbox serves one event at a time: one thread drives it, and no
// idle workers are started at every cold start (blocking work still
// gets its own threads).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    slipway_http::telemetry::init();
    let aws = slipway_control::aws::load_config().await;
    let plane = ControlPlane::on_aws(&aws, Function::Deploy).await?;
    let worker = Arc::new(deploy_worker_on_aws(&aws, &plane));
    let router = plane.router(&[Function::Deploy]);
    lambda_runtime::run(service_fn(move |event| {
        slipway_http::lambda::worker_handler(router.clone(), worker.clone(), event)
    }))
    .await
}
