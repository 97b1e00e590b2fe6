//! The agent against the AWS emulator: releases made by the real release
//! store on S3, `ssm:` config values from Parameter Store, and the
//! `slipway:release` tag on the EC2 instance.

use aws_sdk_ssm::types::ParameterType;
use slipway_control::store::UploadOutcome;
use slipway_core::names::EnvRef;
use slipway_tests::{World, emulator, unique_name};

use crate::support::{Fixture, Run, Spec};

/// Makes the next release the way production does: config in `env`, an
/// archive uploaded to `uploads/`, the release function's store call.
async fn release(world: &World, env: &EnvRef, config: &str, spec: &Spec) -> String {
    world
        .put(&format!("{}env", env.prefix()), config.as_bytes().to_vec())
        .await;
    let name = format!("{}.tar.gz", unique_name("up"));
    match world.upload(env, &name, spec.archive()).await {
        UploadOutcome::Created(m) => {
            format!("s3://{}/{}releases/{}", world.bucket, env.prefix(), m.id)
        }
        other => panic!("not released: {other:?}"),
    }
}

fn deploy(f: &Fixture, url: &str, instance: &str) -> Run {
    Run::from(
        f.command()
            .args(["deploy", url, "--instance-id", instance])
            .env("AWS_ENDPOINT_URL", &emulator().endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap(),
    )
}

async fn instance(world: &World) -> String {
    let ec2 = aws_sdk_ec2::Client::new(&world.config);
    let image = ec2
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .unwrap()
        .images()
        .iter()
        .find_map(|i| i.image_id.clone())
        .expect("the emulator has an AMI");
    let out = ec2
        .run_instances()
        .image_id(image)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    out.instances()[0].instance_id.clone().unwrap()
}

async fn tags(world: &World, instance: &str) -> Vec<(String, String)> {
    let ec2 = aws_sdk_ec2::Client::new(&world.config);
    let out = ec2
        .describe_tags()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("resource-id")
                .values(instance)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut tags: Vec<(String, String)> = out
        .tags()
        .iter()
        .map(|t| {
            (
                t.key.clone().unwrap_or_default(),
                t.value.clone().unwrap_or_default(),
            )
        })
        .collect();
    tags.sort();
    tags
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_release_gets_its_ssm_secrets_and_tags_the_instance_and_a_missing_one_fails_by_name()
{
    let world = World::new().await;
    let env = EnvRef::parse("hello", "prod").unwrap();
    let f = Fixture::new();
    world
        .put(
            "hello/prod/settings.json",
            br#"{"health_timeout_secs": 5, "stop_grace_secs": 2}"#.to_vec(),
        )
        .await;
    // An environment's parameters live under /<app>/<env>/.
    let param = format!("/hello/prod/{}/database-url", unique_name("run"));
    let ssm = aws_sdk_ssm::Client::new(&world.config);
    ssm.put_parameter()
        .name(&param)
        .value("postgres://app:s3cr3t@db/app")
        .r#type(ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let id = instance(&world).await;

    let r1 = release(
        &world,
        &env,
        &format!("DATABASE_URL=ssm:{param}\nGREETING=Hi\n"),
        &Spec::default(),
    )
    .await;
    let run = tokio::task::block_in_place(|| deploy(&f, &r1, &id));

    assert!(run.ok(), "{}", run.all);
    assert_eq!(f.answering().as_deref(), Some("r1"));
    let env_file = std::fs::read_to_string(f.app_dir().join("env/r1.env")).unwrap();
    assert!(
        env_file.contains("DATABASE_URL=\"postgres://app:s3cr3t@db/app\""),
        "{env_file}"
    );
    assert!(!run.all.contains("s3cr3t"), "a secret reached the output");
    assert_eq!(
        tags(&world, &id).await,
        [("slipway:release".to_owned(), "r1".to_owned())]
    );

    let missing = format!("/hello/prod/{}/nope", unique_name("run"));
    let r2 = release(
        &world,
        &env,
        &format!("DATABASE_URL=ssm:{param}\nAPI_KEY=ssm:{missing}\n"),
        &Spec::default(),
    )
    .await;
    let run = tokio::task::block_in_place(|| deploy(&f, &r2, &id));

    assert_eq!(run.code, 1, "{}", run.all);
    assert!(
        run.last().starts_with("at=failed step=config"),
        "{}",
        run.all
    );
    assert!(run.last().contains(&missing), "{}", run.all);
    assert!(!run.all.contains("s3cr3t"), "a secret reached the output");
    assert_eq!(f.answering().as_deref(), Some("r1"));
    assert!(!f.app_dir().join("releases/r2").exists());
    assert!(!f.app_dir().join("env/r2.env").exists());
    assert_eq!(
        tags(&world, &id).await,
        [("slipway:release".to_owned(), "r1".to_owned())]
    );
}
