//! Routes of the deploy function: start a deploy or a rollback (202: the
//! rollout runs elsewhere, launched through the state's launcher), read
//! deploys, cancel one, and the environment's settings.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

use super::{ApiError, AppState, EnvPath, JsonBody, User};
use crate::wire::{
    DeployAccepted, DeployCancelled, DeployList, RollbackRequest, RollbackTarget, StartRequest,
};
use slipway_control::rollout::{DeployRecord, Deploys, StartDeploy};
use slipway_core::env_settings::EnvSettings;
use slipway_core::ids::DeployId;
use slipway_core::names::EnvRef;
use slipway_core::objects::Write;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps/{app}/envs/{env}/deploys", get(list).post(start))
        .route(
            "/apps/{app}/envs/{env}/rollback",
            get(rollback_target).post(rollback),
        )
        .route("/apps/{app}/envs/{env}/deploys/{id}", get(show))
        .route("/apps/{app}/envs/{env}/deploys/{id}/cancel", post(cancel))
        .route(
            "/apps/{app}/envs/{env}/settings",
            get(show_settings).patch(change_settings),
        )
}

fn deploys(state: &AppState) -> Deploys {
    let mut deploys = Deploys::new(state.store.clone());
    deploys.webhooks = state.webhooks;
    deploys
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list(
    State(state): State<AppState>,
    EnvPath(env): EnvPath,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeployList>, ApiError> {
    let Query(q) =
        query.map_err(|_| ApiError::BadRequest("the only query parameter is limit".into()))?;
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let records = deploys(&state).list(&env, limit).await?;
    Ok(Json(DeployList { deploys: records }))
}

async fn rollback_target(
    State(state): State<AppState>,
    EnvPath(env): EnvPath,
) -> Result<Json<RollbackTarget>, ApiError> {
    let (from, to) = deploys(&state).rollback_target(&env).await?;
    Ok(Json(RollbackTarget { from, to }))
}

/// The environment and the deploy id of a `…/deploys/{id}` route.
pub(crate) fn deploy_path(app: &str, env: &str, id: &str) -> Result<(EnvRef, DeployId), ApiError> {
    let env = EnvRef::parse(app, env)?;
    let id = DeployId::parse(id).map_err(|_| ApiError::NotFound("no such deploy".into()))?;
    Ok((env, id))
}

async fn show(
    State(state): State<AppState>,
    Path((app, env, id)): Path<(String, String, String)>,
) -> Result<Json<DeployRecord>, ApiError> {
    let (env, id) = deploy_path(&app, &env, &id)?;
    Ok(Json(deploys(&state).get(&env, &id).await?))
}

async fn cancel(
    State(state): State<AppState>,
    Path((app, env, id)): Path<(String, String, String)>,
) -> Result<Json<DeployCancelled>, ApiError> {
    let (env, id) = deploy_path(&app, &env, &id)?;
    let record = deploys(&state).cancel(&env, &id).await?;
    let note = if record.is_finished() {
        "the deploy had already finished"
    } else {
        "the deploy stops: its running batch is cancelled"
    };
    Ok(Json(DeployCancelled {
        deploy: record,
        note: note.into(),
    }))
}

async fn show_settings(
    State(state): State<AppState>,
    EnvPath(env): EnvPath,
) -> Result<Json<EnvSettings>, ApiError> {
    Ok(Json(deploys(&state).settings(&env).await?.redacted()))
}

async fn change_settings(
    State(state): State<AppState>,
    EnvPath(env): EnvPath,
    JsonBody(patch): JsonBody<serde_json::Map<String, Value>>,
) -> Result<Json<EnvSettings>, ApiError> {
    Ok(Json(
        deploys(&state)
            .change_settings(&env, patch)
            .await?
            .redacted(),
    ))
}

async fn start(
    State(state): State<AppState>,
    User(user): User,
    EnvPath(env): EnvPath,
    headers: HeaderMap,
    JsonBody(req): JsonBody<StartRequest>,
) -> Result<(StatusCode, Json<DeployAccepted>), ApiError> {
    let request = StartDeploy {
        release: req.release,
        strategy: req.strategy,
        auto_rollback: req.auto_rollback,
        rollback: false,
        user,
    };
    begin(&state, &env, request, req.queue, &headers).await
}

async fn rollback(
    State(state): State<AppState>,
    User(user): User,
    EnvPath(env): EnvPath,
    headers: HeaderMap,
    JsonBody(req): JsonBody<RollbackRequest>,
) -> Result<(StatusCode, Json<DeployAccepted>), ApiError> {
    let request = StartDeploy {
        release: req.release,
        rollback: true,
        user,
        ..StartDeploy::default()
    };
    begin(&state, &env, request, req.queue, &headers).await
}

/// `<app>/<env>/deploys/idempotency/<sha256 of user and key>`: the deploy
/// an `Idempotency-Key` already started.
fn idempotency_key(
    env: &EnvRef,
    user: &str,
    headers: &HeaderMap,
) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible characters".into())
        })?;
    let digest = hex::encode(Sha256::digest(format!("{user}\n{key}").as_bytes()));
    Ok(Some(slipway_core::keys::idempotency_key(env, &digest)))
}

async fn begin(
    state: &AppState,
    env: &EnvRef,
    request: StartDeploy,
    queue: Option<bool>,
    headers: &HeaderMap,
) -> Result<(StatusCode, Json<DeployAccepted>), ApiError> {
    let launcher = state
        .launcher
        .clone()
        .ok_or_else(|| ApiError::NotFound("deploys are not started here".into()))?;
    let deploys = deploys(state);
    let idempotency = idempotency_key(env, &request.user, headers)?;
    if let Some(key) = &idempotency
        && let Some(seen) = deploys.objects.get(key).await.map_err(ApiError::internal)?
    {
        let id = DeployId::parse(&String::from_utf8_lossy(&seen.body))
            .map_err(|_| ApiError::NotFound("no such deploy".into()))?;
        let record = deploys.get(env, &id).await?;
        return Ok(accepted(env, record));
    }
    let begun = deploys
        .begin(env, request, queue, chrono::Utc::now(), launcher.as_ref())
        .await?;
    if let Some(key) = &idempotency {
        let _ = deploys
            .objects
            .put(
                key,
                begun.record.id.to_string(),
                "text/plain",
                Write::IfAbsent,
            )
            .await;
    }
    Ok(accepted(env, begun.record))
}

fn accepted(env: &EnvRef, record: DeployRecord) -> (StatusCode, Json<DeployAccepted>) {
    let url = format!("/apps/{}/envs/{}/deploys/{}", env.app, env.env, record.id);
    (
        StatusCode::ACCEPTED,
        Json(DeployAccepted {
            id: record.id.clone(),
            url,
            deploy: record,
        }),
    )
}
