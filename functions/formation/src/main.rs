//! The formation function: the apps and environments, and each
//! environment's load balancers and instances. HTTP only: builds its config
//! and clients once, then hands the router from the shared crate to
//! `lambda_http`.

use std::time::Duration;

use lambda_http::Error;
use slipway::api::{AppState, FleetState, formation};
use slipway::fleet::aws::AwsFleet;
use slipway::settings::ReleaseSettings;

#[tokio::main]
async fn main() -> Result<(), Error> {
    slipway::telemetry::init();
    let settings = ReleaseSettings::from_env()?;
    let aws = slipway::aws::load_config().await;
    let app = AppState::load(&settings, &aws).await?;
    let fleet = AwsFleet::new(&aws, Duration::from_secs(5));
    lambda_http::run(formation::router(FleetState { app, fleet })).await
}
