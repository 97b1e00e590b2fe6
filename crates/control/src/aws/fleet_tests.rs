//! Formation and health against mocked AWS clients, counting the calls.

use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
use aws_sdk_autoscaling::types::{AutoScalingGroup, Instance, LifecycleState};
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::types::{Reservation, Tag};
use aws_sdk_elasticloadbalancingv2::operation::describe_listeners::DescribeListenersOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_load_balancers::DescribeLoadBalancersOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_rules::DescribeRulesOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_groups::DescribeTargetGroupsOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, FixedResponseActionConfig, Listener, Rule as ElbRule, RuleCondition,
    SourceIpConditionConfig, TargetDescription, TargetGroup, TargetHealth, TargetHealthDescription,
    TargetHealthStateEnum,
};
use aws_sdk_ssm::operation::describe_instance_information::{
    DescribeInstanceInformationError, DescribeInstanceInformationOutput,
};
use aws_sdk_ssm::types::{InstanceInformation, PingStatus};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

use super::*;

const TG: &str = "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/hello-prod/abc";
const LB: &str = "arn:aws:elasticloadbalancing:eu-west-1:1:loadbalancer/app/hello-prod/def";
const LISTENER: &str = "arn:aws:elasticloadbalancing:eu-west-1:1:listener/app/hello-prod/def/ghi";

fn id(i: usize) -> String {
    format!("i-{i:017x}")
}

fn group(n: usize, standby: &[usize]) -> AutoScalingGroup {
    let mut g = AutoScalingGroup::builder()
        .auto_scaling_group_name("hello-Prod")
        .min_size(1)
        .max_size(200)
        .desired_capacity(n as i32)
        .availability_zones("eu-west-1a")
        .availability_zones("eu-west-1b")
        .target_group_arns(TG);
    for i in 0..n {
        let state = if standby.contains(&i) {
            LifecycleState::Standby
        } else {
            LifecycleState::InService
        };
        g = g.instances(
            Instance::builder()
                .instance_id(id(i))
                .availability_zone(if i % 2 == 0 {
                    "eu-west-1a"
                } else {
                    "eu-west-1b"
                })
                .lifecycle_state(state)
                .health_status("Healthy")
                .instance_type("t4g.small")
                .protected_from_scale_in(false)
                .build(),
        );
    }
    g.build()
}

fn asg_rule(n: usize, standby: &'static [usize]) -> Rule {
    mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .match_requests(|r| r.auto_scaling_group_names() == ["hello-Prod", "hello-prod"])
        .then_output(move || {
            DescribeAutoScalingGroupsOutput::builder()
                .auto_scaling_groups(group(n, standby))
                .build()
        })
}

fn health_rule(n: usize, unhealthy: &'static [usize]) -> Rule {
    mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .match_requests(|r| r.target_group_arn() == Some(TG))
        .then_output(move || {
            let mut out = DescribeTargetHealthOutput::builder();
            for i in 0..n {
                let state = if unhealthy.contains(&i) {
                    TargetHealthStateEnum::Unhealthy
                } else {
                    TargetHealthStateEnum::Healthy
                };
                out = out.target_health_descriptions(
                    TargetHealthDescription::builder()
                        .target(TargetDescription::builder().id(id(i)).port(8000).build())
                        .target_health(TargetHealth::builder().state(state).build())
                        .build(),
                );
            }
            out.build()
        })
}

struct Mocks {
    rules: Vec<Rule>,
    fleet: AwsFleet,
}

fn mocks(n: usize, ssm_works: bool) -> Mocks {
    let asg = asg_rule(n, &[]);
    let ec2 = mock!(aws_sdk_ec2::Client::describe_instances)
        .match_requests(move |r| r.instance_ids().len() == n)
        .then_output(move || {
            let mut reservation = Reservation::builder();
            for i in 0..n {
                reservation = reservation.instances(
                    aws_sdk_ec2::types::Instance::builder()
                        .instance_id(id(i))
                        .private_ip_address(format!("10.0.{}.{}", i / 250, i % 250 + 1))
                        .tags(Tag::builder().key("slipway:release").value("r7").build())
                        .build(),
                );
            }
            DescribeInstancesOutput::builder()
                .reservations(reservation.build())
                .build()
        });
    let health = health_rule(n, &[3]);
    let tgs =
        mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_groups).then_output(|| {
            DescribeTargetGroupsOutput::builder()
                .target_groups(
                    TargetGroup::builder()
                        .target_group_arn(TG)
                        .load_balancer_arns(LB)
                        .build(),
                )
                .build()
        });
    let lbs =
        mock!(aws_sdk_elasticloadbalancingv2::Client::describe_load_balancers).then_output(|| {
            DescribeLoadBalancersOutput::builder()
                .load_balancers(
                    aws_sdk_elasticloadbalancingv2::types::LoadBalancer::builder()
                        .load_balancer_name("hello-prod")
                        .dns_name("hello-prod-123.eu-west-1.elb.amazonaws.com")
                        .build(),
                )
                .build()
        });
    let listeners =
        mock!(aws_sdk_elasticloadbalancingv2::Client::describe_listeners).then_output(|| {
            DescribeListenersOutput::builder()
                .listeners(Listener::builder().listener_arn(LISTENER).build())
                .build()
        });
    // Maintenance mode is up, with one allowed block, beside a default
    // rule: the formation reads it back from the rules.
    let rules = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_rules)
        .match_requests(|r| r.listener_arn() == Some(LISTENER))
        .then_output(|| {
            let page = slipway_core::maintenance::Maintenance::new(Some("Back at 5"), vec![])
                .unwrap()
                .page();
            DescribeRulesOutput::builder()
                .rules(
                    ElbRule::builder()
                        .priority("1")
                        .conditions(
                            RuleCondition::builder()
                                .field("source-ip")
                                .source_ip_config(
                                    SourceIpConditionConfig::builder()
                                        .values("203.0.113.0/24")
                                        .build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .rules(
                    ElbRule::builder()
                        .priority("2")
                        .actions(
                            Action::builder()
                                .fixed_response_config(
                                    FixedResponseActionConfig::builder()
                                        .status_code("503")
                                        .message_body(page)
                                        .build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .rules(ElbRule::builder().priority("default").build())
                .build()
        });
    let ssm = if ssm_works {
        mock!(aws_sdk_ssm::Client::describe_instance_information).then_output(move || {
            let mut out = DescribeInstanceInformationOutput::builder();
            for i in 0..n {
                out = out.instance_information_list(
                    InstanceInformation::builder()
                        .instance_id(id(i))
                        .ping_status(if i == 5 {
                            PingStatus::ConnectionLost
                        } else {
                            PingStatus::Online
                        })
                        .build(),
                );
            }
            out.build()
        })
    } else {
        mock!(aws_sdk_ssm::Client::describe_instance_information).then_error(|| {
            DescribeInstanceInformationError::generic(
                aws_smithy_types::error::ErrorMetadata::builder()
                    .code("InternalFailure")
                    .build(),
            )
        })
    };
    let fleet = AwsFleet {
        autoscaling: OnFirstUse::ready(mock_client!(
            aws_sdk_autoscaling,
            RuleMode::MatchAny,
            [&asg]
        )),
        ec2: OnFirstUse::ready(mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&ec2])),
        elb: OnFirstUse::ready(mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::MatchAny,
            [&health, &tgs, &lbs, &listeners, &rules]
        )),
        ssm: OnFirstUse::ready(mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&ssm])),
        cloudformation: OnFirstUse::ready(mock_client!(aws_sdk_cloudformation, [])),
        region: "eu-west-1".into(),
        health_poll: Duration::from_millis(1),
        groups: Default::default(),
    };
    Mocks {
        rules: vec![asg, ec2, health, tgs, lbs, listeners, rules, ssm],
        fleet,
    }
}

fn env() -> EnvRef {
    EnvRef::parse("hello", "prod").unwrap()
}

#[tokio::test]
async fn the_formation_of_a_hundred_instances_takes_eight_calls_and_reads_maintenance_back() {
    let m = mocks(100, true);

    let f = m.fleet.formation(&env()).await.unwrap();

    let calls: usize = m.rules.iter().map(Rule::num_calls).sum();
    assert_eq!(
        calls,
        8,
        "one call per rule: {:?}",
        m.rules.iter().map(Rule::num_calls).collect::<Vec<_>>()
    );
    assert_eq!(f.instances.len(), 100);
    let maintenance = f.maintenance.expect("maintenance is up");
    assert_eq!(maintenance.message, "Back at 5");
    assert_eq!(maintenance.allow[0].to_string(), "203.0.113.0/24");
    assert_eq!((f.min, f.max, f.desired), (1, 200, 100));
    assert_eq!(f.availability_zones, ["eu-west-1a", "eu-west-1b"]);
    assert_eq!(
        f.load_balancers[0].dns_name,
        "hello-prod-123.eu-west-1.elb.amazonaws.com"
    );
    let i3 = &f.instances[3];
    assert_eq!(i3.release.as_deref(), Some("r7"));
    assert_eq!(i3.lifecycle, "InService");
    assert_eq!(i3.target_health.values().collect::<Vec<_>>(), ["unhealthy"]);
    assert_eq!(i3.private_ip.as_deref(), Some("10.0.0.4"));
    assert_eq!(f.instances[5].ssm_ping.as_deref(), Some("ConnectionLost"));
    assert_eq!(
        i3.session_url,
        format!(
            "https://eu-west-1.console.aws.amazon.com/systems-manager/session-manager/{}?region=eu-west-1",
            id(3)
        )
    );
}

#[tokio::test]
async fn without_ssm_the_formation_still_answers_with_ping_unknown() {
    let m = mocks(3, false);
    let f = m.fleet.formation(&env()).await.unwrap();
    assert_eq!(f.instances.len(), 3);
    assert!(f.instances.iter().all(|i| i.ssm_ping.is_none()));
}

#[tokio::test]
async fn only_in_service_instances_are_deployed_to_and_health_names_the_laggards() {
    let asg = asg_rule(4, &[1]);
    let health = health_rule(4, &[2]);
    let m = mocks(4, true);
    let fleet = AwsFleet {
        autoscaling: OnFirstUse::ready(mock_client!(
            aws_sdk_autoscaling,
            RuleMode::MatchAny,
            [&asg]
        )),
        elb: OnFirstUse::ready(mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::MatchAny,
            [&health]
        )),
        ..m.fleet
    };

    let ids = fleet.in_service(&env()).await.unwrap();
    assert_eq!(
        ids.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        [id(0), id(2), id(3)]
    );

    let unhealthy = fleet
        .wait_healthy(&env(), &ids, Duration::from_millis(20))
        .await
        .unwrap();
    assert_eq!(
        unhealthy.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        [id(2)]
    );
    assert!(health.num_calls() >= 2, "it polled until the timeout");
}

#[tokio::test]
async fn a_group_named_for_another_environment_is_never_acted_on() {
    use aws_sdk_autoscaling::types::TagDescription;
    // `a-b`/`c` and `a`/`b-c` both named a group `a-b-c` in earlier
    // versions: only its tags say whose it is.
    let theirs = AutoScalingGroup::builder()
        .auto_scaling_group_name("a-b-c")
        .min_size(1)
        .max_size(2)
        .desired_capacity(1)
        .tags(
            TagDescription::builder()
                .key("slipway:app")
                .value("a-b")
                .build(),
        )
        .tags(
            TagDescription::builder()
                .key("slipway:env")
                .value("c")
                .build(),
        )
        .build();
    let by_name = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .match_requests(|r| !r.auto_scaling_group_names().is_empty())
        .then_output(move || {
            DescribeAutoScalingGroupsOutput::builder()
                .auto_scaling_groups(theirs.clone())
                .build()
        });
    let by_tag = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .match_requests(|r| r.auto_scaling_group_names().is_empty())
        .then_output(|| DescribeAutoScalingGroupsOutput::builder().build());
    let fleet = AwsFleet {
        autoscaling: OnFirstUse::ready(mock_client!(
            aws_sdk_autoscaling,
            RuleMode::MatchAny,
            [&by_name, &by_tag]
        )),
        ec2: OnFirstUse::ready(mock_client!(aws_sdk_ec2, [])),
        elb: OnFirstUse::ready(mock_client!(aws_sdk_elasticloadbalancingv2, [])),
        ssm: OnFirstUse::ready(mock_client!(aws_sdk_ssm, [])),
        cloudformation: OnFirstUse::ready(mock_client!(aws_sdk_cloudformation, [])),
        region: "eu-west-1".into(),
        health_poll: Duration::from_millis(1),
        groups: Default::default(),
    };

    let mine = EnvRef::parse("a", "b-c").unwrap();
    assert!(matches!(
        fleet.group(&mine).await,
        Err(FleetError::NoGroup(_))
    ));
    let owner = EnvRef::parse("a-b", "c").unwrap();
    assert_eq!(
        fleet.group(&owner).await.unwrap().auto_scaling_group_name(),
        Some("a-b-c")
    );
}

#[test]
fn the_control_plane_may_delete_only_stacks_tagged_as_an_environments() {
    let template = include_str!("../../../../infra/template.yaml");
    let grants: Vec<&str> = template
        .split("- cloudformation:DeleteStack")
        .skip(1)
        .map(|rest| rest.split("- Sid:").next().unwrap_or_default())
        .collect();
    assert_eq!(grants.len(), 2, "the cycle and formation functions");
    for grant in grants {
        assert!(
            grant.contains("aws:ResourceTag/slipway:app: \"?*\""),
            "DeleteStack without the environment tag condition:\n{grant}"
        );
    }
    let environment = include_str!("../../../../infra/environment.yaml");
    for name in ["AutoScalingGroupName", "LaunchTemplateName"] {
        assert!(
            environment.contains(&format!("{name}: !Ref AWS::StackName")),
            "{name} is not the stack's unambiguous name"
        );
    }
}
