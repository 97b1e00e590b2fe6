//! ELBv2 target health in the emulator, as a load balancer measures it:
//! HTTP probes of a local instance on its port, by the target group's path,
//! matcher, interval and thresholds, and draining on deregistration. The
//! emulator runs `EMULATOR_TIME_SCALE` times AWS's times.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_elasticloadbalancingv2::types::{
    ProtocolEnum, TargetDescription, TargetGroupAttribute, TargetHealthStateEnum,
};
use slipway_local::hosts::LocalHost;
use slipway_tests::{EMULATOR_TIME_SCALE, World, hosts, unique_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A local instance answering every request with `status` and
/// `served by <port>`, a request for `/slow` after a second.
pub(crate) async fn serve(status: Arc<AtomicU16>) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let code = status.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                if buf[..n].starts_with(b"GET /slow") {
                    tokio::time::sleep(SLOW).await;
                }
                let body = format!("served by {port}");
                let answer = format!(
                    "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, task)
}

/// How long a local instance takes to answer `/slow`.
pub(crate) const SLOW: Duration = Duration::from_secs(1);

/// An EC2 instance of the emulator that a local host serves on `port`.
pub(crate) async fn local_instance(world: &World, port: u16, dir: &std::path::Path) -> String {
    let id = world.instance().await;
    hosts()
        .register(
            &id,
            &LocalHost {
                dir: dir.to_owned(),
                env: BTreeMap::new(),
                programs: BTreeMap::new(),
                port: Some(port),
            },
        )
        .unwrap();
    id.to_string()
}

/// Each target of `group`: its id, state and reason.
pub(crate) async fn target_health(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    group: &str,
) -> Vec<(String, TargetHealthStateEnum, Option<String>)> {
    let out = elb
        .describe_target_health()
        .target_group_arn(group)
        .send()
        .await
        .unwrap();
    out.target_health_descriptions()
        .iter()
        .map(|d| {
            let health = d.target_health().unwrap();
            (
                d.target().and_then(|t| t.id()).unwrap().to_owned(),
                health.state().cloned().unwrap(),
                health.reason().map(|r| r.as_str().to_owned()),
            )
        })
        .collect()
}

/// An HTTP target group on port 8000 checking `/health` every `interval`
/// seconds, healthy after `healthy` passes, unhealthy after `unhealthy`
/// failures.
async fn target_group(world: &World, interval: i32, healthy: i32, unhealthy: i32) -> String {
    slipway_control::aws::elb_client(&world.config)
        .create_target_group()
        .name(unique_name("tg"))
        .protocol(ProtocolEnum::Http)
        .port(8000)
        .vpc_id(world.vpc().await)
        .health_check_path("/health")
        .health_check_interval_seconds(interval)
        .health_check_timeout_seconds(4)
        .healthy_threshold_count(healthy)
        .unhealthy_threshold_count(unhealthy)
        .send()
        .await
        .unwrap()
        .target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_owned()
}

/// Sets `group`'s deregistration delay: the most a target drains.
pub(crate) async fn deregistration_delay(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    group: &str,
    seconds: u32,
) {
    elb.modify_target_group_attributes()
        .target_group_arn(group)
        .attributes(
            TargetGroupAttribute::builder()
                .key("deregistration_delay.timeout_seconds")
                .value(seconds.to_string())
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// An internet-facing load balancer whose listener forwards to `group`:
/// its local address.
async fn load_balancer(world: &World, group: &str) -> String {
    let (ec2, elb) = (
        slipway_control::aws::ec2_client(&world.config),
        slipway_control::aws::elb_client(&world.config),
    );
    let vpc = world.vpc().await;
    let subnets: Vec<String> = ec2
        .describe_subnets()
        .send()
        .await
        .unwrap()
        .subnets()
        .iter()
        .filter(|s| s.vpc_id() == Some(vpc.as_str()))
        .filter_map(|s| s.subnet_id().map(str::to_owned))
        .take(2)
        .collect();
    let lb = elb
        .create_load_balancer()
        .name(unique_name("lb"))
        .set_subnets(Some(subnets))
        .send()
        .await
        .unwrap()
        .load_balancers()[0]
        .clone();
    elb.create_listener()
        .load_balancer_arn(lb.load_balancer_arn().unwrap())
        .protocol(ProtocolEnum::Http)
        .port(80)
        .default_actions(
            aws_sdk_elasticloadbalancingv2::types::Action::builder()
                .r#type(aws_sdk_elasticloadbalancingv2::types::ActionTypeEnum::Forward)
                .target_group_arn(group)
                .build(),
        )
        .send()
        .await
        .unwrap();
    format!("http://{}/", lb.dns_name().unwrap())
}

#[tokio::test]
async fn a_target_turns_healthy_and_unhealthy_by_its_probes_and_with_nothing_in_flight_deregisters_at_once()
 {
    let world = World::new().await;
    let elb = slipway_control::aws::elb_client(&world.config);
    let (interval, healthy, unhealthy) = (10, 3, 2);
    let group = target_group(&world, interval, healthy, unhealthy).await;
    deregistration_delay(&elb, &group, 20).await;
    let status = Arc::new(AtomicU16::new(200));
    let (port, server) = serve(status.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let id = local_instance(&world, port, dir.path()).await;
    let target = TargetDescription::builder().id(&id).port(8000).build();
    let health = || {
        let (elb, group) = (elb.clone(), group.clone());
        async move {
            target_health(&elb, &group)
                .await
                .into_iter()
                .next()
                .map(|(_, state, reason)| (state, reason))
        }
    };
    let scaled = |secs: i32| Duration::from_secs_f64(f64::from(secs) * EMULATOR_TIME_SCALE);
    let until = |want: TargetHealthStateEnum, within: Duration| async move {
        let started = Instant::now();
        loop {
            let now = health().await;
            if now.as_ref().map(|(s, _)| s) == Some(&want) {
                return (now.unwrap().1, started.elapsed());
            }
            assert!(started.elapsed() < within, "still {now:?}, not {want:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    elb.register_targets()
        .target_group_arn(&group)
        .targets(target.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        health().await,
        Some((
            TargetHealthStateEnum::Initial,
            Some("Elb.RegistrationInProgress".into())
        ))
    );
    let slack = Duration::from_secs(3);
    let (_, took) = until(
        TargetHealthStateEnum::Healthy,
        scaled(interval * healthy) + slack,
    )
    .await;
    // Not before its third probe, two intervals in (less what the first
    // assertion took).
    assert!(
        took >= scaled(interval * (healthy - 1)).mul_f64(0.75),
        "healthy after {took:?}"
    );

    status.store(503, Ordering::SeqCst);
    let (reason, _) = until(
        TargetHealthStateEnum::Unhealthy,
        scaled(interval * unhealthy) + slack,
    )
    .await;
    assert_eq!(reason.as_deref(), Some("Target.ResponseCodeMismatch"));

    server.abort();
    let _ = server.await;
    tokio::time::sleep(scaled(interval * (unhealthy + 1))).await;
    assert_eq!(
        health().await,
        Some((
            TargetHealthStateEnum::Unhealthy,
            Some("Target.FailedHealthChecks".into())
        ))
    );

    // With no request in flight the deregistration completes at once, as
    // AWS's does, not after the delay (20 s, 1 s scaled).
    elb.deregister_targets()
        .target_group_arn(&group)
        .targets(target)
        .send()
        .await
        .unwrap();
    assert_eq!(health().await, None, "nothing to drain");
}

#[tokio::test]
async fn the_load_balancer_sends_requests_round_robin_to_healthy_targets_only() {
    let world = World::new().await;
    let elb = slipway_control::aws::elb_client(&world.config);
    let group = target_group(&world, 5, 2, 2).await;
    let address = load_balancer(&world, &group).await;
    let get = || {
        let address = address.clone();
        async move {
            let response = reqwest::get(&address).await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(get().await.0, 503, "no target yet");

    let dir = tempfile::tempdir().unwrap();
    let (a_status, b_status) = (Arc::new(AtomicU16::new(200)), Arc::new(AtomicU16::new(200)));
    let ((a_port, _a), (b_port, _b)) = (serve(a_status.clone()).await, serve(b_status).await);
    let a = local_instance(&world, a_port, dir.path()).await;
    let b = local_instance(&world, b_port, dir.path()).await;
    let targets: Vec<TargetDescription> = [&a, &b]
        .iter()
        .map(|id| TargetDescription::builder().id(*id).port(8000).build())
        .collect();
    elb.register_targets()
        .target_group_arn(&group)
        .set_targets(Some(targets.clone()))
        .send()
        .await
        .unwrap();
    let states = || {
        let (elb, group) = (elb.clone(), group.clone());
        async move {
            target_health(&elb, &group)
                .await
                .into_iter()
                .map(|(id, state, _)| (id, state))
                .collect::<BTreeMap<_, _>>()
        }
    };
    let wait_for = |want: BTreeMap<String, TargetHealthStateEnum>| async move {
        let started = Instant::now();
        while states().await != want {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                states().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    use TargetHealthStateEnum::{Healthy, Unhealthy};
    wait_for(BTreeMap::from([(a.clone(), Healthy), (b.clone(), Healthy)])).await;

    let mut served = Vec::new();
    for _ in 0..4 {
        served.push(get().await);
    }
    let by = |port: u16| (200, format!("served by {port}"));
    served.sort();
    let mut both = vec![by(a_port), by(a_port), by(b_port), by(b_port)];
    both.sort();
    assert_eq!(served, both, "round robin over both");

    a_status.store(500, Ordering::SeqCst);
    wait_for(BTreeMap::from([
        (a.clone(), Unhealthy),
        (b.clone(), Healthy),
    ]))
    .await;
    for _ in 0..4 {
        assert_eq!(get().await, by(b_port), "an unhealthy target gets nothing");
    }

    elb.deregister_targets()
        .target_group_arn(&group)
        .set_targets(Some(targets))
        .send()
        .await
        .unwrap();
    let (status, body) = get().await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test]
async fn a_deregistered_target_drains_its_open_requests_gets_no_new_ones_and_goes_when_they_end() {
    let world = World::new().await;
    let elb = slipway_control::aws::elb_client(&world.config);
    let group = target_group(&world, 5, 2, 2).await;
    // 100 s of deregistration delay, 5 s in the emulator's time: the
    // drain must end with its last request, long before.
    deregistration_delay(&elb, &group, 100).await;
    let address = load_balancer(&world, &group).await;
    let (port, _server) = serve(Arc::new(AtomicU16::new(200))).await;
    let dir = tempfile::tempdir().unwrap();
    let id = local_instance(&world, port, dir.path()).await;
    let target = TargetDescription::builder().id(&id).port(8000).build();
    elb.register_targets()
        .target_group_arn(&group)
        .targets(target.clone())
        .send()
        .await
        .unwrap();
    let started = Instant::now();
    while target_health(&elb, &group).await.first().map(|t| &t.1)
        != Some(&TargetHealthStateEnum::Healthy)
    {
        assert!(started.elapsed() < Duration::from_secs(5), "never healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let slow = tokio::spawn({
        let address = format!("{address}slow");
        async move {
            let response = reqwest::get(&address).await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deregistered = Instant::now();
    elb.deregister_targets()
        .target_group_arn(&group)
        .targets(target)
        .send()
        .await
        .unwrap();

    assert_eq!(
        target_health(&elb, &group)
            .await
            .first()
            .map(|t| t.1.clone()),
        Some(TargetHealthStateEnum::Draining)
    );
    assert_eq!(
        reqwest::get(&address).await.unwrap().status(),
        503,
        "a draining target gets no new request"
    );
    assert_eq!(
        slow.await.unwrap(),
        (200, format!("served by {port}")),
        "its open request finishes"
    );
    while !target_health(&elb, &group).await.is_empty() {
        assert!(
            deregistered.elapsed() < Duration::from_secs(2),
            "still draining after its last request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
