//! The chat function: Slack slash commands (`POST /chat/slack`), verified
//! by Slack's signature (secret in `SLIPWAY_SLACK_SECRET_PARAM`). Deploys
//! it starts run in the deploy function (`SLIPWAY_DEPLOY_FUNCTION`).
//! Chooses AWS's adapters and hands the router to `lambda_http`.

use lambda_http::Error;
use slipway_http::control_plane::{ControlPlane, Function};

// A sandbox serves one event at a time: one thread drives it, and no
// idle workers are started at every cold start (blocking work still
// gets its own threads).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    slipway_http::telemetry::init();
    let aws = slipway_control::aws::load_config().await;
    let plane = ControlPlane::on_aws(&aws, Function::Chat).await?;
    lambda_http::run(plane.router(&[Function::Chat])).await
}
