//! `ship env create|update|destroy`: an environment's CloudFormation stack
//! (`infra/environment.yaml`), made with the user's own AWS credentials,
//! following the stack's events and failing with the stack's own reason.
//! After an update that changed the launch template (instance type, image)
//! the control plane cycles every instance, health-gated, so the fleet
//! converges on it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use aws_config::SdkConfig;
use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
use aws_sdk_ec2::types::Filter;
use clap::Args;
use slipway_core::names::EnvRef;

/// The environment template, built into `ship` so it works anywhere.
pub const TEMPLATE: &str = include_str!("../../../infra/environment.yaml");

/// What `create` and `update` may set; unset ones keep their value (or the
/// template's default).
#[derive(Debug, Clone, Default, Args)]
pub struct StackSettings {
    /// The VPC [default: the account's default VPC]
    #[arg(long)]
    pub vpc: Option<String>,
    /// Subnets in two or more AZs, comma-separated [default: one per AZ of the VPC, two]
    #[arg(long, value_delimiter = ',')]
    pub subnets: Vec<String>,
    #[arg(long)]
    pub instance_type: Option<String>,
    /// An AMI id [default: the latest Amazon Linux 2023]
    #[arg(long)]
    pub ami: Option<String>,
    #[arg(long)]
    pub min: Option<u32>,
    #[arg(long)]
    pub max: Option<u32>,
    #[arg(long)]
    pub desired: Option<u32>,
}

/// Where the control plane's stack is, for its bucket, stack role and
/// the permissions boundary of instance roles.
pub struct ControlPlane {
    pub bucket: String,
    pub role_arn: Option<String>,
    pub boundary_arn: Option<String>,
}

impl ControlPlane {
    /// From the control plane stack's outputs (`BucketName`,
    /// `EnvironmentStackRoleArn`, `InstanceRoleBoundaryArn`), or a bucket
    /// given directly.
    pub async fn find(
        config: &SdkConfig,
        stack: &str,
        bucket: Option<String>,
    ) -> anyhow::Result<Self> {
        if let Some(bucket) = bucket {
            return Ok(Self {
                bucket,
                role_arn: None,
                boundary_arn: None,
            });
        }
        let cfn = slipway_control::aws::cloudformation_client(config);
        let out = cfn
            .describe_stacks()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| anyhow!("{}", aws_sdk_cloudformation::error::DisplayErrorContext(e)))
            .with_context(|| format!("reading the control plane stack {stack} (deploy it with `make deploy`, or pass --bucket)"))?;
        let outputs = out
            .stacks()
            .first()
            .map(|s| s.outputs().to_vec())
            .unwrap_or_default();
        let output = |k: &str| {
            outputs
                .iter()
                .find(|o| o.output_key() == Some(k))
                .and_then(|o| o.output_value())
                .map(str::to_owned)
        };
        Ok(Self {
            bucket: output("BucketName")
                .ok_or_else(|| anyhow!("{stack} has no BucketName output"))?,
            role_arn: output("EnvironmentStackRoleArn"),
            boundary_arn: output("InstanceRoleBoundaryArn"),
        })
    }
}

/// The default VPC and one subnet in each of its first two AZs.
async fn default_network(
    config: &SdkConfig,
    vpc: Option<String>,
) -> anyhow::Result<(String, Vec<String>)> {
    let ec2 = slipway_control::aws::ec2_client(config);
    let vpc = match vpc {
        Some(v) => v,
        None => {
            let vpcs = ec2
                .describe_vpcs()
                .filters(Filter::builder().name("isDefault").values("true").build())
                .send()
                .await
                .map_err(|e| anyhow!("{}", aws_sdk_ec2::error::DisplayErrorContext(e)))
                .context("finding the default VPC")?;
            vpcs.vpcs()
                .first()
                .and_then(|v| v.vpc_id())
                .ok_or_else(|| anyhow!("no default VPC: say --vpc and --subnets"))?
                .to_owned()
        }
    };
    let subnets = ec2
        .describe_subnets()
        .filters(Filter::builder().name("vpc-id").values(&vpc).build())
        .send()
        .await
        .map_err(|e| anyhow!("{}", aws_sdk_ec2::error::DisplayErrorContext(e)))
        .context("finding subnets")?;
    let mut by_az = std::collections::BTreeMap::new();
    for s in subnets.subnets() {
        by_az
            .entry(s.availability_zone().unwrap_or_default().to_owned())
            .or_insert_with(|| s.subnet_id().unwrap_or_default().to_owned());
    }
    let subnets: Vec<String> = by_az.into_values().take(2).collect();
    if subnets.len() < 2 {
        bail!("{vpc} needs subnets in two availability zones: say --subnets");
    }
    Ok((vpc, subnets))
}

fn param(k: &str, v: impl Into<String>) -> Parameter {
    Parameter::builder()
        .parameter_key(k)
        .parameter_value(v)
        .build()
}

fn sizes(s: &StackSettings) -> [(&'static str, Option<String>); 5] {
    [
        ("InstanceType", s.instance_type.clone()),
        ("ImageId", s.ami.clone()),
        ("MinSize", s.min.map(|v| v.to_string())),
        ("MaxSize", s.max.map(|v| v.to_string())),
        ("DesiredCapacity", s.desired.map(|v| v.to_string())),
    ]
}

/// Creates the environment's stack and follows it to the end.
pub async fn create(
    config: &SdkConfig,
    template: &str,
    env: &EnvRef,
    plane: &ControlPlane,
    settings: &StackSettings,
    print: bool,
) -> anyhow::Result<()> {
    let (vpc, subnets) = if settings.subnets.is_empty() {
        default_network(config, settings.vpc.clone()).await?
    } else {
        let vpc = settings
            .vpc
            .clone()
            .ok_or_else(|| anyhow!("--subnets needs --vpc"))?;
        (vpc, settings.subnets.clone())
    };
    let params = create_parameters(env, vpc, &subnets, plane, settings);
    let cfn = slipway_control::aws::cloudformation_client(config);
    if let Some(stack) = legacy_stack(&cfn, env).await {
        bail!(
            "{env} already exists as the stack {stack}, made by an earlier ship; `ship env update` changes it"
        );
    }
    let stack = env.physical_name();
    cfn.create_stack()
        .stack_name(&stack)
        .template_body(template)
        .set_parameters(Some(params))
        .capabilities(Capability::CapabilityIam)
        .set_role_arn(plane.role_arn.clone())
        .tags(
            aws_sdk_cloudformation::types::Tag::builder()
                .key("slipway:app")
                .value(env.app.as_str())
                .build(),
        )
        .tags(
            aws_sdk_cloudformation::types::Tag::builder()
                .key("slipway:env")
                .value(env.env.as_str())
                .build(),
        )
        .send()
        .await
        .map_err(|e| anyhow!("{}", aws_sdk_cloudformation::error::DisplayErrorContext(e)))
        .with_context(|| format!("creating the stack {stack}"))?;
    follow(config, &stack, print).await
}

/// The new stack's parameters: names, network, bucket, the instance
/// roles' permissions boundary (the stack role refuses a role without
/// it), and the sizes given.
fn create_parameters(
    env: &EnvRef,
    vpc: String,
    subnets: &[String],
    plane: &ControlPlane,
    settings: &StackSettings,
) -> Vec<Parameter> {
    let mut params = vec![
        param("App", env.app.as_str()),
        param("Env", env.env.as_str()),
        param("VpcId", vpc),
        param("Subnets", subnets.join(",")),
        param("ReleaseBucket", plane.bucket.clone()),
    ];
    if let Some(boundary) = &plane.boundary_arn {
        params.push(param("InstanceRoleBoundary", boundary.clone()));
    }
    params.extend(
        sizes(settings)
            .into_iter()
            .filter_map(|(k, v)| Some(param(k, v?))),
    );
    params
}

/// The stack an earlier ship made for `env`: named `<app>-<env>`, which is
/// ambiguous, so only when its tags name this environment.
async fn legacy_stack(cfn: &aws_sdk_cloudformation::Client, env: &EnvRef) -> Option<String> {
    let name = env.qualified();
    let out = cfn.describe_stacks().stack_name(&name).send().await.ok()?;
    let stack = out.stacks().first()?;
    let tag = |key: &str| {
        stack
            .tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
    };
    (tag("slipway:app") == Some(env.app.as_str()) && tag("slipway:env") == Some(env.env.as_str()))
        .then_some(name)
}

/// The environment's stack: `<app>-<Env>`, or the one an earlier ship
/// made for it.
async fn stack_of(cfn: &aws_sdk_cloudformation::Client, env: &EnvRef) -> String {
    let physical = env.physical_name();
    if cfn
        .describe_stacks()
        .stack_name(&physical)
        .send()
        .await
        .is_ok()
    {
        return physical;
    }
    legacy_stack(cfn, env).await.unwrap_or(physical)
}

/// Updates the stack's parameters; true when the launch template changed.
pub async fn update(
    config: &SdkConfig,
    env: &EnvRef,
    settings: &StackSettings,
    print: bool,
) -> anyhow::Result<bool> {
    let cfn = slipway_control::aws::cloudformation_client(config);
    let name = stack_of(&cfn, env).await;
    let described = cfn
        .describe_stacks()
        .stack_name(&name)
        .send()
        .await
        .map_err(|e| anyhow!("{}", aws_sdk_cloudformation::error::DisplayErrorContext(e)))
        .with_context(|| format!("reading the stack {name}"))?;
    let current: Vec<String> = described
        .stacks()
        .first()
        .map(|s| {
            s.parameters()
                .iter()
                .filter_map(|p| p.parameter_key().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let changes = sizes(settings);
    if changes.iter().all(|(_, v)| v.is_none()) {
        bail!("nothing to change: say --instance-type, --ami, --min, --max or --desired");
    }
    let params = update_parameters(&current, &changes);
    // The template this `ship` carries: an update also brings the stack up
    // to this version's template.
    cfn.update_stack()
        .stack_name(&name)
        .template_body(TEMPLATE)
        .set_parameters(Some(params))
        .capabilities(Capability::CapabilityIam)
        .send()
        .await
        .map_err(|e| anyhow!("{}", aws_sdk_cloudformation::error::DisplayErrorContext(e)))
        .with_context(|| format!("updating the stack {name}"))?;
    follow(config, &name, print).await?;
    Ok(settings.instance_type.is_some() || settings.ami.is_some())
}

/// The changed parameters with their new values, every other one kept as
/// it is (`UsePreviousValue`: leaving one out would reset it to the
/// template's default).
fn update_parameters(
    current: &[String],
    changes: &[(&'static str, Option<String>)],
) -> Vec<Parameter> {
    current
        .iter()
        .map(
            |k| match changes.iter().find(|(name, v)| name == k && v.is_some()) {
                Some((name, Some(v))) => param(name, v.clone()),
                _ => Parameter::builder()
                    .parameter_key(k)
                    .use_previous_value(true)
                    .build(),
            },
        )
        .collect()
}

/// Deletes the stack and follows it until it is gone.
pub async fn destroy(config: &SdkConfig, env: &EnvRef, print: bool) -> anyhow::Result<()> {
    let cfn = slipway_control::aws::cloudformation_client(config);
    let name = stack_of(&cfn, env).await;
    cfn.delete_stack()
        .stack_name(&name)
        .send()
        .await
        .map_err(|e| anyhow!("{}", aws_sdk_cloudformation::error::DisplayErrorContext(e)))
        .with_context(|| format!("deleting the stack {name}"))?;
    follow(config, &name, print).await
}

fn terminal(status: &StackStatus) -> bool {
    let s = status.as_str();
    s.ends_with("_COMPLETE") || s.ends_with("_FAILED")
}

/// Prints the stack's events as they come until it settles; fails with
/// the stack's own reason unless it ended as asked.
async fn follow(config: &SdkConfig, stack: &str, print: bool) -> anyhow::Result<()> {
    let cfn = slipway_control::aws::cloudformation_client(config);
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    let mut first_failure: Option<String> = None;
    loop {
        let described = cfn.describe_stacks().stack_name(stack).send().await;
        let status = match described {
            Ok(out) => out.stacks().first().and_then(|s| s.stack_status().cloned()),
            // A deleted stack is no longer described by name.
            Err(_) => Some(StackStatus::DeleteComplete),
        };
        if let Ok(events) = cfn.describe_stack_events().stack_name(stack).send().await {
            let mut fresh: Vec<_> = events
                .stack_events()
                .iter()
                .filter(|e| e.event_id().is_some_and(|id| seen.insert(id.to_owned())))
                .cloned()
                .collect();
            fresh.reverse();
            for e in fresh {
                let status = e
                    .resource_status()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default();
                let reason = e.resource_status_reason().unwrap_or_default();
                if status.ends_with("_FAILED") && first_failure.is_none() && !reason.is_empty() {
                    first_failure = Some(format!(
                        "{}: {reason}",
                        e.logical_resource_id().unwrap_or_default()
                    ));
                }
                if print {
                    println!(
                        "  {:<28} {:<20} {}",
                        e.logical_resource_id().unwrap_or_default(),
                        status,
                        reason
                    );
                }
            }
        }
        match status {
            Some(s) if terminal(&s) => {
                let text = s.as_str();
                let good = matches!(
                    s,
                    StackStatus::CreateComplete
                        | StackStatus::UpdateComplete
                        | StackStatus::DeleteComplete
                );
                if good {
                    if print {
                        println!("{stack}: {text}");
                    }
                    return Ok(());
                }
                bail!(
                    "{stack} ended {text}: {}",
                    first_failure.unwrap_or_else(|| "the stack gave no reason".into())
                );
            }
            _ if started.elapsed() > Duration::from_secs(3600) => {
                bail!("{stack} did not settle within an hour")
            }
            _ => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_new_stack_gets_the_control_planes_instance_role_boundary() {
        let env = EnvRef::parse("hello", "prod").unwrap();
        let plane = ControlPlane {
            bucket: "b".into(),
            role_arn: Some("arn:aws:iam::1:role/stack".into()),
            boundary_arn: Some("arn:aws:iam::1:policy/boundary".into()),
        };
        let subnets = ["subnet-a".to_owned(), "subnet-b".to_owned()];
        let params = create_parameters(
            &env,
            "vpc-1".into(),
            &subnets,
            &plane,
            &StackSettings::default(),
        );
        let value = |k: &str| {
            params
                .iter()
                .find(|p| p.parameter_key() == Some(k))
                .and_then(|p| p.parameter_value())
        };
        assert_eq!(
            value("InstanceRoleBoundary"),
            Some("arn:aws:iam::1:policy/boundary")
        );
        assert_eq!(value("Subnets"), Some("subnet-a,subnet-b"));
        let template = TEMPLATE;
        assert!(template.contains("  InstanceRoleBoundary:\n    Type: String"));
    }

    use super::*;

    #[test]
    fn an_update_changes_what_it_names_and_keeps_every_other_parameter() {
        let current: Vec<String> = ["App", "InstanceType", "DesiredCapacity", "ImageId"]
            .map(String::from)
            .to_vec();
        let settings = StackSettings {
            instance_type: Some("m7g.4xlarge".into()),
            desired: Some(4),
            ..StackSettings::default()
        };

        let params = update_parameters(&current, &sizes(&settings));

        let shown: Vec<(String, Option<String>, Option<bool>)> = params
            .iter()
            .map(|p| {
                (
                    p.parameter_key().unwrap().to_owned(),
                    p.parameter_value().map(str::to_owned),
                    p.use_previous_value(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("App".into(), None, Some(true)),
                ("InstanceType".into(), Some("m7g.4xlarge".into()), None),
                ("DesiredCapacity".into(), Some("4".into()), None),
                ("ImageId".into(), None, Some(true)),
            ]
        );
    }
}
