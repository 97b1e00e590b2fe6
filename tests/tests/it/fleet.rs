//! The fleet on a real environment stack in the emulator (made from
//! `infra/environment.yaml`): formation, standby, cycling one instance and
//! all of them, scaling and terminating, through the cycle and formation
//! routers with the AWS adapter.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use futures::future::BoxFuture;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use slipway_control::aws::fleet::AwsFleet;
use slipway_control::cycle::{CycleOptions, Cycles, run_queued_cycle};
use slipway_control::fleet::{Fleet, GroupControl};
use slipway_control::jobs::LaunchError;
use slipway_control::jobs::Launcher;
use slipway_control::jobs::lock::{self, Lock};
use slipway_core::ids::JobId;
use slipway_core::names::EnvRef;
use slipway_http::control_plane::{ControlPlane, Function};
use slipway_tests::{
    World, control_plane, environment_stack, simulate_booting_agents, unique_name,
};

use crate::api::{ALICE, call, users};

struct Setup {
    world: World,
    env: EnvRef,
    fleet: AwsFleet,
}

/// A fresh bucket and a stack-made environment of `instances`.
async fn setup(instances: u32) -> Setup {
    let world = World::new().await;
    let env = EnvRef::parse(&unique_name("f"), "prod").unwrap();
    environment_stack(&world.config, &env, &world.bucket, instances).await;
    let fleet = AwsFleet::new(&world.config, Duration::from_millis(20));
    Setup { world, env, fleet }
}

impl Setup {
    fn plane(&self) -> ControlPlane<AwsFleet> {
        control_plane(self.world.store.clone(), self.fleet.clone(), users())
    }

    fn cycle_router(&self) -> Router {
        let mut plane = self.plane();
        plane.cycles = Some(Arc::new(TaskLauncher {
            cycles: Cycles::new(self.world.store.clone()),
            fleet: self.fleet.clone(),
        }));
        plane.router(&[Function::Cycle])
    }

    fn formation_router(&self) -> Router {
        self.plane().router(&[Function::Formation])
    }

    fn path(&self, rest: &str) -> String {
        format!("/apps/{}/envs/{}{rest}", self.env.app, self.env.env)
    }

    /// The targets of the group's target group that are registered (not
    /// draining or gone).
    async fn registered_targets(&self) -> BTreeSet<String> {
        let group = self.fleet.group(&self.env).await.unwrap();
        let elb = slipway_control::aws::elb_client(&self.world.config);
        let out = elb
            .describe_target_health()
            .target_group_arn(&group.target_group_arns()[0])
            .send()
            .await
            .unwrap();
        out.target_health_descriptions()
            .iter()
            .filter(|d| {
                d.target_health().and_then(|h| h.state()).is_some_and(|s| {
                    !matches!(
                        s,
                        aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::Draining
                            | aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::Unused
                    )
                })
            })
            .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_owned))
            .collect()
    }

    /// The group's instances, leaving out those it is terminating (they
    /// drain first, listed as `Terminating`, as in AWS).
    async fn ids(&self) -> BTreeSet<String> {
        self.fleet
            .members(&self.env)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.lifecycle != "Terminating")
            .map(|m| m.id.to_string())
            .collect()
    }
}

/// Runs launched cycles as tasks, as the local platform does; every
/// worker gets no time budget, so each hands over to the next while it
/// waits for a replacement.
#[derive(Clone)]
struct TaskLauncher {
    cycles: Cycles,
    fleet: AwsFleet,
}

impl Launcher for TaskLauncher {
    fn launch(&self, env: EnvRef, id: JobId) -> BoxFuture<'_, Result<(), LaunchError>> {
        let me = self.clone();
        Box::pin(async move {
            tokio::spawn(async move {
                let options = CycleOptions {
                    replace_timeout: Duration::from_secs(20),
                    health_timeout: Duration::from_secs(5),
                    poll: Duration::from_millis(50),
                    budget: Duration::ZERO,
                };
                let next: Arc<dyn Launcher> = Arc::new(me.clone());
                let id = id.cycle().expect("a cycle").clone();
                run_queued_cycle(&me.cycles, &env, &id, &me.fleet, Some(next), options)
                    .await
                    .expect("the cycle worker runs");
            });
            Ok(())
        })
    }
}

#[tokio::test]
async fn the_formation_of_a_stack_made_environment_shows_its_instances_and_load_balancer() {
    let s = setup(3).await;
    let router = s.formation_router();

    let (status, body, _) = call(&router, Method::GET, &s.path(""), ALICE, None).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let formation = &body["formation"];
    assert_eq!(formation["group"], s.env.physical_name());
    assert_eq!(formation["desired"], 3);
    assert!(formation["launch_template"].as_str().unwrap().contains(':'));
    let lb = formation["load_balancers"][0]["dns_name"].as_str().unwrap();
    // The emulator's load balancer is a local address; its instances are
    // not local hosts here, so it has no target to send to.
    let answer = reqwest::get(format!("http://{lb}/")).await.unwrap();
    assert_eq!(answer.status(), 503, "{lb}");
    let instances = formation["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 3);
    for i in instances {
        assert_eq!(i["lifecycle"], "InService");
        assert!(
            i["session_url"]
                .as_str()
                .unwrap()
                .contains("session-manager/i-")
        );
        assert_eq!(i["target_health"].as_object().unwrap().len(), 1, "{i}");
    }
    assert_eq!(body["lock"], Value::Null);

    // What the local platform and the agent rely on: instances tagged with
    // their app and environment, the group with its target group.
    let ids: Vec<String> = instances
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    let described = slipway_control::aws::ec2_client(&s.world.config)
        .describe_instances()
        .set_instance_ids(Some(ids))
        .send()
        .await
        .unwrap();
    for i in described.reservations().iter().flat_map(|r| r.instances()) {
        let tag = |k: &str| {
            i.tags()
                .iter()
                .find(|t| t.key() == Some(k))
                .and_then(|t| t.value())
                .map(str::to_owned)
        };
        assert_eq!(tag("slipway:app"), Some(s.env.app.to_string()));
        assert_eq!(tag("slipway:env"), Some("prod".to_owned()));
    }
    let group = s.fleet.group(&s.env).await.unwrap();
    assert_eq!(group.target_group_arns().len(), 1);
}

#[tokio::test]
async fn the_apps_overview_lists_environments_with_their_current_release() {
    let s = setup(1).await;
    s.world
        .upload(
            &s.env,
            "a.tar.gz",
            slipway_core::testing::app_archive("python3 app.py"),
        )
        .await;
    let router = s.formation_router();

    let (status, body, _) = call(&router, Method::GET, "/apps", ALICE, None).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["apps"][0]["name"], s.env.app.to_string());
    assert_eq!(body["apps"][0]["envs"][0]["name"], "prod");
    assert_eq!(body["apps"][0]["envs"][0]["last_deploy"], Value::Null);
    let (_, unknown, _) = call(&router, Method::GET, "/apps/nope/envs/prod", ALICE, None).await;
    assert_eq!(unknown["code"], "not_found");
    let (status, _, _) = call(&router, Method::GET, "/apps", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn standby_takes_instances_out_of_service_and_back() {
    let s = setup(3).await;
    let first = s.fleet.in_service(&s.env).await.unwrap()[0].clone();

    s.fleet
        .enter_standby(&s.env, std::slice::from_ref(&first))
        .await
        .unwrap();
    let serving = s.fleet.in_service(&s.env).await.unwrap();
    assert_eq!(serving.len(), 2);
    assert!(!serving.contains(&first));
    // Out of the load balancer too: draining, not a registered target.
    assert_eq!(s.registered_targets().await.len(), 2);
    assert!(!s.registered_targets().await.contains(&first.to_string()));

    s.fleet
        .exit_standby(&s.env, std::slice::from_ref(&first))
        .await
        .unwrap();
    assert_eq!(s.fleet.in_service(&s.env).await.unwrap().len(), 3);
    assert!(s.registered_targets().await.contains(&first.to_string()));
    let healthy = s
        .fleet
        .wait_healthy(&s.env, &[first], Duration::from_secs(5))
        .await
        .unwrap();
    assert!(healthy.is_empty());
}

#[tokio::test]
async fn cycling_one_instance_terminates_it_and_the_group_replaces_it() {
    let s = setup(3).await;
    let router = s.cycle_router();
    let before = s.ids().await;
    let victim = before.iter().next().unwrap().clone();

    let (status, body, _) = call(
        &router,
        Method::POST,
        &s.path(&format!("/instances/{victim}/cycle")),
        ALICE,
        None,
    )
    .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cycle"]["steps"][0]["status"], "terminated");
    assert_eq!(body["cycle"]["user"], "alice");
    let after = s.ids().await;
    assert_eq!(after.len(), 3, "the group keeps its size");
    assert!(!after.contains(&victim));
    assert_eq!(after.difference(&before).count(), 1, "one replacement");
    let (_, listed, _) = call(&router, Method::GET, &s.path("/cycles"), ALICE, None).await;
    assert_eq!(listed["cycles"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_instance_of_another_group_or_a_bad_id_is_not_cycled() {
    let s = setup(1).await;
    let other = setup(1).await;
    let router = s.cycle_router();
    let foreign = other.ids().await.into_iter().next().unwrap();

    let (status, body, _) = call(
        &router,
        Method::POST,
        &s.path(&format!("/instances/{foreign}/cycle")),
        ALICE,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("is not an instance of")
    );
    assert_eq!(other.ids().await.into_iter().next().unwrap(), foreign);

    let (status, _, _) = call(
        &router,
        Method::POST,
        &s.path("/instances/i-..%2F..%2Fx/cycle"),
        ALICE,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn nothing_changes_the_group_while_a_deploy_holds_the_environment() {
    let s = setup(2).await;
    let router = s.cycle_router();
    let now = chrono::Utc::now();
    lock::acquire(
        s.world.store.objects(),
        &s.env,
        Lock::new(
            slipway_core::ids::JobId::parse("d1-abc").unwrap(),
            "bob",
            now,
        ),
        now,
    )
    .await
    .unwrap();
    let victim = s.ids().await.into_iter().next().unwrap();
    let name = s.env.qualified();

    for (method, path, body) in [
        (
            Method::POST,
            s.path(&format!("/instances/{victim}/cycle")),
            None,
        ),
        (Method::POST, s.path("/cycle"), None),
        (Method::PATCH, s.path("/scale"), Some(json!({"desired": 3}))),
        (Method::DELETE, s.path(&format!("?confirm={name}")), None),
    ] {
        let (status, answer, _) = call(&router, method, &path, ALICE, body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("deploy d1-abc by bob"),
            "{answer}"
        );
    }
    assert_eq!(s.ids().await.len(), 2);
}

#[tokio::test]
async fn cycling_all_replaces_every_instance_with_one_booting_the_current_release() {
    let s = setup(3).await;
    s.world
        .upload(
            &s.env,
            "a.tar.gz",
            slipway_core::testing::app_archive("python3 app.py"),
        )
        .await;
    let current = s.world.store.current(&s.env).await.unwrap();
    let current = current.map_or("r1".to_owned(), |r| r.to_string());
    let agents = simulate_booting_agents(&s.world.config, &s.env, &current);
    let router = s.cycle_router();
    let before = s.ids().await;

    let (status, body, _) = call(&router, Method::POST, &s.path("/cycle"), ALICE, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let url = body["url"].as_str().unwrap().to_owned();
    let mut record = Value::Null;
    for _ in 0..400 {
        (_, record, _) = call(&router, Method::GET, &url, ALICE, None).await;
        if !record["finished_at"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agents.abort();

    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert!(
        record["workers"].as_u64().unwrap() > 1,
        "handed over: {record}"
    );
    let steps = record["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert!(
        steps.iter().all(|s| s["status"] == "replaced"),
        "{record:#}"
    );
    let after = s.ids().await;
    assert_eq!(after.len(), 3);
    assert!(after.is_disjoint(&before), "every instance was replaced");
    assert!(
        lock::read(s.world.store.objects(), &s.env)
            .await
            .unwrap()
            .is_none(),
        "the lock is released"
    );
}

#[tokio::test]
async fn scaling_changes_the_group_within_its_bounds_and_is_recorded() {
    let s = setup(2).await;
    let router = s.cycle_router();

    let (status, body, _) = call(
        &router,
        Method::PATCH,
        &s.path("/scale"),
        ALICE,
        Some(json!({"desired": 4})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scale"]["from"]["desired"], 2);
    assert_eq!(body["scale"]["to"]["desired"], 4);
    assert_eq!(s.ids().await.len(), 4);
    let recorded = s.world.keys(&format!("{}scales/", s.env.prefix())).await;
    assert_eq!(recorded.len(), 1);

    let (status, body, _) = call(
        &router,
        Method::PATCH,
        &s.path("/scale"),
        ALICE,
        Some(json!({"desired": 40})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("outside the group's bounds")
    );
    let (status, _, _) = call(
        &router,
        Method::PATCH,
        &s.path("/scale"),
        ALICE,
        Some(json!({"instances": 4})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(s.ids().await.len(), 4, "refused changes change nothing");
}

#[tokio::test]
async fn terminating_an_environment_needs_its_name_and_deletes_its_stack() {
    let s = setup(2).await;
    let router = s.cycle_router();
    let name = s.env.qualified();

    let (status, body, _) = call(&router, Method::DELETE, &s.path(""), ALICE, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&format!("?confirm={name}"))
    );
    let (status, _, _) = call(
        &router,
        Method::DELETE,
        &s.path("?confirm=other-prod"),
        ALICE,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(s.ids().await.len(), 2, "nothing was terminated");

    let (status, body, _) = call(
        &router,
        Method::DELETE,
        &s.path(&format!("?confirm={name}")),
        ALICE,
        None,
    )
    .await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let stack = s.env.physical_name();
    assert_eq!(
        body["terminated"]["destroyed"],
        json!({"kind": "stack", "name": stack})
    );
    let cfn = slipway_control::aws::cloudformation_client(&s.world.config);
    assert!(
        cfn.describe_stacks()
            .stack_name(&stack)
            .send()
            .await
            .is_err()
    );
    let (status, _, _) = call(&s.formation_router(), Method::GET, &s.path(""), ALICE, None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no group and no releases left"
    );
}

#[tokio::test]
async fn terminating_an_environment_without_a_stack_deletes_its_group() {
    let world = World::new().await;
    let env = EnvRef::parse(&unique_name("g"), "prod").unwrap();
    let ec2 = slipway_control::aws::ec2_client(&world.config);
    let template = ec2
        .create_launch_template()
        .launch_template_name(env.physical_name())
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id("ami-12c6146b")
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Small)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let asg = slipway_control::aws::autoscaling_client(&world.config);
    asg.create_auto_scaling_group()
        .auto_scaling_group_name(env.physical_name())
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_id(
                    template
                        .launch_template()
                        .unwrap()
                        .launch_template_id()
                        .unwrap(),
                )
                .build(),
        )
        .min_size(0)
        .max_size(2)
        .desired_capacity(1)
        .availability_zones("us-east-1a")
        .send()
        .await
        .unwrap();
    let s = Setup {
        fleet: AwsFleet::new(&world.config, Duration::from_millis(20)),
        world,
        env,
    };

    let name = s.env.qualified();
    let (status, body, _) = call(
        &s.cycle_router(),
        Method::DELETE,
        &s.path(&format!("?confirm={name}")),
        ALICE,
        None,
    )
    .await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let group = s.env.physical_name();
    assert_eq!(
        body["terminated"]["destroyed"],
        json!({"kind": "group", "name": group})
    );
    let left = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&group)
        .send()
        .await
        .unwrap();
    assert!(left.auto_scaling_groups().is_empty());
}

#[tokio::test]
async fn environments_whose_dashed_names_collide_get_a_group_each_and_terminate_apart() {
    let world = World::new().await;
    let stem = unique_name("c");
    // `<stem>-b`/`c` and `<stem>`/`b-c`: the same `<app>-<env>`.
    let one = EnvRef::parse(&format!("{stem}-b"), "c").unwrap();
    let other = EnvRef::parse(&stem, "b-c").unwrap();
    assert_eq!(one.qualified(), other.qualified());
    environment_stack(&world.config, &one, &world.bucket, 0).await;
    environment_stack(&world.config, &other, &world.bucket, 0).await;
    let fleet = AwsFleet::new(&world.config, Duration::from_millis(20));

    let group = |env: EnvRef| {
        let fleet = fleet.clone();
        async move {
            let group = fleet.group(&env).await.unwrap();
            let tag = |key: &str| {
                group
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some(key))
                    .and_then(|t| t.value().map(str::to_owned))
            };
            (
                group.auto_scaling_group_name().unwrap().to_owned(),
                tag("slipway:app"),
                tag("slipway:env"),
            )
        }
    };
    assert_eq!(
        group(one.clone()).await,
        (
            one.physical_name(),
            Some(one.app.to_string()),
            Some("c".into())
        )
    );
    assert_eq!(
        group(other.clone()).await,
        (
            other.physical_name(),
            Some(stem.clone()),
            Some("b-c".into())
        )
    );

    let destroyed = fleet.destroy(&one).await.unwrap();

    assert_eq!(
        destroyed,
        slipway_control::fleet::Destroyed::Stack(one.physical_name())
    );
    assert_eq!(group(other.clone()).await.0, other.physical_name());
}

#[tokio::test]
async fn standby_that_would_take_the_group_below_its_minimum_is_refused_and_changes_nothing() {
    let s = setup(2).await;
    let group = s.fleet.group(&s.env).await.unwrap();
    slipway_control::aws::autoscaling_client(&s.world.config)
        .update_auto_scaling_group()
        .auto_scaling_group_name(group.auto_scaling_group_name().unwrap())
        .min_size(2)
        .send()
        .await
        .unwrap();
    let first = s.fleet.in_service(&s.env).await.unwrap()[0].clone();

    let err = s
        .fleet
        .enter_standby(&s.env, std::slice::from_ref(&first))
        .await
        .unwrap_err();

    assert!(err.to_string().contains("min-size"), "{err}");
    assert_eq!(s.fleet.in_service(&s.env).await.unwrap().len(), 2);
    assert_eq!(s.registered_targets().await.len(), 2);
}

#[tokio::test]
async fn a_groups_instances_are_spread_evenly_over_its_availability_zones() {
    let s = setup(4).await;

    let formation = s.fleet.formation(&s.env).await.unwrap();

    let mut per_zone = std::collections::BTreeMap::<String, usize>::new();
    for instance in &formation.instances {
        *per_zone
            .entry(instance.availability_zone.clone())
            .or_default() += 1;
    }
    assert_eq!(
        per_zone.values().copied().collect::<Vec<_>>(),
        [2, 2],
        "{per_zone:?}"
    );
}
