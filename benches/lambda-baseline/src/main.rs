//! The baseline of `scripts/bench-lambda`: the smallest function the
//! Lambda Rust runtime makes (it answers each event with the event), built
//! exactly as the control plane's functions are, so the difference between
//! their start-to-ready and this one's is what our own init costs.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(event.payload)
    }))
    .await
}
