//! One sandbox: a function's binary started the way Lambda starts it, with
//! the Runtime API (`/2018-06-01/runtime/...`) on a loopback port of its
//! own as `AWS_LAMBDA_RUNTIME_API`. The process takes one invocation at a
//! time by `GET …/invocation/next` and answers it with `…/response` or
//! `…/error`; it is killed at the invocation's deadline, and a process that
//! ends mid-invocation fails it. Init is over when the process first asks
//! for an invocation (a cold start, logged with its time); an init error,
//! an exit or Lambda's 10 s init limit ends the sandbox.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;

use super::{Invocation, Outcome, Pool};

/// Lambda's limit on a function's init phase.
const INIT_LIMIT: Duration = Duration::from_secs(10);
/// Lambda's limit on a synchronous response.
const RESPONSE_LIMIT: usize = 6 * 1024 * 1024;
/// Lines of output kept to explain an init failure.
const TAIL_LINES: usize = 20;

struct Current {
    id: String,
    reply: oneshot::Sender<Outcome>,
    timer: AbortHandle,
    started: Instant,
}

#[derive(Default)]
struct Inner {
    first: Option<Invocation>,
    current: Option<Current>,
    initialised: bool,
    /// It answered and has not yet asked for the next invocation.
    returning: bool,
    dead: bool,
    tail: Vec<String>,
}

pub(super) struct Sandbox {
    pool: Arc<Pool>,
    id: u64,
    started: Instant,
    /// From exec to its first `invocation/next`, once it asked.
    ready: std::sync::OnceLock<Duration>,
    /// Its first invocation's `REPORT` carried the init duration.
    init_reported: std::sync::atomic::AtomicBool,
    inner: Mutex<Inner>,
    kill: Notify,
}

impl Sandbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn kill(&self) {
        self.kill.notify_one();
    }

    /// How long its init took, once it is over.
    pub(super) fn ready_after(&self) -> Option<Duration> {
        self.ready.get().copied()
    }

    /// It exited (or was killed) and takes no more invocations.
    pub(super) fn is_dead(&self) -> bool {
        self.lock().dead
    }

    fn log(&self, line: &str) {
        self.pool.log(self.id, line);
    }

    /// Ends the current invocation `id` with `outcome`, if it still is.
    fn finish(&self, id: &str, outcome: Outcome) -> bool {
        // A sandbox that answered is on its way back for the next
        // invocation; one that timed out is killed.
        let answered = matches!(outcome, Outcome::Response(_) | Outcome::Error { .. });
        let current = {
            let mut inner = self.lock();
            let current = match &inner.current {
                Some(c) if c.id == id => inner.current.take(),
                _ => None,
            };
            if current.is_some() && answered && !inner.returning {
                inner.returning = true;
                self.pool.returning.fetch_add(1, Ordering::SeqCst);
            }
            current
        };
        let Some(current) = current else {
            return false;
        };
        current.timer.abort();
        let init = self
            .ready_after()
            .filter(|_| !self.init_reported.swap(true, Ordering::SeqCst));
        let mut report = format!(
            "REPORT RequestId: {id}\tDuration: {:.2} ms\tMemory Size: {} MB",
            current.started.elapsed().as_secs_f64() * 1000.0,
            self.pool.spec.memory_mb
        );
        if let Some(init) = init {
            report.push_str(&format!(
                "\tInit Duration: {:.2} ms",
                init.as_secs_f64() * 1000.0
            ));
        }
        self.log(&report);
        let _ = current.reply.send(outcome);
        true
    }
}

/// Starts a sandbox of `pool`'s function; its first invocation, when
/// given, is handed over as soon as it asks.
pub(super) async fn start(
    pool: Arc<Pool>,
    first: Option<Invocation>,
) -> std::io::Result<Arc<Sandbox>> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let address = listener.local_addr()?;
    let id = pool.sandboxes.fetch_add(1, Ordering::SeqCst) + 1;
    let mut command = tokio::process::Command::new(&pool.binary);
    command
        .env_clear()
        .envs(&pool.environment)
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env(
            "AWS_LAMBDA_LOG_STREAM_NAME",
            format!(
                "{}/[$LATEST]{id:032x}",
                chrono::Utc::now().format("%Y/%m/%d")
            ),
        )
        .current_dir(pool.binary.parent().unwrap_or(std::path::Path::new("/")))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    // Init is timed from before the exec, as Lambda times it.
    let started = Instant::now();
    let mut child = command.spawn()?;
    let sandbox = Arc::new(Sandbox {
        pool: pool.clone(),
        id,
        started,
        ready: std::sync::OnceLock::new(),
        init_reported: std::sync::atomic::AtomicBool::new(false),
        inner: Mutex::new(Inner {
            first,
            ..Inner::default()
        }),
        kill: Notify::new(),
    });
    pool.alive.fetch_add(1, Ordering::SeqCst);
    {
        let mut live = pool.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|s| s.strong_count() > 0);
        live.push(Arc::downgrade(&sandbox));
    }
    if let Some(out) = child.stdout.take() {
        tokio::spawn(copy_output(sandbox.clone(), out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(copy_output(sandbox.clone(), err));
    }
    let server = tokio::spawn({
        let router = routes(sandbox.clone());
        async move {
            let _ = axum::serve(listener, router).await;
        }
    });
    tokio::spawn({
        let sandbox = sandbox.clone();
        async move {
            tokio::time::sleep(INIT_LIMIT).await;
            if !sandbox.lock().initialised {
                sandbox.log("INIT_REPORT Init Duration: 10000 ms\tPhase: init\tStatus: timeout");
                sandbox.kill();
            }
        }
    });
    tokio::spawn({
        let sandbox = sandbox.clone();
        async move {
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    _ = sandbox.kill.notified() => { let _ = child.start_kill(); }
                }
            };
            server.abort();
            ended(
                &sandbox,
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string()),
            );
        }
    });
    Ok(sandbox)
}

/// The process is gone: whatever it held fails, it is no longer idle.
fn ended(sandbox: &Sandbox, status: String) {
    let pool = &sandbox.pool;
    pool.alive.fetch_sub(1, Ordering::SeqCst);
    pool.forget_idle(sandbox.id);
    {
        let mut inner = sandbox.lock();
        if inner.returning {
            inner.returning = false;
            pool.returning.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let (first, current, initialised, tail) = {
        let mut inner = sandbox.lock();
        inner.dead = true;
        (
            inner.first.take(),
            inner.current.take(),
            inner.initialised,
            inner.tail.join("\n"),
        )
    };
    let why = if initialised {
        format!("Runtime exited ({status})")
    } else {
        format!("Runtime exited during init ({status}): {tail}")
    };
    if !initialised {
        tracing::warn!(function = %pool.spec.name, sandbox = sandbox.id, %status, "a sandbox failed to initialise");
        // What the runtime reported, if it did, says more than its exit.
        let mut failure = pool.init_failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert_with(|| why.clone());
    }
    if let Some(first) = first {
        let _ = first.reply.send(Outcome::InitFailed(why.clone()));
    }
    if let Some(current) = current {
        current.timer.abort();
        sandbox.log(&format!("RequestId: {} Error: {why}", current.id));
        let _ = current.reply.send(Outcome::Exited(why));
    }
}

async fn copy_output(sandbox: Arc<Sandbox>, stream: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        sandbox.log(&line);
        let mut inner = sandbox.lock();
        if !inner.initialised {
            inner.tail.push(line);
            if inner.tail.len() > TAIL_LINES {
                inner.tail.remove(0);
            }
        }
    }
}

fn routes(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(sandbox)
}

fn epoch_ms(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

async fn next(State(sandbox): State<Arc<Sandbox>>) -> Response {
    let first = {
        let mut inner = sandbox.lock();
        if inner.returning {
            inner.returning = false;
            sandbox.pool.returning.fetch_sub(1, Ordering::SeqCst);
        }
        if !inner.initialised {
            inner.initialised = true;
            inner.tail.clear();
            let init = sandbox.started.elapsed();
            let _ = sandbox.ready.set(init);
            sandbox.pool.cold_starts.fetch_add(1, Ordering::SeqCst);
            tracing::info!(
                function = %sandbox.pool.spec.name,
                sandbox = sandbox.id,
                init_ms = init.as_millis() as u64,
                "cold start"
            );
        }
        inner.first.take()
    };
    let invocation = match first {
        Some(invocation) => invocation,
        None => {
            let (tx, rx) = oneshot::channel();
            sandbox.pool.idle(sandbox.id, tx);
            match rx.await {
                Ok(invocation) => invocation,
                Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
            }
        }
    };
    let timeout = sandbox.pool.timeout();
    let deadline = SystemTime::now() + timeout;
    let Invocation { id, payload, reply } = invocation;
    {
        let mut inner = sandbox.lock();
        if inner.dead {
            let _ = reply.send(Outcome::Exited(
                "the sandbox ended before the invocation began".into(),
            ));
            return StatusCode::GONE.into_response();
        }
        let timer = tokio::spawn({
            let sandbox = sandbox.clone();
            let id = id.clone();
            async move {
                tokio::time::sleep(timeout).await;
                sandbox.log(&format!(
                    "{} {id} Task timed out after {:.2} seconds",
                    chrono::Utc::now().to_rfc3339(),
                    timeout.as_secs_f64()
                ));
                tracing::warn!(function = %sandbox.pool.spec.name, request = %id, "an invocation timed out: killing its sandbox");
                sandbox.finish(&id, Outcome::TimedOut(timeout));
                sandbox.kill();
            }
        })
        .abort_handle();
        inner.current = Some(Current {
            id: id.clone(),
            reply,
            timer,
            started: Instant::now(),
        });
    }
    sandbox.log(&format!("START RequestId: {id} Version: $LATEST"));
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("lambda-runtime-aws-request-id", id.clone());
    set("lambda-runtime-deadline-ms", epoch_ms(deadline).to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        sandbox.pool.spec.arn(),
    );
    set(
        "lambda-runtime-trace-id",
        format!(
            "Root=1-{:08x}-{}",
            epoch_ms(SystemTime::now()) / 1000,
            &id.replace('-', "")[..24]
        ),
    );
    (StatusCode::OK, headers, payload).into_response()
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"status": "OK"})),
    )
        .into_response()
}

fn invalid_request() -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"})),
    )
        .into_response()
}

async fn response(
    State(sandbox): State<Arc<Sandbox>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let outcome = if body.len() > RESPONSE_LIMIT {
        Outcome::Error {
            kind: "Function.ResponseSizeTooLarge".into(),
            message: format!(
                "Response payload size ({} bytes) exceeded maximum allowed payload size ({RESPONSE_LIMIT} bytes).",
                body.len()
            ),
        }
    } else {
        Outcome::Response(body)
    };
    if sandbox.finish(&id, outcome) {
        accepted()
    } else {
        invalid_request()
    }
}

/// The error a runtime reports: `{"errorType", "errorMessage"}`.
fn reported(headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let kind = value
        .get("errorType")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .or_else(|| {
            headers
                .get("lambda-runtime-function-error-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "Unhandled".into());
    let message = value
        .get("errorMessage")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    (kind, message)
}

async fn error(
    State(sandbox): State<Arc<Sandbox>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (kind, message) = reported(&headers, &body);
    sandbox.log(&format!("RequestId: {id} Error: {kind}: {message}"));
    if sandbox.finish(&id, Outcome::Error { kind, message }) {
        accepted()
    } else {
        invalid_request()
    }
}

async fn init_error(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (kind, message) = reported(&headers, &body);
    let why = format!("{kind}: {message}");
    sandbox.log(&format!("INIT_REPORT Status: error\t{why}"));
    let first = sandbox.lock().first.take();
    *sandbox
        .pool
        .init_failure
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
    if let Some(first) = first {
        let _ = first.reply.send(Outcome::InitFailed(why));
    }
    sandbox.kill();
    accepted()
}
