//! S3 `ObjectCreated` events for `<app>/<env>/uploads/…`: each becomes a
//! release, or a rejection, independently of the other records.
//!
//! Keys arrive URL-encoded, with `+` for a space, and are decoded here.
//! Keys outside an uploads folder, other buckets and other event types are
//! ignored. Events come straight from S3 or wrapped in SQS messages (the
//! local platform, or a queue between the bucket and the function).

use aws_lambda_events::event::s3::{S3Event, S3EventRecord};
use aws_lambda_events::event::sqs::SqsEvent;
use serde::Serialize;

use crate::jobs::Launcher;
use crate::rollout::{DeployError, Deploys, StartDeploy};
use crate::store::{ReleaseStore, UploadOutcome, parse_upload_key};
use slipway_core::errors::chain;
use slipway_core::names::{EnvRef, ReleaseId};

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum RecordOutcome {
    Created {
        key: String,
        release: ReleaseId,
        /// The deploy auto-deploy started, or why it did not.
        #[serde(skip_serializing_if = "Option::is_none")]
        deploy: Option<String>,
    },
    Duplicate {
        key: String,
        release: ReleaseId,
    },
    Rejected {
        key: String,
        reason: String,
    },
    Gone {
        key: String,
    },
    Ignored {
        key: String,
        why: &'static str,
    },
    /// A failure worth retrying (the record is delivered again).
    Failed {
        key: String,
    },
}

impl RecordOutcome {
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failed { .. })
    }
}

/// `+` is a space, then `%XX` escapes; the result must be UTF-8.
pub fn decode_key(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

async fn handle_record(
    store: &ReleaseStore,
    record: &S3EventRecord,
    deployer: Option<&dyn Launcher>,
) -> RecordOutcome {
    let raw = record.s3.object.key.clone().unwrap_or_default();
    let Some(key) = decode_key(&raw) else {
        return RecordOutcome::Ignored {
            key: raw,
            why: "key is not URL-encoded UTF-8",
        };
    };
    if !record
        .event_name
        .as_deref()
        .unwrap_or_default()
        .starts_with("ObjectCreated:")
    {
        return RecordOutcome::Ignored {
            key,
            why: "not an ObjectCreated event",
        };
    }
    if record.s3.bucket.name.as_deref() != Some(store.objects().bucket()) {
        return RecordOutcome::Ignored {
            key,
            why: "another bucket",
        };
    }
    let Some((env, _)) = parse_upload_key(&key) else {
        return RecordOutcome::Ignored {
            key,
            why: "not an upload",
        };
    };
    let uploader = match record.principal_id.principal_id.as_deref() {
        Some(p) if !p.is_empty() => format!("s3:{}", p.chars().take(128).collect::<String>()),
        _ => "s3".to_owned(),
    };
    match store.release_upload(&env, &key, &uploader).await {
        Ok(UploadOutcome::Created(m)) => {
            let deploy = match deployer {
                Some(launcher) => auto_deploy(store, launcher, &env, m.id, &uploader).await,
                None => None,
            };
            RecordOutcome::Created {
                key,
                release: m.id,
                deploy,
            }
        }
        Ok(UploadOutcome::Duplicate(id)) => RecordOutcome::Duplicate { key, release: id },
        Ok(UploadOutcome::Rejected { reason, .. }) => RecordOutcome::Rejected { key, reason },
        Ok(UploadOutcome::Gone) => RecordOutcome::Gone { key },
        Err(e) => {
            tracing::error!(key = %key, error = %chain(&e), "upload could not be processed");
            RecordOutcome::Failed { key }
        }
    }
}

/// With auto-deploy on for the environment, starts a deploy of a release
/// just made from an upload: a CI pipeline that uploads gets a deploy with
/// no API call. Never fails the upload: the release exists either way, and
/// the outcome says what became of the deploy.
async fn auto_deploy(
    store: &ReleaseStore,
    launcher: &dyn Launcher,
    env: &EnvRef,
    release: ReleaseId,
    uploader: &str,
) -> Option<String> {
    let deploys = Deploys::new(store.clone());
    let settings = match deploys.settings(env).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(env = %env, error = %e, "auto-deploy: unreadable settings");
            return Some("not started: the environment's settings are unreadable".into());
        }
    };
    if !settings.auto_deploy {
        return None;
    }
    let request = StartDeploy {
        release: Some(release),
        user: uploader.to_owned(),
        ..StartDeploy::default()
    };
    let record = match deploys
        .begin(env, request, None, chrono::Utc::now(), launcher)
        .await
    {
        Ok(begun) => begun.record,
        Err(e @ DeployError::Locked(_)) => {
            tracing::warn!(env = %env, %release, error = %e, "auto-deploy skipped");
            return Some(format!("not started: {e}"));
        }
        Err(DeployError::NotLaunched(_)) => {
            return Some("not started: the rollout could not be launched".into());
        }
        Err(e) => {
            tracing::error!(env = %env, %release, error = %chain(&e), "auto-deploy failed");
            return Some("not started: the deploy could not be queued".into());
        }
    };
    tracing::info!(env = %env, deploy = %record.id, %release, "auto-deploy started");
    Some(record.id.to_string())
}

/// Handles every record; one bad record never stops the others. With a
/// `deployer`, environments with auto-deploy on get a deploy of each new
/// release.
pub async fn handle_s3_event(
    store: &ReleaseStore,
    event: &S3Event,
    deployer: Option<&dyn Launcher>,
) -> Vec<RecordOutcome> {
    let mut outcomes = Vec::with_capacity(event.records.len());
    for record in &event.records {
        let outcome = handle_record(store, record, deployer).await;
        tracing::info!(outcome = ?outcome, "s3 record");
        outcomes.push(outcome);
    }
    outcomes
}

/// The Lambda partial-batch response: SQS redelivers only these messages.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct SqsBatchResponse {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<SqsItemFailure>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct SqsItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

/// Parses S3 notification records. Fields that say who made the request
/// are optional here: some S3-compatible stores (and the emulator) leave
/// them out, and a missing identity must not lose an upload.
pub fn parse_s3_event(mut value: serde_json::Value) -> Result<S3Event, serde_json::Error> {
    if let Some(records) = value
        .get_mut("Records")
        .and_then(serde_json::Value::as_array_mut)
    {
        for record in records
            .iter_mut()
            .filter_map(serde_json::Value::as_object_mut)
        {
            for field in ["userIdentity", "requestParameters"] {
                record.entry(field).or_insert_with(|| serde_json::json!({}));
            }
        }
    }
    serde_json::from_value(value)
}

/// The S3 notifications in one SQS message body: `Ok(None)` for a message
/// that carries none (the `s3:TestEvent` S3 sends first, say), an error for
/// one that claims to and cannot be read.
pub fn s3_event_in_message(body: &str) -> Result<Option<S3Event>, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(body)?;
    if !value
        .get("Records")
        .is_some_and(serde_json::Value::is_array)
    {
        return Ok(None);
    }
    parse_s3_event(value).map(Some)
}

/// Handles S3 notifications delivered through SQS.
pub async fn handle_sqs_event(
    store: &ReleaseStore,
    event: &SqsEvent,
    deployer: Option<&dyn Launcher>,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for message in &event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let s3 = match s3_event_in_message(message.body.as_deref().unwrap_or_default()) {
            Ok(Some(s3)) => s3,
            Ok(None) => {
                tracing::info!(message = %id, "ignored a message without S3 records");
                continue;
            }
            Err(e) => {
                // Not lost: SQS redelivers it, then moves it to the queue's
                // dead-letter queue where someone can look at it.
                tracing::error!(message = %id, error = %e, "unreadable S3 notification");
                response.batch_item_failures.push(SqsItemFailure {
                    item_identifier: id,
                });
                continue;
            }
        };
        if handle_s3_event(store, &s3, deployer)
            .await
            .iter()
            .any(RecordOutcome::is_failure)
        {
            response.batch_item_failures.push(SqsItemFailure {
                item_identifier: id,
            });
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_decoded_as_s3_encodes_them() {
        assert_eq!(
            decode_key("hello/prod/uploads/my+app.tar.gz").unwrap(),
            "hello/prod/uploads/my app.tar.gz"
        );
        assert_eq!(
            decode_key("a/b/uploads/caf%C3%A9%2B1.tar.gz").unwrap(),
            "a/b/uploads/café+1.tar.gz"
        );
        assert_eq!(decode_key("Happy%20Face.jpg").unwrap(), "Happy Face.jpg");
        assert_eq!(decode_key("bad%FF%FE"), None);
    }

    #[test]
    fn the_s3_test_event_and_garbage_are_not_s3_records() {
        let test_event = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-28T12:00:00.000Z","Bucket":"b"}"#;
        assert!(s3_event_in_message(test_event).unwrap().is_none());
        assert!(
            s3_event_in_message(r#"{"Records": "nope"}"#)
                .unwrap()
                .is_none()
        );
        assert!(s3_event_in_message("not json").is_err());
        assert!(s3_event_in_message(r#"{"Records": [{"s3": 1}]}"#).is_err());
    }

    #[test]
    fn a_record_without_identity_fields_still_parses() {
        let body = r#"{"Records": [{"eventTime": "2026-11-28T12:25:34.074Z", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b"}, "object": {"key": "a/b/uploads/x.tar.gz"}}}]}"#;
        let event = s3_event_in_message(body).unwrap().unwrap();
        assert_eq!(
            event.records[0].s3.object.key.as_deref(),
            Some("a/b/uploads/x.tar.gz")
        );
    }
}
