//! One Lambda binary, several event sources.
//!
//! The release function is invoked by API Gateway (HTTP API, payload v2),
//! by S3 notifications, and by SQS messages carrying them. The payload's
//! shape says which: `Records` with `aws:s3` or `aws:sqs` sources are
//! events; anything else is an HTTP request handed to the axum router
//! through `lambda_http`'s adapter, exactly as `lambda_http::run` would.

use aws_lambda_events::event::sqs::SqsEvent;
use axum::Router;
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Service};
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Value, json};

use slipway_control::events::{RecordOutcome, handle_s3_event, handle_sqs_event, parse_s3_event};
use slipway_control::store::ReleaseStore;

/// Which kind of event a payload is.
#[derive(Debug, PartialEq, Eq)]
pub enum EventKind {
    S3,
    Sqs,
    Http,
}

pub fn classify(payload: &Value) -> EventKind {
    let source = payload
        .get("Records")
        .and_then(|r| r.get(0))
        .and_then(|r| r.get("eventSource").or_else(|| r.get("EventSource")))
        .and_then(Value::as_str);
    match source {
        Some("aws:s3") => EventKind::S3,
        Some("aws:sqs") => EventKind::Sqs,
        _ => EventKind::Http,
    }
}

/// The release function's handler. With a `deployer` (the deploy
/// function's launcher), uploads to environments with auto-deploy on start
/// a deploy.
pub async fn release_handler(
    router: Router,
    store: ReleaseStore,
    deployer: Option<std::sync::Arc<dyn slipway_control::jobs::Launcher>>,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let LambdaEvent { payload, context } = event;
    match classify(&payload) {
        EventKind::S3 => {
            let event = parse_s3_event(payload)?;
            let outcomes = handle_s3_event(&store, &event, deployer.as_deref()).await;
            if outcomes.iter().any(RecordOutcome::is_failure) {
                // S3 invokes asynchronously: an error makes Lambda retry
                // the event, and records already done are recognised then.
                return Err(
                    "some uploads could not be processed; the event will be retried".into(),
                );
            }
            Ok(json!({ "records": outcomes }))
        }
        EventKind::Sqs => {
            let event: SqsEvent = serde_json::from_value(payload)?;
            Ok(serde_json::to_value(
                handle_sqs_event(&store, &event, deployer.as_deref()).await,
            )?)
        }
        EventKind::Http => http(router, payload, context).await,
    }
}

/// An API Gateway request through the axum router, as `lambda_http::run`
/// would do it.
async fn http(
    router: Router,
    payload: Value,
    context: lambda_runtime::Context,
) -> Result<Value, Error> {
    let request: LambdaRequest = serde_json::from_value(payload)?;
    let mut adapter = Adapter::from(router);
    let response = adapter.call(LambdaEvent::new(request, context)).await?;
    Ok(serde_json::to_value(response)?)
}

/// How long this invocation has left, from the runtime's deadline (absent
/// outside Lambda).
pub fn time_left(context: &lambda_runtime::Context) -> Option<std::time::Duration> {
    if context.deadline == 0 {
        return None;
    }
    let deadline = std::time::UNIX_EPOCH + std::time::Duration::from_millis(context.deadline);
    Some(
        deadline
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The handler of a function that launches itself: its own `run-deploy`
/// (or `run-cycle`) events go to the worker, with the time the invocation
/// has left; the schedule's `reconcile` event to the reconciler;
/// everything else is HTTP.
pub async fn worker_handler(
    router: Router,
    worker: std::sync::Arc<dyn slipway_control::workers::Worker>,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let LambdaEvent { payload, context } = event;
    if slipway_control::reconcile::is_reconcile_event(&payload) {
        let done = worker.reconcile().await?;
        return Ok(json!({ "reconciled": done }));
    }
    match slipway_control::jobs::RunJob::parse(worker.kind(), &payload) {
        Some(Ok((env, job))) => {
            let done = worker.run(env, job, time_left(&context)).await?;
            Ok(serde_json::to_value(done)?)
        }
        // Not retried: a malformed internal event stays malformed.
        Some(Err(e)) => Ok(json!({ "error": e.to_string() })),
        None => http(router, payload, context).await,
    }
}
