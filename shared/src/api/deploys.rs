//! Routes of the deploy function that read and steer deploys, and the
//! environment's settings: `GET …/deploys`, `GET …/deploys/{id}`,
//! `POST …/deploys/{id}/cancel`, `GET/PATCH …/settings`.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, EnvPath, JsonBody};
use crate::names::EnvRef;
use crate::rollout::Deploys;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps/{app}/envs/{env}/deploys", get(list))
        .route("/apps/{app}/envs/{env}/deploys/{id}", get(show))
        .route("/apps/{app}/envs/{env}/deploys/{id}/cancel", post(cancel))
        .route(
            "/apps/{app}/envs/{env}/settings",
            get(show_settings).patch(change_settings),
        )
}

/// The deploy routes with auth, for a binary or a test to serve.
pub fn router(state: AppState) -> axum::Router {
    super::with_auth(routes(), state)
}

fn deploys(state: &AppState) -> Deploys {
    Deploys::new(state.store.clone())
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
) -> Result<Json<Value>, ApiError> {
    let Query(q) =
        query.map_err(|_| ApiError::BadRequest("the only query parameter is limit".into()))?;
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let records = deploys(&state).list(&env, limit).await?;
    Ok(Json(json!({ "deploys": records })))
}

/// The environment and the deploy id of a `…/deploys/{id}` route.
fn deploy_path(app: String, env: String, id: String) -> Result<(EnvRef, String), ApiError> {
    let env = EnvRef::parse(&app, &env)?;
    if !crate::rollout::service::is_deploy_id(&id) {
        return Err(ApiError::NotFound("no such deploy".into()));
    }
    Ok((env, id))
}

async fn show(
    State(state): State<AppState>,
    Path((app, env, id)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (env, id) = deploy_path(app, env, id)?;
    Ok(Json(json!(deploys(&state).get(&env, &id).await?)))
}

async fn cancel(
    State(state): State<AppState>,
    Path((app, env, id)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (env, id) = deploy_path(app, env, id)?;
    let record = deploys(&state).cancel(&env, &id).await?;
    let note = if record.is_finished() {
        "the deploy had already finished"
    } else {
        "the deploy stops after its running batch"
    };
    Ok(Json(json!({ "deploy": record, "note": note })))
}

async fn show_settings(
    State(state): State<AppState>,
    EnvPath(env): EnvPath,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(deploys(&state).settings(&env).await?)))
}

async fn change_settings(
    State(state): State<AppState>,
    EnvPath(env): EnvPath,
    JsonBody(patch): JsonBody<serde_json::Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        deploys(&state).change_settings(&env, patch).await?
    )))
}
