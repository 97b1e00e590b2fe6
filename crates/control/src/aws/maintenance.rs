//! Maintenance mode on an environment's load balancers, made of plain ALB
//! listener rules (nothing of ours in the path of traffic): at priority 1
//! the allowed sources are forwarded as the listener's default does; at
//! priority 2 every other request gets a fixed 503 page. Slipway owns these
//! two priorities on its environments' listeners. The rules carry
//! `slipway:maintenance`, and that tag is what lets the control plane
//! delete them (see `infra/template.yaml`). The rules themselves are the
//! state: reading them back gives the formation its maintenance.

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, FixedResponseActionConfig, PathPatternConditionConfig, Rule,
    RuleCondition, SourceIpConditionConfig, Tag,
};

use super::fleet::{AwsFleet, aws_err};
use crate::fleet::{EdgeControl, FleetError};
use slipway_core::maintenance::{Cidr, Maintenance};
use slipway_core::names::EnvRef;

/// Where the allowed sources' forward rule sits.
pub const ALLOW_PRIORITY: i32 = 1;
/// Where the page's rule sits, under the allowed sources.
pub const PAGE_PRIORITY: i32 = 2;
/// The tag that marks a rule as maintenance mode's.
pub const MAINTENANCE_TAG: &str = "slipway:maintenance";

/// One listener as maintenance mode needs it.
struct Listener {
    arn: String,
    default_actions: Vec<Action>,
}

impl AwsFleet {
    /// The listeners of the load balancers in front of `env`'s group.
    async fn listeners(&self, load_balancers: &[String]) -> Result<Vec<Listener>, FleetError> {
        let mut listeners = Vec::new();
        for lb in load_balancers {
            let mut pages = self
                .elb
                .describe_listeners()
                .load_balancer_arn(lb)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(aws_err("DescribeListeners"))?;
                for l in page.listeners() {
                    if let Some(arn) = l.listener_arn() {
                        listeners.push(Listener {
                            arn: arn.to_owned(),
                            default_actions: l.default_actions().to_vec(),
                        });
                    }
                }
            }
        }
        Ok(listeners)
    }

    /// The rules at maintenance mode's priorities on `listener`.
    async fn our_rules(&self, listener: &str) -> Result<Vec<Rule>, FleetError> {
        let mut rules = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .elb
                .describe_rules()
                .listener_arn(listener)
                .set_marker(marker)
                .send()
                .await
                .map_err(aws_err("DescribeRules"))?;
            rules.extend(
                page.rules()
                    .iter()
                    .filter(|r| matches!(priority(r), Some(ALLOW_PRIORITY | PAGE_PRIORITY)))
                    .cloned(),
            );
            marker = page.next_marker().map(str::to_owned);
            if marker.is_none() {
                return Ok(rules);
            }
        }
    }

    /// Maintenance mode as the first listener of `load_balancers` has it:
    /// the page rule's message and the allow rule's sources.
    pub(super) async fn maintenance_of(
        &self,
        load_balancers: &[String],
    ) -> Result<Option<Maintenance>, FleetError> {
        let first = &load_balancers[..load_balancers.len().min(1)];
        let Some(listener) = self.listeners(first).await?.into_iter().next() else {
            return Ok(None);
        };
        let rules = self.our_rules(&listener.arn).await?;
        let Some(page) = rules.iter().find(|r| priority(r) == Some(PAGE_PRIORITY)) else {
            return Ok(None);
        };
        let body = page
            .actions()
            .iter()
            .filter_map(|a| a.fixed_response_config()?.message_body())
            .next()
            .unwrap_or_default();
        let allow: Vec<Cidr> = rules
            .iter()
            .filter(|r| priority(r) == Some(ALLOW_PRIORITY))
            .flat_map(|r| r.conditions())
            .filter_map(|c| c.source_ip_config())
            .flat_map(|c| c.values())
            .filter_map(|v| Cidr::parse(v).ok())
            .collect();
        let message = Maintenance::message_of(body).unwrap_or_else(|| body.to_owned());
        Ok(Maintenance::new(Some(&message), allow).ok())
    }
}

impl EdgeControl for AwsFleet {
    /// Maintenance mode's rules on every listener of `env`'s load
    /// balancers: `Some` puts them there (replacing any), `None` takes
    /// them away. The page goes last on and first off, so no request meets
    /// the page without its allowed sources' way round it.
    async fn set_maintenance(
        &self,
        env: &EnvRef,
        maintenance: Option<&Maintenance>,
    ) -> Result<(), FleetError> {
        let group = self.group_ref(env).await?;
        let load_balancers = self.load_balancers_of(&group.target_groups).await?;
        let listeners = self.listeners(&load_balancers).await?;
        if listeners.is_empty() {
            return Err(FleetError::Aws {
                op: "DescribeListeners",
                detail: format!("{env} has no load balancer listener"),
            });
        }
        for listener in &listeners {
            let mut rules = self.our_rules(&listener.arn).await?;
            // The page first.
            rules.sort_by_key(|r| priority(r) != Some(PAGE_PRIORITY));
            for rule in rules {
                self.elb
                    .delete_rule()
                    .set_rule_arn(rule.rule_arn().map(str::to_owned))
                    .send()
                    .await
                    .map_err(aws_err("DeleteRule"))?;
            }
            let Some(m) = maintenance else { continue };
            if !m.allow.is_empty() {
                let sources = SourceIpConditionConfig::builder()
                    .set_values(Some(m.allow.iter().map(|c| c.to_string()).collect()))
                    .build();
                let condition = RuleCondition::builder()
                    .field("source-ip")
                    .source_ip_config(sources)
                    .build();
                self.elb
                    .create_rule()
                    .listener_arn(&listener.arn)
                    .priority(ALLOW_PRIORITY)
                    .conditions(condition)
                    .set_actions(Some(listener.default_actions.clone()))
                    .set_tags(Some(tags(env)))
                    .send()
                    .await
                    .map_err(aws_err("CreateRule"))?;
            }
            let page = FixedResponseActionConfig::builder()
                .status_code("503")
                .content_type("text/html")
                .message_body(m.page())
                .build();
            let every = RuleCondition::builder()
                .field("path-pattern")
                .path_pattern_config(PathPatternConditionConfig::builder().values("*").build())
                .build();
            self.elb
                .create_rule()
                .listener_arn(&listener.arn)
                .priority(PAGE_PRIORITY)
                .conditions(every)
                .actions(
                    Action::builder()
                        .r#type(ActionTypeEnum::FixedResponse)
                        .fixed_response_config(page)
                        .build(),
                )
                .set_tags(Some(tags(env)))
                .send()
                .await
                .map_err(aws_err("CreateRule"))?;
        }
        Ok(())
    }
}

/// A rule's priority as a number; `None` for the default rule.
fn priority(rule: &Rule) -> Option<i32> {
    rule.priority()?.parse().ok()
}

fn tags(env: &EnvRef) -> Vec<Tag> {
    [
        ("slipway:app", env.app.as_str()),
        ("slipway:env", env.env.as_str()),
        (MAINTENANCE_TAG, "true"),
    ]
    .into_iter()
    .map(|(k, v)| Tag::builder().key(k).value(v).build())
    .collect()
}
