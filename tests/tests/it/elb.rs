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
use slipway_core::names::InstanceId;
use slipway_local::hosts::LocalHost;
use slipway_tests::{EMULATOR_TIME_SCALE, World, hosts, unique_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A local instance answering every request with `status`.
async fn serve(status: Arc<AtomicU16>) -> (u16, tokio::task::JoinHandle<()>) {
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
                let _ = stream.read(&mut buf).await;
                let answer =
                    format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_target_turns_healthy_and_unhealthy_by_its_probes_and_drains_when_deregistered() {
    let world = World::new().await;
    let (ec2, elb) = (
        slipway_control::aws::ec2_client(&world.config),
        slipway_control::aws::elb_client(&world.config),
    );
    let vpc = ec2.describe_vpcs().send().await.unwrap().vpcs()[0]
        .vpc_id()
        .unwrap()
        .to_owned();
    let (interval, healthy, unhealthy, delay) = (10, 3, 2, 20);
    let group = elb
        .create_target_group()
        .name(unique_name("tg"))
        .protocol(ProtocolEnum::Http)
        .port(8000)
        .vpc_id(vpc)
        .health_check_path("/health")
        .health_check_interval_seconds(interval)
        .health_check_timeout_seconds(5)
        .healthy_threshold_count(healthy)
        .unhealthy_threshold_count(unhealthy)
        .send()
        .await
        .unwrap()
        .target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_owned();
    elb.modify_target_group_attributes()
        .target_group_arn(&group)
        .attributes(
            TargetGroupAttribute::builder()
                .key("deregistration_delay.timeout_seconds")
                .value(delay.to_string())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let id = ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_owned();
    let status = Arc::new(AtomicU16::new(200));
    let (port, server) = serve(status.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    hosts()
        .register(
            &InstanceId::parse(&id).unwrap(),
            &LocalHost {
                dir: dir.path().to_owned(),
                env: BTreeMap::new(),
                programs: BTreeMap::new(),
                port: Some(port),
            },
        )
        .unwrap();
    let target = TargetDescription::builder().id(&id).port(8000).build();
    let health = || {
        let (elb, group) = (elb.clone(), group.clone());
        async move {
            let out = elb
                .describe_target_health()
                .target_group_arn(group)
                .send()
                .await
                .unwrap();
            out.target_health_descriptions()
                .first()
                .and_then(|d| d.target_health())
                .map(|h| {
                    (
                        h.state().cloned().unwrap(),
                        h.reason().map(|r| r.as_str().to_owned()),
                    )
                })
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

    elb.deregister_targets()
        .target_group_arn(&group)
        .targets(target)
        .send()
        .await
        .unwrap();
    assert_eq!(
        health().await,
        Some((
            TargetHealthStateEnum::Draining,
            Some("Target.DeregistrationInProgress".into())
        ))
    );
    tokio::time::sleep(scaled(delay + interval) + Duration::from_millis(200)).await;
    assert_eq!(
        health().await,
        None,
        "still listed after the deregistration delay"
    );
}
