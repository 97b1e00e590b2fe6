//! Launching a queued deploy's rollout in AWS: the deploy function invokes
//! itself asynchronously (`InvocationType=Event`) with a small internal
//! event, so the HTTP request that started the deploy returns at once and
//! the rollout gets the function's full 15 minutes.

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Launcher;
use crate::names::EnvRef;

/// The internal event: `{"slipway": "run-deploy", "app", "env", "deploy_id"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDeploy {
    pub slipway: String,
    pub app: String,
    pub env: String,
    pub deploy_id: String,
}

pub const RUN_DEPLOY: &str = "run-deploy";

impl RunDeploy {
    pub fn new(env: &EnvRef, deploy_id: &str) -> Self {
        Self {
            slipway: RUN_DEPLOY.into(),
            app: env.app.to_string(),
            env: env.env.to_string(),
            deploy_id: deploy_id.into(),
        }
    }

    /// The event, if `payload` is one; its names are checked.
    pub fn parse(payload: &Value) -> Option<Result<(EnvRef, String), String>> {
        if payload.get("slipway").and_then(Value::as_str) != Some(RUN_DEPLOY) {
            return None;
        }
        let event: Self = match serde_json::from_value(payload.clone()) {
            Ok(e) => e,
            Err(e) => return Some(Err(format!("malformed run-deploy event: {e}"))),
        };
        let env = match EnvRef::parse(&event.app, &event.env) {
            Ok(env) => env,
            Err(e) => return Some(Err(e.to_string())),
        };
        if !super::service::is_deploy_id(&event.deploy_id) {
            return Some(Err("malformed deploy id".into()));
        }
        Some(Ok((env, event.deploy_id)))
    }
}

pub struct LambdaLauncher {
    client: aws_sdk_lambda::Client,
    function: String,
}

impl LambdaLauncher {
    pub fn new(client: aws_sdk_lambda::Client, function: impl Into<String>) -> Self {
        Self {
            client,
            function: function.into(),
        }
    }
}

impl Launcher for LambdaLauncher {
    fn launch(&self, env: EnvRef, deploy_id: String) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let payload =
                serde_json::to_vec(&RunDeploy::new(&env, &deploy_id)).map_err(|e| e.to_string())?;
            let out = self
                .client
                .invoke()
                .function_name(&self.function)
                .invocation_type(InvocationType::Event)
                .payload(Blob::new(payload))
                .send()
                .await
                .map_err(|e| aws_sdk_lambda::error::DisplayErrorContext(e).to_string())?;
            if out.status_code() != 202 {
                return Err(format!(
                    "the asynchronous invocation answered {}",
                    out.status_code()
                ));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_lambda::operation::invoke::InvokeOutput;
    use aws_smithy_mocks::{mock, mock_client};

    #[tokio::test]
    async fn the_launch_is_an_asynchronous_invocation_of_the_function_with_the_event() {
        let rule = mock!(aws_sdk_lambda::Client::invoke)
            .match_requests(|r| {
                r.function_name() == Some("slipway-deploy")
                    && r.invocation_type() == Some(&InvocationType::Event)
                    && r.payload().is_some_and(|p| {
                        let v: Value = serde_json::from_slice(p.as_ref()).unwrap();
                        v["slipway"] == "run-deploy"
                            && v["deploy_id"] == "d1"
                            && v["app"] == "hello"
                    })
            })
            .then_output(|| InvokeOutput::builder().status_code(202).build());
        let client = mock_client!(aws_sdk_lambda, [&rule]);
        let launcher = LambdaLauncher::new(client, "slipway-deploy");

        launcher
            .launch(EnvRef::parse("hello", "prod").unwrap(), "d1".into())
            .await
            .unwrap();

        assert_eq!(rule.num_calls(), 1);
    }

    #[test]
    fn the_event_is_recognised_and_its_names_checked() {
        let ok = serde_json::json!({"slipway": "run-deploy", "app": "hello", "env": "prod", "deploy_id": "d1-abc"});
        let (env, id) = RunDeploy::parse(&ok).unwrap().unwrap();
        assert_eq!(
            (env.qualified().as_str(), id.as_str()),
            ("hello-prod", "d1-abc")
        );
        assert!(RunDeploy::parse(&serde_json::json!({"version": "2.0"})).is_none());
        for bad in [
            serde_json::json!({"slipway": "run-deploy", "app": "../x", "env": "prod", "deploy_id": "d1"}),
            serde_json::json!({"slipway": "run-deploy", "app": "hello", "env": "prod", "deploy_id": "../d1"}),
            serde_json::json!({"slipway": "run-deploy", "app": "hello"}),
        ] {
            assert!(RunDeploy::parse(&bad).unwrap().is_err(), "{bad}");
        }
    }
}
