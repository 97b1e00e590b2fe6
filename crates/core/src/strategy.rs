//! How many instances a deploy takes out of service at once: a strategy
//! names it (`one-at-a-time`, `25%`, `all-at-once`). It lives in the core
//! because an environment's settings carry a default strategy, and the
//! rollout engine, the API and the UI all parse the same words.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A strategy that is not one of the three forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("strategy {shown:?} is not one of one-at-a-time, all-at-once or a percentage such as 25%")]
pub struct BadStrategy {
    shown: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    OneAtATime,
    /// At most this share of the instances, in percent (1–100), at once.
    Percent(u8),
    AllAtOnce,
}

impl FromStr for Strategy {
    type Err = BadStrategy;

    fn from_str(raw: &str) -> Result<Self, BadStrategy> {
        let bad = || BadStrategy {
            shown: raw.chars().take(40).collect(),
        };
        match raw {
            "one-at-a-time" => Ok(Self::OneAtATime),
            "all-at-once" => Ok(Self::AllAtOnce),
            _ => {
                let n: u8 = raw
                    .strip_suffix('%')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(bad)?;
                if (1..=100).contains(&n) {
                    Ok(Self::Percent(n))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OneAtATime => f.write_str("one-at-a-time"),
            Self::Percent(p) => write!(f, "{p}%"),
            Self::AllAtOnce => f.write_str("all-at-once"),
        }
    }
}

impl Serialize for Strategy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Strategy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}
