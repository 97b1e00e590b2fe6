//! Environments on the local platform: the stack of `infra/environment.yaml`
//! (the template real environments come from) created in the emulator over
//! two subnets of its default VPC.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow, bail};
use aws_config::SdkConfig;
use aws_sdk_cloudformation::types::{Capability, Parameter};
use aws_sdk_ec2::types::Filter;
use slipway::names::EnvRef;

use crate::context::DevState;

/// Creates `<app>-<env>` from the template with `desired` instances.
pub async fn create_stack(
    config: &SdkConfig,
    template: &str,
    env: &EnvRef,
    bucket: &str,
    desired: u32,
) -> anyhow::Result<()> {
    let ec2 = slipway::aws::ec2_client(config);
    let vpcs = ec2
        .describe_vpcs()
        .filters(Filter::builder().name("isDefault").values("true").build())
        .send()
        .await
        .context("finding the default VPC")?;
    let vpc = vpcs
        .vpcs()
        .first()
        .and_then(|v| v.vpc_id())
        .ok_or_else(|| anyhow!("the emulator has no default VPC"))?
        .to_owned();
    let subnets = ec2
        .describe_subnets()
        .filters(Filter::builder().name("vpc-id").values(&vpc).build())
        .send()
        .await
        .context("finding subnets")?;
    let mut by_az = BTreeMap::new();
    for s in subnets.subnets() {
        by_az
            .entry(s.availability_zone().unwrap_or_default().to_owned())
            .or_insert_with(|| s.subnet_id().unwrap_or_default().to_owned());
    }
    let subnets: Vec<String> = by_az.into_values().take(2).collect();
    if subnets.len() < 2 {
        bail!("the default VPC needs subnets in two availability zones");
    }
    let params = [
        ("App", env.app.to_string()),
        ("Env", env.env.to_string()),
        ("VpcId", vpc),
        ("Subnets", subnets.join(",")),
        ("ReleaseBucket", bucket.to_owned()),
        ("MinSize", "0".to_owned()),
        ("MaxSize", (desired.max(1) * 3).to_string()),
        ("DesiredCapacity", desired.to_string()),
    ];
    let cfn = slipway::aws::cloudformation_client(config);
    let mut create = cfn
        .create_stack()
        .stack_name(env.qualified())
        .template_body(template)
        .capabilities(Capability::CapabilityIam);
    for (k, v) in params {
        create = create.parameters(
            Parameter::builder()
                .parameter_key(k)
                .parameter_value(v)
                .build(),
        );
    }
    create
        .send()
        .await
        .map_err(|e| anyhow!("{}", aws_sdk_cloudformation::error::DisplayErrorContext(e)))
        .with_context(|| format!("creating the stack {}", env.qualified()))?;
    let stack = cfn
        .describe_stacks()
        .stack_name(env.qualified())
        .send()
        .await
        .context("reading the stack")?;
    let stack = stack
        .stacks()
        .first()
        .ok_or_else(|| anyhow!("the stack vanished"))?;
    match stack.stack_status().map(|s| s.as_str()) {
        Some("CREATE_COMPLETE") => Ok(()),
        other => bail!(
            "the stack is {}: {}",
            other.unwrap_or("unknown"),
            stack.stack_status_reason().unwrap_or("no reason given")
        ),
    }
}

/// `ship dev env create`: against the running `ship dev`'s emulator.
pub async fn create(state: &DevState, env: &EnvRef, instances: u32) -> anyhow::Result<()> {
    let config = super::emulator::sdk_config(&state.aws_endpoint).await;
    let repo = super::emulator::repo_root(&std::env::current_dir()?);
    let template = std::fs::read_to_string(repo.join("infra/environment.yaml"))
        .context("reading infra/environment.yaml")?;
    create_stack(&config, &template, env, &state.bucket, instances).await
}
