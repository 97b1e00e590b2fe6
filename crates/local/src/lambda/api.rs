//! Lambda's `Invoke` API (`POST /2015-03-31/functions/{name}/invocations`)
//! for the SDK: the control plane's own calls (a worker invoking itself, a
//! function starting a deploy) reach the local Lambda through
//! `AWS_ENDPOINT_URL_LAMBDA`. `Event` is queued (202), `RequestResponse`
//! runs and answers the function's payload (with `X-Amz-Function-Error`
//! when it failed), `DryRun` only checks. Every call is recorded with its
//! caller for the IAM check, as `lambda:InvokeFunction` on the function.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::{InvokeError, LocalLambda, Outcome};
use crate::iam::{Call, CallLog, Check};

#[derive(Clone)]
struct Api {
    lambda: LocalLambda,
    calls: Arc<CallLog>,
}

pub fn routes(lambda: LocalLambda, calls: Arc<CallLog>) -> Router {
    Router::new()
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .with_state(Api { lambda, calls })
}

fn error(status: StatusCode, kind: &str, message: String) -> Response {
    (
        status,
        [("x-amzn-errortype", kind)],
        axum::Json(serde_json::json!({"Type": "User", "message": message})),
    )
        .into_response()
}

async fn invoke(
    State(api): State<Api>,
    Path(name): Path<String>,
    headers: HeaderMap,
    payload: Bytes,
) -> Response {
    let key = crate::iam::access_key(&headers);
    let resource = api
        .lambda
        .spec(&name)
        .map(|s| s.arn())
        .unwrap_or_else(|| crate::template::function_arn(&name));
    let kind = headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse")
        .to_owned();
    let answer = answer(&api.lambda, &name, &kind, payload).await;
    api.calls.record(&Call {
        key,
        service: "lambda".into(),
        operation: "Invoke".into(),
        status: Some(answer.status().as_u16()),
        checks: vec![Check {
            action: "lambda:InvokeFunction".into(),
            resource,
            context: Default::default(),
        }],
    });
    answer
}

async fn answer(lambda: &LocalLambda, name: &str, kind: &str, payload: Bytes) -> Response {
    let refused = |e: InvokeError| match e {
        InvokeError::NotFound(_) => error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            e.to_string(),
        ),
        InvokeError::TooLarge(_) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            e.to_string(),
        ),
    };
    match kind {
        "Event" => match lambda.invoke_event(name, payload) {
            Ok(()) => StatusCode::ACCEPTED.into_response(),
            Err(e) => refused(e),
        },
        "DryRun" => match lambda.spec(name) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => refused(InvokeError::NotFound(crate::template::function_arn(name))),
        },
        "RequestResponse" => match lambda.invoke(name, payload).await {
            Ok(Outcome::Response(body)) => (
                StatusCode::OK,
                [("x-amz-executed-version", "$LATEST")],
                body,
            )
                .into_response(),
            Ok(failed) => (
                StatusCode::OK,
                [
                    ("x-amz-executed-version", "$LATEST"),
                    ("x-amz-function-error", "Unhandled"),
                ],
                axum::Json(failed.error_payload()),
            )
                .into_response(),
            Err(e) => refused(e),
        },
        other => error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            format!("invalid invocation type {other:?}"),
        ),
    }
}
