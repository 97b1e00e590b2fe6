//! Telling people about deploys: the environment's notification webhook
//! (Slack's incoming-webhook format, which Mattermost, Rocket.Chat and
//! others accept) hears that a deploy started and how it ended; a Slack
//! slash command's `response_url` also hears each batch. Best effort:
//! a short timeout, failures logged (without the URL, which is a secret),
//! never blocking or failing a deploy.

use std::time::Duration;

use serde_json::json;

use crate::rollout::DeployRecord;
use slipway_core::deploys::DeployStatus;

#[derive(Clone, Default)]
pub struct Notifier {
    http: Option<reqwest::Client>,
    webhook: Option<String>,
    response_url: Option<String>,
}

fn status_words(status: DeployStatus) -> &'static str {
    match status {
        DeployStatus::Queued => "is queued",
        DeployStatus::Running => "started",
        DeployStatus::Succeeded => "succeeded",
        DeployStatus::Failed => "failed",
        DeployStatus::RolledBack => "failed and was rolled back",
        DeployStatus::Cancelled => "was cancelled",
        DeployStatus::Unknown => "changed",
    }
}

fn headline(r: &DeployRecord) -> String {
    let from = r.from.map_or("nothing".to_owned(), |f| f.to_string());
    let mut line = format!(
        "Deploy {} of {}/{} {}: {from} → {} ({}, by {})",
        r.id,
        r.app,
        r.env,
        status_words(r.status),
        r.to,
        r.strategy,
        r.user
    );
    if let Some(cause) = &r.cause {
        line.push_str(&format!(": {cause}"));
    }
    line
}

/// What changed from `before` to `after` worth saying: (text, for the
/// webhook too).
pub fn news(before: Option<&DeployRecord>, after: &DeployRecord) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let was = before.map(|b| b.status);
    if was != Some(after.status) && matches!(after.status, DeployStatus::Running) {
        out.push((headline(after), true));
    }
    for batch in &after.batches {
        let done_before = before
            .and_then(|b| b.batches.iter().find(|x| x.number == batch.number))
            .is_some_and(|x| x.finished_at.is_some());
        if batch.finished_at.is_some() && !done_before {
            out.push((
                format!(
                    "batch {} ({} instances) {:?}",
                    batch.number,
                    batch.instances.len(),
                    batch.status
                )
                .to_lowercase(),
                false,
            ));
        }
    }
    if after.is_finished() && before.is_none_or(|b| !b.is_finished()) {
        out.push((headline(after), true));
    }
    out
}

impl Notifier {
    pub fn new(webhook: Option<String>, response_url: Option<String>) -> Self {
        let http = (webhook.is_some() || response_url.is_some()).then(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("an HTTP client")
        });
        Self {
            http,
            webhook,
            response_url,
        }
    }

    /// Posts what changed between two versions of a record.
    pub async fn record_changed(&self, before: Option<&DeployRecord>, after: &DeployRecord) {
        let Some(http) = &self.http else { return };
        for (text, for_webhook) in news(before, after) {
            if for_webhook && let Some(url) = &self.webhook {
                post(http, url, json!({ "text": text }), "webhook").await;
            }
            if let Some(url) = &self.response_url {
                let body = json!({ "response_type": "ephemeral", "replace_original": false, "text": text });
                post(http, url, body, "response_url").await;
            }
        }
    }
}

async fn post(http: &reqwest::Client, url: &str, body: serde_json::Value, what: &str) {
    match http.post(url).json(&body).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(
            to = what,
            status = r.status().as_u16(),
            "a notification was refused"
        ),
        Err(e) => {
            tracing::warn!(to = what, error = %e.without_url(), "a notification could not be sent")
        }
    }
}
