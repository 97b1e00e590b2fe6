//! `GET /apps/{app}/envs/{env}/logs`: search an environment's log lines
//! (served by the formation function, and by the local platform).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiError, EnvPath};
use slipway_control::logs::{LogError, LogPage, LogQuery, Logs};

pub fn routes() -> Router<Logs> {
    Router::new().route("/apps/{app}/envs/{env}/logs", get(search))
}

/// The query string of a search, as the API and the UI take it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    pub q: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub instance: Option<String>,
    pub process: Option<String>,
    pub limit: Option<usize>,
    pub next: Option<String>,
}

impl SearchParams {
    pub fn query(&self) -> Result<LogQuery, ApiError> {
        Ok(LogQuery::parse(
            self.q.as_deref(),
            self.since.as_deref(),
            self.until.as_deref(),
            self.instance.as_deref(),
            self.process.as_deref(),
            self.limit,
            self.next.as_deref(),
            chrono::Utc::now(),
        )?)
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::BadQuery(m) => Self::BadRequest(m),
            e @ LogError::Aws(_) => Self::internal(e),
        }
    }
}

async fn search(
    State(logs): State<Logs>,
    EnvPath(env): EnvPath,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<LogPage>, ApiError> {
    let Query(params) = params.map_err(|_| {
        ApiError::BadRequest(
            "the query parameters are q, since, until, instance, process, limit and next".into(),
        )
    })?;
    let page = logs.search(&env, &params.query()?).await?;
    Ok(Json(page))
}
