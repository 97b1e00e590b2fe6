//! Maintenance mode as the user asks for it: the message everyone sees
//! and the source addresses that still reach the app, parsed at the edge
//! so the load balancer's rules are only ever made of valid parts. The
//! page is the ALB fixed-response body, which holds at most 1,024
//! characters; the allowed sources are one `source-ip` condition, which
//! holds at most five CIDRs.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What an ALB fixed-response body may hold.
pub const PAGE_LIMIT: usize = 1024;
/// The values one listener rule condition may hold.
pub const ALLOW_LIMIT: usize = 5;
/// What a message says when none is given.
pub const DEFAULT_MESSAGE: &str = "We are down for maintenance and will be back shortly.";

const PAGE_HEAD: &str = "<!doctype html><meta charset=\"utf-8\"><title>Down for maintenance</title><h1>Down for maintenance</h1><p>";
const PAGE_TAIL: &str = "</p>\n";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaintenanceError {
    #[error("{0:?} is not an address or CIDR block (like 203.0.113.7 or 203.0.113.0/24)")]
    Cidr(String),
    #[error("at most {ALLOW_LIMIT} --allow addresses (one load balancer rule holds five)")]
    TooManyAllowed,
    #[error("the message is too long: the page holds {PAGE_LIMIT} characters")]
    MessageTooLong,
    #[error("the message may not hold control characters")]
    MessageControl,
}

/// An IPv4 or IPv6 CIDR block, in the form ALB takes (`a.b.c.d/n`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    address: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// An address (a host: /32 or /128) or a block; the block's host
    /// bits must be zero, as ALB requires.
    pub fn parse(text: &str) -> Result<Self, MaintenanceError> {
        let bad = || MaintenanceError::Cidr(text.chars().take(64).collect());
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if prefix > max || masked(address, prefix) != address {
            return Err(bad());
        }
        Ok(Self { address, prefix })
    }
}

fn masked(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl TryFrom<String> for Cidr {
    type Error = MaintenanceError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Cidr::parse(&s)
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> Self {
        c.to_string()
    }
}

/// Maintenance mode as set: the message on the page and who still gets
/// through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Unchecked")]
pub struct Maintenance {
    pub message: String,
    pub allow: Vec<Cidr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Unchecked {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    allow: Vec<Cidr>,
}

impl TryFrom<Unchecked> for Maintenance {
    type Error = MaintenanceError;
    fn try_from(u: Unchecked) -> Result<Self, Self::Error> {
        Maintenance::new(u.message.as_deref(), u.allow)
    }
}

impl Maintenance {
    /// `message` (the default when none) and `allow`, checked: the page
    /// must fit a fixed response and the addresses one condition.
    pub fn new(message: Option<&str>, mut allow: Vec<Cidr>) -> Result<Self, MaintenanceError> {
        let message = message.map(str::trim).filter(|m| !m.is_empty());
        let message = message.unwrap_or(DEFAULT_MESSAGE).to_owned();
        if message.chars().any(|c| c.is_control() && c != '\n') {
            return Err(MaintenanceError::MessageControl);
        }
        allow.sort();
        allow.dedup();
        if allow.len() > ALLOW_LIMIT {
            return Err(MaintenanceError::TooManyAllowed);
        }
        let this = Self { message, allow };
        if this.page().chars().count() > PAGE_LIMIT {
            return Err(MaintenanceError::MessageTooLong);
        }
        Ok(this)
    }

    /// The allowed blocks as people read them: `a/n, b/m`; empty for none.
    pub fn allowed(&self) -> String {
        let blocks: Vec<String> = self.allow.iter().map(Cidr::to_string).collect();
        blocks.join(", ")
    }

    /// The page the load balancer answers with, the message escaped.
    pub fn page(&self) -> String {
        format!("{PAGE_HEAD}{}{PAGE_TAIL}", escape(&self.message))
    }

    /// The message of a page made by [`Maintenance::page`]; `None` for a
    /// body Slipway did not make.
    pub fn message_of(page: &str) -> Option<String> {
        let inner = page.strip_prefix(PAGE_HEAD)?.strip_suffix(PAGE_TAIL)?;
        Some(unescape(inner))
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_a_host_block_and_a_block_keeps_its_prefix() {
        assert_eq!(
            Cidr::parse("203.0.113.7").unwrap().to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(
            Cidr::parse("203.0.113.0/24").unwrap().to_string(),
            "203.0.113.0/24"
        );
        assert_eq!(
            Cidr::parse("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(Cidr::parse("::1").unwrap().to_string(), "::1/128");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
    }

    #[test]
    fn hostile_or_malformed_blocks_are_refused() {
        for bad in [
            "",
            "/24",
            "203.0.113.0/",
            "203.0.113.0/33",
            "203.0.113.7/24",
            "203.0.113.0/+8",
            "203.0.113.0/0024",
            "example.com",
            "203.0.113.0/24; rm -rf /",
            "::/129",
            " 203.0.113.7",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_message_is_escaped_on_the_page_and_read_back_from_it() {
        let m = Maintenance::new(Some("<script>alert('x')</script> & back at 5"), vec![]).unwrap();
        let page = m.page();
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; back"));
        assert_eq!(
            Maintenance::message_of(&page).as_deref(),
            Some(m.message.as_str())
        );
        assert_eq!(Maintenance::message_of("someone else's page"), None);
    }

    #[test]
    fn no_message_says_the_default_and_limits_are_checked() {
        let m = Maintenance::new(None, vec![]).unwrap();
        assert_eq!(m.message, DEFAULT_MESSAGE);
        assert_eq!(
            Maintenance::new(Some("   "), vec![]).unwrap().message,
            DEFAULT_MESSAGE
        );
        assert_eq!(
            Maintenance::new(Some(&"x".repeat(PAGE_LIMIT)), vec![]),
            Err(MaintenanceError::MessageTooLong)
        );
        // An escaped character counts at its escaped length.
        assert_eq!(
            Maintenance::new(Some(&"&".repeat(200)), vec![]),
            Err(MaintenanceError::MessageTooLong)
        );
        assert_eq!(
            Maintenance::new(Some("a\u{1b}[31m"), vec![]),
            Err(MaintenanceError::MessageControl)
        );
        let six: Vec<Cidr> = (1..=6)
            .map(|i| Cidr::parse(&format!("10.0.0.{i}")).unwrap())
            .collect();
        assert_eq!(
            Maintenance::new(None, six.clone()),
            Err(MaintenanceError::TooManyAllowed)
        );
        // The same block twice is one.
        let twice = vec![six[0].clone(), six[0].clone()];
        assert_eq!(Maintenance::new(None, twice).unwrap().allow.len(), 1);
    }

    #[test]
    fn a_request_body_is_parsed_with_the_same_checks() {
        let ok: Maintenance =
            serde_json::from_str(r#"{"message":"soon","allow":["10.0.0.0/8"]}"#).unwrap();
        assert_eq!(ok.allow[0].to_string(), "10.0.0.0/8");
        let default: Maintenance = serde_json::from_str("{}").unwrap();
        assert_eq!(default.message, DEFAULT_MESSAGE);
        for bad in [
            r#"{"message":"soon","allow":["10.0.0.1/8"]}"#,
            r#"{"message":"soon","other":1}"#,
            r#"{"message":5}"#,
        ] {
            assert!(serde_json::from_str::<Maintenance>(bad).is_err(), "{bad}");
        }
    }
}
