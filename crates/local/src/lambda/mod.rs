//! Lambda, as it runs the control plane's functions, on this machine. Each
//! function of `infra/template.yaml` is its own binary in sandboxes of its
//! own ([`sandbox`]): started on demand (one process per concurrent
//! invocation at most), kept warm between invocations, given the
//! template's environment and nothing but what Lambda itself adds, and
//! killed at the deadline its `Timeout` sets. Synchronous invocations come
//! from the local API Gateway; asynchronous ones (S3 notifications, the
//! SDK's `Invoke` with `InvocationType=Event`, served by [`api`]) are
//! queued and delivered at least once, a failed or timed-out one retried
//! twice with Lambda's back-off, then sent to the on-failure destination
//! the template names.

pub mod api;
mod sandbox;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use serde_json::json;
use tokio::sync::oneshot;

use crate::template::FunctionSpec;

/// How one invocation ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Response(Bytes),
    /// The function reported an error.
    Error {
        kind: String,
        message: String,
    },
    /// It ran past its deadline and its sandbox was killed.
    TimedOut(Duration),
    /// Its process ended during the invocation.
    Exited(String),
    /// The sandbox could not initialise.
    InitFailed(String),
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Response(_))
    }

    /// The error as Lambda reports it to a synchronous caller.
    pub fn error_payload(&self) -> serde_json::Value {
        match self {
            Outcome::Response(_) => json!(null),
            Outcome::Error { kind, message } => json!({"errorType": kind, "errorMessage": message}),
            Outcome::TimedOut(after) => json!({
                "errorType": "Sandbox.Timedout",
                "errorMessage": format!("Task timed out after {:.2} seconds", after.as_secs_f64()),
            }),
            Outcome::Exited(why) => json!({"errorType": "Runtime.ExitError", "errorMessage": why}),
            Outcome::InitFailed(why) => {
                json!({"errorType": "Runtime.InitError", "errorMessage": why})
            }
        }
    }
}

pub(crate) struct Invocation {
    id: String,
    payload: Bytes,
    reply: oneshot::Sender<Outcome>,
}

/// How long an invocation waits for a sandbox that has just answered.
const RETURN_WAIT: Duration = Duration::from_millis(200);

/// One function: its settings and its sandboxes.
pub(crate) struct Pool {
    spec: FunctionSpec,
    binary: PathBuf,
    environment: BTreeMap<String, String>,
    time_scale: f64,
    log: Mutex<std::fs::File>,
    idle: Mutex<Vec<(u64, oneshot::Sender<Invocation>)>>,
    sandboxes: AtomicU64,
    alive: AtomicUsize,
    /// Sandboxes that answered and are coming back for more.
    returning: AtomicUsize,
    cold_starts: AtomicUsize,
    invocations: AtomicUsize,
    deliveries: AtomicUsize,
    deliver_twice: AtomicBool,
    init_failure: Mutex<Option<String>>,
    /// Its sandboxes still running, to kill them as a worker dies.
    live: Mutex<Vec<std::sync::Weak<sandbox::Sandbox>>>,
}

impl Pool {
    fn new(
        spec: FunctionSpec,
        binary: PathBuf,
        environment: BTreeMap<String, String>,
        time_scale: f64,
        log: std::fs::File,
    ) -> Self {
        Self {
            spec,
            binary,
            environment,
            time_scale,
            log: Mutex::new(log),
            idle: Mutex::default(),
            sandboxes: AtomicU64::new(0),
            alive: AtomicUsize::new(0),
            returning: AtomicUsize::new(0),
            cold_starts: AtomicUsize::new(0),
            invocations: AtomicUsize::new(0),
            deliveries: AtomicUsize::new(0),
            deliver_twice: AtomicBool::new(false),
            init_failure: Mutex::new(None),
            live: Mutex::default(),
        }
    }

    fn timeout(&self) -> Duration {
        self.spec.timeout.mul_f64(self.time_scale)
    }

    fn log(&self, sandbox: u64, line: &str) {
        if let Ok(mut file) = self.log.lock() {
            let _ = writeln!(file, "[{sandbox}] {line}");
        }
    }

    fn idle(&self, sandbox: u64, tx: oneshot::Sender<Invocation>) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((sandbox, tx));
    }

    fn forget_idle(&self, sandbox: u64) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(s, _)| *s != sandbox);
    }

    /// Runs `payload` in a warm sandbox, or a new one when none is free.
    async fn invoke(self: &Arc<Self>, payload: Bytes) -> Outcome {
        self.invocations.fetch_add(1, Ordering::SeqCst);
        let (reply, answer) = oneshot::channel();
        let mut invocation = Invocation {
            id: uuid::Uuid::new_v4().to_string(),
            payload,
            reply,
        };
        let mut waited = Duration::ZERO;
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match idle {
                Some((_, sandbox)) => match sandbox.send(invocation) {
                    Ok(()) => break,
                    Err(back) => invocation = back,
                },
                // A sandbox that just answered asks again within moments:
                // as in Lambda, it takes this invocation rather than a
                // new sandbox.
                None if self.returning.load(Ordering::SeqCst) > 0 && waited < RETURN_WAIT => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    waited += Duration::from_millis(2);
                }
                None => {
                    if let Err(e) = sandbox::start(self.clone(), Some(invocation)).await {
                        return Outcome::InitFailed(format!(
                            "starting {}: {e}",
                            self.binary.display()
                        ));
                    }
                    break;
                }
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Outcome::Exited("the sandbox went away".into()))
    }
}

/// What a function did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub invocations: usize,
    /// Deliveries of asynchronous events, retries and duplicates included.
    pub deliveries: usize,
    pub cold_starts: usize,
    pub sandboxes: usize,
}

/// Why an invocation was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("Function not found: {0}")]
    NotFound(String),
    #[error("the payload is {0} bytes, more than Lambda accepts")]
    TooLarge(usize),
}

/// Lambda's documented payload limits.
pub const SYNC_PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;
pub const ASYNC_PAYLOAD_LIMIT: usize = 256 * 1024;

/// One function to run: the template's, from this binary, with the
/// environment its sandboxes get.
pub struct FunctionSetup {
    pub spec: FunctionSpec,
    pub binary: PathBuf,
    pub environment: BTreeMap<String, String>,
    /// Its own share of the template's timeout and Lambda's back-offs,
    /// instead of the service's.
    pub time_scale: Option<f64>,
}

/// The local Lambda service.
#[derive(Clone)]
pub struct LocalLambda {
    pools: Arc<BTreeMap<String, Arc<Pool>>>,
    /// Where failed asynchronous events go, when a function names a queue.
    sqs: Option<aws_sdk_sqs::Client>,
}

impl LocalLambda {
    /// The service for `functions`, their logs in `logs/<name>.log`, their
    /// timeouts and retry back-offs scaled by `time_scale`.
    pub fn new(
        functions: Vec<FunctionSetup>,
        logs: &std::path::Path,
        time_scale: f64,
        sqs: Option<aws_sdk_sqs::Client>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(logs)?;
        let mut pools = BTreeMap::new();
        for f in functions {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(logs.join(format!("{}.log", f.spec.name)))?;
            pools.insert(
                f.spec.name.clone(),
                Arc::new(Pool::new(
                    f.spec,
                    f.binary,
                    f.environment,
                    f.time_scale.unwrap_or(time_scale),
                    log,
                )),
            );
        }
        Ok(Self {
            pools: Arc::new(pools),
            sqs,
        })
    }

    /// The function `name` names: its name, ARN or partial ARN
    /// (`function:name`), with no qualifier but `$LATEST`.
    fn pool(&self, name: &str) -> Result<&Arc<Pool>, InvokeError> {
        let bare = name.strip_suffix(":$LATEST").unwrap_or(name);
        let bare = bare
            .rsplit_once("function:")
            .map(|(_, n)| n)
            .unwrap_or(bare);
        self.pools
            .get(bare)
            .filter(|p| !bare.contains(':') || name == p.spec.arn())
            .ok_or_else(|| InvokeError::NotFound(crate::template::function_arn(bare)))
    }

    /// The name of each function.
    pub fn names(&self) -> Vec<String> {
        self.pools.keys().cloned().collect()
    }

    pub fn spec(&self, name: &str) -> Option<&FunctionSpec> {
        self.pool(name).ok().map(|p| &p.spec)
    }

    /// Starts one sandbox of every function and waits for each to finish
    /// its init, as a new deployment's first requests would: a function
    /// that cannot start (a missing setting, a missing binary) fails this,
    /// naming the function and what it said.
    pub async fn warm_up(&self) -> anyhow::Result<()> {
        for pool in self.pools.values() {
            sandbox::start(pool.clone(), None).await.map_err(|e| {
                anyhow::anyhow!(
                    "the {} function ({}): {e}",
                    pool.spec.logical_id,
                    pool.binary.display()
                )
            })?;
        }
        let started = std::time::Instant::now();
        loop {
            let mut waiting = false;
            for pool in self.pools.values() {
                if let Some(why) = pool
                    .init_failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                {
                    anyhow::bail!(
                        "the {} function could not start: {why}",
                        pool.spec.logical_id
                    );
                }
                waiting |= pool.cold_starts.load(Ordering::SeqCst) == 0;
            }
            if !waiting {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(15) {
                anyhow::bail!(
                    "the control plane's functions did not finish their init within 15 s"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts one sandbox of function `name` and stops it once its init is
    /// over, returning how long that took: from exec to its first
    /// `invocation/next`. With `binary`, the sandbox runs that program
    /// instead, with the function's environment and everything else the
    /// same, so two programs can be compared side by side. It takes no
    /// invocation and counts as none of the function's cold starts.
    pub async fn cold_start(
        &self,
        name: &str,
        binary: Option<&std::path::Path>,
    ) -> anyhow::Result<Duration> {
        let pool = self.pool(name)?;
        let log = pool
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_clone()?;
        let apart = Arc::new(Pool::new(
            pool.spec.clone(),
            binary.map_or_else(|| pool.binary.clone(), std::path::Path::to_path_buf),
            pool.environment.clone(),
            pool.time_scale,
            log,
        ));
        let sandbox = sandbox::start(apart.clone(), None).await?;
        loop {
            if let Some(ready) = sandbox.ready_after() {
                sandbox.kill();
                return Ok(ready);
            }
            if sandbox.is_dead() {
                let why = apart
                    .init_failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .unwrap_or_else(|| "it exited".into());
                anyhow::bail!("{} ({}) did not start: {why}", name, apart.binary.display());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// A synchronous invocation (`RequestResponse`), as API Gateway makes.
    pub async fn invoke(&self, name: &str, payload: Bytes) -> Result<Outcome, InvokeError> {
        if payload.len() > SYNC_PAYLOAD_LIMIT {
            return Err(InvokeError::TooLarge(payload.len()));
        }
        let pool = self.pool(name)?.clone();
        Ok(pool.invoke(payload).await)
    }

    /// An asynchronous invocation (`Event`): queued, then delivered at
    /// least once.
    pub fn invoke_event(&self, name: &str, payload: Bytes) -> Result<(), InvokeError> {
        if payload.len() > ASYNC_PAYLOAD_LIMIT {
            return Err(InvokeError::TooLarge(payload.len()));
        }
        let pool = self.pool(name)?.clone();
        let copies = if pool.deliver_twice.swap(false, Ordering::SeqCst) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            tokio::spawn(deliver(pool.clone(), payload.clone(), self.sqs.clone()));
        }
        Ok(())
    }

    /// Lambda delivers an asynchronous event at least once: the next event
    /// of `name` is delivered twice, at the same time, as Lambda may.
    pub fn deliver_next_event_twice(&self, name: &str) -> Result<(), InvokeError> {
        self.pool(name)?.deliver_twice.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Kills every running sandbox of `name` at once, as Lambda's worker
    /// dying mid-invocation does: what they were running fails as an exit.
    /// Only this platform's sandboxes: another platform on the machine,
    /// running the same binary, goes on.
    pub fn kill_sandboxes(&self, name: &str) -> Result<usize, InvokeError> {
        let pool = self.pool(name)?;
        let live: Vec<_> = pool
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .filter(|s| !s.is_dead())
            .collect();
        for sandbox in &live {
            sandbox.kill();
        }
        Ok(live.len())
    }

    pub fn stats(&self, name: &str) -> Stats {
        self.pool(name)
            .map(|p| Stats {
                invocations: p.invocations.load(Ordering::SeqCst),
                deliveries: p.deliveries.load(Ordering::SeqCst),
                cold_starts: p.cold_starts.load(Ordering::SeqCst),
                sandboxes: p.alive.load(Ordering::SeqCst),
            })
            .unwrap_or_default()
    }
}

/// Lambda's back-off between attempts of an asynchronous event: a minute,
/// then two.
fn back_off(attempt: u32) -> Duration {
    Duration::from_secs(60 * u64::from(attempt))
}

async fn deliver(pool: Arc<Pool>, payload: Bytes, sqs: Option<aws_sdk_sqs::Client>) {
    let attempts = 1 + pool.spec.retries;
    let mut last = None;
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(back_off(attempt).mul_f64(pool.time_scale)).await;
        }
        pool.deliveries.fetch_add(1, Ordering::SeqCst);
        let outcome = pool.invoke(payload.clone()).await;
        if outcome.is_success() {
            return;
        }
        tracing::warn!(
            function = %pool.spec.name,
            attempt = attempt + 1,
            error = %outcome.error_payload(),
            "an asynchronous invocation failed"
        );
        last = Some(outcome);
    }
    let Some(last) = last else { return };
    match (&pool.spec.on_failure, sqs) {
        (Some(destination), Some(sqs)) if destination.kind == "SQS" => {
            let record = json!({
                "version": "1.0",
                "timestamp": chrono::Utc::now().to_rfc3339(),
                "requestContext": {
                    "functionArn": format!("{}:$LATEST", pool.spec.arn()),
                    "condition": "RetriesExhausted",
                    "approximateInvokeCount": attempts,
                },
                "requestPayload": serde_json::from_slice::<serde_json::Value>(&payload).unwrap_or_default(),
                "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                "responsePayload": last.error_payload(),
            });
            let queue = destination
                .arn
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .to_owned();
            let sent = async {
                let url = sqs
                    .get_queue_url()
                    .queue_name(&queue)
                    .send()
                    .await?
                    .queue_url;
                sqs.send_message()
                    .queue_url(url.unwrap_or_default())
                    .message_body(record.to_string())
                    .send()
                    .await?;
                Ok::<_, aws_sdk_sqs::Error>(())
            };
            if let Err(e) = sent.await {
                tracing::error!(function = %pool.spec.name, queue, error = %e, "could not send a failed event to its destination");
            }
        }
        (Some(destination), _) => {
            tracing::error!(function = %pool.spec.name, kind = %destination.kind, "the local platform sends failed events only to SQS destinations");
        }
        (None, _) => {
            tracing::error!(function = %pool.spec.name, attempts, "an asynchronous event failed every attempt and was dropped (no on-failure destination)");
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
