//! Names that reach S3 keys, Auto Scaling group names and CloudFormation stacks.
//!
//! They are parsed once, at the edge (a route, an S3 key, a CLI flag), into
//! types that cannot hold anything else. Because an `AppName` can only contain
//! lowercase letters, digits and single hyphens, no value of it can ever
//! escape its prefix in the bucket (`..`, `/`, `%2F` are all refused here).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest `<app>-<env>`: it names the Auto Scaling group and stacks.
pub const MAX_QUALIFIED_LEN: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "invalid {kind} name {shown:?}: use lowercase letters, digits and single hyphens, starting with a letter and not ending with a hyphen"
    )]
    Malformed { kind: &'static str, shown: String },
    #[error(
        "{app}-{env} is {len} characters long; an app and environment name together may have at most {MAX_QUALIFIED_LEN}"
    )]
    TooLong {
        app: String,
        env: String,
        len: usize,
    },
    #[error(
        "invalid release id {shown:?}: use r<N> with N a whole number from 1, such as r1 or r42"
    )]
    Release { shown: String },
}

/// Shows at most a short, printable prefix of hostile input in an error.
fn shown(raw: &str) -> String {
    let mut s: String = raw.chars().filter(|c| !c.is_control()).take(40).collect();
    if raw.chars().count() > 40 {
        s.push('…');
    }
    s
}

fn check_dns_label(kind: &'static str, raw: &str) -> Result<(), NameError> {
    let bytes = raw.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_QUALIFIED_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && !raw.contains("--")
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NameError::Malformed {
            kind,
            shown: shown(raw),
        })
    }
}

macro_rules! label_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, NameError> {
                check_dns_label($kind, raw)?;
                Ok(Self(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

label_name!(
    /// An application's name, such as `hello` or `billing-api`.
    AppName,
    "app"
);
label_name!(
    /// An environment of an app, such as `staging` or `prod`.
    EnvName,
    "environment"
);

/// One environment of one app: the unit that has releases, config and a fleet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvRef {
    pub app: AppName,
    pub env: EnvName,
}

impl EnvRef {
    pub fn new(app: AppName, env: EnvName) -> Result<Self, NameError> {
        let len = app.as_str().len() + 1 + env.as_str().len();
        if len > MAX_QUALIFIED_LEN {
            return Err(NameError::TooLong {
                app: app.0,
                env: env.0,
                len,
            });
        }
        Ok(Self { app, env })
    }

    pub fn parse(app: &str, env: &str) -> Result<Self, NameError> {
        Self::new(AppName::parse(app)?, EnvName::parse(env)?)
    }

    /// `<app>/<env>/`: every key of this environment starts with it.
    pub fn prefix(&self) -> String {
        format!("{}/{}/", self.app, self.env)
    }

    /// `<app>-<env>`: what a person types to confirm terminating the
    /// environment, and what earlier versions named its group and stack
    /// (ambiguous: `a-b`/`c` and `a`/`b-c` share it).
    pub fn qualified(&self) -> String {
        format!("{}-{}", self.app, self.env)
    }

    /// `<app>-<Env>`, the environment's first letter capitalised: the name
    /// of its Auto Scaling group, launch template and stack. Names are
    /// lowercase, so that one capital says where the environment begins
    /// and no two environments share it (`a-b-C` and `a-B-c`). Not
    /// `<app>--<env>`: CloudFormation derives load balancer and target
    /// group names from the stack's, and those may not contain `--`.
    pub fn physical_name(&self) -> String {
        let env = self.env.as_str();
        format!(
            "{}-{}{}",
            self.app,
            env[..1].to_ascii_uppercase(),
            &env[1..]
        )
    }
}

impl fmt::Display for EnvRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.env)
    }
}

/// A release number, shown as `r<N>` with N ≥ 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReleaseId(u64);

impl ReleaseId {
    pub const FIRST: ReleaseId = ReleaseId(1);

    pub fn new(n: u64) -> Option<Self> {
        (n >= 1).then_some(Self(n))
    }

    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let err = || NameError::Release { shown: shown(raw) };
        let digits = raw.strip_prefix('r').ok_or_else(err)?;
        // No sign, no leading zero, no whitespace: one spelling per number, so
        // one S3 key per release.
        if digits.is_empty()
            || digits.len() > 18
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(err());
        }
        let n: u64 = digits.parse().map_err(|_| err())?;
        Ok(Self(n))
    }

    pub fn number(self) -> u64 {
        self.0
    }

    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

impl FromStr for ReleaseId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ReleaseId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ReleaseId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// An EC2 instance id (`i-` and up to 17 hex digits in AWS; the emulator
/// uses the same shape).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown:?} is not an instance id (i- followed by letters and digits)")]
pub struct BadInstanceId {
    shown: String,
}

impl InstanceId {
    pub fn parse(raw: &str) -> Result<Self, BadInstanceId> {
        let ok = raw.strip_prefix("i-").is_some_and(|rest| {
            (1..=32).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        });
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(BadInstanceId {
                shown: raw.chars().take(40).collect(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InstanceId {
    type Error = BadInstanceId;
    fn try_from(s: String) -> Result<Self, BadInstanceId> {
        Self::parse(&s)
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> String {
        id.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_whose_dashed_names_collide_get_distinct_physical_names() {
        let one = EnvRef::parse("a-b", "c").unwrap();
        let other = EnvRef::parse("a", "b-c").unwrap();
        assert_eq!(one.qualified(), other.qualified());
        assert_eq!(one.physical_name(), "a-b-C");
        assert_eq!(other.physical_name(), "a-B-c");
        assert_eq!(
            EnvRef::parse("billing-api", "staging-2")
                .unwrap()
                .physical_name(),
            "billing-api-Staging-2"
        );
    }

    #[test]
    fn app_names_of_lowercase_letters_digits_and_single_hyphens_parse() {
        for ok in ["a", "hello", "billing-api", "app2", "a1-b2-c3"] {
            assert_eq!(AppName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn hostile_or_malformed_names_are_refused_with_what_is_allowed() {
        for bad in [
            "", "Hello", "1app", "-app", "app-", "a--b", "a_b", "a.b", "..", "../etc", "a/b",
            "a%2Fb", "app ", " app", "ap\u{0}p", "é", "a\nb",
        ] {
            let err = AppName::parse(bad).unwrap_err();
            assert!(
                err.to_string()
                    .contains("lowercase letters, digits and single hyphens"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn an_app_and_env_longer_than_63_characters_together_are_refused() {
        let app = "a".repeat(40);
        let env = "e".repeat(22); // 40 + 1 + 22 = 63
        assert!(EnvRef::parse(&app, &env).is_ok());
        let err = EnvRef::parse(&app, &"e".repeat(23)).unwrap_err();
        assert_eq!(
            err,
            NameError::TooLong {
                app: app.clone(),
                env: "e".repeat(23),
                len: 64
            }
        );
        assert!(err.to_string().contains("at most 63"));
    }

    #[test]
    fn an_env_ref_names_its_prefix_and_group() {
        let e = EnvRef::parse("hello", "prod").unwrap();
        assert_eq!(e.prefix(), "hello/prod/");
        assert_eq!(e.qualified(), "hello-prod");
    }

    #[test]
    fn release_ids_are_r_followed_by_a_number_from_one() {
        assert_eq!(ReleaseId::parse("r1").unwrap().number(), 1);
        assert_eq!(ReleaseId::parse("r42").unwrap().to_string(), "r42");
        for bad in [
            "r0",
            "r01",
            "1",
            "r",
            "R1",
            "r-1",
            "r+1",
            "r1 ",
            "r1.0",
            "r99999999999999999999",
        ] {
            let err = ReleaseId::parse(bad).unwrap_err();
            assert!(err.to_string().contains("use r<N>"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn release_ids_order_by_number_not_by_text() {
        let r9 = ReleaseId::parse("r9").unwrap();
        let r10 = ReleaseId::parse("r10").unwrap();
        assert!(r9 < r10);
        assert_eq!(r9.next(), r10);
    }

    #[test]
    fn names_deserialize_through_the_same_parser() {
        let ok: AppName = serde_json::from_str("\"hello\"").unwrap();
        assert_eq!(ok.as_str(), "hello");
        assert!(serde_json::from_str::<AppName>("\"../x\"").is_err());
        assert!(serde_json::from_str::<ReleaseId>("\"r0\"").is_err());
    }
}
