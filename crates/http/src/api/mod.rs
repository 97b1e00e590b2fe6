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
use axum::middleware::Next;
use axum::response::Response;

use serde::de::DeserializeOwned;

pub use error::ApiError;

use slipway_control::store::ReleaseStore;
use slipway_core::names::{EnvRef, ReleaseId};

/// What every handler may use; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: ReleaseStore,
    /// Starts the jobs this router queues (deploys in the deploy function,
    /// cycles in the cycle function); `None` where none are started.
    pub launcher: Option<Arc<dyn slipway_control::jobs::Launcher>>,
    /// Where a `notify_url` may point: checked when it is set.
    pub webhooks: slipway_control::rollout::notify::WebhookPolicy,
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

/// The Basic-auth layer: the request's user, checked against the users
/// file, goes into the request for [`User`].
pub async fn require_basic_auth(
    State(users): State<crate::auth::UserSource>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let users = users.current().await.map_err(ApiError::internal)?;
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
