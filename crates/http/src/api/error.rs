//! Every API error, mapped in one place to a status and a plain message.
//!
//! Clients get `{"error": "...", "code": "..."}`. Internal failures (AWS,
//! unreadable stored data) are logged with their full chain and reach the
//! client only as "internal error", never with their detail.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use slipway_core::errors::chain;

use slipway_control::rollout::DeployError;
use slipway_control::store::StoreError;
use slipway_core::config::ConfigError;
use slipway_core::names::NameError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the store is busy; try again")]
    Busy,
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn internal(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(err.into())
    }

    /// The message a client is shown; an internal failure is logged with
    /// its whole chain first, and shown only as "internal error".
    pub fn client_message(self) -> String {
        if let Self::Internal(source) = &self {
            tracing::error!(error = %chain(source.as_ref()), "request failed");
        }
        self.to_string()
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ReleaseNotFound { .. } => Self::NotFound(e.to_string()),
            StoreError::Config(c) => c.into(),
            StoreError::Contention(_) | StoreError::ClaimLost(_) => Self::Busy,
            StoreError::Corrupt { .. } | StoreError::Read(_) | StoreError::Objects(_) => {
                Self::internal(e)
            }
        }
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::Locked(_) | DeployError::Concurrent => Self::Conflict(e.to_string()),
            DeployError::NotFound(_) | DeployError::UnknownRelease(_) => {
                Self::NotFound(e.to_string())
            }
            DeployError::NoRelease { .. }
            | DeployError::NothingToRollBackTo
            | DeployError::BadSettings(_) => Self::BadRequest(e.to_string()),
            DeployError::Store(s) => s.into(),
            DeployError::Settings(_)
            | DeployError::Objects(_)
            | DeployError::Lock(_)
            | DeployError::NotLaunched(_) => Self::internal(e),
        }
    }
}

impl From<slipway_control::cycle::CycleError> for ApiError {
    fn from(e: slipway_control::cycle::CycleError) -> Self {
        use slipway_control::cycle::CycleError as E;
        match e {
            E::Locked(_) => Self::Conflict(e.to_string()),
            E::NotMember { .. } | E::NotFound(_) | E::NoGroup(_) => Self::NotFound(e.to_string()),
            E::NoInstances(_) | E::BadScale(_) | E::Unconfirmed(_) => {
                Self::BadRequest(e.to_string())
            }
            E::Store(s) => s.into(),
            E::Fleet(_) | E::Objects(_) | E::Lock(_) | E::NotLaunched(_) | E::Settings(_) => {
                Self::internal(e)
            }
        }
    }
}

impl From<slipway_control::fleet::FleetError> for ApiError {
    fn from(e: slipway_control::fleet::FleetError) -> Self {
        match e {
            slipway_control::fleet::FleetError::NoGroup(_) => Self::NotFound(e.to_string()),
            e => Self::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            Self::Internal(source) => {
                tracing::error!(error = %chain(source.as_ref()), "request failed")
            }
            Self::Busy => tracing::warn!(error = %self, "request refused: busy"),
            _ => tracing::info!(status = status.as_u16(), error = %self, "request refused"),
        }
        let mut response = (
            status,
            Json(crate::wire::ErrorBody {
                error: self.to_string(),
                code: code.into(),
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"slipway\", charset=\"UTF-8\""),
            );
        }
        response
    }
}
