//! Job identity. A deploy, a cycle and a scaling each get a time-sortable
//! id: a letter for its kind (`d`, `c`, `s`), the UTC time to the
//! millisecond and a random suffix, `d20261201204159123-1a2b3c`. The id is
//! parsed once, where it enters (a path, an event, a stored record), into
//! a type that says its kind; after that nothing looks at its letters. An
//! id is also a key segment (`deploys/<id>.json`), so parsing admits only
//! letters, digits and `-`, at most 40 of them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Text that is not an id of the kind wanted. Shows at most 40 characters
/// of what was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown:?} is not a {kind} id")]
pub struct BadId {
    kind: &'static str,
    shown: String,
}

fn check(kind: char, what: &'static str, raw: &str) -> Result<(), BadId> {
    let ok = raw.len() <= 40
        && raw.starts_with(kind)
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(BadId {
            kind: what,
            shown: raw.chars().take(40).collect(),
        })
    }
}

fn fresh(kind: char, now: DateTime<Utc>) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{kind}{}-{}", now.format("%Y%m%d%H%M%S%3f"), &suffix[..6])
}

macro_rules! job_id {
    ($(#[$doc:meta])* $name:ident, $letter:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, BadId> {
                check($letter, $what, raw).map(|()| Self(raw.to_owned()))
            }

            /// A new id, sorting after every id made earlier.
            pub fn new(now: DateTime<Utc>) -> Self {
                Self(fresh($letter, now))
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

        impl std::str::FromStr for $name {
            type Err = BadId;
            fn from_str(raw: &str) -> Result<Self, BadId> {
                Self::parse(raw)
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

job_id!(
    /// A deploy's id, `d…`.
    DeployId, 'd', "deploy"
);
job_id!(
    /// A cycle's id, `c…`.
    CycleId, 'c', "cycle"
);
job_id!(
    /// A scaling change's id, `s…`.
    ScaleId, 's', "scaling"
);

/// What holds an environment's lock and runs as a worker: a deploy or a
/// cycle.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobId {
    Deploy(DeployId),
    Cycle(CycleId),
}

impl JobId {
    /// A deploy's or a cycle's id, told apart by its kind letter.
    pub fn parse(raw: &str) -> Result<Self, BadId> {
        DeployId::parse(raw)
            .map(Self::Deploy)
            .or_else(|_| CycleId::parse(raw).map(Self::Cycle))
            .map_err(|_| BadId {
                kind: "deploy or cycle",
                shown: raw.chars().take(40).collect(),
            })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Deploy(id) => id.as_str(),
            Self::Cycle(id) => id.as_str(),
        }
    }

    /// What orders jobs by creation whatever their kind: the id without
    /// its kind letter (the time to the millisecond, then the suffix).
    pub fn created_order(&self) -> &str {
        &self.as_str()[1..]
    }

    /// `deploy` or `cycle`.
    pub fn kind(&self) -> JobKind {
        match self {
            Self::Deploy(_) => JobKind::Deploy,
            Self::Cycle(_) => JobKind::Cycle,
        }
    }

    pub fn deploy(&self) -> Option<&DeployId> {
        match self {
            Self::Deploy(id) => Some(id),
            Self::Cycle(_) => None,
        }
    }

    pub fn cycle(&self) -> Option<&CycleId> {
        match self {
            Self::Cycle(id) => Some(id),
            Self::Deploy(_) => None,
        }
    }
}

/// Jobs sort by when they were made, a deploy and a cycle alike (the
/// queue of an environment is first come, first served across kinds).
impl Ord for JobId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.created_order()
            .cmp(other.created_order())
            .then_with(|| self.as_str().cmp(other.as_str()))
    }
}

impl PartialOrd for JobId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl From<DeployId> for JobId {
    fn from(id: DeployId) -> Self {
        Self::Deploy(id)
    }
}

impl From<CycleId> for JobId {
    fn from(id: CycleId) -> Self {
        Self::Cycle(id)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The two kinds of job a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Deploy,
    Cycle,
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Deploy => "deploy",
            Self::Cycle => "cycle",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_of_both_kinds_sort_by_when_they_were_made() {
        let t = Utc::now();
        let first = JobId::Cycle(CycleId::new(t));
        let second = JobId::Deploy(DeployId::new(t + chrono::Duration::milliseconds(1)));
        let third = JobId::Cycle(CycleId::new(t + chrono::Duration::milliseconds(2)));
        let mut jobs = vec![third.clone(), second.clone(), first.clone()];
        jobs.sort();
        assert_eq!(jobs, vec![first, second, third]);
    }

    #[test]
    fn a_new_id_parses_as_its_own_kind_and_no_other() {
        let now = Utc::now();
        let d = DeployId::new(now);
        assert_eq!(DeployId::parse(d.as_str()), Ok(d.clone()));
        assert!(CycleId::parse(d.as_str()).is_err());
        assert_eq!(JobId::parse(d.as_str()), Ok(JobId::Deploy(d)));
        let c = CycleId::new(now);
        assert_eq!(JobId::parse(c.as_str()).unwrap().kind(), JobKind::Cycle);
        assert!(ScaleId::new(now).as_str().starts_with('s'));
    }

    #[test]
    fn ids_sort_by_the_time_they_were_made() {
        let early = DeployId::new(DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        let late = DeployId::new(DateTime::from_timestamp(1_800_000_000, 0).unwrap());
        assert!(early < late);
    }

    #[test]
    fn an_id_that_could_escape_its_key_segment_is_refused() {
        for bad in [
            "",
            "d1/../x",
            "d1.json",
            "d 1",
            "../d1",
            "s1",
            "x1",
            "d1\n",
            "d123456789012345678901234567890123456789012",
        ] {
            assert!(DeployId::parse(bad).is_err(), "{bad:?}");
            assert!(JobId::parse(bad).is_err(), "{bad:?}");
        }
        let e = DeployId::parse("../etc").unwrap_err().to_string();
        assert_eq!(e, "\"../etc\" is not a deploy id");
    }

    #[test]
    fn an_id_is_stored_as_its_text() {
        let id = JobId::parse("c1-abc").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"c1-abc\"");
        assert!(serde_json::from_str::<DeployId>("\"c1-abc\"").is_err());
        assert_eq!(
            serde_json::from_str::<JobId>("\"d1\"").unwrap().as_str(),
            "d1"
        );
    }
}
