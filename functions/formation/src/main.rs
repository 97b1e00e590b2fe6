//! The formation function: the apps and environments, each environment's
//! load balancers, instances and log lines, and the web UI (`/ui`), whose
//! forms start deploys in the deploy function (`SLIPWAY_DEPLOY_FUNCTION`)
//! and terminate instances or environments. HTTP only: chooses AWS's
//! adapters and hands the router to `lambda_http`.

use lambda_http::Error;
use slipway_http::control_plane::{ControlPlane, Function};

// A sandbox serves one event at a time: one thread drives it, and no
// idle workers are started at every cold start (blocking work still
// gets its own threads).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    slipway_http::telemetry::init();
    let aws = slipway_control::aws::load_config().await;
    let plane = ControlPlane::on_aws(&aws, Function::Formation).await?;
    lambda_http::run(plane.router(&[Function::Formation])).await
}
