//! The control plane's stack, made on this machine as CloudFormation and
//! SAM make it from `infra/template.yaml`: the bucket with the template's
//! S3 notifications (to a queue the platform turns into the asynchronous
//! invocations S3 makes), the SecureString parameters its functions read,
//! the deploy document, and each function's sandbox environment: the
//! template's variables, what Lambda itself sets, its role's credentials,
//! and nothing else but the endpoints (what the network is in AWS) and the
//! two local seams `slipway_http::control_plane` documents.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use aws_config::SdkConfig;
use slipway_http::control_plane::{Function, LOCAL_LOOPBACK_HOOKS_VAR, LOCAL_POLL_MS_VAR};

use crate::iam::{Principal, Principals};
use crate::lambda::FunctionSetup;
use crate::template::{ControlPlaneTemplate, FunctionSpec, REGION, StackValues};

/// The template the control plane's stack is made from.
pub const TEMPLATE: &str = include_str!("../../../infra/template.yaml");

/// The stack's name locally (functions are `slipway-deploy`, …).
pub const STACK: &str = "slipway";

/// How often the local workers poll (SSM, target health, cancels).
const LOCAL_POLL_MS: u64 = 250;

/// The template read for this platform: its bucket, and the Slack users
/// who may change things as the `SlackUsers` parameter.
pub fn read(bucket: &str, slack_users: &[String]) -> anyhow::Result<ControlPlaneTemplate> {
    let values = StackValues {
        stack: STACK.into(),
        bucket: bucket.into(),
        api_id: "local".into(),
        parameters: BTreeMap::from([("SlackUsers".to_owned(), slack_users.join(","))]),
    };
    let template =
        ControlPlaneTemplate::read(TEMPLATE, &values).context("reading infra/template.yaml")?;
    check_settings(&template)?;
    Ok(template)
}

/// Every variable each function's code reads is one the template gives it.
pub fn check_settings(template: &ControlPlaneTemplate) -> anyhow::Result<()> {
    for function in Function::ALL {
        let spec = template
            .function(function.logical_id())
            .with_context(|| format!("infra/template.yaml has no {}", function.logical_id()))?;
        for name in function.settings() {
            if !spec.environment.contains_key(*name) {
                bail!(
                    "the {} function reads {name}, which infra/template.yaml does not give it",
                    spec.logical_id
                );
            }
        }
    }
    Ok(())
}

/// A template parameter's value, as the stack resolved it.
pub fn parameter(template: &ControlPlaneTemplate, name: &str) -> anyhow::Result<String> {
    text(&template.resolver.parameters, name, "parameter")
}

/// A resource's physical name, as the stack resolved it.
pub fn physical(template: &ControlPlaneTemplate, logical_id: &str) -> anyhow::Result<String> {
    text(&template.resolver.refs, logical_id, "resource")
}

fn text(
    values: &BTreeMap<String, serde_json::Value>,
    name: &str,
    what: &str,
) -> anyhow::Result<String> {
    values
        .get(name)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .with_context(|| format!("infra/template.yaml has no {what} {name}"))
}

/// The bucket, with one queue per function that the template subscribes to
/// the bucket's events, each with the template's filters. Returns the
/// queues' URLs with their functions.
pub async fn bucket_with_notifications(
    config: &SdkConfig,
    bucket: &str,
    template: &ControlPlaneTemplate,
) -> anyhow::Result<Vec<(String, String)>> {
    use aws_sdk_s3::types::{
        Event, FilterRule, FilterRuleName, NotificationConfiguration,
        NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
    };
    let s3 = slipway_core::objects::s3_client(config);
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .context("creating the bucket")?;
    let sqs = aws_sdk_sqs::Client::new(config);
    let mut queues = Vec::new();
    let mut configurations = Vec::new();
    for function in template.functions.iter().filter(|f| !f.s3.is_empty()) {
        let url = sqs
            .create_queue()
            .queue_name(format!("{STACK}-{}-s3", function.logical_id))
            .send()
            .await
            .context("creating a notification queue")?
            .queue_url
            .context("the queue has no URL")?;
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .context("reading the queue")?
            .attributes
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .cloned()
            })
            .context("the queue has no ARN")?;
        for notification in &function.s3 {
            let mut key = S3KeyFilter::builder();
            for (name, value) in &notification.rules {
                key = key.filter_rules(
                    FilterRule::builder()
                        .name(FilterRuleName::from(name.as_str()))
                        .value(value)
                        .build(),
                );
            }
            let mut queue = QueueConfiguration::builder().queue_arn(&arn).filter(
                NotificationConfigurationFilter::builder()
                    .key(key.build())
                    .build(),
            );
            for event in &notification.events {
                queue = queue.events(Event::from(event.as_str()));
            }
            configurations.push(queue.build().context("a queue configuration")?);
        }
        queues.push((url, function.name.clone()));
    }
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .set_queue_configurations(Some(configurations))
                .build(),
        )
        .send()
        .await
        .context("subscribing the functions to the bucket's events")?;
    Ok(queues)
}

/// The template's queues (`AWS::SQS::Queue`), named as the template
/// resolves them (the functions' on-failure destinations).
pub async fn queues(config: &SdkConfig, template: &ControlPlaneTemplate) -> anyhow::Result<()> {
    let sqs = aws_sdk_sqs::Client::new(config);
    let resources = template
        .template
        .get("Resources")
        .and_then(|r| r.as_object())
        .cloned()
        .unwrap_or_default();
    for (id, resource) in resources {
        if resource.get("Type").and_then(|t| t.as_str()) != Some("AWS::SQS::Queue") {
            continue;
        }
        let name = template
            .resolver
            .attributes
            .get(&(id.clone(), "QueueName".to_owned()))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .with_context(|| format!("the queue {id} has no name"))?;
        sqs.create_queue()
            .queue_name(&name)
            .send()
            .await
            .with_context(|| format!("creating the queue {name}"))?;
    }
    Ok(())
}

/// A SecureString parameter, as the operator creates it before the stack.
pub async fn secure_parameter(config: &SdkConfig, name: &str, value: &str) -> anyhow::Result<()> {
    slipway_control::aws::ssm_client(config)
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", aws_sdk_ssm::error::DisplayErrorContext(e)))
        .with_context(|| format!("creating the parameter {name}"))?;
    Ok(())
}

/// `DeployDocument`, made in the emulator from the template.
pub async fn deploy_document(
    config: &SdkConfig,
    template: &ControlPlaneTemplate,
    bucket: &str,
) -> anyhow::Result<String> {
    let name = physical(template, "DeployDocument")?;
    let content = crate::hosts::deploy_document(TEMPLATE, bucket)?;
    slipway_control::aws::ssm_client(config)
        .create_document()
        .name(&name)
        .content(content)
        .document_type(aws_sdk_ssm::types::DocumentType::Command)
        .document_format(aws_sdk_ssm::types::DocumentFormat::Yaml)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", aws_sdk_ssm::error::DisplayErrorContext(e)))
        .context("creating the deploy document in the emulator")?;
    Ok(name)
}

/// `SLIPWAY_FUNCTIONS_DIR`, else the directory of this executable (or its
/// parent: test binaries live in `deps/`), where cargo puts the function
/// binaries beside `ship`.
pub fn functions_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLIPWAY_FUNCTIONS_DIR") {
        return PathBuf::from(dir);
    }
    crate::beside_this_executable(&["release", "deploy", "cycle", "formation", "chat"])
        .or_else(|| {
            std::env::current_exe()
                .ok()?
                .parent()
                .map(Path::to_path_buf)
        })
        .unwrap_or_default()
}

/// Where the platform's endpoints are, for a function's sandbox.
pub struct Endpoints {
    pub aws: String,
    pub lambda: String,
}

/// Each function of the template, from its binary in `dir`, with the
/// environment Lambda would give it here.
pub fn functions(
    template: &ControlPlaneTemplate,
    dir: &Path,
    endpoints: &Endpoints,
    principals: &Principals,
) -> anyhow::Result<Vec<FunctionSetup>> {
    template
        .functions
        .iter()
        .map(|spec| {
            let binary = dir.join(&spec.binary);
            if !binary.is_file() {
                bail!(
                    "the {} function's binary is not at {} (build it with `cargo build --workspace`, or set SLIPWAY_FUNCTIONS_DIR)",
                    spec.logical_id,
                    binary.display()
                );
            }
            Ok(FunctionSetup {
                environment: environment(spec, endpoints, principals),
                binary,
                spec: spec.clone(),
                time_scale: None,
            })
        })
        .collect()
}

/// The template's variables, then what Lambda sets in every sandbox.
fn environment(
    spec: &FunctionSpec,
    endpoints: &Endpoints,
    principals: &Principals,
) -> BTreeMap<String, String> {
    let mut env = spec.environment.clone();
    let lambda = [
        ("AWS_LAMBDA_FUNCTION_NAME", spec.name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            spec.memory_mb.to_string(),
        ),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", spec.name),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_DEFAULT_REGION", REGION.into()),
        ("_HANDLER", "bootstrap".into()),
        ("LAMBDA_TASK_ROOT", "/var/task".into()),
        ("LAMBDA_RUNTIME_DIR", "/var/runtime".into()),
        ("TZ", ":UTC".into()),
        ("LANG", "en_US.UTF-8".into()),
        ("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin".into()),
    ];
    for (k, v) in lambda {
        env.insert(k.into(), v);
    }
    if spec.json_logs {
        env.insert("AWS_LAMBDA_LOG_FORMAT".into(), "JSON".into());
    }
    let role = principals.credentials(Principal::Function {
        logical_id: spec.logical_id.clone(),
    });
    for (k, v) in role.env() {
        env.insert(k.into(), v);
    }
    // The network: AWS's endpoints are the emulator's and the local Lambda's.
    env.insert("AWS_ENDPOINT_URL".into(), endpoints.aws.clone());
    env.insert("AWS_ENDPOINT_URL_LAMBDA".into(), endpoints.lambda.clone());
    env.insert(LOCAL_LOOPBACK_HOOKS_VAR.into(), "1".into());
    env.insert(LOCAL_POLL_MS_VAR.into(), LOCAL_POLL_MS.to_string());
    env
}
