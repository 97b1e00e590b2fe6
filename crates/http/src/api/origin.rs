//! Cross-site request refusal.
//!
//! Browsers resend cached Basic credentials with any request to this host,
//! including a form another site submits. So every state-changing request
//! that carries a browser's evidence of being cross-site (`Origin` of
//! another host, `Sec-Fetch-Site: cross-site`) is refused, whatever route
//! it is for; the web UI's forms go further and require positive evidence
//! of the same origin ([`same_origin`]). Clients that are not browsers
//! (`ship`, curl, chat bots) send neither header and are unaffected.

use axum::http::{HeaderMap, header};

use super::ApiError;

/// What the headers say about where a request comes from.
#[derive(Debug, PartialEq, Eq)]
pub enum Provenance {
    /// `Origin`, `Referer` or `Sec-Fetch-Site` name this host.
    SameOrigin,
    /// Another site (or an opaque `null` origin).
    CrossSite,
    /// No browser evidence either way.
    Unknown,
}

/// The host part of `scheme://host[:port][/…]`.
fn authority_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Where the request comes from, judged against its own `Host`.
pub fn provenance(headers: &HeaderMap) -> Provenance {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Provenance::CrossSite;
    }
    for name in [header::ORIGIN, header::REFERER] {
        if let Some(value) = headers.get(&name) {
            let same = value
                .to_str()
                .ok()
                .and_then(authority_of)
                .is_some_and(|a| host.is_some_and(|h| a.eq_ignore_ascii_case(h)));
            return if same {
                Provenance::SameOrigin
            } else {
                Provenance::CrossSite
            };
        }
    }
    Provenance::Unknown
}

/// What a refused cross-site change answers.
pub fn cross_site_refusal() -> ApiError {
    ApiError::Forbidden("cross-site requests may not change anything".into())
}

/// For the web UI's forms: only a request that proves it comes from this
/// origin may act.
pub fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    match provenance(headers) {
        Provenance::SameOrigin => Ok(()),
        Provenance::CrossSite => Err(cross_site_refusal()),
        Provenance::Unknown => Err(ApiError::Forbidden(
            "this form must be sent by a browser from this site (no Origin or Referer)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn an_origin_naming_this_host_is_the_same_origin() {
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert_eq!(provenance(&h), Provenance::SameOrigin);
        assert!(same_origin(&h).is_ok());
    }

    #[test]
    fn an_origin_of_another_host_or_port_is_cross_site() {
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:9999",
            "null",
            "http://127.0.0.1:8080.evil.example",
        ] {
            let mut h = headers(&[("host", "127.0.0.1:8080")]);
            h.insert("origin", origin.parse().unwrap());
            assert_eq!(provenance(&h), Provenance::CrossSite, "{origin}");
        }
    }

    #[test]
    fn a_referer_counts_when_there_is_no_origin() {
        let same = headers(&[
            ("host", "ui.example"),
            ("referer", "https://ui.example/ui/apps/a/envs/b"),
        ]);
        let other = headers(&[("host", "ui.example"), ("referer", "https://x.example/ui")]);
        assert_eq!(provenance(&same), Provenance::SameOrigin);
        assert_eq!(provenance(&other), Provenance::CrossSite);
    }

    #[test]
    fn fetch_metadata_saying_cross_site_wins_over_a_matching_origin() {
        let h = headers(&[
            ("host", "ui.example"),
            ("origin", "https://ui.example"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert_eq!(provenance(&h), Provenance::CrossSite);
    }

    #[test]
    fn a_request_without_browser_headers_is_unknown_and_forms_refuse_it() {
        let h = headers(&[("host", "ui.example")]);
        assert_eq!(provenance(&h), Provenance::Unknown);
        assert!(matches!(same_origin(&h), Err(ApiError::Forbidden(_))));
    }
}
