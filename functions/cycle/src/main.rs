//! The cycle function: replace one instance or every instance
//! (health-gated, in a worker it launches by invoking itself
//! asynchronously), scale the group, terminate the environment. Builds its
//! config and clients once, then hands the handler from the shared crate
//! to the Lambda runtime.

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{Error, service_fn};
use slipway_control::cycle::{CycleOptions, Cycles, run_queued_cycle};
use slipway_control::fleet::aws::AwsFleet;
use slipway_control::rollout::launch::{JobKind, LambdaLauncher};
use slipway_control::rollout::{Deploys, Launcher};
use slipway_core::names::EnvRef;
use slipway_core::settings::ReleaseSettings;
use slipway_http::api::{AppState, FleetState, cycle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    slipway_http::telemetry::init();
    let settings = ReleaseSettings::from_env()?;
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
        .map_err(|_| "AWS_LAMBDA_FUNCTION_NAME is not set (Lambda sets it)")?;
    let aws = slipway_control::aws::load_config().await;
    let launcher: Arc<dyn Launcher> = Arc::new(LambdaLauncher::new(
        slipway_control::aws::lambda_client(&aws),
        function,
        JobKind::Cycle,
    ));
    let mut app = AppState::load(&settings, &aws).await?;
    app.launcher = Some(launcher.clone());
    let fleet = AwsFleet::new(&aws, Duration::from_secs(5));
    let cycles = Cycles::new(app.store.clone());
    let router = cycle::router(FleetState {
        metrics: None,
        app,
        fleet: fleet.clone(),
    });
    lambda_runtime::run(service_fn(move |event| {
        let (cycles, fleet, launcher) = (cycles.clone(), fleet.clone(), launcher.clone());
        slipway_http::lambda::worker_handler(
            router.clone(),
            JobKind::Cycle,
            move |env: EnvRef, id: String, time_left| async move {
                let settings = Deploys::new(cycles.store.clone()).settings(&env).await?;
                let options = CycleOptions::from_settings(&settings, time_left);
                let done = run_queued_cycle(&cycles, &env, &id, &fleet, launcher, options).await?;
                Ok(serde_json::to_value(done)?)
            },
            event,
        )
    }))
    .await
}
