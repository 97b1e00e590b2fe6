//! Changing the group on AWS: terminate one instance so the group replaces
//! it, read and set its sizes, and remove the whole environment (its
//! CloudFormation stack when it was made from `infra/environment.yaml`,
//! else the bare group).

use std::collections::HashMap;

use super::fleet::{AwsFleet, aws_err};
use crate::fleet::{Destroyed, FleetError, GroupControl, Member, Sizes};
use slipway_core::names::EnvRef;
use slipway_core::names::InstanceId;

/// The tag CloudFormation puts on what a stack creates.
const STACK_TAG: &str = "aws:cloudformation:stack-name";

impl AwsFleet {
    /// The release tag of each instance, in one batched call.
    async fn release_tags(&self, ids: Vec<String>) -> Result<HashMap<String, String>, FleetError> {
        let mut tags = HashMap::new();
        if ids.is_empty() {
            return Ok(tags);
        }
        let mut pages = self
            .ec2
            .describe_instances()
            .set_instance_ids(Some(ids))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(aws_err("DescribeInstances"))?;
            for i in page.reservations().iter().flat_map(|r| r.instances()) {
                let release = i
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some("slipway:release"))
                    .and_then(|t| t.value());
                if let (Some(id), Some(release)) = (i.instance_id(), release) {
                    tags.insert(id.to_owned(), release.to_owned());
                }
            }
        }
        Ok(tags)
    }

    /// The stack that made the group: its tag (CloudFormation tags what it
    /// creates), else the stack named like the group (`infra/environment.yaml`
    /// names both `<app>-<Env>`; the emulator does not tag) if it holds it.
    async fn owning_stack(
        &self,
        group: &aws_sdk_autoscaling::types::AutoScalingGroup,
    ) -> Result<Option<String>, FleetError> {
        if let Some(tag) = group.tags().iter().find(|t| t.key() == Some(STACK_TAG)) {
            return Ok(tag.value().map(str::to_owned));
        }
        let name = group.auto_scaling_group_name().unwrap_or_default();
        match self
            .cloudformation
            .describe_stack_resources()
            .stack_name(name)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .stack_resources()
                .iter()
                .any(|r| {
                    r.resource_type() == Some("AWS::AutoScaling::AutoScalingGroup")
                        && r.physical_resource_id() == Some(name)
                })
                .then(|| name.to_owned())),
            // "Stack with id … does not exist": a group made by hand.
            Err(e)
                if e.as_service_error()
                    .and_then(aws_sdk_cloudformation::error::ProvideErrorMetadata::code)
                    == Some("ValidationError") =>
            {
                Ok(None)
            }
            Err(e) => Err(aws_err("DescribeStackResources")(e)),
        }
    }
}

impl GroupControl for AwsFleet {
    async fn members(&self, env: &EnvRef) -> Result<Vec<Member>, FleetError> {
        let group = self.group(env).await?;
        let ids: Vec<String> = group
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        let mut tags = self.release_tags(ids).await?;
        let mut members: Vec<Member> = group
            .instances()
            .iter()
            .filter_map(|i| {
                let id = InstanceId::parse(i.instance_id()?).ok()?;
                Some(Member {
                    release: tags.remove(id.as_str()),
                    lifecycle: i
                        .lifecycle_state()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                    id,
                })
            })
            .collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(members)
    }

    async fn terminate(&self, _env: &EnvRef, id: &InstanceId) -> Result<(), FleetError> {
        self.autoscaling
            .terminate_instance_in_auto_scaling_group()
            .instance_id(id.as_str())
            .should_decrement_desired_capacity(false)
            .send()
            .await
            .map(drop)
            .map_err(aws_err("TerminateInstanceInAutoScalingGroup"))
    }

    async fn sizes(&self, env: &EnvRef) -> Result<Sizes, FleetError> {
        let group = self.group(env).await?;
        Ok(Sizes {
            min: group.min_size().unwrap_or_default(),
            max: group.max_size().unwrap_or_default(),
            desired: group.desired_capacity().unwrap_or_default(),
        })
    }

    async fn resize(&self, env: &EnvRef, to: Sizes) -> Result<(), FleetError> {
        let group = self.group_ref(env).await?;
        self.autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(group.name)
            .min_size(to.min)
            .max_size(to.max)
            .desired_capacity(to.desired)
            .send()
            .await
            .map(drop)
            .map_err(aws_err("UpdateAutoScalingGroup"))
    }

    async fn destroy(&self, env: &EnvRef) -> Result<Destroyed, FleetError> {
        let group = self.group(env).await?;
        if let Ok(mut groups) = self.groups.lock() {
            groups.remove(&env.to_string());
        }
        if let Some(stack) = self.owning_stack(&group).await? {
            self.cloudformation
                .delete_stack()
                .stack_name(&stack)
                .send()
                .await
                .map_err(aws_err("DeleteStack"))?;
            return Ok(Destroyed::Stack(stack));
        }
        let name = group
            .auto_scaling_group_name()
            .unwrap_or_default()
            .to_owned();
        self.autoscaling
            .delete_auto_scaling_group()
            .auto_scaling_group_name(&name)
            .force_delete(true)
            .send()
            .await
            .map_err(aws_err("DeleteAutoScalingGroup"))?;
        Ok(Destroyed::Group(name))
    }
}
