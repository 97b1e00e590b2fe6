//! The fleet on AWS: the environment's Auto Scaling group, its instances
//! (EC2), its target groups' health and load balancers (ELBv2), and SSM's
//! view of each instance.
//!
//! Formation costs a fixed number of calls whatever the group's size
//! (pagination aside): the group, one batched `DescribeInstances`, one
//! `DescribeTargetHealth` per target group (usually one), the target
//! groups, their load balancers, and one `DescribeInstanceInformation`.
//! SSM's view is optional: without it (the emulator does not implement
//! that call) the formation still answers, with the ping status unknown.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_autoscaling::types::{AutoScalingGroup, Filter};
use aws_sdk_ssm::types::InstanceInformationStringFilter;
use chrono::DateTime;

use crate::fleet::{
    Fleet, FleetError, Formation, FormationSource, InstanceView, LoadBalancer, session_url,
};
use slipway_core::names::EnvRef;
use slipway_core::names::InstanceId;
use slipway_core::on_first_use::OnFirstUse;

pub(crate) fn aws_err<E: std::error::Error + 'static>(
    op: &'static str,
) -> impl FnOnce(E) -> FleetError {
    move |e| FleetError::Aws {
        op,
        detail: aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
    }
}

/// A group's `slipway:app` and `slipway:env` tags, as far as it has them.
pub fn environment_tags(group: &AutoScalingGroup) -> (Option<&str>, Option<&str>) {
    let tag = |key: &str| {
        group
            .tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
    };
    (tag("slipway:app"), tag("slipway:env"))
}

/// Whether a group's tags name `env`; `None` when it has neither (a group
/// made outside an environment stack).
fn belongs_to(group: &AutoScalingGroup, env: &EnvRef) -> Option<bool> {
    match environment_tags(group) {
        (None, None) => None,
        (app, e) => Some(app == Some(env.app.as_str()) && e == Some(env.env.as_str())),
    }
}

#[derive(Clone)]
pub struct AwsFleet {
    pub autoscaling: OnFirstUse<aws_sdk_autoscaling::Client>,
    pub ec2: OnFirstUse<aws_sdk_ec2::Client>,
    pub elb: OnFirstUse<aws_sdk_elasticloadbalancingv2::Client>,
    pub ssm: OnFirstUse<aws_sdk_ssm::Client>,
    pub cloudformation: OnFirstUse<aws_sdk_cloudformation::Client>,
    pub region: String,
    /// How often to ask the load balancer while waiting for health.
    pub health_poll: Duration,
    /// Each environment's group name and target groups, as last read: a
    /// deploy's standby, exit and health steps need no fresh
    /// `DescribeAutoScalingGroups` of their own. Keyed by `app/env`, which,
    /// unlike the `app-env` group name, no two environments share.
    pub groups: Arc<Mutex<HashMap<String, GroupRef>>>,
}

/// What the steps after `in_service` need to know about a group.
#[derive(Debug, Clone, Default)]
pub struct GroupRef {
    pub name: String,
    pub target_groups: Vec<String>,
}

/// The longest an ALB drains a target (its deregistration delay's
/// maximum); an instance is `EnteringStandby` for as long.
const STANDBY_DRAIN_LIMIT: Duration = Duration::from_secs(3600 + 60);

impl AwsFleet {
    /// Waits until none of `ids` is `EnteringStandby`: `EnterStandby`
    /// leaves them so while the load balancer drains them, and
    /// `ExitStandby` is refused until they are `Standby`. Deploying then
    /// also never restarts an app a request is still in.
    async fn wait_standby(&self, group: &str, ids: &[InstanceId]) -> Result<(), FleetError> {
        let started = Instant::now();
        let mut pace = crate::backoff::Backoff::up_to(self.health_poll);
        loop {
            let out = self
                .autoscaling
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(group)
                .send()
                .await
                .map_err(aws_err("DescribeAutoScalingGroups"))?;
            let instances: Vec<_> = out
                .auto_scaling_groups()
                .iter()
                .flat_map(|g| g.instances())
                .collect();
            // One that left the group meanwhile is out of the load
            // balancer too; the batch finds it gone.
            let waiting = ids.iter().any(|id| {
                instances.iter().any(|i| {
                    i.instance_id() == Some(id.as_str())
                        && i.lifecycle_state()
                            .is_some_and(|s| s.as_str() == "EnteringStandby")
                })
            });
            if !waiting {
                return Ok(());
            }
            if started.elapsed() >= STANDBY_DRAIN_LIMIT {
                return Err(FleetError::Aws {
                    op: "EnterStandby",
                    detail: "the instances did not finish draining".into(),
                });
            }
            pace.wait().await;
        }
    }

    /// Clients from one SDK config; the load balancer is asked every
    /// `health_poll` while a batch becomes healthy.
    pub fn new(config: &aws_config::SdkConfig, health_poll: Duration) -> Self {
        Self {
            autoscaling: OnFirstUse::new(config, crate::aws::autoscaling_client),
            ec2: OnFirstUse::new(config, crate::aws::ec2_client),
            elb: OnFirstUse::new(config, crate::aws::elb_client),
            ssm: OnFirstUse::new(config, crate::aws::ssm_client),
            cloudformation: OnFirstUse::new(config, crate::aws::cloudformation_client),
            region: config.region().map(|r| r.to_string()).unwrap_or_default(),
            health_poll,
            groups: Arc::default(),
        }
    }

    /// The environment's group: named `<app>-<Env>`, or tagged
    /// `slipway:app` / `slipway:env`. Always read afresh (it carries the
    /// instances); remembers its name and target groups.
    pub async fn group(&self, env: &EnvRef) -> Result<AutoScalingGroup, FleetError> {
        let group = self.describe_group(env).await?;
        let known = GroupRef {
            name: group
                .auto_scaling_group_name()
                .unwrap_or_default()
                .to_owned(),
            target_groups: group.target_group_arns().to_vec(),
        };
        if let Ok(mut groups) = self.groups.lock() {
            groups.insert(env.to_string(), known);
        }
        Ok(group)
    }

    /// The group's name and target groups, read once.
    pub(super) async fn group_ref(&self, env: &EnvRef) -> Result<GroupRef, FleetError> {
        let known = self
            .groups
            .lock()
            .ok()
            .and_then(|g| g.get(&env.to_string()).cloned());
        match known {
            Some(known) => Ok(known),
            None => {
                let group = self.group(env).await?;
                Ok(GroupRef {
                    name: group
                        .auto_scaling_group_name()
                        .unwrap_or_default()
                        .to_owned(),
                    target_groups: group.target_group_arns().to_vec(),
                })
            }
        }
    }

    async fn describe_group(&self, env: &EnvRef) -> Result<AutoScalingGroup, FleetError> {
        let (physical, legacy) = (env.physical_name(), env.qualified());
        let named = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&physical)
            .auto_scaling_group_names(&legacy)
            .send()
            .await
            .map_err(aws_err("DescribeAutoScalingGroups"))?;
        let groups = named.auto_scaling_groups();
        let called = |name: &str| {
            groups
                .iter()
                .find(|g| g.auto_scaling_group_name() == Some(name))
        };
        // `<app>-<Env>` is this environment's unless its tags say
        // otherwise. `<app>-<env>`, what earlier versions named it, is
        // ambiguous (`a-b`/`c` and `a`/`b-c`): only its tags can make it
        // this one's.
        if let Some(group) = called(&physical).filter(|g| belongs_to(g, env) != Some(false)) {
            return Ok(group.clone());
        }
        if let Some(group) = called(&legacy).filter(|g| belongs_to(g, env) == Some(true)) {
            return Ok(group.clone());
        }
        let tagged = self
            .autoscaling
            .describe_auto_scaling_groups()
            .filters(
                Filter::builder()
                    .name("tag:slipway:app")
                    .values(env.app.as_str())
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("tag:slipway:env")
                    .values(env.env.as_str())
                    .build(),
            )
            .send()
            .await
            .map_err(aws_err("DescribeAutoScalingGroups"))?;
        tagged
            .auto_scaling_groups()
            .first()
            .cloned()
            .ok_or(FleetError::NoGroup(physical))
    }

    /// The load balancers `target_groups` are behind.
    pub(super) async fn load_balancers_of(
        &self,
        target_groups: &[String],
    ) -> Result<Vec<String>, FleetError> {
        if target_groups.is_empty() {
            return Ok(Vec::new());
        }
        let groups = self
            .elb
            .describe_target_groups()
            .set_target_group_arns(Some(target_groups.to_vec()))
            .send()
            .await
            .map_err(aws_err("DescribeTargetGroups"))?;
        let mut arns: Vec<String> = groups
            .target_groups()
            .iter()
            .flat_map(|g| g.load_balancer_arns().iter().cloned())
            .collect();
        arns.sort();
        arns.dedup();
        Ok(arns)
    }

    pub async fn formation(&self, env: &EnvRef) -> Result<Formation, FleetError> {
        let group = self.group(env).await?;
        let name = group
            .auto_scaling_group_name()
            .unwrap_or_default()
            .to_owned();
        let members: Vec<(InstanceId, &aws_sdk_autoscaling::types::Instance)> = group
            .instances()
            .iter()
            .filter_map(|i| Some((InstanceId::parse(i.instance_id()?).ok()?, i)))
            .collect();
        let ids: Vec<String> = members.iter().map(|(id, _)| id.to_string()).collect();

        // EC2: private IPs, launch times, the release tag; one batched call.
        let mut ec2_info = BTreeMap::new();
        if !ids.is_empty() {
            let mut pages = self
                .ec2
                .describe_instances()
                .set_instance_ids(Some(ids.clone()))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(aws_err("DescribeInstances"))?;
                for i in page.reservations().iter().flat_map(|r| r.instances()) {
                    let Some(id) = i.instance_id() else { continue };
                    let release = i
                        .tags()
                        .iter()
                        .find(|t| t.key() == Some("slipway:release"))
                        .and_then(|t| t.value())
                        .map(str::to_owned);
                    let launched = i
                        .launch_time()
                        .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()));
                    ec2_info.insert(
                        id.to_owned(),
                        (i.private_ip_address().map(str::to_owned), launched, release),
                    );
                }
            }
        }

        // ELBv2: health per target group, then the groups' load balancers.
        let mut health: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let arns: Vec<String> = group.target_group_arns().to_vec();
        for arn in &arns {
            let out = self
                .elb
                .describe_target_health()
                .target_group_arn(arn)
                .send()
                .await
                .map_err(aws_err("DescribeTargetHealth"))?;
            let short = arn.rsplit(':').next().unwrap_or(arn).to_owned();
            for d in out.target_health_descriptions() {
                let (Some(target), Some(state)) = (
                    d.target().and_then(|t| t.id()),
                    d.target_health().and_then(|h| h.state()),
                ) else {
                    continue;
                };
                health
                    .entry(target.to_owned())
                    .or_default()
                    .insert(short.clone(), state.as_str().to_owned());
            }
        }
        let lb_arns = self.load_balancers_of(&arns).await?;
        // Both read the same load balancers: side by side, since the
        // environment page asks for the formation every two seconds.
        let names = async {
            if lb_arns.is_empty() {
                return Ok(Vec::new());
            }
            let lbs = self
                .elb
                .describe_load_balancers()
                .set_load_balancer_arns(Some(lb_arns.clone()))
                .send()
                .await
                .map_err(aws_err("DescribeLoadBalancers"))?;
            Ok::<_, FleetError>(
                lbs.load_balancers()
                    .iter()
                    .map(|lb| LoadBalancer {
                        name: lb.load_balancer_name().unwrap_or_default().to_owned(),
                        dns_name: lb.dns_name().unwrap_or_default().to_owned(),
                    })
                    .collect(),
            )
        };
        let (load_balancers, maintenance) = tokio::join!(names, self.maintenance_of(&lb_arns));
        let (load_balancers, maintenance) = (load_balancers?, maintenance?);

        let pings = self.ssm_pings(&name).await;
        let instances = members
            .into_iter()
            .map(|(id, member)| {
                let (private_ip, launched_at, release) =
                    ec2_info.remove(id.as_str()).unwrap_or((None, None, None));
                InstanceView {
                    session_url: session_url(&self.region, &id),
                    availability_zone: member.availability_zone().unwrap_or_default().to_owned(),
                    lifecycle: member
                        .lifecycle_state()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                    health: member.health_status().unwrap_or_default().to_owned(),
                    instance_type: member.instance_type().map(str::to_owned),
                    target_health: health.remove(id.as_str()).unwrap_or_default(),
                    ssm_ping: pings.get(id.as_str()).cloned(),
                    private_ip,
                    launched_at,
                    release,
                    id,
                }
            })
            .collect();
        let launch_template = group.launch_template().map(|t| {
            format!(
                "{}:{}",
                t.launch_template_name()
                    .or(t.launch_template_id())
                    .unwrap_or_default(),
                t.version().unwrap_or("$Default")
            )
        });
        Ok(Formation {
            group: name,
            min: group.min_size().unwrap_or_default(),
            max: group.max_size().unwrap_or_default(),
            desired: group.desired_capacity().unwrap_or_default(),
            availability_zones: group.availability_zones().to_vec(),
            launch_template,
            load_balancers,
            instances,
            maintenance,
        })
    }

    /// SSM's ping status per instance of the group; empty when SSM cannot
    /// say (not fatal: the formation is still worth showing).
    async fn ssm_pings(&self, group: &str) -> BTreeMap<String, String> {
        let mut pings = BTreeMap::new();
        let mut pages = self
            .ssm
            .describe_instance_information()
            .filters(
                InstanceInformationStringFilter::builder()
                    .key("tag:aws:autoscaling:groupName")
                    .values(group)
                    .build()
                    .expect("key and values are set"),
            )
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => {
                    for info in page.instance_information_list() {
                        if let (Some(id), Some(ping)) = (info.instance_id(), info.ping_status()) {
                            pings.insert(id.to_owned(), ping.as_str().to_owned());
                        }
                    }
                }
                Err(e) => {
                    // Not fatal, and expected where SSM does not answer
                    // this call (the emulator).
                    tracing::info!(group, error = %e, "no SSM ping status");
                    break;
                }
            }
        }
        pings
    }
}

impl FormationSource for AwsFleet {
    async fn formation(&self, env: &EnvRef) -> Result<Formation, FleetError> {
        AwsFleet::formation(self, env).await
    }
}

impl Fleet for AwsFleet {
    async fn in_service(&self, env: &EnvRef) -> Result<Vec<InstanceId>, FleetError> {
        let group = self.group(env).await?;
        let mut ids: Vec<InstanceId> = group
            .instances()
            .iter()
            .filter(|i| {
                i.lifecycle_state()
                    .is_some_and(|s| s.as_str() == "InService")
            })
            .filter_map(|i| InstanceId::parse(i.instance_id()?).ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    async fn enter_standby(&self, env: &EnvRef, ids: &[InstanceId]) -> Result<(), FleetError> {
        let group = self.group_ref(env).await?;
        self.autoscaling
            .enter_standby()
            .auto_scaling_group_name(&group.name)
            .set_instance_ids(Some(ids.iter().map(|i| i.to_string()).collect()))
            // Otherwise the group launches replacements for the batch.
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .map_err(aws_err("EnterStandby"))?;
        self.wait_standby(&group.name, ids).await
    }

    async fn exit_standby(&self, env: &EnvRef, ids: &[InstanceId]) -> Result<(), FleetError> {
        let group = self.group_ref(env).await?;
        self.autoscaling
            .exit_standby()
            .auto_scaling_group_name(group.name)
            .set_instance_ids(Some(ids.iter().map(|i| i.to_string()).collect()))
            .send()
            .await
            .map(drop)
            .map_err(aws_err("ExitStandby"))
    }

    async fn capacity(&self, env: &EnvRef) -> Result<crate::fleet::Sizes, FleetError> {
        crate::fleet::GroupControl::sizes(self, env).await
    }

    async fn group_members(&self, env: &EnvRef) -> Result<Vec<crate::fleet::Member>, FleetError> {
        crate::fleet::GroupControl::members(self, env).await
    }

    async fn suspend(&self, env: &EnvRef, processes: &[&str]) -> Result<Vec<String>, FleetError> {
        let group = self.group(env).await?;
        let already: Vec<&str> = group
            .suspended_processes()
            .iter()
            .filter_map(|p| p.process_name())
            .collect();
        let wanted: Vec<String> = processes
            .iter()
            .filter(|p| !already.contains(p))
            .map(|p| (*p).to_owned())
            .collect();
        if wanted.is_empty() {
            return Ok(wanted);
        }
        self.autoscaling
            .suspend_processes()
            .auto_scaling_group_name(group.auto_scaling_group_name().unwrap_or_default())
            .set_scaling_processes(Some(wanted.clone()))
            .send()
            .await
            .map_err(aws_err("SuspendProcesses"))?;
        Ok(wanted)
    }

    async fn resume(&self, env: &EnvRef, processes: &[String]) -> Result<(), FleetError> {
        if processes.is_empty() {
            return Ok(());
        }
        let group = self.group_ref(env).await?;
        self.autoscaling
            .resume_processes()
            .auto_scaling_group_name(group.name)
            .set_scaling_processes(Some(processes.to_vec()))
            .send()
            .await
            .map(drop)
            .map_err(aws_err("ResumeProcesses"))
    }

    async fn set_capacity(&self, env: &EnvRef, desired: i32, max: i32) -> Result<(), FleetError> {
        let group = self.group_ref(env).await?;
        self.autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(group.name)
            .max_size(max)
            .desired_capacity(desired)
            .send()
            .await
            .map(drop)
            .map_err(aws_err("UpdateAutoScalingGroup"))
    }

    async fn retire(&self, _env: &EnvRef, ids: &[InstanceId]) -> Result<(), FleetError> {
        for id in ids {
            self.autoscaling
                .terminate_instance_in_auto_scaling_group()
                .instance_id(id.as_str())
                .should_decrement_desired_capacity(true)
                .send()
                .await
                .map_err(aws_err("TerminateInstanceInAutoScalingGroup"))?;
        }
        Ok(())
    }

    async fn wait_healthy(
        &self,
        env: &EnvRef,
        ids: &[InstanceId],
        timeout: Duration,
    ) -> Result<Vec<InstanceId>, FleetError> {
        let started = Instant::now();
        let arns = self.group_ref(env).await?.target_groups;
        let mut pace = crate::backoff::Backoff::up_to(self.health_poll);
        loop {
            let mut unhealthy: Vec<InstanceId> = Vec::new();
            for arn in &arns {
                let out = self
                    .elb
                    .describe_target_health()
                    .target_group_arn(arn)
                    .send()
                    .await
                    .map_err(aws_err("DescribeTargetHealth"))?;
                let healthy: Vec<&str> = out
                    .target_health_descriptions()
                    .iter()
                    .filter(|d| {
                        d.target_health()
                            .and_then(|h| h.state())
                            .is_some_and(|s| s.as_str() == "healthy")
                    })
                    .filter_map(|d| d.target().and_then(|t| t.id()))
                    .collect();
                for id in ids {
                    if !healthy.contains(&id.as_str()) && !unhealthy.contains(id) {
                        unhealthy.push(id.clone());
                    }
                }
            }
            if unhealthy.is_empty() || started.elapsed() >= timeout {
                return Ok(unhealthy);
            }
            pace.wait().await;
        }
    }
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
