//! Deploy records, `<app>/<env>/deploys/<id>.json`, as far as an instance
//! needs them: which release each deploy went to and how it ended.
//!
//! A booting instance whose `current` release cannot become healthy falls
//! back to the newest release a deploy *succeeded* with, so a bad `current`
//! cannot make the Auto Scaling group launch and terminate instances
//! forever. The rollout engine writes the full record; this view reads only
//! the fields it needs and ignores the rest.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::DeployId;
use crate::names::ReleaseId;

/// How a deploy ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    RolledBack,
    Cancelled,
    /// A status this build does not know yet.
    #[serde(other)]
    Unknown,
}

/// The fields of a deploy record every reader may rely on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploySummary {
    pub id: DeployId,
    pub to: ReleaseId,
    pub status: DeployStatus,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

/// The release of the newest succeeded deploy, other than `except`.
pub fn last_succeeded<'a>(
    records: impl IntoIterator<Item = &'a DeploySummary>,
    except: Option<ReleaseId>,
) -> Option<ReleaseId> {
    records
        .into_iter()
        .filter(|r| r.status == DeployStatus::Succeeded && Some(r.to) != except)
        .max_by(|a, b| {
            a.finished_at
                .cmp(&b.finished_at)
                .then_with(|| a.id.cmp(&b.id))
        })
        .map(|r| r.to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: &str) -> DeploySummary {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_newest_succeeded_deploy_wins_and_failures_are_skipped() {
        let records = [
            record(
                r#"{"id":"d1","to":"r3","status":"succeeded","finished_at":"2026-11-01T10:00:00Z"}"#,
            ),
            record(
                r#"{"id":"d2","to":"r5","status":"succeeded","finished_at":"2026-11-02T10:00:00Z","batches":[]}"#,
            ),
            record(
                r#"{"id":"d3","to":"r6","status":"failed","finished_at":"2026-11-03T10:00:00Z"}"#,
            ),
            record(r#"{"id":"d4","to":"r7","status":"something_new"}"#),
        ];
        let r = |s| ReleaseId::parse(s).unwrap();
        assert_eq!(last_succeeded(&records, None), Some(r("r5")));
        assert_eq!(last_succeeded(&records, Some(r("r5"))), Some(r("r3")));
        assert_eq!(records[3].status, DeployStatus::Unknown);
        assert_eq!(last_succeeded(&records[2..], None), None);
    }
}
