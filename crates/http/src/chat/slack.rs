//! Slack's side of a slash command: the request signature, checked before
//! anything else, and the form it posts.
//!
//! Slack signs `v0:<timestamp>:<raw body>` with HMAC-SHA256 and the app's
//! signing secret, sends `v0=<hex>` in `X-Slack-Signature` and the
//! timestamp in `X-Slack-Request-Timestamp`. A request older than five
//! minutes is refused (a captured request cannot be replayed later, and a
//! replay with a new timestamp does not match its signature); the
//! comparison is constant-time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How old a signed request may be.
pub const MAX_AGE_SECS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlackAuthError {
    #[error("the request is not signed")]
    Unsigned,
    #[error("the request's timestamp is too old or too far ahead")]
    Stale,
    #[error("the request's signature does not match")]
    BadSignature,
}

/// Checks a request's signature at `now` (seconds since the epoch).
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SlackAuthError> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(SlackAuthError::Unsigned);
    };
    let ts: i64 = timestamp.parse().map_err(|_| SlackAuthError::Unsigned)?;
    if (now - ts).abs() > MAX_AGE_SECS {
        return Err(SlackAuthError::Stale);
    }
    let given = signature
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SlackAuthError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| SlackAuthError::BadSignature)
}

/// The signature Slack would send for `body` at `timestamp` (for local
/// tools and tests that stand in for Slack).
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// The fields of a slash command this service uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlashCommand {
    pub user_id: String,
    pub user_name: String,
    pub team_id: String,
    pub text: String,
    pub response_url: String,
}

impl SlashCommand {
    /// From the form-encoded body Slack posts.
    pub fn parse(body: &[u8]) -> Self {
        let mut command = Self::default();
        for (k, v) in form_urlencoded::parse(body) {
            let v = v.into_owned();
            match k.as_ref() {
                "user_id" => command.user_id = v,
                "user_name" => command.user_name = v,
                "team_id" => command.team_id = v,
                "text" => command.text = v,
                "response_url" => command.response_url = v,
                _ => {}
            }
        }
        command
    }

    /// The response URL, if it starts with one of `allowed` (Slack's own,
    /// `https://hooks.slack.com/`; a local stand-in on the local platform):
    /// the service never posts to an address a request merely names.
    pub fn response_url(&self, allowed: &[String]) -> Option<&str> {
        allowed
            .iter()
            .any(|prefix| self.response_url.starts_with(prefix.as_str()))
            .then_some(self.response_url.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's published example of a signed request.
    const BODY: &str = include_str!("../../../../tests/fixtures/slack-slash-command.txt");
    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slacks_published_example_is_accepted() {
        assert_eq!(
            verify(
                SECRET,
                Some(TS),
                Some(SIGNATURE),
                BODY.as_bytes(),
                1531420618 + 60
            ),
            Ok(())
        );
        let command = SlashCommand::parse(BODY.as_bytes());
        assert_eq!(command.user_id, "U2CERLKJA");
        assert_eq!(command.team_id, "T1DC2JH3J");
        assert!(command.response_url(&[SLACK.into()]).is_some());
    }

    #[test]
    fn signing_gives_slacks_own_signature() {
        assert_eq!(signature(SECRET, TS, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn a_wrong_signature_a_wrong_secret_or_a_changed_body_is_refused() {
        let now = 1531420618;
        let mut flipped = SIGNATURE.to_owned();
        flipped.replace_range(10..11, "0");
        for (secret, sig, body) in [
            (SECRET, flipped.as_str(), BODY.to_owned()),
            (b"another secret".as_slice(), SIGNATURE, BODY.to_owned()),
            (SECRET, SIGNATURE, BODY.replace("text=", "text=deploy")),
            (SECRET, "a2114d57", BODY.to_owned()),
        ] {
            assert_eq!(
                verify(secret, Some(TS), Some(sig), body.as_bytes(), now),
                Err(SlackAuthError::BadSignature)
            );
        }
    }

    #[test]
    fn a_stale_request_or_a_replay_with_a_new_timestamp_is_refused() {
        let later = 1531420618 + MAX_AGE_SECS + 1;
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIGNATURE), BODY.as_bytes(), later),
            Err(SlackAuthError::Stale)
        );
        let new_ts = later.to_string();
        assert_eq!(
            verify(
                SECRET,
                Some(&new_ts),
                Some(SIGNATURE),
                BODY.as_bytes(),
                later
            ),
            Err(SlackAuthError::BadSignature)
        );
        assert_eq!(
            verify(SECRET, None, Some(SIGNATURE), BODY.as_bytes(), later),
            Err(SlackAuthError::Unsigned)
        );
    }

    const SLACK: &str = "https://hooks.slack.com/";

    #[test]
    fn only_an_allowed_response_url_is_answered() {
        let mut c = SlashCommand::parse(BODY.as_bytes());
        for bad in [
            "https://evil.example/hooks.slack.com/",
            "http://hooks.slack.com/commands/x",
            "https://hooks.slack.com.evil.example/x",
        ] {
            c.response_url = bad.into();
            assert_eq!(c.response_url(&[SLACK.into()]), None, "{bad}");
        }
    }
}
