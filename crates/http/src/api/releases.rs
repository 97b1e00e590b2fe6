//! Routes of the release function: upload tickets, releases, config, promote.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;

use super::{ApiError, AppState, EnvPath, JsonBody, ReleasePath, User};
use crate::wire::{
    ConfigAnswer, ConfigChanged, ConfigPatch, PromoteRequest, ReleaseList, UploadRequest,
    UploadStatus, UploadTicket,
};
use slipway_control::store::{MAX_DESCRIPTION, MAX_PAGE};
use slipway_core::archive::ArchiveFormat;
use slipway_core::manifest::Manifest;
use slipway_core::names::{EnvName, EnvRef, ReleaseId};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/apps/{app}/envs/{env}/releases",
            post(new_upload).get(list),
        )
        .route("/apps/{app}/envs/{env}/releases/{id}", get(show))
        .route("/apps/{app}/envs/{env}/uploads/{name}", get(upload_status))
        .route(
            "/apps/{app}/envs/{env}/releases/{id}/promote",
            post(promote),
        )
        .route(
            "/apps/{app}/envs/{env}/config",
            get(show_config).patch(change_config),
        )
}

fn check_text(field: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if v.chars().count() > max => Err(ApiError::BadRequest(format!(
            "{field} is longer than {max} characters"
        ))),
        Some(v) if v.chars().any(char::is_control) => Err(ApiError::BadRequest(format!(
            "{field} may not contain control characters"
        ))),
        _ => Ok(()),
    }
}

async fn new_upload(
    State(state): State<AppState>,
    User(user): User,
    EnvPath(env): EnvPath,
    JsonBody(req): JsonBody<UploadRequest>,
) -> Result<(StatusCode, Json<UploadTicket>), ApiError> {
    check_text("description", req.description.as_deref(), MAX_DESCRIPTION)?;
    check_text("git_ref", req.git_ref.as_deref(), 255)?;
    let ticket = state
        .store
        .upload_ticket(
            &env,
            &user,
            req.description.as_deref(),
            req.git_ref.as_deref(),
            req.format.unwrap_or(ArchiveFormat::Zstd),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(ticket)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    before: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(state): State<AppState>,
    EnvPath(env): EnvPath,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReleaseList>, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::BadRequest(format!("query takes before=r<N> and limit=1..{MAX_PAGE}"))
    })?;
    let before = q.before.as_deref().map(ReleaseId::parse).transpose()?;
    let page = state
        .store
        .list_releases(&env, before, q.limit.unwrap_or(20))
        .await?;
    Ok(Json(ReleaseList {
        releases: page.releases,
        next: page.next,
    }))
}

async fn show(
    State(state): State<AppState>,
    ReleasePath(env, id): ReleasePath,
) -> Result<Json<Manifest>, ApiError> {
    Ok(Json(state.store.release(&env, id).await?))
}

/// What became of an upload: `pending` (not processed yet), `released`
/// with the release, or `rejected` with the reason. `ship release` waits
/// on this after its PUT.
async fn upload_status(
    State(state): State<AppState>,
    Path((app, env, name)): Path<(String, String, String)>,
) -> Result<Json<UploadStatus>, ApiError> {
    let env = slipway_core::names::EnvRef::parse(&app, &env)?;
    let status = state
        .store
        .upload_status(&env, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such upload".into()))?;
    Ok(Json(status))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevealQuery {
    #[serde(default)]
    reveal: bool,
}

fn reveal(
    query: Result<Query<RevealQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<bool, ApiError> {
    query
        .map(|Query(q)| q.reveal)
        .map_err(|_| ApiError::BadRequest("query takes reveal=true or reveal=false".into()))
}

async fn show_config(
    State(state): State<AppState>,
    EnvPath(env): EnvPath,
    query: Result<Query<RevealQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ConfigAnswer>, ApiError> {
    let reveal = reveal(query)?;
    let config = state.store.config(&env).await?;
    Ok(Json(ConfigAnswer {
        config: config.view(reveal),
        sha256: config.sha256(),
    }))
}

async fn change_config(
    State(state): State<AppState>,
    User(user): User,
    EnvPath(env): EnvPath,
    query: Result<Query<RevealQuery>, axum::extract::rejection::QueryRejection>,
    JsonBody(patch): JsonBody<ConfigPatch>,
) -> Result<(StatusCode, Json<ConfigChanged>), ApiError> {
    let reveal = reveal(query)?;
    if patch.set.is_empty() && patch.unset.is_empty() {
        return Err(ApiError::BadRequest(
            "nothing to change: give set and/or unset".into(),
        ));
    }
    let change = state
        .store
        .change_config(&env, &patch.set, &patch.unset, &user)
        .await?;
    let status = if change.release.is_some() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(ConfigChanged {
            release: change.release,
            diff: change.diff.entries(reveal),
            config: change.config.view(reveal),
        }),
    ))
}

async fn promote(
    State(state): State<AppState>,
    User(user): User,
    ReleasePath(env, id): ReleasePath,
    JsonBody(req): JsonBody<PromoteRequest>,
) -> Result<(StatusCode, Json<Manifest>), ApiError> {
    let to = EnvName::parse(&req.to)?;
    if to == env.env {
        return Err(ApiError::BadRequest(
            "promote to a different environment".into(),
        ));
    }
    let target = EnvRef::new(env.app.clone(), to)?;
    let manifest = state.store.promote(&env, id, &target, &user).await?;
    Ok((StatusCode::CREATED, Json(manifest)))
}
