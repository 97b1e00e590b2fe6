//! Routes of the formation function: the apps and environments the bucket
//! knows, and one environment's formation (load balancers, instances by
//! health and release) with its current release, lock and running job.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::{ApiError, EnvPath, FleetState};
use crate::wire::{AppList, AppSummary, EnvSummary, Environment, LastDeploy};
use slipway_control::cycle::Cycles;
use slipway_control::fleet::Formation;
use slipway_control::fleet::{FleetError, FormationSource};
use slipway_control::jobs::lock::{self, Lock};
use slipway_control::metrics::Series;
use slipway_control::rollout::{DeployRecord, Deploys};
use slipway_core::ids::JobId;
use slipway_core::names::{AppName, EnvName, EnvRef, ReleaseId};

pub fn routes<F: FormationSource>() -> Router<FleetState<F>> {
    Router::new()
        .route("/apps", get(apps::<F>))
        .route("/apps/{app}/envs/{env}", get(environment::<F>))
}

/// The names under `prefix` that parse as `T` (anything else in the bucket
/// is not an app or environment).
async fn names<F, T: std::str::FromStr>(
    state: &FleetState<F>,
    prefix: &str,
) -> Result<Vec<T>, ApiError> {
    let prefixes = state
        .app
        .store
        .objects()
        .list_folders(prefix)
        .await
        .map_err(ApiError::internal)?;
    Ok(prefixes
        .iter()
        .filter_map(|p| p.strip_prefix(prefix)?.strip_suffix('/')?.parse().ok())
        .collect())
}

/// One environment the bucket knows, as an overview shows it.
pub struct EnvOverview {
    pub env: EnvRef,
    pub current: Option<ReleaseId>,
    pub last_deploy: Option<DeployRecord>,
    pub terminated: bool,
}

/// Every app (even one without environments) and its environments.
pub async fn overview<F>(
    state: &FleetState<F>,
) -> Result<Vec<(AppName, Vec<EnvOverview>)>, ApiError> {
    let deploys = Deploys::new(state.app.store.clone());
    let mut apps = Vec::new();
    for app in names::<F, AppName>(state, "").await? {
        let mut envs = Vec::new();
        for name in names::<F, EnvName>(state, &format!("{app}/")).await? {
            let env = EnvRef {
                app: app.clone(),
                env: name,
            };
            let current = state.app.store.current(&env).await?;
            let last_deploy = deploys.list(&env, 1).await?.into_iter().next();
            let terminated = state
                .app
                .store
                .objects()
                .head(&slipway_control::cycle::termination_key(&env))
                .await
                .map_err(ApiError::internal)?
                .is_some();
            envs.push(EnvOverview {
                env,
                current,
                last_deploy,
                terminated,
            });
        }
        apps.push((app, envs));
    }
    Ok(apps)
}

async fn apps<F: FormationSource>(
    State(state): State<FleetState<F>>,
) -> Result<Json<AppList>, ApiError> {
    let apps = overview(&state)
        .await?
        .into_iter()
        .map(|(name, envs)| AppSummary {
            name,
            envs: envs
                .into_iter()
                .map(|e| EnvSummary {
                    name: e.env.env,
                    current: e.current,
                    last_deploy: e.last_deploy.as_ref().map(LastDeploy::from),
                    terminated: e.terminated,
                })
                .collect(),
        })
        .collect();
    Ok(Json(AppList { apps }))
}

/// An environment's current release, formation and lock, read at once;
/// not found when it has none of them.
pub struct EnvState {
    pub current: Option<ReleaseId>,
    pub formation: Option<Formation>,
    pub lock: Option<Lock>,
    /// Each instance's CPU and memory over the last minutes (one
    /// GetMetricData call); empty when metrics are not configured or could
    /// not be read (the formation is still shown).
    pub metrics: BTreeMap<String, Series>,
}

pub async fn env_state<F: FormationSource>(
    state: &FleetState<F>,
    env: &EnvRef,
) -> Result<EnvState, ApiError> {
    let store = &state.app.store;
    let (current, formation, held) = tokio::join!(
        store.current(env),
        state.fleet.formation(env),
        lock::read(store.objects(), env),
    );
    let current = current?;
    let formation = match formation {
        Ok(f) => Some(f),
        Err(FleetError::NoGroup(_)) => None,
        Err(e) => return Err(ApiError::internal(e)),
    };
    let lock = held.map_err(ApiError::internal)?.map(|(lock, _)| lock);
    if formation.is_none() && current.is_none() && lock.is_none() {
        return Err(ApiError::NotFound(format!(
            "no environment {env}: no releases and no Auto Scaling group"
        )));
    }
    let mut metrics = BTreeMap::new();
    if let (Some(source), Some(f)) = (&state.metrics, &formation) {
        let ids: Vec<_> = f.instances.iter().map(|i| i.id.clone()).collect();
        match source.recent(env, &ids, chrono::Utc::now()).await {
            Ok(m) => metrics = m,
            Err(e) => tracing::warn!(env = %env, error = %e, "could not read instance metrics"),
        }
    }
    Ok(EnvState {
        current,
        formation,
        lock,
        metrics,
    })
}

async fn environment<F: FormationSource>(
    State(state): State<FleetState<F>>,
    EnvPath(env): EnvPath,
) -> Result<Json<Environment>, ApiError> {
    let store = &state.app.store;
    let EnvState {
        current,
        formation,
        lock: held,
        metrics,
    } = env_state(&state, &env).await?;
    let (mut deploy, mut cycle) = (None, None);
    if let Some(lock) = &held {
        match &lock.job {
            JobId::Deploy(id) => deploy = Deploys::new(store.clone()).get(&env, id).await.ok(),
            JobId::Cycle(id) => cycle = Cycles::new(store.clone()).get(&env, id).await.ok(),
        }
    }
    Ok(Json(Environment {
        app: env.app,
        env: env.env,
        current,
        formation,
        metrics,
        lock: held,
        deploy,
        cycle,
    }))
}
