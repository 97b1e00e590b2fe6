//! The two workers a launched job runs in, written once for every place
//! that runs them: the deploy and cycle functions (a Lambda invocation,
//! with its deadline, on AWS and on the local platform alike) and the
//! tests. What differs is chosen by the caller: the fleet, the runners,
//! the launcher a worker hands over to, and the engines' poll intervals.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::cycle::{CycleError, CycleOptions, CycleRecord, Cycles, run_queued_cycle};
use crate::fleet::{Fleet, GroupControl};
use crate::jobs::Launcher;
use crate::reconcile::{FailedInvocations, Reconciled, Reconciler};
use crate::rollout::{DeployError, DeployRecord, Deploys, Options, run_queued};
use crate::runner::Runners;
use slipway_core::ids::{JobId, JobKind};
use slipway_core::keys::release_url;
use slipway_core::names::EnvRef;

/// How a worker's job ended, as the invocation reports it.
#[derive(Debug, Clone, Serialize)]
pub struct JobDone {
    pub id: String,
    pub status: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Cycle(#[from] CycleError),
    #[error("this worker runs {expected} jobs, not {got}")]
    WrongKind { expected: JobKind, got: JobKind },
    #[error(transparent)]
    Reconcile(#[from] crate::reconcile::ReconcileError),
    #[error("no launcher to start fresh workers with")]
    NoLauncher,
}

/// Runs one launched job to its end, or until it hands over.
pub trait Worker: Send + Sync + 'static {
    fn kind(&self) -> JobKind;
    fn run(
        &self,
        env: EnvRef,
        job: JobId,
        time_left: Option<Duration>,
    ) -> BoxFuture<'_, Result<JobDone, WorkerError>>;

    /// One round of the reconciler over this worker's kind of jobs.
    fn reconcile(&self) -> BoxFuture<'_, Result<Vec<Reconciled>, WorkerError>>;
}

/// How often a worker beats: AWS's pace, or eight polls (the local
/// platform's).
fn heartbeat(poll: Option<Duration>) -> Duration {
    poll.map_or(crate::jobs::HEARTBEAT, |p| p * 8)
}

fn reconciler<F: Fleet + Clone>(
    deploys: Deploys,
    fleet: &F,
    next: &Option<Arc<dyn Launcher>>,
    kind: JobKind,
    poll: Option<Duration>,
    failures: &Option<Arc<dyn FailedInvocations>>,
) -> Result<Reconciler<F>, WorkerError> {
    Ok(Reconciler {
        deploys,
        fleet: fleet.clone(),
        launcher: next.clone().ok_or(WorkerError::NoLauncher)?,
        kind,
        heartbeat: heartbeat(poll),
        failures: failures.clone(),
    })
}

fn wrong_kind(expected: JobKind, job: &JobId) -> WorkerError {
    WorkerError::WrongKind {
        expected,
        got: job.kind(),
    }
}

fn done(id: &impl ToString, status: &impl Serialize) -> JobDone {
    JobDone {
        id: id.to_string(),
        status: serde_json::to_value(status).unwrap_or_default(),
    }
}

/// A deploy's rollout.
pub struct DeployWorker<F, M> {
    pub deploys: Deploys,
    pub fleet: F,
    pub runners: M,
    /// The bucket the agent fetches releases from.
    pub bucket: String,
    /// Starts the worker that takes over when this one's time runs out.
    pub next: Option<Arc<dyn Launcher>>,
    /// How often a running batch looks at commands, the group and cancel
    /// requests, if not the engine's default (the local platform's pace).
    pub poll: Option<Duration>,
    /// Where Lambda puts the invocations it gave up on.
    pub failures: Option<Arc<dyn FailedInvocations>>,
}

impl<F: Fleet + Send + Sync + 'static, M: Runners> DeployWorker<F, M> {
    pub async fn run_deploy(
        &self,
        env: &EnvRef,
        id: &slipway_core::ids::DeployId,
        time_left: Option<Duration>,
    ) -> Result<DeployRecord, DeployError> {
        let settings = self.deploys.settings(env).await?;
        let record = self.deploys.get(env, id).await?;
        let manifest = self.deploys.store.release(env, record.to).await?;
        let mut options = Options::from_settings(&settings, manifest.procfile.release().is_some())
            .within(time_left);
        if let Some(poll) = self.poll {
            options = options.polling(poll);
        }
        let runner = self.runners.for_deploy(env, id);
        let url = |r| release_url(&self.bucket, env, r);
        run_queued(
            &self.deploys,
            env,
            id,
            &self.fleet,
            &runner,
            &url,
            options,
            self.next.clone(),
        )
        .await
    }
}

impl<F: Fleet + Clone + Send + Sync + 'static, M: Runners> Worker for DeployWorker<F, M> {
    fn kind(&self) -> JobKind {
        JobKind::Deploy
    }

    fn run(
        &self,
        env: EnvRef,
        job: JobId,
        time_left: Option<Duration>,
    ) -> BoxFuture<'_, Result<JobDone, WorkerError>> {
        Box::pin(async move {
            let id = job
                .deploy()
                .ok_or_else(|| wrong_kind(JobKind::Deploy, &job))?;
            let record = self.run_deploy(&env, id, time_left).await?;
            tracing::info!(deploy = %id, status = ?record.status, "the deploy worker stopped");
            Ok(done(id, &record.status))
        })
    }

    fn reconcile(&self) -> BoxFuture<'_, Result<Vec<Reconciled>, WorkerError>> {
        Box::pin(async move {
            let reconciler = reconciler(
                self.deploys.clone(),
                &self.fleet,
                &self.next,
                JobKind::Deploy,
                self.poll,
                &self.failures,
            )?;
            Ok(reconciler.run(chrono::Utc::now()).await?)
        })
    }
}

/// The health-gated cycle of every instance.
pub struct CycleWorker<F> {
    pub cycles: Cycles,
    pub fleet: F,
    pub next: Option<Arc<dyn Launcher>>,
    /// How often a step looks at the group, when not the settings' pace
    /// (the local platform's instances come up within seconds).
    pub poll: Option<Duration>,
    /// Where Lambda puts the invocations it gave up on.
    pub failures: Option<Arc<dyn FailedInvocations>>,
}

impl<F: Fleet + GroupControl + Send + Sync + 'static> CycleWorker<F> {
    pub async fn run_cycle(
        &self,
        env: &EnvRef,
        id: &slipway_core::ids::CycleId,
        time_left: Option<Duration>,
    ) -> Result<CycleRecord, WorkerError> {
        let settings = Deploys::new(self.cycles.store.clone())
            .settings(env)
            .await?;
        let mut options = CycleOptions::from_settings(&settings).within(time_left);
        if let Some(poll) = self.poll {
            options.poll = poll;
        }
        Ok(run_queued_cycle(
            &self.cycles,
            env,
            id,
            &self.fleet,
            self.next.clone(),
            options,
        )
        .await?)
    }
}

impl<F: Fleet + GroupControl + Clone + Send + Sync + 'static> Worker for CycleWorker<F> {
    fn kind(&self) -> JobKind {
        JobKind::Cycle
    }

    fn run(
        &self,
        env: EnvRef,
        job: JobId,
        time_left: Option<Duration>,
    ) -> BoxFuture<'_, Result<JobDone, WorkerError>> {
        Box::pin(async move {
            let id = job
                .cycle()
                .ok_or_else(|| wrong_kind(JobKind::Cycle, &job))?;
            let record = self.run_cycle(&env, id, time_left).await?;
            tracing::info!(cycle = %id, status = ?record.status, "the cycle worker stopped");
            Ok(done(id, &record.status))
        })
    }

    fn reconcile(&self) -> BoxFuture<'_, Result<Vec<Reconciled>, WorkerError>> {
        Box::pin(async move {
            let reconciler = reconciler(
                Deploys::new(self.cycles.store.clone()),
                &self.fleet,
                &self.next,
                JobKind::Cycle,
                self.poll,
                &self.failures,
            )?;
            Ok(reconciler.run(chrono::Utc::now()).await?)
        })
    }
}
