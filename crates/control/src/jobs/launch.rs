//! The internal event that starts a job's worker in AWS: the deploy (or
//! cycle) function invokes itself asynchronously with it (see
//! `aws::lambda`). Everything in it is parsed before the worker runs.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use slipway_core::ids::{CycleId, DeployId, JobId, JobKind};
use slipway_core::names::EnvRef;

/// The internal event: `{"slipway": "run-deploy", "app", "env", "deploy_id"}`
/// (`run-cycle` for a cycle, whose id goes in the same field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunJob {
    pub slipway: String,
    pub app: String,
    pub env: String,
    pub deploy_id: String,
}

pub const RUN_DEPLOY: &str = "run-deploy";
pub const RUN_CYCLE: &str = "run-cycle";

/// The event's `slipway` field for a job of `kind`.
pub fn event_name(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Deploy => RUN_DEPLOY,
        JobKind::Cycle => RUN_CYCLE,
    }
}

/// Why an internal event could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BadEvent {
    #[error("malformed {0} event")]
    Malformed(&'static str),
    #[error(transparent)]
    Name(#[from] slipway_core::names::NameError),
    #[error(transparent)]
    Id(#[from] slipway_core::ids::BadId),
}

impl RunJob {
    pub fn new(env: &EnvRef, job: &JobId) -> Self {
        Self {
            slipway: event_name(job.kind()).into(),
            app: env.app.to_string(),
            env: env.env.to_string(),
            deploy_id: job.to_string(),
        }
    }

    /// The event of `kind`, if `payload` is one; its names and id are
    /// parsed, and the id must be of `kind`.
    pub fn parse(kind: JobKind, payload: &Value) -> Option<Result<(EnvRef, JobId), BadEvent>> {
        let name = event_name(kind);
        if payload.get("slipway").and_then(Value::as_str) != Some(name) {
            return None;
        }
        Some((|| {
            let event: Self =
                serde_json::from_value(payload.clone()).map_err(|_| BadEvent::Malformed(name))?;
            let env = EnvRef::parse(&event.app, &event.env)?;
            let job = match kind {
                JobKind::Deploy => JobId::Deploy(DeployId::parse(&event.deploy_id)?),
                JobKind::Cycle => JobId::Cycle(CycleId::parse(&event.deploy_id)?),
            };
            Ok((env, job))
        })())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_is_recognised_and_its_names_checked() {
        let ok = serde_json::json!({"slipway": "run-deploy", "app": "hello", "env": "prod", "deploy_id": "d1-abc"});
        let (env, id) = RunJob::parse(JobKind::Deploy, &ok).unwrap().unwrap();
        assert_eq!(
            (env.qualified().as_str(), id.as_str()),
            ("hello-prod", "d1-abc")
        );
        assert_eq!(id.kind(), JobKind::Deploy);
        assert!(RunJob::parse(JobKind::Deploy, &serde_json::json!({"version": "2.0"})).is_none());
        let cycle = serde_json::json!({"slipway": "run-cycle", "app": "hello", "env": "prod", "deploy_id": "c1-abc"});
        assert!(RunJob::parse(JobKind::Deploy, &cycle).is_none());
        assert!(RunJob::parse(JobKind::Cycle, &cycle).unwrap().is_ok());
        for bad in [
            serde_json::json!({"slipway": "run-deploy", "app": "../x", "env": "prod", "deploy_id": "d1"}),
            serde_json::json!({"slipway": "run-deploy", "app": "hello", "env": "prod", "deploy_id": "../d1"}),
            serde_json::json!({"slipway": "run-deploy", "app": "hello"}),
        ] {
            assert!(
                RunJob::parse(JobKind::Deploy, &bad).unwrap().is_err(),
                "{bad}"
            );
        }
    }
}
