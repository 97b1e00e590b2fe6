//! The formation function: the apps and environments, each environment's
//! load balancers, instances and log lines, and the web UI (`/ui`), whose forms start
//! deploys in the deploy function (`SLIPWAY_DEPLOY_FUNCTION`) and
//! terminate instances or environments. HTTP only: builds its config and
//! clients once, then hands the router from the shared crate to
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
    let mut app = AppState::load(&settings, &aws).await?;
    app.launcher = slipway::rollout::launch::deploy_launcher_from_env(&aws);
    let users = app.users.clone();
    let fleet = AwsFleet::new(&aws, Duration::from_secs(5));
    let logs = slipway::logs::Logs::new(&aws);
    let routes = formation::routes()
        .merge(slipway::web::routes())
        .with_state(FleetState {
            app,
            fleet,
            metrics: Some(slipway::metrics::Metrics::from_config(&aws, 60)),
        })
        .merge(
            slipway::api::logs::routes()
                .merge(slipway::web::log_routes())
                .with_state(logs),
        );
    lambda_http::run(slipway::api::serve(routes, users)).await
}
