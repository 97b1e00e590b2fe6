//! The SSM adapter against mocked SSM: every terminal status, a throttled
//! poll, batching by 50, and an instance that never answers.

use aws_sdk_ssm::operation::list_command_invocations::{
    ListCommandInvocationsError, ListCommandInvocationsOutput,
};
use aws_sdk_ssm::operation::send_command::SendCommandOutput;
use aws_sdk_ssm::types::{Command, CommandInvocation, CommandInvocationStatus, CommandPlugin};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use aws_smithy_types::error::ErrorMetadata;

use super::*;
use crate::runner::never;

fn ids(n: usize) -> Vec<InstanceId> {
    (0..n)
        .map(|i| InstanceId::parse(&format!("i-{i:05}")).unwrap())
        .collect()
}

fn fast() -> Polling {
    Polling {
        first: Duration::from_millis(1),
        max: Duration::from_millis(5),
        fast_for: Duration::from_secs(5),
        slow_min: Duration::from_millis(1),
    }
}

/// The output bucket, never read unless a test says so.
fn output() -> S3Objects {
    S3Objects::new(mock_client!(aws_sdk_s3, []), "bucket")
}

fn invocation(
    id: &InstanceId,
    status: CommandInvocationStatus,
    details: &str,
    code: i32,
) -> CommandInvocation {
    CommandInvocation::builder()
        .instance_id(id.as_str())
        .status(status)
        .status_details(details)
        .standard_output_url(format!(
            "https://s3.eu-west-1.amazonaws.com/bucket/out/{id}/stdout"
        ))
        .command_plugins(
            CommandPlugin::builder()
                .output("at=fetch\nat=done release=r7\n")
                .response_code(code)
                .build(),
        )
        .build()
}

fn sent(id: &'static str) -> SendCommandOutput {
    SendCommandOutput::builder()
        .command(Command::builder().command_id(id).build())
        .build()
}

fn deploy() -> AgentCommand {
    AgentCommand::Deploy {
        release_url: "s3://bucket/hello/prod/releases/r7".into(),
    }
}

#[tokio::test]
async fn every_terminal_status_is_mapped_after_polling_through_in_progress() {
    let targets = ids(6);
    let t = targets.clone();
    let send = mock!(aws_sdk_ssm::Client::send_command)
        .match_requests(|r| {
            r.document_name() == Some("Slipway-Deploy")
                && r.instance_ids().len() == 6
                && r.parameters().is_some_and(|p| {
                    p["Action"] == ["deploy"]
                        && p["ReleaseUrl"] == ["s3://bucket/hello/prod/releases/r7"]
                })
                && r.output_s3_key_prefix() == Some("hello/prod/ssm-output/d1/")
        })
        .then_output(|| sent("cmd-1"));
    let t1 = t.clone();
    let running = mock!(aws_sdk_ssm::Client::list_command_invocations)
        .match_requests(|r| r.details() == Some(true) && r.command_id() == Some("cmd-1"))
        .then_output(move || {
            ListCommandInvocationsOutput::builder()
                .set_command_invocations(Some(
                    t1.iter()
                        .map(|i| {
                            invocation(i, CommandInvocationStatus::InProgress, "InProgress", -1)
                        })
                        .collect(),
                ))
                .build()
        });
    let t2 = t.clone();
    let finished = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(move || {
        use CommandInvocationStatus as S;
        let cases = [
            (S::Success, "Success", 0),
            (S::Failed, "Failed", 1),
            (S::TimedOut, "ExecutionTimedOut", -1),
            (S::Cancelled, "Cancelled", -1),
            (S::Failed, "Undeliverable", -1),
            (S::TimedOut, "DeliveryTimedOut", -1),
        ];
        ListCommandInvocationsOutput::builder()
            .set_command_invocations(Some(
                t2.iter()
                    .zip(cases)
                    .map(|(i, (s, d, c))| invocation(i, s, d, c))
                    .collect(),
            ))
            .build()
    });
    let client = mock_client!(
        aws_sdk_ssm,
        RuleMode::Sequential,
        [&send, &running, &finished]
    );
    let runner = SsmRunner::new(
        client,
        "Slipway-Deploy",
        output(),
        "hello/prod/ssm-output/d1/",
    )
    .with_polling(fast());

    let results = runner
        .run(
            &targets,
            &deploy(),
            Duration::from_secs(600),
            never(),
            &Gone::default(),
        )
        .await
        .unwrap();

    let got: Vec<(RunStatus, Option<i32>)> =
        results.iter().map(|r| (r.status, r.exit_code)).collect();
    assert_eq!(
        got,
        [
            (RunStatus::Success, Some(0)),
            (RunStatus::Failed, Some(1)),
            (RunStatus::TimedOut, None),
            (RunStatus::Cancelled, None),
            (RunStatus::Undeliverable, None),
            (RunStatus::DeliveryTimedOut, None),
        ]
    );
    assert!(results[0].succeeded() && !results[1].succeeded());
    assert_eq!(results[0].output_tail, "at=fetch\nat=done release=r7");
    assert_eq!(results[0].output_key.as_deref(), Some("out/i-00000/stdout"));
    assert_eq!(running.num_calls(), 1);
}

#[tokio::test]
async fn a_throttled_poll_waits_and_tries_again() {
    let targets = ids(1);
    let t = targets.clone();
    let send = mock!(aws_sdk_ssm::Client::send_command).then_output(|| sent("cmd-2"));
    let throttled = mock!(aws_sdk_ssm::Client::list_command_invocations).then_error(|| {
        ListCommandInvocationsError::generic(
            ErrorMetadata::builder()
                .code("ThrottlingException")
                .message("Rate exceeded")
                .build(),
        )
    });
    let ok = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(move || {
        ListCommandInvocationsOutput::builder()
            .command_invocations(invocation(
                &t[0],
                CommandInvocationStatus::Success,
                "Success",
                0,
            ))
            .build()
    });
    let client = mock_client!(aws_sdk_ssm, RuleMode::Sequential, [&send, &throttled, &ok]);
    let runner = SsmRunner::new(client, "Slipway-Deploy", output(), "p/").with_polling(fast());

    let results = runner
        .run(
            &targets,
            &deploy(),
            Duration::from_secs(600),
            never(),
            &Gone::default(),
        )
        .await
        .unwrap();

    assert_eq!(results[0].status, RunStatus::Success);
    // The SDK retries a throttled call itself first; when it gives up, the
    // poll loop waits and polls again instead of failing the deploy.
    assert!(throttled.num_calls() >= 1);
    assert_eq!(ok.num_calls(), 1);
}

#[tokio::test]
async fn a_hundred_and_twenty_instances_go_in_three_commands_of_at_most_fifty() {
    let targets = ids(120);
    let send = mock!(aws_sdk_ssm::Client::send_command)
        .match_requests(|r| r.instance_ids().len() <= MAX_TARGETS)
        .then_output(|| sent("cmd-x"));
    let t = targets.clone();
    let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(move || {
        ListCommandInvocationsOutput::builder()
            .set_command_invocations(Some(
                t.iter()
                    .map(|i| invocation(i, CommandInvocationStatus::Success, "Success", 0))
                    .collect(),
            ))
            .build()
    });
    let client = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send, &list]);
    let runner = SsmRunner::new(client, "Slipway-Deploy", output(), "p/").with_polling(fast());

    let results = runner
        .run(
            &targets,
            &deploy(),
            Duration::from_secs(600),
            never(),
            &Gone::default(),
        )
        .await
        .unwrap();

    assert_eq!(send.num_calls(), 3);
    assert_eq!(results.len(), 120);
    assert_eq!(
        results.iter().map(|r| &r.instance).collect::<Vec<_>>(),
        targets.iter().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_instance_that_never_finishes_is_cancelled_and_reported_timed_out() {
    let targets = ids(1);
    let t = targets.clone();
    let send = mock!(aws_sdk_ssm::Client::send_command).then_output(|| sent("cmd-3"));
    let pending = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(move || {
        ListCommandInvocationsOutput::builder()
            .command_invocations(invocation(
                &t[0],
                CommandInvocationStatus::Pending,
                "Pending",
                -1,
            ))
            .build()
    });
    let cancel = mock!(aws_sdk_ssm::Client::cancel_command)
        .match_requests(|r| r.command_id() == Some("cmd-3"))
        .then_output(|| {
            aws_sdk_ssm::operation::cancel_command::CancelCommandOutput::builder().build()
        });
    let client = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send, &pending, &cancel]);
    let runner = SsmRunner::new(client, "Slipway-Deploy", output(), "p/").with_polling(fast());

    let results = runner
        .run(
            &targets,
            &deploy(),
            Duration::from_millis(50),
            never(),
            &Gone::default(),
        )
        .await
        .unwrap();

    assert_eq!(results[0].status, RunStatus::TimedOut);
    assert_eq!(cancel.num_calls(), 1);
}

#[tokio::test]
async fn a_cancelled_deploy_cancels_the_running_command_and_reports_how_it_ended() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let targets = ids(2);
    let t = targets.clone();
    let cancelled = Arc::new(AtomicBool::new(false));
    let seen = cancelled.clone();
    let send = mock!(aws_sdk_ssm::Client::send_command).then_output(|| sent("cmd-4"));
    // In progress until the command is cancelled, then Cancelled.
    let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(move || {
        let status = if seen.load(Ordering::SeqCst) {
            CommandInvocationStatus::Cancelled
        } else {
            CommandInvocationStatus::InProgress
        };
        ListCommandInvocationsOutput::builder()
            .set_command_invocations(Some(
                t.iter()
                    .map(|i| invocation(i, status.clone(), status.as_str(), -1))
                    .collect(),
            ))
            .build()
    });
    let flag = cancelled.clone();
    let cancel = mock!(aws_sdk_ssm::Client::cancel_command)
        .match_requests(|r| r.command_id() == Some("cmd-4") && r.instance_ids().len() == 2)
        .then_output(move || {
            flag.store(true, Ordering::SeqCst);
            aws_sdk_ssm::operation::cancel_command::CancelCommandOutput::builder().build()
        });
    let client = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send, &list, &cancel]);
    let runner = SsmRunner::new(client, "Slipway-Deploy", output(), "p/").with_polling(fast());

    let results = runner
        .run(
            &targets,
            &deploy(),
            Duration::from_secs(600),
            Box::pin(tokio::time::sleep(Duration::from_millis(30))),
            &Gone::default(),
        )
        .await
        .unwrap();

    assert_eq!(cancel.num_calls(), 1);
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r.status == RunStatus::Cancelled));
    assert!(list.num_calls() >= 2);
}

#[test]
fn polling_backs_off_and_slows_down_after_the_first_seconds() {
    let p = Polling::default();
    assert_eq!(
        p.next(Duration::from_millis(500), Duration::from_secs(1)),
        Duration::from_secs(1)
    );
    assert_eq!(
        p.next(Duration::from_millis(500), Duration::from_secs(11)),
        Duration::from_secs(2)
    );
    assert_eq!(
        p.next(Duration::from_secs(8), Duration::from_secs(30)),
        Duration::from_secs(10)
    );
}

#[tokio::test]
async fn a_truncated_inline_output_is_read_whole_from_the_bucket_for_its_last_lines() {
    let targets = [InstanceId::parse("i-00000").unwrap()];
    let send = mock!(aws_sdk_ssm::Client::send_command).then_output(|| sent("c1"));
    let long = format!("{}\n---Output truncated---", "at=build line\n".repeat(200));
    let finished = mock!(aws_sdk_ssm::Client::list_command_invocations).then_output(move || {
        ListCommandInvocationsOutput::builder()
            .command_invocations(
                CommandInvocation::builder()
                    .instance_id("i-00000")
                    .status(CommandInvocationStatus::Success)
                    .status_details("Success")
                    .command_plugins(
                        CommandPlugin::builder()
                            .output(long.clone())
                            .response_code(0)
                            .standard_output_url(
                                "https://s3.eu-west-1.amazonaws.com/bucket/p/c1/i-00000/awsrunShellScript/agent/stdout",
                            )
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let full = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|r| {
            r.bucket() == Some("bucket")
                && r.key() == Some("p/c1/i-00000/awsrunShellScript/agent/stdout")
        })
        .then_output(|| {
            aws_sdk_s3::operation::get_object::GetObjectOutput::builder()
                .body(aws_sdk_s3::primitives::ByteStream::from_static(
                    b"at=build line\nat=build line\nat=done release=r7 ms=900\n",
                ))
                .e_tag("\"e\"")
                .build()
        });
    let client = mock_client!(aws_sdk_ssm, RuleMode::Sequential, [&send, &finished]);
    let output = S3Objects::new(mock_client!(aws_sdk_s3, [&full]), "bucket");
    let runner = SsmRunner::new(client, "Slipway-Deploy", output, "p/").with_polling(fast());

    let results = runner
        .run(
            &targets,
            &deploy(),
            Duration::from_secs(600),
            never(),
            &Gone::default(),
        )
        .await
        .unwrap();

    assert!(
        results[0]
            .output_tail
            .ends_with("at=done release=r7 ms=900"),
        "{}",
        results[0].output_tail
    );
    assert_eq!(full.num_calls(), 1);
}
