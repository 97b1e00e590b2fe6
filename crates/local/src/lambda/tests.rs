//! The local Lambda with a stand-in function: a small Python runtime that
//! speaks the Runtime API (next, response, error) and does what each
//! payload asks (sleep, fail, exit), answering with its pid, its
//! environment and the deadline it was given.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::template::FunctionSpec;

const RUNTIME: &str = r#"
import json, os, sys, time, urllib.request
base = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
def post(path, value):
    request = urllib.request.Request(base + path, data=json.dumps(value).encode(), method="POST")
    urllib.request.urlopen(request).read()
if os.environ.get("STAND_IN_INIT") == "exit":
    print("SETTING_X is not set", file=sys.stderr)
    sys.exit(3)
if os.environ.get("STAND_IN_INIT") == "report":
    post("/init/error", {"errorType": "Runtime.Config", "errorMessage": "SETTING_Y is not set"})
    sys.exit(1)
while True:
    with urllib.request.urlopen(base + "/invocation/next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        deadline = int(r.headers["Lambda-Runtime-Deadline-Ms"])
        arn = r.headers["Lambda-Runtime-Invoked-Function-Arn"]
        body = json.loads(r.read() or b"null") or {}
    what = body.get("do")
    if what == "sleep":
        time.sleep(body["seconds"])
    if what == "fail":
        post("/invocation/" + rid + "/error", {"errorType": "Boom", "errorMessage": "asked to fail"})
        continue
    if what == "exit":
        os._exit(1)
    post("/invocation/" + rid + "/response", {
        "pid": os.getpid(),
        "left_ms": deadline - int(time.time() * 1000),
        "arn": arn,
        "env": dict(os.environ),
    })
"#;

struct StandIn {
    _dir: tempfile::TempDir,
    lambda: LocalLambda,
}

fn spec(timeout: Duration, retries: u32) -> FunctionSpec {
    FunctionSpec {
        logical_id: "StandInFunction".into(),
        name: "stand-in".into(),
        binary: "stand-in".into(),
        timeout,
        memory_mb: 128,
        environment: BTreeMap::new(),
        json_logs: false,
        routes: vec![],
        s3: vec![],
        schedules: vec![],
        policies: vec![],
        on_failure: None,
        retries,
    }
}

fn stand_in(spec: FunctionSpec, init: Option<&str>, time_scale: f64) -> StandIn {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let binary: PathBuf = dir.path().join("bootstrap");
    std::fs::write(&binary, format!("#!/usr/bin/python3\n{RUNTIME}")).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut environment = BTreeMap::from([
        ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
        ("SETTING".to_owned(), "from the template".to_owned()),
    ]);
    if let Some(init) = init {
        environment.insert("STAND_IN_INIT".into(), init.into());
    }
    let lambda = LocalLambda::new(
        vec![FunctionSetup {
            spec,
            binary,
            environment,
            time_scale: None,
        }],
        &dir.path().join("logs"),
        time_scale,
        None,
    )
    .unwrap();
    StandIn { _dir: dir, lambda }
}

async fn call(lambda: &LocalLambda, payload: serde_json::Value) -> Outcome {
    lambda
        .invoke("stand-in", Bytes::from(payload.to_string()))
        .await
        .unwrap()
}

fn answer(outcome: &Outcome) -> serde_json::Value {
    match outcome {
        Outcome::Response(body) => serde_json::from_slice(body).unwrap(),
        other => panic!("the invocation failed: {other:?}"),
    }
}

#[tokio::test]
async fn a_warm_sandbox_takes_the_next_invocation_and_concurrent_ones_start_more() {
    let s = stand_in(spec(Duration::from_secs(5), 2), None, 1.0);
    let first = answer(&call(&s.lambda, json!({})).await);
    let again = answer(&call(&s.lambda, json!({})).await);
    assert_eq!(
        first["pid"], again["pid"],
        "the second invocation found the sandbox warm"
    );
    assert_eq!(s.lambda.stats("stand-in").cold_starts, 1);
    let slow = json!({"do": "sleep", "seconds": 0.5});
    let (a, b) = tokio::join!(call(&s.lambda, slow.clone()), call(&s.lambda, slow));
    assert_ne!(
        answer(&a)["pid"],
        answer(&b)["pid"],
        "one process per concurrent invocation"
    );
    assert_eq!(s.lambda.stats("stand-in").cold_starts, 2);
    assert_eq!(s.lambda.stats("stand-in").sandboxes, 2);
}

#[tokio::test]
async fn a_sandbox_gets_the_environment_it_was_given_the_deadline_and_the_arn() {
    let s = stand_in(spec(Duration::from_secs(20), 2), None, 0.5);
    let a = answer(&call(&s.lambda, json!({})).await);
    let env = a["env"].as_object().unwrap();
    assert_eq!(env["SETTING"], "from the template");
    let extra: Vec<&String> = env
        .keys()
        .filter(|k| {
            ![
                "PATH",
                "SETTING",
                "AWS_LAMBDA_RUNTIME_API",
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "LC_CTYPE",
            ]
            .contains(&k.as_str())
        })
        .collect();
    assert!(extra.is_empty(), "nothing else is added: {extra:?}");
    let left = a["left_ms"].as_i64().unwrap();
    assert!(
        (8_000..=10_000).contains(&left),
        "the deadline is the scaled timeout: {left} ms"
    );
    assert_eq!(
        a["arn"],
        "arn:aws:lambda:us-east-1:123456789012:function:stand-in"
    );
}

#[tokio::test]
async fn an_invocation_past_its_deadline_is_killed_and_the_next_starts_cold() {
    let s = stand_in(spec(Duration::from_secs(1), 2), None, 1.0);
    let before = answer(&call(&s.lambda, json!({})).await)["pid"].clone();
    let started = Instant::now();
    let outcome = call(&s.lambda, json!({"do": "sleep", "seconds": 30})).await;
    assert!(matches!(outcome, Outcome::TimedOut(_)), "{outcome:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "ended at the deadline"
    );
    let after = answer(&call(&s.lambda, json!({})).await)["pid"].clone();
    assert_ne!(before, after, "the killed sandbox was not reused");
    let pid: i32 = before.as_i64().unwrap() as i32;
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ");
    assert!(!alive, "the process is gone");
}

#[tokio::test]
async fn a_reported_error_and_a_crash_fail_the_invocation() {
    let s = stand_in(spec(Duration::from_secs(5), 2), None, 1.0);
    let failed = call(&s.lambda, json!({"do": "fail"})).await;
    assert!(
        matches!(&failed, Outcome::Error { kind, message } if kind == "Boom" && message == "asked to fail"),
        "{failed:?}"
    );
    let crashed = call(&s.lambda, json!({"do": "exit"})).await;
    assert!(matches!(crashed, Outcome::Exited(_)), "{crashed:?}");
    answer(&call(&s.lambda, json!({})).await);
}

#[tokio::test]
async fn a_function_that_cannot_initialise_fails_the_warm_up_with_what_it_said() {
    let exits = stand_in(spec(Duration::from_secs(5), 2), Some("exit"), 1.0);
    let err = exits.lambda.warm_up().await.unwrap_err().to_string();
    assert!(
        err.contains("StandInFunction") && err.contains("SETTING_X is not set"),
        "{err}"
    );
    let reports = stand_in(spec(Duration::from_secs(5), 2), Some("report"), 1.0);
    let err = reports.lambda.warm_up().await.unwrap_err().to_string();
    assert!(err.contains("SETTING_Y is not set"), "{err}");
    let outcome = call(&reports.lambda, json!({})).await;
    assert!(matches!(outcome, Outcome::InitFailed(_)), "{outcome:?}");
}

async fn settle(lambda: &LocalLambda, deliveries: usize, within: Duration) -> Stats {
    let started = Instant::now();
    loop {
        let stats = lambda.stats("stand-in");
        if stats.deliveries >= deliveries || started.elapsed() > within {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_failed_event_is_retried_twice_with_back_off_and_no_more() {
    // Lambda's back-off, a minute then two, scaled to 0.6 s and 1.2 s.
    let s = stand_in(spec(Duration::from_secs(5), 2), None, 0.01);
    let started = Instant::now();
    s.lambda
        .invoke_event("stand-in", Bytes::from(json!({"do": "fail"}).to_string()))
        .unwrap();
    let stats = settle(&s.lambda, 3, Duration::from_secs(10)).await;
    assert_eq!(stats.deliveries, 3);
    assert!(
        started.elapsed() >= Duration::from_millis(1700),
        "backed off"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        s.lambda.stats("stand-in").deliveries,
        3,
        "two retries, then given up"
    );
}

#[tokio::test]
async fn an_event_can_be_delivered_twice_on_purpose_and_a_good_one_once() {
    let s = stand_in(spec(Duration::from_secs(5), 2), None, 1.0);
    s.lambda
        .invoke_event("stand-in", Bytes::from("{}"))
        .unwrap();
    assert_eq!(
        settle(&s.lambda, 1, Duration::from_secs(5))
            .await
            .deliveries,
        1
    );
    s.lambda.deliver_next_event_twice("stand-in").unwrap();
    s.lambda
        .invoke_event("stand-in", Bytes::from("{}"))
        .unwrap();
    assert_eq!(
        settle(&s.lambda, 3, Duration::from_secs(5))
            .await
            .deliveries,
        3
    );
    assert!(matches!(
        s.lambda.invoke_event("nobody", Bytes::from("{}")),
        Err(InvokeError::NotFound(_))
    ));
}

#[tokio::test]
async fn an_event_that_failed_every_attempt_goes_to_its_on_failure_queue_with_why() {
    use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlOutput;
    use aws_sdk_sqs::operation::send_message::SendMessageOutput;
    use aws_smithy_mocks::{mock, mock_client};
    let url = mock!(aws_sdk_sqs::Client::get_queue_url)
        .match_requests(|r| r.queue_name() == Some("failures"))
        .then_output(|| {
            GetQueueUrlOutput::builder()
                .queue_url("https://sqs/123456789012/failures")
                .build()
        });
    let sent = mock!(aws_sdk_sqs::Client::send_message)
        .match_requests(|r| {
            let record: serde_json::Value =
                serde_json::from_str(r.message_body().unwrap_or_default()).unwrap();
            r.queue_url() == Some("https://sqs/123456789012/failures")
                && record["requestContext"]["condition"] == "RetriesExhausted"
                && record["requestContext"]["approximateInvokeCount"] == 2
                && record["requestPayload"]["do"] == "fail"
                && record["responsePayload"]["errorType"] == "Boom"
        })
        .then_output(|| SendMessageOutput::builder().build());
    let sqs = mock_client!(aws_sdk_sqs, [&url, &sent]);
    let mut spec = spec(Duration::from_secs(5), 1);
    spec.on_failure = Some(crate::template::Destination {
        kind: "SQS".into(),
        arn: "arn:aws:sqs:us-east-1:123456789012:failures".into(),
    });
    let s = stand_in(spec, None, 0.01);
    let lambda = LocalLambda {
        sqs: Some(sqs),
        ..s.lambda.clone()
    };
    lambda
        .invoke_event("stand-in", Bytes::from(json!({"do": "fail"}).to_string()))
        .unwrap();
    let started = Instant::now();
    while sent.num_calls() == 0 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        lambda.stats("stand-in").deliveries,
        2,
        "one retry, as configured"
    );
    assert_eq!(sent.num_calls(), 1, "sent once to its destination");
}

#[tokio::test]
async fn a_measured_cold_start_times_exec_to_the_first_poll_of_either_binary_and_is_no_invocation()
{
    use std::os::unix::fs::PermissionsExt;
    let s = stand_in(spec(Duration::from_secs(5), 2), None, 1.0);
    let own = s.lambda.cold_start("stand-in", None).await.unwrap();
    // Another program with the function's environment: one that sleeps
    // 300 ms before its first poll is measured as that much slower.
    let slow = s._dir.path().join("slow");
    std::fs::write(
        &slow,
        format!("#!/usr/bin/python3\nimport time\ntime.sleep(0.3)\n{RUNTIME}"),
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    let other = s.lambda.cold_start("stand-in", Some(&slow)).await.unwrap();
    assert!(
        own > Duration::ZERO && own < Duration::from_secs(5),
        "{own:?}"
    );
    assert!(
        other >= Duration::from_millis(300) && other > own,
        "{other:?} vs {own:?}"
    );
    assert_eq!(s.lambda.stats("stand-in"), Stats::default());
    // One that never gets ready says why.
    let broken = s._dir.path().join("broken");
    std::fs::write(
        &broken,
        "#!/bin/sh\necho SETTING_Z is not set >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = s
        .lambda
        .cold_start("stand-in", Some(&broken))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("SETTING_Z"), "{err}");
}

#[tokio::test]
async fn killing_a_functions_sandboxes_fails_what_they_run_and_leaves_another_platforms_alone() {
    // Both run /usr/bin/python3: killing by program would take both.
    let ours = stand_in(spec(Duration::from_secs(20), 0), None, 1.0);
    let theirs = stand_in(spec(Duration::from_secs(20), 0), None, 1.0);
    let slow = json!({"do": "sleep", "seconds": 2});
    let mine = tokio::spawn({
        let lambda = ours.lambda.clone();
        let slow = slow.clone();
        async move { call(&lambda, slow).await }
    });
    let other = tokio::spawn({
        let lambda = theirs.lambda.clone();
        async move { call(&lambda, slow).await }
    });
    let started = Instant::now();
    while ours.lambda.stats("stand-in").cold_starts == 0
        || theirs.lambda.stats("stand-in").cold_starts == 0
    {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ours.lambda.kill_sandboxes("stand-in").unwrap(), 1);
    let mine = mine.await.unwrap();
    assert!(matches!(mine, Outcome::Exited(_)), "{mine:?}");
    answer(&other.await.unwrap());
    assert_eq!(ours.lambda.kill_sandboxes("stand-in").unwrap(), 0);
    assert!(ours.lambda.kill_sandboxes("no-such").is_err());
}
