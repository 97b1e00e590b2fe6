//! The HTTP API: axum routers shared by the Lambda functions and the local
//! platform, Basic auth on every route but `/healthz`, and the extractors
//! that parse hostile path segments and bodies into domain types.

pub mod chat;
pub mod cycle;
pub mod deploys;
mod error;
pub mod formation;
pub mod logs;
pub mod origin;
pub mod releases;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;

pub use error::ApiError;

use crate::auth::Users;
use slipway_control::store::ReleaseStore;
use slipway_core::names::{EnvRef, ReleaseId};

/// What every handler may use; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: ReleaseStore,
    pub users: Arc<Users>,
    /// Starts the jobs this router queues (deploys in the deploy function,
    /// cycles in the cycle function); `None` where none are started.
    pub launcher: Option<Arc<dyn slipway_control::rollout::Launcher>>,
}

impl AppState {
    /// What a function's `main` builds once at cold start: the release
    /// store on the configured bucket and the Basic-auth users (from their
    /// SecureString parameter, or inline in local runs). No launcher.
    pub async fn load(
        settings: &slipway_core::settings::ReleaseSettings,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, crate::auth::UsersError> {
        let users = Users::load(
            &slipway_control::aws::ssm_client(aws),
            settings.users_param.as_deref(),
            settings.users_inline.as_deref(),
        )
        .await?;
        let store = ReleaseStore::new(
            slipway_core::objects::S3Objects::new(
                slipway_core::objects::s3_client(aws),
                &settings.bucket,
            ),
            settings.limits,
        );
        Ok(Self {
            store,
            users: Arc::new(users),
            launcher: None,
        })
    }
}

/// What the fleet's routes (cycle, formation) use: the common state and
/// the environment's instances.
#[derive(Clone)]
pub struct FleetState<F> {
    pub app: AppState,
    pub fleet: F,
    /// Instance CPU and memory for the formation, where configured.
    pub metrics: Option<slipway_control::metrics::Metrics>,
}

/// The authenticated user, put in the request by the auth layer.
#[derive(Debug, Clone)]
pub struct User(pub String);

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<User>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

async fn require_basic_auth(
    State(users): State<Arc<Users>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let users = users.clone();
    // argon2 is deliberately slow: keep it off the async workers.
    let user = tokio::task::spawn_blocking(move || users.authenticate(header.as_deref()))
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::Unauthorized)?;
    tracing::Span::current().record("user", user.as_str());
    request.extensions_mut().insert(User(user));
    Ok(next.run(request).await)
}

/// The app and environment of a `/apps/{app}/envs/{env}/…` route, parsed.
pub struct EnvPath(pub EnvRef);

/// An environment and a release id from `…/releases/{id}`, parsed.
pub struct ReleasePath(pub EnvRef, pub ReleaseId);

async fn path_params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<HashMap<String, String>, ApiError> {
    Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map(|Path(p)| p)
        .map_err(|_| ApiError::BadRequest("the path is not valid UTF-8".into()))
}

fn env_of(params: &HashMap<String, String>) -> Result<EnvRef, ApiError> {
    let app = params.get("app").map_or("", String::as_str);
    let env = params.get("env").map_or("", String::as_str);
    Ok(EnvRef::parse(app, env)?)
}

impl<S: Send + Sync> FromRequestParts<S> for EnvPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Ok(Self(env_of(&path_params(parts, state).await?)?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ReleasePath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = path_params(parts, state).await?;
        let id = ReleaseId::parse(params.get("id").map_or("", String::as_str))?;
        Ok(Self(env_of(&params)?, id))
    }
}

/// A JSON body whose errors are API errors; an empty body is `{}`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::BadRequest("the request body could not be read".into()))?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes).map(JsonBody).map_err(|e| {
            ApiError::BadRequest(format!(
                "invalid JSON body: {}",
                json_error_without_values(&e)
            ))
        })
    }
}

/// serde_json quotes the offending value in type errors (``invalid type:
/// integer `123`, expected a string``). A body may carry config values, so
/// the message keeps what was expected and where, never the value.
fn json_error_without_values(e: &serde_json::Error) -> String {
    let text = e.to_string();
    for prefix in ["invalid type", "invalid value", "invalid length"] {
        if text.starts_with(prefix) {
            let expected = text.find(", expected").map_or("", |i| &text[i + 2..]);
            return format!("{prefix}: {expected}");
        }
    }
    text
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Wraps authenticated routes: Basic auth on all of them (the fallback too,
/// so unknown paths reveal nothing), `/healthz` open, request tracing.
pub fn with_auth(routes: Router<AppState>, state: AppState) -> Router {
    let users = state.users.clone();
    with_auth_of(routes, state, users)
}

/// [`with_auth`] for routes with a state of their own (the fleet's).
pub fn with_auth_of<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    state: S,
    users: Arc<Users>,
) -> Router {
    serve(routes.with_state(state), users)
}

/// The finished service around stateful routes (one function's, or every
/// function's merged, as the local platform serves them): Basic auth on
/// all of them and the fallback, cross-site changes refused, `/healthz`
/// open, request tracing.
pub fn serve(routes: Router, users: Arc<Users>) -> Router {
    serve_with(routes, Router::new(), Some(users))
}

/// [`serve`] with `open` routes beside the authenticated ones: routes that
/// check their own credentials (Slack's signature). Without `users`, every
/// other path is a 404.
pub fn serve_with(routes: Router, open: Router, users: Option<Arc<Users>>) -> Router {
    let rest = routes
        .fallback(not_found)
        .layer(middleware::from_fn(origin::refuse_cross_site));
    let rest = match users {
        Some(users) => rest.layer(middleware::from_fn_with_state(users, require_basic_auth)),
        None => rest,
    };
    Router::new()
        .route("/healthz", get(healthz))
        .merge(open)
        .merge(rest)
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &Request| {
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), user = tracing::field::Empty)
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_never_repeat_the_value_that_was_sent() {
        let e = serde_json::from_str::<std::collections::BTreeMap<String, String>>(
            r#"{"TOKEN": 987654321}"#,
        )
        .unwrap_err();
        let shown = json_error_without_values(&e);
        assert!(!shown.contains("987654321"), "{shown}");
        assert!(
            shown.starts_with("invalid type: expected a string"),
            "{shown}"
        );
    }
}
