//! The control plane's HTTP API as `ship` uses it: Basic auth on every
//! request, JSON in and out, and errors that say what to do next.

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use slipway_http::wire::ErrorBody;

use crate::context::Target;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach {url} ({detail}): is `ship dev` running? Otherwise set SLIPWAY_URL")]
    Unreachable { url: String, detail: String },
    #[error(
        "{url} refused the credentials of {user}: check SLIPWAY_USER and SLIPWAY_PASSWORD (`ship dev` prints them and keeps them in .slipway/dev.json)"
    )]
    Unauthorized { url: String, user: String },
    #[error("{message}{hint}")]
    Api {
        status: u16,
        code: String,
        message: String,
        hint: &'static str,
    },
    #[error("{0}")]
    Other(String),
}

impl CliError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What to add to an API error so the user knows the next step.
fn hint(status: StatusCode, message: &str) -> &'static str {
    if status == StatusCode::CONFLICT && message.contains("holds the environment") {
        " (follow it with `ship deploys`, or stop it with `ship cancel`)"
    } else if status == StatusCode::NOT_FOUND
        && (message.contains("no Auto Scaling group") || message.starts_with("no environment"))
    {
        " (create the environment: `ship dev env create APP ENV` locally)"
    } else if status == StatusCode::BAD_REQUEST && message.contains("no release to deploy") {
        " (make one with `ship release`)"
    } else {
        ""
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub target: Target,
}

impl Client {
    pub fn new(target: Target) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("ship/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        Self { http, target }
    }

    /// The raw HTTP client (uploads to presigned URLs).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.send(Method::GET, path, None::<&()>, &[]).await
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.send(Method::POST, path, Some(body), &[]).await
    }

    /// A POST without a body (cancel, cycle).
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.send(Method::POST, path, None::<&()>, &[]).await
    }

    pub async fn patch<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.send(Method::PATCH, path, Some(body), &[]).await
    }

    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.send(Method::PUT, path, Some(body), &[]).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.send(Method::DELETE, path, None::<&()>, &[]).await
    }

    /// One request; a success answer is read as `T`, an error answer as
    /// the API's [`ErrorBody`].
    pub async fn send<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        headers: &[(&str, &str)],
    ) -> Result<T, CliError> {
        let url = format!("{}{path}", self.target.url);
        let mut request = self
            .http
            .request(method, &url)
            .basic_auth(&self.target.user, Some(&self.target.password));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| CliError::Unreachable {
            url: self.target.url.clone(),
            detail: root_cause(&e),
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| CliError::Unreachable {
            url: self.target.url.clone(),
            detail: root_cause(&e),
        })?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(CliError::Unauthorized {
                url: self.target.url.clone(),
                user: self.target.user.clone(),
            });
        }
        if !status.is_success() {
            let error: Option<ErrorBody> = serde_json::from_str(&text).ok();
            let (message, code) = match error {
                Some(e) => (e.error, e.code),
                None => (
                    format!("{} answered {status}", self.target.url),
                    String::new(),
                ),
            };
            return Err(CliError::Api {
                status: status.as_u16(),
                code,
                hint: hint(status, &message),
                message,
            });
        }
        serde_json::from_str(&text).map_err(|e| {
            CliError::Other(format!(
                "{} answered {path} with something this ship cannot read ({e}): is it a newer version?",
                self.target.url
            ))
        })
    }
}

/// The innermost cause: "Connection refused", not reqwest's wrapper text.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// `/apps/<app>/envs/<env>` plus `rest`.
pub fn env_path(env: &slipway_core::names::EnvRef, rest: &str) -> String {
    format!("/apps/{}/envs/{}{rest}", env.app, env.env)
}
