//! The deploy function's HTTP API through its router: starting deploys and
//! rollbacks, reading and cancelling them, settings, and the Lambda handler
//! that sends the function's own events to the rollout worker.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use slipway_control::jobs::LaunchError;
use slipway_control::store::{ReleaseStore, UploadOutcome};
use slipway_core::ids::JobId;
use slipway_core::names::EnvRef;
use slipway_core::testing::app_archive;
use slipway_http::auth::basic_header;
use slipway_http::control_plane::Function;
use slipway_tests::{World, control_plane, offline_fleet};
use tower::ServiceExt;

use crate::api::{ALICE, PASSWORD, apigw_event, call, users};

/// hello/prod with release r1, made from an upload.
async fn first_release(world: &World) -> EnvRef {
    let env = EnvRef::parse("hello", "prod").unwrap();
    let outcome = world
        .upload(&env, "a.tar.gz", app_archive("python3 app.py"))
        .await;
    assert!(matches!(outcome, UploadOutcome::Created(_)), "{outcome:?}");
    env
}

/// Remembers what it was asked to launch; fails when told to.
#[derive(Default)]
struct Launches {
    ids: std::sync::Mutex<Vec<String>>,
    fail: std::sync::atomic::AtomicBool,
}

impl slipway_control::jobs::Launcher for Launches {
    fn launch(
        &self,
        _env: EnvRef,
        job: JobId,
    ) -> futures::future::BoxFuture<'_, Result<(), LaunchError>> {
        Box::pin(async move {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(LaunchError::Status(500));
            }
            self.ids.lock().unwrap().push(job.to_string());
            Ok(())
        })
    }
}

fn deploy_router(store: ReleaseStore) -> Router {
    deploy_router_with(store, Arc::new(Launches::default()))
}

fn deploy_router_with(store: ReleaseStore, launches: Arc<Launches>) -> Router {
    let mut plane = control_plane(store, offline_fleet(), users());
    plane.deploys = Some(launches);
    plane.router(&[Function::Deploy])
}

#[tokio::test]
async fn settings_are_read_patched_validated_and_never_half_applied() {
    let world = World::new().await;
    let router = deploy_router(world.store.clone());
    let uri = "/apps/hello/envs/prod/settings";

    let (status, body, _) = call(&router, Method::GET, uri, ALICE, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["port"].as_u64(), body["strategy"].as_str()),
        (Some(8000), Some("one-at-a-time"))
    );

    let patch = json!({"port": 9000, "strategy": "25%", "processes": {"worker": 2}});
    let (status, body, _) = call(&router, Method::PATCH, uri, ALICE, Some(patch)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["port"].as_u64(), body["strategy"].as_str()),
        (Some(9000), Some("25%"))
    );

    for (bad, needle) in [
        (json!({"port": 0}), "port"),
        (json!({"strategy": "yolo"}), "strategy"),
        (json!({"nope": 1}), "unknown setting"),
        (json!({"processes": {"web": 3}}), "web runs once"),
        // Outside the local platform a webhook is public HTTPS only.
        (
            json!({"notify_url": "http://127.0.0.1:9001/"}),
            "notify_url is refused",
        ),
        (
            json!({"notify_url": "https://127.0.0.1:9001/"}),
            "internal address",
        ),
        (
            json!({"notify_url": "https://169.254.169.254/latest"}),
            "internal address",
        ),
    ] {
        let (status, body, _) = call(&router, Method::PATCH, uri, ALICE, Some(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{bad}: {body}"
        );
    }
    let (_, body, _) = call(&router, Method::GET, uri, ALICE, None).await;
    assert_eq!(
        (body["port"].as_u64(), body["processes"]["worker"].as_u64()),
        (Some(9000), Some(2))
    );

    let (status, _, _) = call(&router, Method::PATCH, uri, None, Some(json!({"port": 1}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_notification_webhook_is_stored_but_never_shown_and_survives_a_round_trip() {
    let world = World::new().await;
    let router = deploy_router(world.store.clone());
    let uri = "/apps/hello/envs/prod/settings";
    let hook = "https://hooks.slack.com/services/T0/B0/s3cr3tT0k3n";

    let patch = json!({"notify_url": hook, "auto_deploy": true});
    let (status, body, _) = call(&router, Method::PATCH, uri, ALICE, Some(patch)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["notify_url"], "https://hooks.slack.com/…");
    assert_eq!(body["auto_deploy"], true);

    // What GET shows, sent back whole, changes nothing.
    let (_, shown, _) = call(&router, Method::GET, uri, ALICE, None).await;
    assert!(!shown.to_string().contains("s3cr3t"), "{shown}");
    let (status, _, _) = call(&router, Method::PATCH, uri, ALICE, Some(shown)).await;
    assert_eq!(status, StatusCode::OK);
    let stored = world.get("hello/prod/settings.json").await.unwrap();
    let stored: Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(stored["notify_url"], hook);

    let (status, body, _) = call(
        &router,
        Method::PATCH,
        uri,
        ALICE,
        Some(json!({"notify_url": "http://plain.example/hook"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!body.to_string().contains("plain.example/hook"), "{body}");
}

#[tokio::test]
async fn the_syslog_destination_is_shown_without_its_port_survives_a_round_trip_and_unsets_with_null()
 {
    let world = World::new().await;
    let router = deploy_router(world.store.clone());
    let uri = "/apps/hello/envs/prod/settings";
    let stored = || async {
        let bytes = world.get("hello/prod/settings.json").await.unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()["syslog"].clone()
    };

    let patch = json!({"syslog": "logs5.papertrailapp.com:41234"});
    let (status, body, _) = call(&router, Method::PATCH, uri, ALICE, Some(patch)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["syslog"], "logs5.papertrailapp.com:…");

    let (_, shown, _) = call(&router, Method::GET, uri, ALICE, None).await;
    assert!(!shown.to_string().contains("41234"), "{shown}");
    let (status, _, _) = call(&router, Method::PATCH, uri, ALICE, Some(shown)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored().await, "logs5.papertrailapp.com:41234");

    let hostile = json!({"syslog": "x\" action(type=\"omfile\" file=\"/etc/passwd\"):514"});
    let (status, body, _) = call(&router, Method::PATCH, uri, ALICE, Some(hostile)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("syslog must be host:port"),
        "{body}"
    );
    assert!(!body.to_string().contains("omfile"), "{body}");
    assert_eq!(stored().await, "logs5.papertrailapp.com:41234", "unchanged");

    let (status, body, _) = call(
        &router,
        Method::PATCH,
        uri,
        ALICE,
        Some(json!({"syslog": null})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["syslog"].is_null() && stored().await.is_null());
}

#[tokio::test]
async fn deploys_are_listed_shown_and_cancelled_and_bad_ids_are_not_found() {
    let world = World::new().await;
    let env = first_release(&world).await;
    let deploys = slipway_control::rollout::Deploys::new(world.store.clone());
    let start = slipway_control::rollout::StartDeploy {
        user: "alice".into(),
        ..Default::default()
    };
    let (record, _) = deploys
        .start(&env, start, chrono::Utc::now())
        .await
        .unwrap();
    let router = deploy_router(world.store.clone());

    let (status, body, _) = call(
        &router,
        Method::GET,
        "/apps/hello/envs/prod/deploys",
        ALICE,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["deploys"][0]["id"], record.id.as_str());
    assert_eq!(body["deploys"][0]["status"], "queued");

    let uri = format!("/apps/hello/envs/prod/deploys/{}", record.id);
    let (status, body, _) = call(&router, Method::GET, &uri, ALICE, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["to"], "r1");

    let (status, body, _) =
        call(&router, Method::POST, &format!("{uri}/cancel"), ALICE, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body["note"]
            .as_str()
            .unwrap()
            .contains("running batch is cancelled"),
        "{body}"
    );
    assert!(
        world
            .get(&format!("hello/prod/deploys/{}/cancel", record.id))
            .await
            .is_some()
    );

    for bad in ["d2026", "..%2F..%2Fx", "not-a-deploy"] {
        let (status, _, _) = call(
            &router,
            Method::GET,
            &format!("/apps/hello/envs/prod/deploys/{bad}"),
            ALICE,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
    }
    let (status, _, _) = call(
        &router,
        Method::GET,
        "/apps/Hello/envs/prod/deploys",
        ALICE,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_deploy_request_is_accepted_once_launched_and_a_second_is_refused_naming_the_first() {
    let world = World::new().await;
    first_release(&world).await;
    let launches = Arc::new(Launches::default());
    let router = deploy_router_with(world.store.clone(), launches.clone());
    let uri = "/apps/hello/envs/prod/deploys";

    let (status, body, _) = call(
        &router,
        Method::POST,
        uri,
        ALICE,
        Some(json!({"strategy": "50%"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["url"], format!("/apps/hello/envs/prod/deploys/{id}"));
    assert_eq!(body["deploy"]["strategy"], "50%");
    assert_eq!(body["deploy"]["user"], "alice");
    assert_eq!(*launches.ids.lock().unwrap(), [id.as_str()]);

    let (status, body, _) = call(&router, Method::POST, uri, ALICE, Some(json!({}))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body["error"].as_str().unwrap().contains(&id), "{body}");

    for (bad, code) in [
        (json!({"strategy": "yolo"}), StatusCode::BAD_REQUEST),
        (json!({"nope": true}), StatusCode::BAD_REQUEST),
        (json!({"release": "r01"}), StatusCode::BAD_REQUEST),
    ] {
        let (status, body, _) = call(&router, Method::POST, uri, ALICE, Some(bad.clone())).await;
        assert_eq!(status, code, "{bad}: {body}");
    }
    assert_eq!(launches.ids.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retry_return_the_same_deploy() {
    let world = World::new().await;
    first_release(&world).await;
    let launches = Arc::new(Launches::default());
    let router = deploy_router_with(world.store.clone(), launches.clone());
    let send = |router: Router| async move {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/apps/hello/envs/prod/deploys")
            .header("authorization", basic_header("alice", PASSWORD))
            .header("idempotency-key", "ci-build-42")
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let resp = router.oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice::<Value>(&bytes).unwrap())
    };

    let (first, a) = send(router.clone()).await;
    let (second, b) = send(router.clone()).await;

    assert_eq!(
        (first, second),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED)
    );
    assert_eq!(a["id"], b["id"]);
    assert_eq!(launches.ids.lock().unwrap().len(), 1, "launched once");
}

#[tokio::test]
async fn a_deploy_that_cannot_be_launched_is_recorded_failed_and_frees_the_environment() {
    let world = World::new().await;
    first_release(&world).await;
    let launches = Arc::new(Launches::default());
    launches
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let router = deploy_router_with(world.store.clone(), launches.clone());
    let uri = "/apps/hello/envs/prod/deploys";

    let (status, body, _) = call(&router, Method::POST, uri, ALICE, Some(json!({}))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body["error"], "internal error",
        "no internals to the client"
    );
    let (_, list, _) = call(&router, Method::GET, uri, ALICE, None).await;
    assert_eq!(list["deploys"][0]["status"], "failed");

    launches
        .fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, _, _) = call(&router, Method::POST, uri, ALICE, Some(json!({}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the lock was freed");

    let (status, body, _) = call(
        &router,
        Method::POST,
        "/apps/hello/envs/prod/rollback",
        ALICE,
        Some(json!({"release": "r1"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "a deploy is queued: {body}");
}

#[tokio::test]
async fn a_rollback_with_nothing_to_go_back_to_is_a_clear_error() {
    let world = World::new().await;
    first_release(&world).await;
    let router = deploy_router(world.store.clone());

    let (status, body, _) = call(
        &router,
        Method::POST,
        "/apps/hello/envs/prod/rollback",
        ALICE,
        Some(json!({})),
    )
    .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no earlier successfully deployed release"),
        "{body}"
    );
}

/// Remembers the job it was given to run.
#[derive(Default)]
struct SeenWorker(std::sync::Mutex<Option<String>>);

impl slipway_control::workers::Worker for SeenWorker {
    fn kind(&self) -> slipway_core::ids::JobKind {
        slipway_core::ids::JobKind::Deploy
    }
    fn run(
        &self,
        env: EnvRef,
        job: JobId,
        _: Option<std::time::Duration>,
    ) -> futures::future::BoxFuture<
        '_,
        Result<slipway_control::workers::JobDone, slipway_control::workers::WorkerError>,
    > {
        *self.0.lock().unwrap() = Some(format!("{env} {job}"));
        Box::pin(async move {
            Ok(slipway_control::workers::JobDone {
                id: job.to_string(),
                status: json!("succeeded"),
            })
        })
    }
    fn reconcile(
        &self,
    ) -> futures::future::BoxFuture<
        '_,
        Result<Vec<slipway_control::reconcile::Reconciled>, slipway_control::workers::WorkerError>,
    > {
        *self.0.lock().unwrap() = Some("reconcile".into());
        Box::pin(async { Ok(Vec::new()) })
    }
}

#[tokio::test]
async fn the_worker_handler_sends_its_own_events_to_the_worker_and_the_rest_to_the_router() {
    let world = World::new().await;
    let router = deploy_router(world.store.clone());
    let worker = Arc::new(SeenWorker::default());
    let event =
        json!({"slipway": "run-deploy", "app": "hello", "env": "prod", "deploy_id": "d1-abc"});
    let out = slipway_http::lambda::worker_handler(
        router.clone(),
        worker.clone(),
        lambda_runtime::LambdaEvent::new(event, Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(out, json!({"id": "d1-abc", "status": "succeeded"}));
    assert_eq!(
        worker.0.lock().unwrap().as_deref(),
        Some("hello/prod d1-abc")
    );

    // The schedule's event goes to the reconciler.
    let out = slipway_http::lambda::worker_handler(
        router.clone(),
        worker.clone(),
        lambda_runtime::LambdaEvent::new(json!({"slipway": "reconcile"}), Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(out, json!({"reconciled": []}));
    assert_eq!(worker.0.lock().unwrap().as_deref(), Some("reconcile"));

    // A cycle's event is not this worker's: it is an HTTP request like any
    // other payload, and without API Gateway's shape it fails to parse.
    let event = apigw_event("GET", "/apps/hello/envs/prod/settings", None);
    *worker.0.lock().unwrap() = None;
    let out = slipway_http::lambda::worker_handler(
        router,
        worker.clone(),
        lambda_runtime::LambdaEvent::new(event, Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(out["statusCode"], 401);
    assert_eq!(*worker.0.lock().unwrap(), None, "not a worker event");
}
