//! Routes of the cycle function: replace one instance or all of them,
//! follow and cancel a cycle, scale the group, terminate the environment,
//! put maintenance mode's page up on its load balancers or take it down
//! (which moves no instance, so a deploy does not hold it up).
//! Everything that changes the group is refused (409) while a deploy or
//! cycle holds the environment, but a cycle of every instance, which may
//! wait its turn in the environment's queue instead.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiError, EnvPath, FleetState, JsonBody, User};
use crate::wire::{
    CycleAccepted, CycleAnswer, CycleCancelled, CycleList, CycleRequest, MaintenanceAnswer,
    ScaleAnswer, Terminated,
};
use slipway_control::cycle::{CycleRecord, Cycles, ScaleRequest};
use slipway_control::fleet::{ControlFleet, InstanceId};
use slipway_core::ids::CycleId;
use slipway_core::maintenance::Maintenance;
use slipway_core::names::EnvRef;

pub fn routes<F: ControlFleet>() -> Router<FleetState<F>> {
    Router::new()
        .route(
            "/apps/{app}/envs/{env}/instances/{id}/cycle",
            post(cycle_one::<F>),
        )
        .route("/apps/{app}/envs/{env}/cycle", post(cycle_all::<F>))
        .route("/apps/{app}/envs/{env}/cycles", get(list::<F>))
        .route("/apps/{app}/envs/{env}/cycles/{id}", get(show::<F>))
        .route(
            "/apps/{app}/envs/{env}/cycles/{id}/cancel",
            post(cancel::<F>),
        )
        .route("/apps/{app}/envs/{env}/scale", patch(scale::<F>))
        .route(
            "/apps/{app}/envs/{env}/maintenance",
            put(maintenance_on::<F>).delete(maintenance_off::<F>),
        )
        .route(
            "/apps/{app}/envs/{env}",
            axum::routing::delete(terminate::<F>),
        )
}

fn cycles<F>(state: &FleetState<F>) -> Cycles {
    Cycles::new(state.app.store.clone())
}

fn cycle_path(app: &str, env: &str, id: &str) -> Result<(EnvRef, CycleId), ApiError> {
    let env = EnvRef::parse(app, env)?;
    let id = CycleId::parse(id).map_err(|_| ApiError::NotFound("no such cycle".into()))?;
    Ok((env, id))
}

async fn cycle_one<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    User(user): User,
    Path((app, env, id)): Path<(String, String, String)>,
) -> Result<Json<CycleAnswer>, ApiError> {
    let env = EnvRef::parse(&app, &env)?;
    let instance = InstanceId::parse(&id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let record = cycles(&state)
        .cycle_one(&state.fleet, &env, instance, &user, chrono::Utc::now())
        .await?;
    Ok(Json(CycleAnswer { cycle: record }))
}

async fn cycle_all<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    User(user): User,
    EnvPath(env): EnvPath,
    JsonBody(req): JsonBody<CycleRequest>,
) -> Result<(StatusCode, Json<CycleAccepted>), ApiError> {
    let launcher = state
        .app
        .launcher
        .clone()
        .ok_or_else(|| ApiError::NotFound("cycles are not started here".into()))?;
    let cycles = cycles(&state);
    let record = cycles
        .begin_all(
            &state.fleet,
            &env,
            &user,
            req.queue,
            chrono::Utc::now(),
            launcher.as_ref(),
        )
        .await?;
    Ok(accepted(&env, record))
}

fn accepted(env: &EnvRef, record: CycleRecord) -> (StatusCode, Json<CycleAccepted>) {
    let url = format!("/apps/{}/envs/{}/cycles/{}", env.app, env.env, record.id);
    (
        StatusCode::ACCEPTED,
        Json(CycleAccepted {
            id: record.id.clone(),
            url,
            cycle: record,
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    EnvPath(env): EnvPath,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CycleList>, ApiError> {
    let Query(q) =
        query.map_err(|_| ApiError::BadRequest("the only query parameter is limit".into()))?;
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    Ok(Json(CycleList {
        cycles: cycles(&state).list(&env, limit).await?,
    }))
}

async fn show<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    Path((app, env, id)): Path<(String, String, String)>,
) -> Result<Json<CycleRecord>, ApiError> {
    let (env, id) = cycle_path(&app, &env, &id)?;
    Ok(Json(cycles(&state).get(&env, &id).await?))
}

async fn cancel<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    Path((app, env, id)): Path<(String, String, String)>,
) -> Result<Json<CycleCancelled>, ApiError> {
    let (env, id) = cycle_path(&app, &env, &id)?;
    let record = cycles(&state).cancel(&env, &id).await?;
    let note = if record.is_finished() {
        "the cycle had already finished"
    } else {
        "the cycle stops before its next instance"
    };
    Ok(Json(CycleCancelled {
        cycle: record,
        note: note.into(),
    }))
}

async fn scale<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    User(user): User,
    EnvPath(env): EnvPath,
    JsonBody(request): JsonBody<ScaleRequest>,
) -> Result<Json<ScaleAnswer>, ApiError> {
    let record = cycles(&state)
        .scale(&state.fleet, &env, request, &user, chrono::Utc::now())
        .await?;
    Ok(Json(ScaleAnswer { scale: record }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TerminateQuery {
    confirm: Option<String>,
}

async fn terminate<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    User(user): User,
    EnvPath(env): EnvPath,
    query: Result<Query<TerminateQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<(StatusCode, Json<Terminated>), ApiError> {
    let Query(q) =
        query.map_err(|_| ApiError::BadRequest("the only query parameter is confirm".into()))?;
    let record = cycles(&state)
        .destroy(
            &state.fleet,
            &env,
            q.confirm.as_deref(),
            &user,
            chrono::Utc::now(),
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Terminated { terminated: record }),
    ))
}

async fn maintenance_on<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    User(user): User,
    EnvPath(env): EnvPath,
    JsonBody(maintenance): JsonBody<Maintenance>,
) -> Result<Json<MaintenanceAnswer>, ApiError> {
    state
        .fleet
        .set_maintenance(&env, Some(&maintenance))
        .await?;
    tracing::info!(%env, %user, allowed = maintenance.allow.len(), "maintenance on");
    Ok(Json(MaintenanceAnswer {
        maintenance: Some(maintenance),
    }))
}

async fn maintenance_off<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    User(user): User,
    EnvPath(env): EnvPath,
) -> Result<Json<MaintenanceAnswer>, ApiError> {
    state.fleet.set_maintenance(&env, None).await?;
    tracing::info!(%env, %user, "maintenance off");
    Ok(Json(MaintenanceAnswer { maintenance: None }))
}
