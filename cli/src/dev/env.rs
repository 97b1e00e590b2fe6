//! Environments on the local platform: the stack of `infra/environment.yaml`
//! (the template real environments come from) created in the emulator over
//! two subnets of its default VPC.

use aws_config::SdkConfig;
use slipway_core::names::EnvRef;

use crate::commands::envs::{self, ControlPlane, StackSettings};
use crate::context::DevState;

/// Creates `<app>-<Env>` from the template with `desired` instances, in
/// the default VPC, as `ship env create` does on AWS.
pub async fn create_stack(
    config: &SdkConfig,
    template: &str,
    env: &EnvRef,
    bucket: &str,
    desired: u32,
) -> anyhow::Result<()> {
    create_stack_sized(
        config,
        template,
        env,
        bucket,
        0,
        desired.max(1) * 3,
        desired,
    )
    .await
}

/// [`create_stack`] with the group's sizes as given.
pub async fn create_stack_sized(
    config: &SdkConfig,
    template: &str,
    env: &EnvRef,
    bucket: &str,
    min: u32,
    max: u32,
    desired: u32,
) -> anyhow::Result<()> {
    let plane = ControlPlane {
        bucket: bucket.to_owned(),
        role_arn: None,
        boundary_arn: None,
    };
    let settings = StackSettings {
        min: Some(min),
        max: Some(max),
        desired: Some(desired),
        ..StackSettings::default()
    };
    envs::create(config, template, env, &plane, &settings, false).await
}

/// `ship dev env create`: against the running `ship dev`'s emulator.
pub async fn create(state: &DevState, env: &EnvRef, instances: u32) -> anyhow::Result<()> {
    let config = slipway_local::emulator::sdk_config(&state.aws_endpoint).await;
    create_stack(&config, envs::TEMPLATE, env, &state.bucket, instances).await
}
