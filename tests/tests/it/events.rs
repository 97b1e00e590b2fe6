//! The S3 event path: real notifications from the emulator through SQS, the
//! sample event from AWS's documentation, encoded keys, bad records.

use std::sync::Arc;

use serde_json::{Value, json};
use slipway_control::events::handle_sqs_event;
use slipway_core::testing::app_archive;
use slipway_tests::World;

fn docs_event() -> Value {
    serde_json::from_str(include_str!("../../fixtures/s3-event-aws-docs.json")).unwrap()
}

async fn invoke(world: &World, event: Value) -> Result<Value, lambda_runtime::Error> {
    let router = axum::Router::new();
    slipway_http::lambda::release_handler(
        router,
        world.store.clone(),
        None,
        lambda_runtime::LambdaEvent::new(event, Default::default()),
    )
    .await
}

#[tokio::test]
async fn the_sample_event_from_the_aws_docs_is_parsed_and_ignored_as_another_bucket() {
    let world = World::new().await;
    let out = invoke(&world, docs_event()).await.unwrap();
    assert_eq!(
        out["records"],
        json!([{"outcome": "ignored", "key": "Happy Face.jpg", "why": "another bucket"}])
    );
}

#[tokio::test]
async fn an_encoded_key_with_spaces_and_unicode_becomes_a_release() {
    let world = World::new().await;
    let key = "uni/prod/uploads/my app ✓+v2.tar.gz";
    world.put(key, app_archive("python3 app.py")).await;
    let mut event = docs_event();
    event["Records"][0]["s3"]["bucket"]["name"] = json!(world.bucket);
    // As S3 encodes it: spaces as +, a literal + as %2B, UTF-8 escaped.
    event["Records"][0]["s3"]["object"]["key"] =
        json!("uni/prod/uploads/my+app+%E2%9C%93%2Bv2.tar.gz");

    let out = invoke(&world, event).await.unwrap();

    assert_eq!(
        out["records"][0],
        json!({"outcome": "created", "key": key, "release": "r1"})
    );
    assert!(
        world
            .get("uni/prod/releases/r1/release.json")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn one_bad_record_never_fails_the_others_in_its_batch() {
    let world = World::new().await;
    world
        .put("batch/prod/uploads/good.tar.gz", app_archive("x"))
        .await;
    world
        .put("batch/prod/uploads/bad.tar.gz", b"not an archive".to_vec())
        .await;
    let template = docs_event()["Records"][0].clone();
    let record = |key: &str, name: &str| {
        let mut r = template.clone();
        r["s3"]["bucket"]["name"] = json!(world.bucket);
        r["s3"]["object"]["key"] = json!(key);
        r["eventName"] = json!(name);
        r
    };
    let event = json!({"Records": [
        record("batch/prod/uploads/bad.tar.gz", "ObjectCreated:Put"),
        record("batch/prod/releases/r1/source.tar.gz", "ObjectCreated:Copy"),
        record("batch/Prod/uploads/x.tar.gz", "ObjectCreated:Put"),
        record("batch/prod/uploads/bad%FF", "ObjectCreated:Put"),
        record("batch/prod/uploads/good.tar.gz", "ObjectRemoved:Delete"),
        record("batch/prod/uploads/good.tar.gz", "ObjectCreated:Put"),
        record("batch/prod/uploads/already-gone.tar.gz", "ObjectCreated:Put"),
    ]});

    let out = invoke(&world, event).await.unwrap();

    let outcomes: Vec<&str> = out["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "rejected", "ignored", "ignored", "ignored", "ignored", "created", "gone"
        ]
    );
    assert!(
        world
            .get("batch/prod/rejected/bad.tar.gz.reason.json")
            .await
            .is_some()
    );
    assert!(
        world
            .get("batch/prod/releases/r1/release.json")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn a_garbage_event_is_an_error_not_a_panic() {
    let world = World::new().await;
    let err = invoke(
        &world,
        json!({"Records": [{"eventSource": "aws:s3", "s3": "nonsense"}]}),
    )
    .await;
    assert!(err.is_err());
}

#[tokio::test]
async fn a_real_notification_delivered_by_the_emulator_through_sqs_becomes_a_release() {
    let world = World::new().await;
    let sqs = aws_sdk_sqs::Client::new(&world.config);
    let queue = sqs
        .create_queue()
        .queue_name(slipway_tests::unique_name("uploads"))
        .send()
        .await
        .unwrap();
    let queue_url = queue.queue_url.unwrap();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let arn = attrs.attributes.unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    use aws_sdk_s3::types::*;
    let filter = NotificationConfigurationFilter::builder()
        .key(
            S3KeyFilter::builder()
                .filter_rules(
                    FilterRule::builder()
                        .name(FilterRuleName::Suffix)
                        .value(".tar.gz")
                        .build(),
                )
                .build(),
        )
        .build();
    world
        .s3
        .put_bucket_notification_configuration()
        .bucket(&world.bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(arn)
                        .events(Event::S3ObjectCreated)
                        .filter(filter)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();

    let key = "sqs/prod/uploads/from queue ü.tar.gz";
    world.put(key, app_archive("python3 app.py")).await;
    world
        .put("sqs/prod/notes.txt", b"filtered out by suffix".to_vec())
        .await;

    let mut messages = Vec::new();
    for _ in 0..10 {
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        messages.extend(out.messages.unwrap_or_default());
        if messages
            .iter()
            .any(|m| m.body().unwrap_or_default().contains("Records"))
        {
            break;
        }
    }
    let records: Vec<Value> = messages
        .iter()
        .map(|m| json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(), "eventSource": "aws:sqs", "attributes": {}, "messageAttributes": {}}))
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["body"].as_str().unwrap().contains("Records")),
        "the emulator delivered a notification: {records:?}"
    );
    let event = json!({"Records": records});

    let out = invoke(&world, event.clone()).await.unwrap();
    assert_eq!(out, json!({"batchItemFailures": []}));

    let mut broken = event.clone();
    broken["Records"][0]["body"] = json!(r#"{"Records": [{"s3": "unreadable"}]}"#);
    let out = invoke(&world, broken.clone()).await.unwrap();
    assert_eq!(
        out["batchItemFailures"][0]["itemIdentifier"], broken["Records"][0]["messageId"],
        "kept for the dead-letter queue"
    );
    let m = world
        .store
        .release(
            &slipway_core::names::EnvRef::parse("sqs", "prod").unwrap(),
            slipway_core::names::ReleaseId::FIRST,
        )
        .await
        .unwrap();
    assert!(
        matches!(&m.origin, slipway_core::manifest::Origin::Upload { key: k, .. } if k == key),
        "{:?}",
        m.origin
    );

    // The queue delivers at least once: the same messages again change nothing.
    let parsed: aws_lambda_events::event::sqs::SqsEvent = serde_json::from_value(event).unwrap();
    assert_eq!(
        handle_sqs_event(&world.store, &parsed, None)
            .await
            .batch_item_failures,
        vec![]
    );
    let page = world
        .store
        .list_releases(
            &slipway_core::names::EnvRef::parse("sqs", "prod").unwrap(),
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(page.releases.len(), 1);
}

/// Remembers the deploys it was asked to launch.
#[derive(Default)]
struct Deployer(std::sync::Mutex<Vec<String>>);

impl slipway_control::jobs::Launcher for Deployer {
    fn launch(
        &self,
        _env: slipway_core::names::EnvRef,
        id: slipway_core::ids::JobId,
    ) -> futures::future::BoxFuture<'_, Result<(), slipway_control::jobs::LaunchError>> {
        self.0.lock().unwrap().push(id.to_string());
        Box::pin(async { Ok(()) })
    }
}

/// An S3 event for `key` in the world's bucket, through the handler with a
/// deployer.
async fn upload_with_deployer(world: &World, key: &str, deployer: &Arc<Deployer>) -> Value {
    world.put(key, app_archive("python3 app.py")).await;
    let mut event = docs_event();
    event["Records"][0]["s3"]["bucket"]["name"] = json!(world.bucket);
    event["Records"][0]["s3"]["object"]["key"] = json!(key);
    let out = slipway_http::lambda::release_handler(
        axum::Router::new(),
        world.store.clone(),
        Some(deployer.clone() as Arc<dyn slipway_control::jobs::Launcher>),
        lambda_runtime::LambdaEvent::new(event, Default::default()),
    )
    .await
    .unwrap();
    out["records"][0].clone()
}

#[tokio::test]
async fn with_auto_deploy_on_an_upload_starts_a_deploy_of_its_release() {
    let world = World::new().await;
    world
        .put("auto/prod/settings.json", r#"{"auto_deploy": true}"#)
        .await;
    let deployer = Arc::new(Deployer::default());

    let outcome = upload_with_deployer(&world, "auto/prod/uploads/ci-42.tar.gz", &deployer).await;

    assert_eq!(outcome["outcome"], "created", "{outcome}");
    let id = outcome["deploy"].as_str().unwrap().to_owned();
    assert_eq!(*deployer.0.lock().unwrap(), std::slice::from_ref(&id));
    let env = slipway_core::names::EnvRef::parse("auto", "prod").unwrap();
    let record = slipway_control::rollout::Deploys::new(world.store.clone())
        .get(&env, &id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(record.to.to_string(), "r1");
    assert_eq!(record.status, slipway_core::deploys::DeployStatus::Queued);
    assert!(record.user.starts_with("s3"), "{}", record.user);

    // A second upload while that deploy holds the environment: the release
    // is made, the deploy is not, and the outcome says why.
    let outcome = upload_with_deployer(&world, "auto/prod/uploads/ci-43.tar.gz", &deployer).await;
    assert_eq!(outcome["release"], "r2");
    let why = outcome["deploy"].as_str().unwrap();
    assert!(
        why.starts_with("not started:") && why.contains(&id),
        "{why}"
    );
    assert_eq!(deployer.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn without_auto_deploy_an_upload_only_makes_a_release() {
    let world = World::new().await;
    let deployer = Arc::new(Deployer::default());

    let outcome = upload_with_deployer(&world, "manual/prod/uploads/a.tar.gz", &deployer).await;

    assert_eq!(
        outcome,
        json!({"outcome": "created", "key": "manual/prod/uploads/a.tar.gz", "release": "r1"})
    );
    assert!(deployer.0.lock().unwrap().is_empty());
    assert!(world.keys("manual/prod/deploys/").await.is_empty());
}
