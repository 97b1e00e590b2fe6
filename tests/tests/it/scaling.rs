//! An Auto Scaling group in the emulator as AWS runs one: it replaces an
//! instance its load balancer finds unhealthy once the grace period is
//! over, drains an instance before terminating it, keeps Standby
//! instances out of the load balancer, and honours suspended processes.
//! The environment is a stack made from `infra/environment.yaml`; its
//! instances are served by local hosts answering as each test says. The
//! emulator runs `EMULATOR_TIME_SCALE` times AWS's times.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU16;
use std::time::{Duration, Instant};

use aws_sdk_autoscaling::Client as AutoScaling;
use aws_sdk_autoscaling::error::ProvideErrorMetadata;
use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum;
use slipway_control::aws::fleet::AwsFleet;
use slipway_control::fleet::{Fleet, GroupControl};
use slipway_core::names::{EnvRef, InstanceId};
use slipway_local::hosts::LocalHost;
use slipway_tests::{World, environment_stack, hosts, unique_name};

use crate::elb::{deregistration_delay, serve, target_health};

struct Group {
    world: World,
    env: EnvRef,
    fleet: AwsFleet,
    asg: AutoScaling,
    name: String,
    target_group: String,
}

/// A stack-made environment of `instances`, none of them served yet.
async fn group(instances: u32) -> Group {
    let world = World::new().await;
    let env = EnvRef::parse(&unique_name("s"), "prod").unwrap();
    environment_stack(&world.config, &env, &world.bucket, instances).await;
    let fleet = AwsFleet::new(&world.config, Duration::from_millis(20));
    let asg = slipway_control::aws::autoscaling_client(&world.config);
    let described = fleet.group(&env).await.unwrap();
    let name = described.auto_scaling_group_name().unwrap().to_owned();
    let target_group = described.target_group_arns()[0].clone();
    Group {
        world,
        env,
        fleet,
        asg,
        name,
        target_group,
    }
}

impl Group {
    /// Serves `id` from a local host answering every request with `status`.
    async fn serve(&self, id: &InstanceId, status: u16) -> Arc<AtomicU16> {
        let status = Arc::new(AtomicU16::new(status));
        let (port, _task) = serve(status.clone()).await;
        let dir = tempfile::tempdir().unwrap().keep();
        hosts()
            .register(
                id,
                &LocalHost {
                    dir,
                    env: BTreeMap::new(),
                    programs: BTreeMap::new(),
                    port: Some(port),
                },
            )
            .unwrap();
        status
    }

    /// Each instance of the group: its lifecycle state and health status.
    async fn instances(&self) -> BTreeMap<String, (String, String)> {
        let out = self
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.name)
            .send()
            .await
            .unwrap();
        out.auto_scaling_groups()[0]
            .instances()
            .iter()
            .map(|i| {
                (
                    i.instance_id().unwrap().to_owned(),
                    (
                        i.lifecycle_state().unwrap().as_str().to_owned(),
                        i.health_status().unwrap().to_owned(),
                    ),
                )
            })
            .collect()
    }

    async fn state_of(&self, id: &InstanceId) -> Option<(String, String)> {
        self.instances().await.remove(id.as_str())
    }

    async fn target_state(&self, id: &InstanceId) -> Option<TargetHealthStateEnum> {
        let elb = slipway_control::aws::elb_client(&self.world.config);
        target_health(&elb, &self.target_group)
            .await
            .into_iter()
            .find(|(target, _, _)| target == id.as_str())
            .map(|(_, state, _)| state)
    }

    async fn ec2_state(&self, id: &InstanceId) -> String {
        slipway_control::aws::ec2_client(&self.world.config)
            .describe_instances()
            .instance_ids(id.as_str())
            .send()
            .await
            .unwrap()
            .reservations()[0]
            .instances()[0]
            .state()
            .and_then(|s| s.name())
            .unwrap()
            .as_str()
            .to_owned()
    }

    /// A request for `/slow` through the load balancer, answered after
    /// `SLOW` by whichever target it reaches: a request in flight.
    async fn slow_request(&self) -> tokio::task::JoinHandle<u16> {
        let formation = self.fleet.formation(&self.env).await.unwrap();
        let address = format!("http://{}/slow", formation.load_balancers[0].dns_name);
        let task =
            tokio::spawn(async move { reqwest::get(&address).await.unwrap().status().as_u16() });
        // Forwarded before the test moves on.
        tokio::time::sleep(Duration::from_millis(200)).await;
        task
    }

    /// Sets the target group's deregistration delay to 100 s (5 s in the
    /// emulator's time): a drain that ends sooner ended with its requests.
    async fn long_drains(&self) {
        let elb = slipway_control::aws::elb_client(&self.world.config);
        deregistration_delay(&elb, &self.target_group, 100).await;
    }

    async fn grace_period(&self, seconds: i32) {
        self.asg
            .update_auto_scaling_group()
            .auto_scaling_group_name(&self.name)
            .health_check_grace_period(seconds)
            .send()
            .await
            .unwrap();
    }

    async fn desired(&self, capacity: i32) {
        self.asg
            .set_desired_capacity()
            .auto_scaling_group_name(&self.name)
            .desired_capacity(capacity)
            .send()
            .await
            .unwrap();
    }

    async fn suspend(&self, process: &str) {
        self.asg
            .suspend_processes()
            .auto_scaling_group_name(&self.name)
            .scaling_processes(process)
            .send()
            .await
            .unwrap();
    }

    async fn resume(&self, process: &str) {
        self.asg
            .resume_processes()
            .auto_scaling_group_name(&self.name)
            .scaling_processes(process)
            .send()
            .await
            .unwrap();
    }
}

/// Polls `check` every 50 ms until it answers `Some`, for at most `limit`.
async fn eventually<T, F>(limit: Duration, what: &str, mut check: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_instance_the_load_balancer_finds_unhealthy_is_replaced_once_its_grace_period_is_over() {
    let g = group(2).await;
    let ids = g.fleet.in_service(&g.env).await.unwrap();
    let (sick, well) = (ids[0].clone(), ids[1].clone());
    g.serve(&sick, 500).await;
    g.serve(&well, 200).await;

    eventually(
        Duration::from_secs(10),
        "the target turns unhealthy",
        || async {
            (g.target_state(&sick).await == Some(TargetHealthStateEnum::Unhealthy)).then_some(())
        },
    )
    .await;
    // Within the template's grace period (300 s, scaled to 15 s) the
    // group leaves it alone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        g.state_of(&sick).await,
        Some(("InService".into(), "Healthy".into()))
    );

    g.grace_period(10).await;
    eventually(
        Duration::from_secs(10),
        "a replacement is InService",
        || async {
            let serving = g.fleet.in_service(&g.env).await.unwrap();
            (serving.len() == 2 && !serving.contains(&sick)).then_some(())
        },
    )
    .await;
    assert!(g.fleet.in_service(&g.env).await.unwrap().contains(&well));
    // Drained from the load balancer, then terminated.
    eventually(
        Duration::from_secs(10),
        "the sick instance is terminated",
        || async {
            let gone = g.state_of(&sick).await.is_none()
                && g.ec2_state(&sick).await == "terminated"
                && !matches!(
                    g.target_state(&sick).await,
                    Some(TargetHealthStateEnum::Healthy | TargetHealthStateEnum::Unhealthy)
                );
            gone.then_some(())
        },
    )
    .await;
    assert_eq!(
        g.target_state(&well).await,
        Some(TargetHealthStateEnum::Healthy)
    );
}

#[tokio::test]
async fn an_instance_terminated_by_the_group_drains_before_ec2_terminates_it() {
    let g = group(2).await;
    let victim = g.fleet.in_service(&g.env).await.unwrap()[0].clone();
    g.serve(&victim, 200).await;
    eventually(Duration::from_secs(10), "the target is healthy", || async {
        (g.target_state(&victim).await == Some(TargetHealthStateEnum::Healthy)).then_some(())
    })
    .await;
    g.long_drains().await;
    let open = g.slow_request().await;

    g.fleet.terminate(&g.env, &victim).await.unwrap();

    assert_eq!(
        g.state_of(&victim).await.map(|(lifecycle, _)| lifecycle),
        Some("Terminating".into())
    );
    assert_eq!(
        g.target_state(&victim).await,
        Some(TargetHealthStateEnum::Draining)
    );
    assert_eq!(g.ec2_state(&victim).await, "running", "still draining");
    assert_eq!(open.await.unwrap(), 200, "its open request finishes");
    // Once its last request ended, long before the delay.
    eventually(
        Duration::from_secs(2),
        "terminated after draining",
        || async {
            (g.ec2_state(&victim).await == "terminated" && g.state_of(&victim).await.is_none())
                .then_some(())
        },
    )
    .await;
    assert_eq!(g.fleet.in_service(&g.env).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_capacity_change_leaves_standby_instances_out_and_healthy_targets_healthy() {
    let g = group(2).await;
    let ids = g.fleet.in_service(&g.env).await.unwrap();
    let (resting, serving) = (ids[0].clone(), ids[1].clone());
    g.serve(&resting, 200).await;
    g.serve(&serving, 200).await;
    eventually(
        Duration::from_secs(10),
        "both targets are healthy",
        || async {
            let both = g.target_state(&resting).await == Some(TargetHealthStateEnum::Healthy)
                && g.target_state(&serving).await == Some(TargetHealthStateEnum::Healthy);
            both.then_some(())
        },
    )
    .await;
    g.fleet
        .enter_standby(&g.env, std::slice::from_ref(&resting))
        .await
        .unwrap();

    g.desired(2).await;

    eventually(
        Duration::from_secs(5),
        "a new instance is InService",
        || async { (g.fleet.in_service(&g.env).await.unwrap().len() == 2).then_some(()) },
    )
    .await;
    assert_eq!(
        g.state_of(&resting).await.map(|(lifecycle, _)| lifecycle),
        Some("Standby".into())
    );
    assert!(
        !matches!(
            g.target_state(&resting).await,
            Some(TargetHealthStateEnum::Healthy | TargetHealthStateEnum::Initial)
        ),
        "a Standby instance is not registered again"
    );
    assert_eq!(
        g.target_state(&serving).await,
        Some(TargetHealthStateEnum::Healthy),
        "registering the group's instances again leaves a healthy target healthy"
    );
}

#[tokio::test]
async fn suspended_replace_unhealthy_keeps_an_unhealthy_instance_until_resumed() {
    let g = group(1).await;
    let sick = g.fleet.in_service(&g.env).await.unwrap()[0].clone();
    g.suspend("ReplaceUnhealthy").await;
    g.grace_period(0).await;
    g.serve(&sick, 503).await;

    eventually(
        Duration::from_secs(10),
        "the group marks it Unhealthy",
        || async {
            (g.state_of(&sick).await == Some(("InService".into(), "Unhealthy".into())))
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        g.state_of(&sick).await,
        Some(("InService".into(), "Unhealthy".into())),
        "not replaced while ReplaceUnhealthy is suspended"
    );

    g.resume("ReplaceUnhealthy").await;
    eventually(Duration::from_secs(10), "replaced once resumed", || async {
        let serving = g.fleet.in_service(&g.env).await.unwrap();
        (serving.len() == 1 && !serving.contains(&sick)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn suspended_launch_terminate_and_add_to_load_balancer_are_honoured() {
    let g = group(2).await;
    let before = g.fleet.in_service(&g.env).await.unwrap();

    g.suspend("Launch").await;
    g.desired(3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        g.fleet.in_service(&g.env).await.unwrap(),
        before,
        "no launch while Launch is suspended"
    );

    g.suspend("AddToLoadBalancer").await;
    g.resume("Launch").await;
    let added = eventually(
        Duration::from_secs(5),
        "the group converges on 3",
        || async {
            let serving = g.fleet.in_service(&g.env).await.unwrap();
            (serving.len() == 3).then(|| serving.into_iter().find(|i| !before.contains(i)).unwrap())
        },
    )
    .await;
    assert_eq!(
        g.target_state(&added).await,
        None,
        "launched while AddToLoadBalancer was suspended: never registered"
    );

    g.suspend("Terminate").await;
    g.desired(1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        g.fleet.in_service(&g.env).await.unwrap().len(),
        3,
        "no scale-in while Terminate is suspended"
    );
    g.resume("Terminate").await;
    eventually(
        Duration::from_secs(5),
        "the group converges on 1",
        || async { (g.fleet.in_service(&g.env).await.unwrap().len() == 1).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn an_instance_entering_standby_drains_first_and_the_fleet_waits_for_it() {
    let g = group(2).await;
    let ids = g.fleet.in_service(&g.env).await.unwrap();
    let (raw, waited) = (ids[0].clone(), ids[1].clone());
    for id in &ids {
        g.serve(id, 200).await;
    }
    eventually(
        Duration::from_secs(10),
        "both targets are healthy",
        || async {
            let mut healthy = 0;
            for id in &ids {
                healthy +=
                    usize::from(g.target_state(id).await == Some(TargetHealthStateEnum::Healthy));
            }
            (healthy == 2).then_some(())
        },
    )
    .await;
    g.long_drains().await;
    let open = [g.slow_request().await, g.slow_request().await];

    g.asg
        .enter_standby()
        .auto_scaling_group_name(&g.name)
        .instance_ids(raw.as_str())
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        g.state_of(&raw).await.map(|(lifecycle, _)| lifecycle),
        Some("EnteringStandby".into())
    );
    assert_eq!(
        g.target_state(&raw).await,
        Some(TargetHealthStateEnum::Draining)
    );
    let early = g
        .asg
        .exit_standby()
        .auto_scaling_group_name(&g.name)
        .instance_ids(raw.as_str())
        .send()
        .await
        .unwrap_err();
    assert!(
        early
            .message()
            .unwrap_or_default()
            .contains("not in Standby"),
        "{early:?}"
    );
    for request in open {
        assert_eq!(request.await.unwrap(), 200, "open requests finish");
    }
    eventually(Duration::from_secs(2), "Standby once drained", || async {
        (g.state_of(&raw).await.map(|(lifecycle, _)| lifecycle) == Some("Standby".into()))
            .then_some(())
    })
    .await;
    g.fleet
        .exit_standby(&g.env, std::slice::from_ref(&raw))
        .await
        .unwrap();

    // The only target left in service gets the next request.
    let open = g.slow_request().await;
    let started = Instant::now();
    g.fleet
        .enter_standby(&g.env, std::slice::from_ref(&waited))
        .await
        .unwrap();
    let waited_for = started.elapsed();
    // The request had 0.8 s to go: the fleet waited for it, not for the
    // 5 s delay.
    assert!(
        waited_for >= Duration::from_millis(500) && waited_for < Duration::from_secs(3),
        "waited {waited_for:?}"
    );
    assert_eq!(open.await.unwrap(), 200);
    assert_eq!(
        g.state_of(&waited).await.map(|(lifecycle, _)| lifecycle),
        Some("Standby".into()),
        "the fleet answers once the instance is out"
    );
}
