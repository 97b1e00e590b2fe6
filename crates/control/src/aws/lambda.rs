//! The job launcher on AWS: a function invokes itself (or the deploy
//! function) asynchronously (`InvocationType=Event`) with the small
//! internal event [`RunJob`], so the HTTP request that queued the job
//! returns at once and the worker gets the function's full 15 minutes.

use std::sync::Arc;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use futures::future::BoxFuture;

use crate::jobs::{LaunchError, Launcher, RunJob};
use slipway_core::ids::{JobId, JobKind};
use slipway_core::names::EnvRef;
use slipway_core::on_first_use::OnFirstUse;

/// Launches jobs of one kind by invoking a function asynchronously.
pub struct LambdaLauncher {
    client: OnFirstUse<aws_sdk_lambda::Client>,
    function: String,
    kind: JobKind,
}

impl LambdaLauncher {
    pub fn new(
        client: OnFirstUse<aws_sdk_lambda::Client>,
        function: impl Into<String>,
        kind: JobKind,
    ) -> Self {
        Self {
            client,
            function: function.into(),
            kind,
        }
    }
}

/// The environment variable naming the deploy function, for the functions
/// that start deploys without running them (release, chat, formation, and
/// cycle for a deploy next in the queue).
pub const DEPLOY_FUNCTION_VAR: &str = "SLIPWAY_DEPLOY_FUNCTION";
/// The environment variable naming the cycle function, for the deploy
/// function (a cycle next in the queue as a deploy ends).
pub const CYCLE_FUNCTION_VAR: &str = "SLIPWAY_CYCLE_FUNCTION";

/// A launcher of `kind` jobs in the function the variable `var` names;
/// `None` when it is unset or empty.
pub fn launcher_from_env(
    aws: &aws_config::SdkConfig,
    var: &str,
    kind: JobKind,
) -> Option<Arc<dyn Launcher>> {
    let function = std::env::var(var).ok().filter(|f| !f.is_empty())?;
    Some(Arc::new(LambdaLauncher::new(
        OnFirstUse::new(aws, crate::aws::lambda_client),
        function,
        kind,
    )))
}

impl Launcher for LambdaLauncher {
    fn launches(&self, kind: JobKind) -> bool {
        kind == self.kind
    }

    fn launch(&self, env: EnvRef, job: JobId) -> BoxFuture<'_, Result<(), LaunchError>> {
        Box::pin(async move {
            if job.kind() != self.kind {
                return Err(LaunchError::WrongKind {
                    expected: self.kind,
                    got: job.kind(),
                });
            }
            let payload =
                serde_json::to_vec(&RunJob::new(&env, &job)).expect("an event always serialises");
            let out = self
                .client
                .invoke()
                .function_name(&self.function)
                .invocation_type(InvocationType::Event)
                .payload(Blob::new(payload))
                .send()
                .await
                .map_err(|e| {
                    LaunchError::Invoke(aws_sdk_lambda::error::DisplayErrorContext(e).to_string())
                })?;
            if out.status_code() != 202 {
                return Err(LaunchError::Status(out.status_code()));
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
    use serde_json::Value;
    use slipway_core::ids::DeployId;

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
        let launcher =
            LambdaLauncher::new(OnFirstUse::ready(client), "slipway-deploy", JobKind::Deploy);

        launcher
            .launch(
                EnvRef::parse("hello", "prod").unwrap(),
                JobId::Deploy(DeployId::parse("d1").unwrap()),
            )
            .await
            .unwrap();

        assert_eq!(rule.num_calls(), 1);
    }
}
