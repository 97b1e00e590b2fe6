//! Telling people about deploys: the environment's notification webhook
//! (Slack's incoming-webhook format, which Mattermost, Rocket.Chat and
//! others accept) hears that a deploy started and how it ended; a Slack
//! slash command's `response_url` also hears each batch. Best effort:
//! a short timeout, failures logged (without the URL, which is a secret),
//! never blocking or failing a deploy.
//!
//! A webhook is a URL anyone who may change settings chooses, posted to
//! from inside the control plane, where the Lambda runtime API and the
//! instance metadata live on internal addresses. So a notification goes
//! only to a public HTTPS endpoint: the host is resolved once, every
//! address checked (no loopback, private, link-local, shared, multicast or
//! unspecified one), the connection made to the address that was checked,
//! and redirects never followed. The local platform also allows its
//! stand-ins on this machine ([`WebhookPolicy::AlsoLoopback`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::json;

use crate::rollout::DeployRecord;
use slipway_core::deploys::DeployStatus;

/// Where Slack's response URLs start; a chat command's response URL must.
pub const SLACK_RESPONSE_PREFIX: &str = "https://hooks.slack.com/";

/// Where notifications may be sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WebhookPolicy {
    /// Public HTTPS endpoints only (AWS).
    #[default]
    Public,
    /// Those, and plain HTTP to this machine's loopback (the local
    /// platform's stand-ins for Slack).
    AlsoLoopback,
}

/// Why a notification URL is not posted to. Never carries the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRefused {
    #[error("not an https:// URL")]
    NotHttps,
    #[error("its host could not be resolved")]
    Unresolved,
    #[error("its host resolves to an internal address ({0})")]
    Internal(IpAddr),
}

/// Addresses nothing outside this network should reach a webhook at.
fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

impl WebhookPolicy {
    /// The URL and the one address to connect to for it, if this policy
    /// allows posting there.
    pub async fn check(self, raw: &str) -> Result<(reqwest::Url, SocketAddr), WebhookRefused> {
        let url = reqwest::Url::parse(raw).map_err(|_| WebhookRefused::NotHttps)?;
        let host = url.host_str().ok_or(WebhookRefused::NotHttps)?.to_owned();
        let loopback_allowed = self == Self::AlsoLoopback;
        match url.scheme() {
            "https" => {}
            "http" if loopback_allowed => {}
            _ => return Err(WebhookRefused::NotHttps),
        }
        let port = url
            .port_or_known_default()
            .ok_or(WebhookRefused::NotHttps)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| WebhookRefused::Unresolved)?
            .collect();
        let first = *addrs.first().ok_or(WebhookRefused::Unresolved)?;
        for addr in &addrs {
            let ip = addr.ip();
            let allowed_loopback = loopback_allowed && ip.is_loopback();
            if internal(ip) && !allowed_loopback {
                return Err(WebhookRefused::Internal(ip));
            }
            if url.scheme() == "http" && !ip.is_loopback() {
                return Err(WebhookRefused::NotHttps);
            }
        }
        Ok((url, first))
    }
}

#[derive(Clone, Default)]
pub struct Notifier {
    policy: WebhookPolicy,
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
    pub fn new(
        webhook: Option<String>,
        response_url: Option<String>,
        policy: WebhookPolicy,
    ) -> Self {
        Self {
            policy,
            webhook,
            response_url,
        }
    }

    /// Posts what changed between two versions of a record.
    pub async fn record_changed(&self, before: Option<&DeployRecord>, after: &DeployRecord) {
        if self.webhook.is_none() && self.response_url.is_none() {
            return;
        }
        for (text, for_webhook) in news(before, after) {
            if for_webhook && let Some(url) = &self.webhook {
                post(self.policy, url, json!({ "text": text }), "webhook").await;
            }
            if let Some(url) = &self.response_url {
                let body = json!({ "response_type": "ephemeral", "replace_original": false, "text": text });
                post(self.policy, url, body, "response_url").await;
            }
        }
    }
}

/// Posts `body` to `url` if `policy` allows it, to the address checked and
/// without following a redirect.
pub async fn post(policy: WebhookPolicy, url: &str, body: serde_json::Value, what: &str) -> bool {
    let (url, addr) = match policy.check(url).await {
        Ok(checked) => checked,
        Err(e) => {
            tracing::warn!(to = what, error = %e, "a notification was not sent");
            return false;
        }
    };
    let host = url.host_str().unwrap_or_default().to_owned();
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .resolve(&host, addr)
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            tracing::warn!(to = what, error = %e, "a notification could not be sent");
            return false;
        }
    };
    match http.post(url).json(&body).send().await {
        Ok(r) if r.status().is_success() => true,
        Ok(r) => {
            // A redirect is an answer like any other: never followed.
            tracing::warn!(
                to = what,
                status = r.status().as_u16(),
                "a notification was refused"
            );
            false
        }
        Err(e) => {
            tracing::warn!(to = what, error = %e.without_url(), "a notification could not be sent");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_webhook_to_an_internal_address_is_refused() {
        let public = WebhookPolicy::Public;
        for url in [
            "http://127.0.0.1:9001/",
            "https://127.0.0.1:9001/",
            "https://localhost/hook",
            "https://10.1.2.3/x",
            "https://172.16.0.1/x",
            "https://192.168.1.1/x",
            "https://169.254.169.254/latest/meta-data/",
            "https://100.64.0.1/x",
            "https://0.0.0.0/x",
            "https://[::1]/x",
            "https://[fd00::1]/x",
            "https://[fe80::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "ftp://hooks.example/x",
        ] {
            assert!(public.check(url).await.is_err(), "{url}");
        }
        // The local platform's stand-ins are on loopback, and only there.
        let local = WebhookPolicy::AlsoLoopback;
        assert!(local.check("http://127.0.0.1:9001/").await.is_ok());
        assert!(local.check("https://169.254.169.254/").await.is_err());
        assert!(local.check("http://10.0.0.1/").await.is_err());
        let (url, addr) = WebhookPolicy::Public
            .check("https://93.184.215.14/hook")
            .await
            .unwrap();
        assert_eq!(
            (url.as_str(), addr.port()),
            ("https://93.184.215.14/hook", 443)
        );
    }

    #[tokio::test]
    async fn a_redirect_from_a_webhook_is_never_followed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let followed = Arc::new(AtomicUsize::new(0));
        let seen = followed.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let answer = if request.starts_with("POST /hook ") {
                    format!(
                        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{port}/followed\r\nContent-Length: 0\r\n\r\n"
                    )
                } else {
                    seen.fetch_add(1, Ordering::SeqCst);
                    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_owned()
                };
                let _ = conn.write_all(answer.as_bytes()).await;
            }
        });
        let url = format!("http://127.0.0.1:{port}/hook");
        let sent = post(
            WebhookPolicy::AlsoLoopback,
            &url,
            json!({"text": "hi"}),
            "webhook",
        )
        .await;
        assert!(!sent, "a redirect is not a delivery");
        assert_eq!(
            followed.load(Ordering::SeqCst),
            0,
            "the redirect was followed"
        );
    }
}
