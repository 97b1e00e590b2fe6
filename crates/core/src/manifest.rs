//! `release.json`: what a release is, as stored and as served.
//!
//! The file is created first as a pending *claim* (the conditional create
//! that gives a release its number) and rewritten as the ready manifest once
//! the source and config snapshot are in place. Readers only ever treat a
//! ready manifest as a release.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::archive::ArchiveFormat;
use crate::names::{AppName, EnvName, ReleaseId};
use crate::procfile::Procfile;

/// The release's source archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub key: String,
    pub format: ArchiveFormat,
    pub sha256: String,
    pub size: u64,
}

/// Where a release came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// An archive uploaded to `uploads/`, by key and ETag (so a duplicate
    /// S3 event for the same object is recognised).
    Upload { key: String, etag: String },
    /// A config change on top of an existing release's source.
    Config { from: ReleaseId },
    /// A release of another environment of the same app.
    Promote { env: EnvName, release: ReleaseId },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: ReleaseId,
    pub app: AppName,
    pub env: EnvName,
    pub source: Source,
    pub config_sha256: String,
    pub procfile: Procfile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub origin: Origin,
}

/// A number taken by a release still being made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub id: ReleaseId,
    pub claimed_at: DateTime<Utc>,
    pub claimed_by: String,
    pub origin: Origin,
}

// Short-lived values, one at a time: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ReleaseFile {
    Pending(Claim),
    Ready(Manifest),
}

impl ReleaseFile {
    pub fn origin(&self) -> &Origin {
        match self {
            Self::Pending(c) => &c.origin,
            Self::Ready(m) => &m.origin,
        }
    }

    pub fn ready(self) -> Option<Manifest> {
        match self {
            Self::Ready(m) => Some(m),
            Self::Pending(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_manifest_round_trips_with_its_state_tag() {
        let m = Manifest {
            id: ReleaseId::parse("r3").unwrap(),
            app: AppName::parse("hello").unwrap(),
            env: EnvName::parse("prod").unwrap(),
            source: Source {
                key: "hello/prod/releases/r3/source.tar.gz".into(),
                format: ArchiveFormat::Gzip,
                sha256: "ab".repeat(32),
                size: 10,
            },
            config_sha256: "cd".repeat(32),
            procfile: Procfile::parse("web: x").unwrap(),
            git_ref: Some("main".into()),
            description: None,
            created_at: DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
                .unwrap()
                .into(),
            created_by: "alice".into(),
            origin: Origin::Upload {
                key: "hello/prod/uploads/a.tar.gz".into(),
                etag: "\"e\"".into(),
            },
        };
        let json = serde_json::to_value(ReleaseFile::Ready(m.clone())).unwrap();
        assert_eq!(json["state"], "ready");
        assert_eq!(json["id"], "r3");
        assert_eq!(json["source"]["format"], "tar.gz");
        assert_eq!(json["origin"]["kind"], "upload");
        assert_eq!(json["procfile"]["web"], "x");
        let back: ReleaseFile = serde_json::from_value(json).unwrap();
        assert_eq!(back.ready(), Some(m));
    }
}
