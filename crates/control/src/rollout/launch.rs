//! Launching a queued deploy's rollout in AWS: the deploy function invokes
//! itself asynchronously (`InvocationType=Event`) with a small internal
//! event, so the HTTP request that started the deploy returns at once and
//! the rollout gets the function's full 15 minutes. The cycle function
//! launches its long cycles the same way.

use std::sync::Arc;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Launcher;
use slipway_core::names::EnvRef;

/// What a launched worker runs: a deploy's rollout, or a cycle of the
/// environment's instances (the cycle function launches itself the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Deploy,
    Cycle,
}

impl JobKind {
    /// The event's `slipway` field.
    pub fn event_name(self) -> &'static str {
        match self {
            Self::Deploy => RUN_DEPLOY,
            Self::Cycle => RUN_CYCLE,
        }
    }

    fn id_is_valid(self, id: &str) -> bool {
        match self {
            Self::Deploy => super::service::is_deploy_id(id),
            Self::Cycle => crate::cycle::is_cycle_id(id),
        }
    }
}

/// The internal event: `{"slipway": "run-deploy", "app", "env", "deploy_id"}`
/// (`run-cycle` for a cycle, whose id goes in the same field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDeploy {
    pub slipway: String,
    pub app: String,
    pub env: String,
    pub deploy_id: String,
}

pub const RUN_DEPLOY: &str = "run-deploy";
pub const RUN_CYCLE: &str = "run-cycle";

impl RunDeploy {
    pub fn new(kind: JobKind, env: &EnvRef, id: &str) -> Self {
        Self {
            slipway: kind.event_name().into(),
            app: env.app.to_string(),
            env: env.env.to_string(),
            deploy_id: id.into(),
        }
    }

    /// The event of `kind`, if `payload` is one; its names are checked.
    pub fn parse(kind: JobKind, payload: &Value) -> Option<Result<(EnvRef, String), String>> {
        if payload.get("slipway").and_then(Value::as_str) != Some(kind.event_name()) {
            return None;
        }
        let event: Self = match serde_json::from_value(payload.clone()) {
            Ok(e) => e,
            Err(e) => return Some(Err(format!("malformed {} event: {e}", kind.event_name()))),
        };
        let env = match EnvRef::parse(&event.app, &event.env) {
            Ok(env) => env,
            Err(e) => return Some(Err(e.to_string())),
        };
        if !kind.id_is_valid(&event.deploy_id) {
            return Some(Err("malformed id".into()));
        }
        Some(Ok((env, event.deploy_id)))
    }
}

/// Launches jobs of one kind by invoking a function asynchronously.
pub struct LambdaLauncher {
    client: aws_sdk_lambda::Client,
    function: String,
    kind: JobKind,
}

impl LambdaLauncher {
    pub fn new(client: aws_sdk_lambda::Client, function: impl Into<String>, kind: JobKind) -> Self {
        Self {
            client,
            function: function.into(),
            kind,
        }
    }
}

/// The environment variable naming the deploy function, for the functions
/// that start deploys without running them (release, chat, formation).
pub const DEPLOY_FUNCTION_VAR: &str = "SLIPWAY_DEPLOY_FUNCTION";

/// A launcher of deploys in the function `SLIPWAY_DEPLOY_FUNCTION` names;
/// `None` when it is unset or empty.
pub fn deploy_launcher_from_env(aws: &aws_config::SdkConfig) -> Option<Arc<dyn Launcher>> {
    let function = std::env::var(DEPLOY_FUNCTION_VAR)
        .ok()
        .filter(|f| !f.is_empty())?;
    Some(Arc::new(LambdaLauncher::new(
        crate::aws::lambda_client(aws),
        function,
        JobKind::Deploy,
    )))
}

impl Launcher for LambdaLauncher {
    fn launch(&self, env: EnvRef, id: String) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let payload = serde_json::to_vec(&RunDeploy::new(self.kind, &env, &id))
                .map_err(|e| e.to_string())?;
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
        let launcher = LambdaLauncher::new(client, "slipway-deploy", JobKind::Deploy);

        launcher
            .launch(EnvRef::parse("hello", "prod").unwrap(), "d1".into())
            .await
            .unwrap();

        assert_eq!(rule.num_calls(), 1);
    }

    #[test]
    fn the_event_is_recognised_and_its_names_checked() {
        let ok = serde_json::json!({"slipway": "run-deploy", "app": "hello", "env": "prod", "deploy_id": "d1-abc"});
        let (env, id) = RunDeploy::parse(JobKind::Deploy, &ok).unwrap().unwrap();
        assert_eq!(
            (env.qualified().as_str(), id.as_str()),
            ("hello-prod", "d1-abc")
        );
        assert!(
            RunDeploy::parse(JobKind::Deploy, &serde_json::json!({"version": "2.0"})).is_none()
        );
        let cycle = serde_json::json!({"slipway": "run-cycle", "app": "hello", "env": "prod", "deploy_id": "c1-abc"});
        assert!(RunDeploy::parse(JobKind::Deploy, &cycle).is_none());
        assert!(RunDeploy::parse(JobKind::Cycle, &cycle).unwrap().is_ok());
        for bad in [
            serde_json::json!({"slipway": "run-deploy", "app": "../x", "env": "prod", "deploy_id": "d1"}),
            serde_json::json!({"slipway": "run-deploy", "app": "hello", "env": "prod", "deploy_id": "../d1"}),
            serde_json::json!({"slipway": "run-deploy", "app": "hello"}),
        ] {
            assert!(
                RunDeploy::parse(JobKind::Deploy, &bad).unwrap().is_err(),
                "{bad}"
            );
        }
    }
}
