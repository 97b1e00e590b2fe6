//! The release function's HTTP API, through its axum router and through the
//! Lambda handler with a real API Gateway v2 payload.

use std::sync::Arc;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use slipway_control::store::{ReleaseStore, UploadOutcome};
use slipway_core::names::EnvRef;
use slipway_core::objects::S3Objects;
use slipway_core::testing::app_archive;
use slipway_http::auth::{UserSource, Users, basic_header, hash_password};
use slipway_http::control_plane::Function;
use slipway_tests::{World, control_plane, offline_fleet};
use tower::ServiceExt;

pub(crate) const PASSWORD: &str = "correct horse battery staple";

pub(crate) fn users() -> Arc<Users> {
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
    control_plane(store, offline_fleet(), users()).router(&[Function::Release])
}

pub(crate) async fn call(
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

pub(crate) const ALICE: Option<(&str, &str)> = Some(("alice", PASSWORD));

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
    assert_eq!(
        tags(&world, key).await,
        [("slipway-lifecycle".to_owned(), "upload".to_owned())],
        "an upload nobody processes expires by the bucket's lifecycle rule"
    );

    let e = EnvRef::parse("tick", "prod").unwrap();
    assert!(matches!(
        world.store.release_upload(&e, key, "s3").await.unwrap(),
        UploadOutcome::Created(_)
    ));
    assert_eq!(
        tags(&world, "tick/prod/releases/r1/source.tar.gz").await,
        [],
        "a release's source never keeps its upload's tag, which would expire it with the upload"
    );
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
            slipway_core::names::ReleaseId::FIRST,
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

pub(crate) fn apigw_event(method: &str, path: &str, auth: Option<String>) -> Value {
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
    let out = slipway_http::lambda::release_handler(
        router.clone(),
        world.store.clone(),
        None,
        lambda_runtime::LambdaEvent::new(event, Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(out["statusCode"], 200, "{out}");
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["id"], "r1");

    let event = apigw_event("GET", "/apps/gw/envs/prod/releases/r1", None);
    let out = slipway_http::lambda::release_handler(
        router,
        world.store.clone(),
        None,
        lambda_runtime::LambdaEvent::new(event, Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(out["statusCode"], 401);
}

#[tokio::test]
async fn users_load_from_a_securestring_parameter_at_cold_start() {
    let world = World::new().await;
    let ssm = slipway_control::aws::ssm_client(&world.config);
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

#[tokio::test]
async fn a_cold_start_does_not_wait_for_the_users_and_a_parameter_not_there_yet_fails_requests_until_it_is()
 {
    let world = World::new().await;
    let ssm = slipway_core::on_first_use::OnFirstUse::ready(slipway_control::aws::ssm_client(
        &world.config,
    ));
    let name = format!("/{}/users", slipway_tests::unique_name("slipway"));

    // The parameter does not exist: starting still works (no SSM call is
    // waited for), the first request fails, and nothing is cached.
    let source = UserSource::start(
        &ssm,
        Some(&name),
        None,
        std::time::Duration::from_secs(3600),
    )
    .unwrap();
    let err = source.current().await.unwrap_err();
    assert!(err.to_string().contains(&name), "{err}");

    ssm.put_parameter()
        .name(&name)
        .value(format!("dave:{}\n", hash_password("s3cret")))
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let users = source.current().await.unwrap();
    assert_eq!(
        users
            .authenticate(Some(&basic_header("dave", "s3cret")))
            .as_deref(),
        Some("dave")
    );
    // Inline users with a bad line, or no users at all, still fail the start.
    assert!(UserSource::start(&ssm, None, Some("dave"), std::time::Duration::ZERO).is_err());
    assert!(UserSource::start(&ssm, None, None, std::time::Duration::ZERO).is_err());
}

#[tokio::test]
async fn an_upload_can_be_followed_until_it_is_released_or_rejected() {
    let world = World::new().await;
    let router = router(world.store.clone());
    let env = EnvRef::parse("up", "prod").unwrap();
    let status = |name: &str| format!("/apps/up/envs/prod/uploads/{name}");

    world
        .put("up/prod/uploads/a.tar.gz", app_archive("python3 app.py"))
        .await;
    let (code, body, _) = call(&router, Method::GET, &status("a.tar.gz"), ALICE, None).await;
    assert_eq!(
        (code, body["state"].as_str()),
        (StatusCode::OK, Some("pending"))
    );

    world
        .store
        .release_upload(&env, "up/prod/uploads/a.tar.gz", "s3")
        .await
        .unwrap();
    let (_, body, _) = call(&router, Method::GET, &status("a.tar.gz"), ALICE, None).await;
    assert_eq!(body, json!({"state": "released", "release": "r1"}));

    world
        .put("up/prod/uploads/b.tar.gz", b"not an archive".to_vec())
        .await;
    world
        .store
        .release_upload(&env, "up/prod/uploads/b.tar.gz", "s3")
        .await
        .unwrap();
    let (_, body, _) = call(&router, Method::GET, &status("b.tar.gz"), ALICE, None).await;
    assert_eq!(body["state"], "rejected");
    assert_eq!(
        tags(&world, "up/prod/rejected/b.tar.gz").await,
        [("slipway-lifecycle".to_owned(), "rejected".to_owned())]
    );
    assert!(!body["reason"].as_str().unwrap().is_empty());

    for bad in ["..", ".hidden", "a%2Fb", "a%20b"] {
        let (code, _, _) = call(&router, Method::GET, &status(bad), ALICE, None).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{bad}");
    }
}

/// An object's tags.
async fn tags(world: &World, key: &str) -> Vec<(String, String)> {
    let out = world
        .s3
        .get_object_tagging()
        .bucket(&world.bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    out.tag_set()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect()
}

#[tokio::test]
async fn a_user_removed_from_the_parameter_loses_access_once_the_users_are_read_again() {
    let world = World::new().await;
    let ssm =
        slipway_core::on_first_use::OnFirstUse::ready(aws_sdk_ssm::Client::new(&world.config));
    let param = format!("/{}/users", slipway_tests::unique_name("slipway"));
    let put = |text: String| {
        let (ssm, param) = (ssm.clone(), param.clone());
        async move {
            ssm.put_parameter()
                .name(param)
                .value(text)
                .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                .overwrite(true)
                .send()
                .await
                .unwrap();
        }
    };
    put(format!(
        "alice:{}\nbob:{}\n",
        hash_password(PASSWORD),
        hash_password(PASSWORD)
    ))
    .await;
    let alice = basic_header("alice", PASSWORD);
    let cached = UserSource::load(
        &ssm,
        Some(&param),
        None,
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let fresh = UserSource::load(&ssm, Some(&param), None, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert!(
        fresh
            .current()
            .await
            .unwrap()
            .authenticate(Some(&alice))
            .is_some()
    );

    put(format!("bob:{}\n", hash_password(PASSWORD))).await;

    assert_eq!(
        fresh.current().await.unwrap().authenticate(Some(&alice)),
        None
    );
    let bob = basic_header("bob", PASSWORD);
    assert_eq!(
        fresh
            .current()
            .await
            .unwrap()
            .authenticate(Some(&bob))
            .as_deref(),
        Some("bob")
    );
    // Within its maximum age, what was read stays.
    assert!(
        cached
            .current()
            .await
            .unwrap()
            .authenticate(Some(&alice))
            .is_some()
    );
}
