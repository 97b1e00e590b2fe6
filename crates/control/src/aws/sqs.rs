//! The on-failure queue of the deploy and cycle functions on SQS: Lambda
//! sends there each asynchronous invocation it gave up on (a JSON record
//! whose `requestPayload` is the job's event); the reconciler drains it.

use aws_sdk_sqs::error::DisplayErrorContext;
use futures::future::BoxFuture;

use crate::reconcile::FailedInvocations;

/// The queue `SLIPWAY_FAILURE_QUEUE` names (its URL, `!Ref` of the queue).
pub const FAILURE_QUEUE_VAR: &str = "SLIPWAY_FAILURE_QUEUE";

pub struct FailureQueue {
    client: slipway_core::on_first_use::OnFirstUse<aws_sdk_sqs::Client>,
    url: String,
}

impl FailureQueue {
    pub fn new(config: &aws_config::SdkConfig, url: impl Into<String>) -> Self {
        Self {
            client: slipway_core::on_first_use::OnFirstUse::new(config, aws_sdk_sqs::Client::new),
            url: url.into(),
        }
    }
}

impl FailedInvocations for FailureQueue {
    fn receive(&self) -> BoxFuture<'_, Result<Vec<(String, serde_json::Value)>, String>> {
        Box::pin(async move {
            let out = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .map_err(|e| DisplayErrorContext(e).to_string())?;
            Ok(out
                .messages()
                .iter()
                .filter_map(|m| {
                    let handle = m.receipt_handle()?.to_owned();
                    // Not a destination record: still deleted, never acted on.
                    let record: serde_json::Value =
                        serde_json::from_str(m.body().unwrap_or_default()).unwrap_or_default();
                    Some((handle, record["requestPayload"].clone()))
                })
                .collect())
        })
    }

    fn delete(&self, handle: String) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.client
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(handle)
                .send()
                .await
                .map(drop)
                .map_err(|e| DisplayErrorContext(e).to_string())
        })
    }
}
