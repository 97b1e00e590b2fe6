//! The web UI: server-rendered pages under `/ui` for the three workflows
//! (deploy and roll back; look at the formation; terminate instances or
//! the environment), served by the formation function and by the local
//! platform behind the same Basic auth as the API.
//!
//! Every action is a plain form that posts and redirects, so the UI works
//! without JavaScript; with it, vendored htmx re-fetches the live parts of
//! a page every two seconds. The forms call the same services as the API
//! (deploys are started through the deploy launcher), and each must prove
//! it was sent from this origin: a cross-site page cannot deploy or
//! terminate with the browser's cached credentials.

pub mod views;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use futures::future::join_all;
use maud::Markup;
use serde::Deserialize;

use crate::api::deploys::deploy_path;
use crate::api::formation::{self, EnvState};
use crate::api::logs::SearchParams;
use crate::api::origin::same_origin;
use crate::api::{ApiError, EnvPath, FleetState, User};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use slipway_control::cycle::Cycles;
use slipway_control::fleet::ControlFleet;
use slipway_control::logs::Logs;
use slipway_control::rollout::{Deploys, StartDeploy, Strategy};
use slipway_core::names::InstanceId;
use slipway_core::names::{EnvRef, ReleaseId};

/// The vendored htmx (2.0.11, 0BSD licence, from the npm package
/// `htmx.org`), named by version so browsers may cache it for good.
pub const HTMX: &str = "htmx-2.0.11.min.js";
const HTMX_JS: &str = include_str!("assets/htmx-2.0.11.min.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

pub fn routes<F: ControlFleet>() -> Router<FleetState<F>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(overview::<F>))
        .route("/ui/assets/{name}", get(asset))
        .route("/ui/apps/{app}/envs/{env}", get(environment::<F>))
        .route(
            "/ui/apps/{app}/envs/{env}/deploys",
            axum::routing::post(deploy::<F>),
        )
        .route(
            "/ui/apps/{app}/envs/{env}/rollback",
            axum::routing::post(rollback::<F>),
        )
        .route(
            "/ui/apps/{app}/envs/{env}/deploys/{id}",
            get(show_deploy::<F>),
        )
        .route(
            "/ui/apps/{app}/envs/{env}/deploys/{id}/cancel",
            axum::routing::post(cancel_deploy::<F>),
        )
        .route(
            "/ui/apps/{app}/envs/{env}/instances/{id}/terminate",
            get(confirm_instance).post(terminate_instance::<F>),
        )
        .route(
            "/ui/apps/{app}/envs/{env}/terminate",
            get(confirm_environment).post(terminate_environment::<F>),
        )
        .route(
            "/ui/apps/{app}/envs/{env}/maintenance",
            axum::routing::post(maintenance::<F>),
        )
        .layer(axum::middleware::map_response(security_headers))
}

/// The log search page, whose state is CloudWatch Logs.
pub fn log_routes() -> Router<Logs> {
    Router::new()
        .route("/ui/apps/{app}/envs/{env}/logs", get(search_logs))
        .layer(axum::middleware::map_response(security_headers))
}

async fn search_logs(
    State(logs): State<Logs>,
    PageEnv(env): PageEnv,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> PageResult {
    let params = params.map(|Query(p)| p).map_err(|_| {
        PageError::from(ApiError::BadRequest(
            "the search fields are q, since, until, instance, process, limit and next".into(),
        ))
        .back_to(&env)
    })?;
    let result = match params.query() {
        Ok(query) => logs.search(&env, &query).await.map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let result = match result {
        Ok(page) => Ok(page),
        Err(ApiError::BadRequest(m)) => Err(m),
        Err(e) => return Err(PageError::from(e).back_to(&env)),
    };
    Ok(views::logs(&env, &params, &result))
}

/// Pages may not be framed (clickjacking), load nothing from elsewhere, run
/// no inline script, and send their URL only to this origin.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// An API error shown as a page: the same status and message the API
/// would send (internal details stay in the log), with a way back.
pub struct PageError {
    error: ApiError,
    back: Option<String>,
}

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(e: E) -> Self {
        Self {
            error: e.into(),
            back: None,
        }
    }
}

impl PageError {
    fn back_to(mut self, env: &EnvRef) -> Self {
        self.back = Some(views::env_url(env));
        self
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let message = self.error.to_string();
        // The API's response carries the status, the log line and any
        // WWW-Authenticate header; only its body is replaced.
        let (mut parts, _) = self.error.into_response().into_parts();
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        parts.headers.remove(header::CONTENT_LENGTH);
        let body = views::error_page(parts.status.as_u16(), &message, self.back.as_deref());
        Response::from_parts(parts, Body::from(body.into_string()))
    }
}

type PageResult = Result<Markup, PageError>;

/// The app and environment of a `/ui/apps/{app}/envs/{env}/…` route,
/// parsed; a bad name is answered with a page, not the API's JSON.
struct PageEnv(EnvRef);

impl<S: Send + Sync> FromRequestParts<S> for PageEnv {
    type Rejection = PageError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        Ok(Self(EnvPath::from_request_parts(parts, state).await?.0))
    }
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind, cache) = match name.as_str() {
        HTMX => (
            HTMX_JS,
            "text/javascript; charset=utf-8",
            "public, max-age=31536000, immutable",
        ),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8", "no-cache"),
        _ => return PageError::from(ApiError::NotFound("no such asset".into())).into_response(),
    };
    (
        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, cache)],
        body,
    )
        .into_response()
}

#[derive(Deserialize, Default)]
struct NoticeQuery {
    terminated: Option<String>,
}

fn notice_query(q: Result<Query<NoticeQuery>, QueryRejection>) -> NoticeQuery {
    q.map(|Query(q)| q).unwrap_or_default()
}

async fn overview<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    query: Result<Query<NoticeQuery>, QueryRejection>,
) -> PageResult {
    let envs: Vec<_> = formation::overview(&state)
        .await?
        .into_iter()
        .flat_map(|(_, envs)| envs)
        .collect();
    let counts = join_all(envs.iter().map(|e| state.fleet.formation(&e.env))).await;
    let summaries: Vec<views::EnvSummary> = envs
        .into_iter()
        .zip(counts)
        .map(|(e, formation)| views::EnvSummary {
            instances: formation.ok().map(|f| {
                let healthy = f.instances.iter().filter(|i| views::instance_healthy(i));
                (healthy.count(), f.instances.len())
            }),
            env: e.env,
            current: e.current,
            last_deploy: e.last_deploy,
            terminated: e.terminated,
        })
        .collect();
    // Only a name that parses is echoed back.
    let notice = notice_query(query)
        .terminated
        .and_then(|t| {
            let (app, env) = t.split_once('/')?;
            EnvRef::parse(app, env).ok()
        })
        .map(|env| format!("{env} is being terminated: its stack and instances are deleted."));
    Ok(views::overview(
        &summaries,
        notice.as_deref(),
        chrono::Utc::now(),
    ))
}

async fn environment<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    PageEnv(env): PageEnv,
    query: Result<Query<NoticeQuery>, QueryRejection>,
) -> PageResult {
    let deploys = Deploys::new(state.app.store.clone());
    let (found, releases, history, config, settings) = tokio::join!(
        formation::env_state(&state, &env),
        state.app.store.list_releases(&env, None, 20),
        deploys.list(&env, 10),
        state.app.store.config(&env),
        deploys.settings(&env),
    );
    let EnvState {
        current,
        formation,
        lock,
        metrics,
    } = found?;
    let notice = notice_query(query)
        .terminated
        .and_then(|id| InstanceId::parse(&id).ok())
        .map(|id| format!("Terminating {id}: the group launches a replacement, which boots the current release."));
    Ok(views::environment(&views::EnvPage {
        current,
        formation,
        lock,
        metrics,
        releases: releases?.releases,
        deploys: history?,
        config_keys: config?.iter().map(|(k, _)| k.to_owned()).collect(),
        strategy: settings?.strategy,
        notice,
        now: chrono::Utc::now(),
        env,
    }))
}

fn form<T>(form: Result<Form<T>, FormRejection>) -> Result<T, ApiError> {
    form.map(|Form(f)| f)
        .map_err(|e| ApiError::BadRequest(format!("the form is not valid: {}", e.body_text())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployForm {
    release: String,
    strategy: Option<String>,
}

/// Queues a deploy, launches its worker and sends the browser to its page.
async fn begin<F: ControlFleet>(
    state: &FleetState<F>,
    env: &EnvRef,
    request: StartDeploy,
) -> Result<Redirect, PageError> {
    let launcher = state
        .app
        .launcher
        .clone()
        .ok_or_else(|| ApiError::NotFound("deploys are not started here".into()))?;
    let deploys = Deploys::new(state.app.store.clone());
    let run = async {
        let (record, held) = deploys.start(env, request, chrono::Utc::now()).await?;
        deploys.launch(env, record, &held, launcher.as_ref()).await
    };
    let record = run.await.map_err(|e| PageError::from(e).back_to(env))?;
    Ok(Redirect::to(&views::deploy_url(env, &record.id)))
}

async fn deploy<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    User(user): User,
    PageEnv(env): PageEnv,
    headers: HeaderMap,
    body: Result<Form<DeployForm>, FormRejection>,
) -> Result<Redirect, PageError> {
    same_origin(&headers)?;
    let f = form(body).map_err(|e| PageError::from(e).back_to(&env))?;
    let bad = |e: String| PageError::from(ApiError::BadRequest(e)).back_to(&env);
    let release = ReleaseId::parse(&f.release).map_err(|e| bad(e.to_string()))?;
    let strategy = match f.strategy.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(s.parse::<Strategy>().map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    let request = StartDeploy {
        release: Some(release),
        strategy,
        auto_rollback: None,
        rollback: false,
        user,
    };
    begin(&state, &env, request).await
}

async fn rollback<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    User(user): User,
    PageEnv(env): PageEnv,
    headers: HeaderMap,
) -> Result<Redirect, PageError> {
    same_origin(&headers)?;
    let request = StartDeploy {
        rollback: true,
        user,
        ..StartDeploy::default()
    };
    begin(&state, &env, request).await
}

async fn show_deploy<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    Path((app, env, id)): Path<(String, String, String)>,
) -> PageResult {
    let (env, id) = deploy_path(&app, &env, &id)?;
    let record = Deploys::new(state.app.store.clone()).get(&env, &id).await?;
    Ok(views::deploy(&env, &record, chrono::Utc::now()))
}

async fn cancel_deploy<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    Path((app, env, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Redirect, PageError> {
    same_origin(&headers)?;
    let (env, id) = deploy_path(&app, &env, &id)?;
    Deploys::new(state.app.store.clone())
        .cancel(&env, &id)
        .await?;
    Ok(Redirect::to(&views::deploy_url(&env, &id)))
}

fn instance_path(app: &str, env: &str, id: &str) -> Result<(EnvRef, InstanceId), ApiError> {
    let env = EnvRef::parse(app, env)?;
    let id = InstanceId::parse(id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok((env, id))
}

async fn confirm_instance(Path((app, env, id)): Path<(String, String, String)>) -> PageResult {
    let (env, id) = instance_path(&app, &env, &id)?;
    Ok(views::confirm_instance(&env, &id))
}

async fn terminate_instance<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    User(user): User,
    Path((app, env, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Redirect, PageError> {
    same_origin(&headers)?;
    let (env, id) = instance_path(&app, &env, &id)?;
    let record = Cycles::new(state.app.store.clone())
        .cycle_one(&state.fleet, &env, id, &user, chrono::Utc::now())
        .await
        .map_err(|e| PageError::from(e).back_to(&env))?;
    let ids: Vec<String> = record
        .steps
        .iter()
        .map(|s| s.instance.to_string())
        .collect();
    Ok(Redirect::to(&format!(
        "{}?terminated={}",
        views::env_url(&env),
        ids.join(",")
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceForm {
    state: String,
    message: Option<String>,
    allow: Option<String>,
}

/// Puts maintenance mode's page up or takes it down, then shows the
/// environment.
async fn maintenance<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    User(user): User,
    PageEnv(env): PageEnv,
    headers: HeaderMap,
    body: Result<Form<MaintenanceForm>, FormRejection>,
) -> Result<Redirect, PageError> {
    use slipway_core::maintenance::{Cidr, Maintenance};

    same_origin(&headers)?;
    let f = form(body).map_err(|e| PageError::from(e).back_to(&env))?;
    let bad = |e: String| PageError::from(ApiError::BadRequest(e)).back_to(&env);
    let wanted = match f.state.as_str() {
        "on" => {
            let allow = f
                .allow
                .as_deref()
                .unwrap_or_default()
                .split([',', ' '])
                .filter(|a| !a.is_empty())
                .map(Cidr::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            Some(Maintenance::new(f.message.as_deref(), allow).map_err(|e| bad(e.to_string()))?)
        }
        "off" => None,
        _ => return Err(bad("the maintenance state is on or off".into())),
    };
    state
        .fleet
        .set_maintenance(&env, wanted.as_ref())
        .await
        .map_err(|e| PageError::from(ApiError::from(e)).back_to(&env))?;
    tracing::info!(%env, %user, on = wanted.is_some(), "maintenance set from the web UI");
    Ok(Redirect::to(&views::env_url(&env)))
}

async fn confirm_environment(PageEnv(env): PageEnv) -> Markup {
    views::confirm_environment(&env, None)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TerminateForm {
    confirm: String,
}

async fn terminate_environment<F: ControlFleet>(
    State(state): State<FleetState<F>>,
    User(user): User,
    PageEnv(env): PageEnv,
    headers: HeaderMap,
    body: Result<Form<TerminateForm>, FormRejection>,
) -> Result<Response, PageError> {
    same_origin(&headers)?;
    let f = form(body)?;
    if f.confirm.trim() != env.qualified() {
        let page = views::confirm_environment(
            &env,
            Some(&format!(
                "That is not {}: nothing was terminated.",
                env.qualified()
            )),
        );
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }
    Cycles::new(state.app.store.clone())
        .destroy(
            &state.fleet,
            &env,
            Some(f.confirm.trim()),
            &user,
            chrono::Utc::now(),
        )
        .await
        .map_err(|e| PageError::from(e).back_to(&env))?;
    Ok(Redirect::to(&format!("/ui?terminated={}/{}", env.app, env.env)).into_response())
}
