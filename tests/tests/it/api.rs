//! The release function's HTTP API, through its axum router and through the
//! Lambda handler with a real API Gateway v2 payload.

use std::sync::Arc;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use slipway::api::{AppState, releases};
use slipway::auth::{Users, basic_header, hash_password};
use slipway::names::EnvRef;
use slipway::store::{ReleaseStore, S3Objects, UploadOutcome};
use slipway::testing::app_archive;
use slipway_tests::World;
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery staple";

fn users() -> Arc<Users> {
    static USERS: OnceLock<Arc<Users>> = OnceLock::new();
    USERS
        .get_or_init(|| {
            let text = format!(
                "alice:{}\nbob:{}\n",
                hash_password(PASSWORD),
                hash_password("bobs-password")
            );
            Arc::new(Users::parse(&text).unwrap())
        })
        .clone()
}

fn router(store: ReleaseStore) -> Router {
    releases::router(AppState {
        store,
        users: users(),
        launcher: None,
    })
}

async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    auth: Option<(&str, &str)>,
    body: Option<Value>,
) -> (StatusCode, Value, http::HeaderMap) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some((user, password)) = auth {
        req = req.header("authorization", basic_header(user, password));
    }
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let resp = router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, json, headers)
}

const ALICE: Option<(&str, &str)> = Some(("alice", PASSWORD));

async fn seeded(app: &str) -> (World, Router) {
    let world = World::new().await;
    let e = EnvRef::parse(app, "prod").unwrap();
    world
        .put(
            &format!("{app}/prod/env"),
            "DATABASE_URL=postgres://secret@db/app\n",
        )
        .await;
    let key = format!("{app}/prod/uploads/a.tar.gz");
    world.put(&key, app_archive("python3 app.py")).await;
    assert!(matches!(
        world.store.release_upload(&e, &key, "s3").await.unwrap(),
        UploadOutcome::Created(_)
    ));
    let router = router(world.store.clone());
    (world, router)
}

#[tokio::test]
async fn healthz_answers_without_credentials() {
    let world = World::new().await;
    let (status, body, _) = call(
        &router(world.store.clone()),
        Method::GET,
        "/healthz",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn every_route_refuses_missing_or_wrong_credentials_with_a_basic_challenge() {
    let (world, router) = seeded("guarded").await;
    let routes = [
        (Method::POST, "/apps/guarded/envs/prod/releases"),
        (Method::GET, "/apps/guarded/envs/prod/releases"),
        (Method::GET, "/apps/guarded/envs/prod/releases/r1"),
        (Method::POST, "/apps/guarded/envs/prod/releases/r1/promote"),
        (Method::GET, "/apps/guarded/envs/prod/config"),
        (Method::PATCH, "/apps/guarded/envs/prod/config"),
        (Method::GET, "/no/such/route"),
    ];
    for (method, uri) in routes {
        for auth in [
            None,
            Some(("alice", "wrong")),
            Some(("mallory", PASSWORD)),
            Some(("bob", PASSWORD)),
        ] {
            let (status, body, headers) = call(
                &router,
                method.clone(),
                uri,
                auth,
                Some(json!({"set": {"X": "1"}, "to": "staging"})),
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} {auth:?}");
            assert_eq!(body["code"], "unauthorized");
            assert!(
                headers["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Basic realm=")
            );
        }
    }
    let (_, body, _) = call(
        &router,
        Method::GET,
        "/apps/guarded/envs/prod/config",
        ALICE,
        None,
    )
    .await;
    assert_eq!(
        body["config"]["X"],
        Value::Null,
        "no unauthenticated change went through"
    );
    assert!(world.keys("guarded/staging/").await.is_empty());
}

#[tokio::test]
async fn hostile_names_in_routes_are_bad_requests_that_say_what_is_allowed() {
    let (world, router) = seeded("names").await;
    let cases = [
        "/apps/..%2F..%2Fetc/envs/prod/releases",
        "/apps/Names/envs/prod/releases",
        "/apps/names/envs/prod%00/releases",
        "/apps/names/envs/..%2Fprod/config",
        "/apps/names/envs/pr%C3%B6d/config",
        "/apps/names/envs/prod/releases/r0",
        "/apps/names/envs/prod/releases/..",
        "/apps/names/envs/prod/releases/r1%2F..%2F..",
        "/apps/names/envs/prod/releases/1",
        "/apps/names/envs/prod/releases/%FF",
    ];
    for uri in cases {
        let (status, body, _) = call(&router, Method::GET, uri, ALICE, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["code"], "bad_request", "{uri}");
        let msg = body["error"].as_str().unwrap();
        assert!(
            msg.contains("lowercase letters") || msg.contains("use r<N>") || msg.contains("UTF-8"),
            "{uri}: {msg}"
        );
    }
    let long = "a".repeat(60);
    let (status, body, _) = call(
        &router,
        Method::GET,
        &format!("/apps/{long}/envs/prod/releases"),
        ALICE,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("at most 63"));
    let mut keys = world.keys("").await;
    keys.retain(|k| !k.starts_with("names/prod/"));
    assert!(
        keys.is_empty(),
        "nothing written outside the app's prefix: {keys:?}"
    );
}

#[tokio::test]
async fn an_upload_ticket_lets_the_client_put_straight_to_s3_and_the_release_records_who() {
    let world = World::new().await;
    let router = router(world.store.clone());
    let (status, ticket, _) = call(
        &router,
        Method::POST,
        "/apps/tick/envs/prod/releases",
        ALICE,
        Some(json!({"description": "Fix the café menu", "git_ref": "abc123", "format": "tar.gz"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{ticket}");
    let key = ticket["key"].as_str().unwrap();
    assert!(
        key.starts_with("tick/prod/uploads/") && key.ends_with(".tar.gz"),
        "{key}"
    );
    assert!(ticket["expires_at"].is_string());

    let mut put = reqwest::Client::new()
        .put(ticket["upload_url"].as_str().unwrap())
        .body(app_archive("python3 app.py"));
    for (k, v) in ticket["headers"].as_object().unwrap() {
        put = put.header(k, v.as_str().unwrap());
    }
    let resp = put.send().await.unwrap();
    assert!(
        resp.status().is_success(),
        "presigned PUT: {}",
        resp.status()
    );

    let e = EnvRef::parse("tick", "prod").unwrap();
    assert!(matches!(
        world.store.release_upload(&e, key, "s3").await.unwrap(),
        UploadOutcome::Created(_)
    ));
    let (status, list, _) = call(
        &router,
        Method::GET,
        "/apps/tick/envs/prod/releases",
        ALICE,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let r1 = &list["releases"][0];
    assert_eq!(r1["id"], "r1");
    assert_eq!(r1["created_by"], "alice");
    assert_eq!(r1["description"], "Fix the café menu");
    assert_eq!(r1["git_ref"], "abc123");
    assert_eq!(list["next"], Value::Null);
}

#[tokio::test]
async fn the_creator_in_an_upload_url_is_signed_so_it_cannot_be_forged() {
    // The emulator does not check signatures; AWS does, for every header
    // listed in X-Amz-SignedHeaders. So the proof is that the list has it.
    let world = World::new().await;
    let router = router(world.store.clone());
    let (_, ticket, _) = call(
        &router,
        Method::POST,
        "/apps/forge/envs/prod/releases",
        ALICE,
        None,
    )
    .await;
    let url = reqwest::Url::parse(ticket["upload_url"].as_str().unwrap()).unwrap();
    let signed = url
        .query_pairs()
        .find(|(k, _)| k == "X-Amz-SignedHeaders")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert!(
        signed.split(';').any(|h| h == "x-amz-meta-slipway-user"),
        "{signed}"
    );
    assert_eq!(ticket["headers"]["x-amz-meta-slipway-user"], "alice");
}

#[tokio::test]
async fn upload_requests_with_bad_bodies_are_refused() {
    let world = World::new().await;
    let router = router(world.store.clone());
    for (body, needle) in [
        (json!({"format": "zip"}), "unknown variant"),
        (json!({"surprise": 1}), "unknown field"),
        (json!({"description": "x".repeat(501)}), "longer than 500"),
        (json!({"description": "a\u{7}b"}), "control characters"),
    ] {
        let (status, resp, _) = call(
            &router,
            Method::POST,
            "/apps/bad/envs/prod/releases",
            ALICE,
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(resp["error"].as_str().unwrap().contains(needle), "{resp}");
    }
}

#[tokio::test]
async fn releases_can_be_listed_in_pages_and_fetched_one_by_one() {
    let (_world, router) = seeded("pages").await;
    let (status, r1, _) = call(
        &router,
        Method::GET,
        "/apps/pages/envs/prod/releases/r1",
        ALICE,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r1["procfile"]["web"], "python3 app.py");
    assert_eq!(r1["source"]["format"], "tar.gz");
    let (status, missing, _) = call(
        &router,
        Method::GET,
        "/apps/pages/envs/prod/releases/r7",
        ALICE,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["code"], "not_found");
    let (status, bad, _) = call(
        &router,
        Method::GET,
        "/apps/pages/envs/prod/releases?limit=abc",
        ALICE,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let (status, page, _) = call(
        &router,
        Method::GET,
        "/apps/pages/envs/prod/releases?limit=1&before=r2",
        ALICE,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["releases"][0]["id"], "r1");
}

#[tokio::test]
async fn config_is_masked_unless_revealed_and_a_change_answers_with_the_new_release_and_diff() {
    let (world, router) = seeded("conf").await;
    world
        .store
        .set_current(
            &EnvRef::parse("conf", "prod").unwrap(),
            slipway::names::ReleaseId::FIRST,
        )
        .await
        .unwrap();

    let (status, masked, _) = call(
        &router,
        Method::GET,
        "/apps/conf/envs/prod/config",
        ALICE,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(masked["config"]["DATABASE_URL"], "********");
    assert!(!masked.to_string().contains("secret"));
    let (_, revealed, _) = call(
        &router,
        Method::GET,
        "/apps/conf/envs/prod/config?reveal=true",
        ALICE,
        None,
    )
    .await;
    assert_eq!(
        revealed["config"]["DATABASE_URL"],
        "postgres://secret@db/app"
    );

    let (status, change, _) = call(
        &router,
        Method::PATCH,
        "/apps/conf/envs/prod/config",
        ALICE,
        Some(json!({"set": {"API_TOKEN": "tok-123"}, "unset": ["DATABASE_URL"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{change}");
    assert_eq!(change["release"]["id"], "r2");
    assert_eq!(change["release"]["created_by"], "alice");
    assert_eq!(
        change["diff"],
        json!([
            {"key": "API_TOKEN", "change": "added", "new": "********"},
            {"key": "DATABASE_URL", "change": "removed", "old": "********"},
        ])
    );
    assert!(!change.to_string().contains("tok-123") && !change.to_string().contains("secret"));

    let (status, same, _) = call(
        &router,
        Method::PATCH,
        "/apps/conf/envs/prod/config?reveal=true",
        ALICE,
        Some(json!({"set": {"API_TOKEN": "tok-123"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "no change, no release");
    assert_eq!(same["release"], Value::Null);
    assert_eq!(same["config"]["API_TOKEN"], "tok-123");
}

#[tokio::test]
async fn bad_config_changes_are_refused_and_change_nothing() {
    let (world, router) = seeded("badconf").await;
    for (body, needle) in [
        (json!({"set": {"BAD-KEY": "x"}}), "invalid config key"),
        (json!({"set": {"A": "x\u{0}y"}}), "NUL"),
        (json!({"unset": ["../etc"]}), "invalid config key"),
        (
            json!({"set": {"A": 918273}}),
            "invalid JSON body: invalid type: expected a string",
        ),
        (json!({}), "nothing to change"),
        (
            json!({"set": {"A": "1"}, "unset": ["A"]}),
            "both set and unset",
        ),
    ] {
        let (status, resp, _) = call(
            &router,
            Method::PATCH,
            "/apps/badconf/envs/prod/config",
            ALICE,
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
        assert!(resp["error"].as_str().unwrap().contains(needle), "{resp}");
    }
    assert_eq!(
        world.get("badconf/prod/env").await.unwrap(),
        b"DATABASE_URL=postgres://secret@db/app\n"
    );
    assert!(
        world
            .get("badconf/prod/releases/r2/release.json")
            .await
            .is_none()
    );
}

#[tokio::test]
async fn promote_makes_a_release_in_the_target_environment() {
    let (world, router) = seeded("promo").await;
    world.put("promo/staging/env", "MODE=staging\n").await;
    let (status, p, _) = call(
        &router,
        Method::POST,
        "/apps/promo/envs/prod/releases/r1/promote",
        ALICE,
        Some(json!({"to": "staging"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(p["id"], "r1");
    assert_eq!(p["env"], "staging");
    assert_eq!(
        p["origin"],
        json!({"kind": "promote", "env": "prod", "release": "r1"})
    );
    assert_eq!(
        world.get("promo/staging/releases/r1/env").await.unwrap(),
        b"MODE=staging\n"
    );

    for (body, status_want) in [
        (json!({"to": "prod"}), StatusCode::BAD_REQUEST),
        (json!({"to": "../x"}), StatusCode::BAD_REQUEST),
        (json!({"to": "e".repeat(60)}), StatusCode::BAD_REQUEST),
        (json!({}), StatusCode::BAD_REQUEST),
    ] {
        let (status, resp, _) = call(
            &router,
            Method::POST,
            "/apps/promo/envs/prod/releases/r1/promote",
            ALICE,
            Some(body),
        )
        .await;
        assert_eq!(status, status_want, "{resp}");
    }
    let (status, _, _) = call(
        &router,
        Method::POST,
        "/apps/promo/envs/prod/releases/r9/promote",
        ALICE,
        Some(json!({"to": "staging"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_aws_failure_is_a_500_that_reveals_nothing_internal() {
    let world = World::new().await;
    let broken = ReleaseStore::new(
        S3Objects::new(world.s3.clone(), "no-such-bucket-xyz"),
        Default::default(),
    );
    let (status, body, _) = call(
        &router(broken),
        Method::GET,
        "/apps/a/envs/prod/releases",
        ALICE,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, json!({"error": "internal error", "code": "internal"}));
}

fn apigw_event(method: &str, path: &str, auth: Option<String>) -> Value {
    let mut event: Value =
        serde_json::from_str(include_str!("../../fixtures/apigw-v2-request.json")).unwrap();
    event["rawPath"] = json!(path);
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(path);
    event["routeKey"] = json!("$default");
    if let Some(auth) = auth {
        event["headers"]["authorization"] = json!(auth);
    }
    event
}

#[tokio::test]
async fn an_api_gateway_v2_request_reaches_the_router_through_the_lambda_handler() {
    let (world, router) = seeded("gw").await;
    let event = apigw_event(
        "GET",
        "/apps/gw/envs/prod/releases/r1",
        Some(basic_header("alice", PASSWORD)),
    );
    let out = slipway::lambda::release_handler(
        router.clone(),
        world.store.clone(),
        lambda_runtime::LambdaEvent::new(event, Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(out["statusCode"], 200, "{out}");
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["id"], "r1");

    let event = apigw_event("GET", "/apps/gw/envs/prod/releases/r1", None);
    let out = slipway::lambda::release_handler(
        router,
        world.store.clone(),
        lambda_runtime::LambdaEvent::new(event, Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(out["statusCode"], 401);
}

#[tokio::test]
async fn users_load_from_a_securestring_parameter_at_cold_start() {
    let world = World::new().await;
    let ssm = slipway::aws::ssm_client(&world.config);
    let name = format!("/{}/users", slipway_tests::unique_name("slipway"));
    let text = format!("carol:{}\n", hash_password("s3cret"));
    ssm.put_parameter()
        .name(&name)
        .value(&text)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();

    let users = Users::load(&ssm, Some(&name), None).await.unwrap();

    assert_eq!(
        users
            .authenticate(Some(&basic_header("carol", "s3cret")))
            .as_deref(),
        Some("carol")
    );
    let missing = Users::load(&ssm, Some("/no/such/param"), None)
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("/no/such/param"));
}

/// Remembers what it was asked to launch; fails when told to.
#[derive(Default)]
struct Launches {
    ids: std::sync::Mutex<Vec<String>>,
    fail: std::sync::atomic::AtomicBool,
}

impl slipway::rollout::Launcher for Launches {
    fn launch(
        &self,
        _env: EnvRef,
        deploy_id: String,
    ) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("no invoke for you".into());
            }
            self.ids.lock().unwrap().push(deploy_id);
            Ok(())
        })
    }
}

fn deploy_router(store: ReleaseStore) -> Router {
    deploy_router_with(store, Arc::new(Launches::default()))
}

fn deploy_router_with(store: ReleaseStore, launches: Arc<Launches>) -> Router {
    slipway::api::deploys::router(AppState {
        store,
        users: users(),
        launcher: Some(launches),
    })
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
async fn deploys_are_listed_shown_and_cancelled_and_bad_ids_are_not_found() {
    let world = World::new().await;
    let key = "hello/prod/uploads/a.tar.gz";
    world.put(key, app_archive("python3 app.py")).await;
    let env = EnvRef::parse("hello", "prod").unwrap();
    assert!(matches!(
        world.store.release_upload(&env, key, "t").await.unwrap(),
        UploadOutcome::Created(_)
    ));
    let deploys = slipway::rollout::Deploys::new(world.store.clone());
    let start = slipway::rollout::StartDeploy {
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
        body["note"].as_str().unwrap().contains("stops after"),
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
    let key = "hello/prod/uploads/a.tar.gz";
    world.put(key, app_archive("python3 app.py")).await;
    let env = EnvRef::parse("hello", "prod").unwrap();
    world.store.release_upload(&env, key, "t").await.unwrap();
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
    let key = "hello/prod/uploads/a.tar.gz";
    world.put(key, app_archive("python3 app.py")).await;
    let env = EnvRef::parse("hello", "prod").unwrap();
    world.store.release_upload(&env, key, "t").await.unwrap();
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
    let key = "hello/prod/uploads/a.tar.gz";
    world.put(key, app_archive("python3 app.py")).await;
    let env = EnvRef::parse("hello", "prod").unwrap();
    world.store.release_upload(&env, key, "t").await.unwrap();
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
    let key = "hello/prod/uploads/a.tar.gz";
    world.put(key, app_archive("python3 app.py")).await;
    let env = EnvRef::parse("hello", "prod").unwrap();
    world.store.release_upload(&env, key, "t").await.unwrap();
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

#[tokio::test]
async fn the_deploy_handler_sends_its_own_events_to_the_worker_and_the_rest_to_the_router() {
    let world = World::new().await;
    let router = deploy_router(world.store.clone());
    let seen = std::sync::Mutex::new(None);
    let worker = |env: EnvRef, id: String| {
        *seen.lock().unwrap() = Some(format!("{env} {id}"));
        async { Ok(json!({"ran": true})) }
    };
    let event =
        json!({"slipway": "run-deploy", "app": "hello", "env": "prod", "deploy_id": "d1-abc"});
    let out = slipway::lambda::deploy_handler(
        router.clone(),
        worker,
        lambda_runtime::LambdaEvent::new(event, Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(out, json!({"ran": true}));
    assert_eq!(seen.lock().unwrap().as_deref(), Some("hello/prod d1-abc"));

    let event = apigw_event("GET", "/apps/hello/envs/prod/settings", None);
    let out = slipway::lambda::deploy_handler(
        router,
        |_: EnvRef, _: String| async { panic!("not a worker event") },
        lambda_runtime::LambdaEvent::new(event, Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(out["statusCode"], 401);
}
