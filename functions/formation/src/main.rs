//! The formation function: the apps and environments, each environment's
//! load balancers, instances and log lines, and the web UI (`/ui`), whose forms start
//! deploys in the deploy function (`SLIPWAY_DEPLOY_FUNCTION`) and
//! terminate instances or environments. HTTP only: builds its config and
//! clients once, then hands the router from the shared crate to
//! `lambda_http`.

use std::time::Duration;

use lambda_http::Error;
use slipway_control::fleet::aws::AwsFleet;
use slipway_core::settings::ReleaseSettings;
use slipway_http::api::{AppState, FleetState, formation};

#[tokio::main]
async fn main() -> Result<(), Error> {
    slipway_http::telemetry::init();
    let settings = ReleaseSettings::from_env()?;
    let aws = slipway_control::aws::load_config().await;
    let mut app = AppState::load(&settings, &aws).await?;
    app.launcher = slipway_control::rollout::launch::deploy_launcher_from_env(&aws);
    let users = app.users.clone();
    let fleet = AwsFleet::new(&aws, Duration::from_secs(5));
    let logs = slipway_control::logs::Logs::new(&aws);
    let routes = formation::routes()
        .merge(slipway_http::web::routes())
        .with_state(FleetState {
            app,
            fleet,
            metrics: Some(slipway_control::metrics::Metrics::from_config(&aws, 60)),
        })
        .merge(
            slipway_http::api::logs::routes()
                .merge(slipway_http::web::log_routes())
                .with_state(logs),
        );
    lambda_http::run(slipway_http::api::serve(routes, users)).await
}
