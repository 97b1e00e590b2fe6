//! The chat function: Slack slash commands (`POST /chat/slack`), verified
//! by Slack's signature. Builds its config and clients once, then hands the
//! router from the shared crate to `lambda_http`. Deploys it starts run in
//! the deploy function (`SLIPWAY_DEPLOY_FUNCTION`).

use std::sync::Arc;
use std::time::Duration;

use lambda_http::Error;
use slipway_control::fleet::aws::AwsFleet;
use slipway_control::rollout::Deploys;
use slipway_control::store::ReleaseStore;
use slipway_core::objects::S3Objects;
use slipway_core::settings::ReleaseSettings;
use slipway_http::chat::{Chat, ChatSettings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    slipway_http::telemetry::init();
    let settings = ReleaseSettings::from_env()?;
    let aws = slipway_control::aws::load_config().await;
    let launcher = slipway_control::rollout::launch::deploy_launcher_from_env(&aws)
        .ok_or("SLIPWAY_DEPLOY_FUNCTION is not set")?;
    let secret = slipway_control::aws::secret(
        &slipway_control::aws::ssm_client(&aws),
        std::env::var("SLIPWAY_SLACK_SECRET_PARAM").ok().as_deref(),
        std::env::var("SLIPWAY_SLACK_SECRET").ok().as_deref(),
    )
    .await?;
    let store = ReleaseStore::new(
        S3Objects::new(slipway_core::objects::s3_client(&aws), &settings.bucket),
        settings.limits,
    );
    let chat = Chat {
        deploys: Deploys::new(store),
        fleet: AwsFleet::new(&aws, Duration::from_secs(5)),
        launcher,
        settings: Arc::new(ChatSettings::from_lookup(secret.into_bytes(), |k| {
            std::env::var(k).ok()
        })),
    };
    lambda_http::run(slipway_http::api::chat::router(chat)).await
}
