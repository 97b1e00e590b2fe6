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

/// `<app>/<env>/good.json`: the releases deploys succeeded with, newest
/// first, each once, at most [`GoodReleases::KEPT`]. The engine adds each
/// success (a conditional write); the rollback target and a booting
/// instance's fallback read this one object instead of every record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoodReleases {
    pub releases: Vec<GoodRelease>,
}

/// One release a deploy succeeded with, and the newest such deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoodRelease {
    pub release: ReleaseId,
    pub deploy: DeployId,
    pub finished_at: DateTime<Utc>,
}

impl GoodReleases {
    /// Enough to step back past a release that turned out bad, and a few
    /// more; a rollback needs the first that is not `current`.
    pub const KEPT: usize = 10;

    /// From deploy records (an environment from before `good.json`).
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a DeploySummary>) -> Self {
        let mut good = Self::default();
        for r in records {
            good.add(r);
        }
        good
    }

    /// Counts `deploy` if it succeeded: its release moves to its place by
    /// finish time (the newest first), once.
    pub fn add(&mut self, deploy: &DeploySummary) {
        let (DeployStatus::Succeeded, Some(finished_at)) = (deploy.status, deploy.finished_at)
        else {
            return;
        };
        let entry = GoodRelease {
            release: deploy.to,
            deploy: deploy.id.clone(),
            finished_at,
        };
        let newer = |g: &GoodRelease| (g.finished_at, &g.deploy) > (finished_at, &deploy.id);
        if self
            .releases
            .iter()
            .any(|g| g.release == deploy.to && (newer(g) || g.deploy == deploy.id))
        {
            return;
        }
        self.releases.retain(|g| g.release != deploy.to);
        let at = self.releases.iter().take_while(|g| newer(g)).count();
        self.releases.insert(at, entry);
        self.releases.truncate(Self::KEPT);
    }

    /// The newest release other than `except`.
    pub fn newest_except(&self, except: Option<ReleaseId>) -> Option<ReleaseId> {
        self.releases
            .iter()
            .map(|g| g.release)
            .find(|r| Some(*r) != except)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_releases_agree_with_the_records_they_summarise() {
        let records: Vec<DeploySummary> = [
            r#"{"id":"d1","to":"r3","status":"succeeded","finished_at":"2026-11-01T10:00:00Z"}"#,
            r#"{"id":"d2","to":"r5","status":"failed","finished_at":"2026-11-05T10:00:00Z"}"#,
            r#"{"id":"d4","to":"r3","status":"succeeded","finished_at":"2026-11-04T10:00:00Z"}"#,
            r#"{"id":"d3","to":"r4","status":"succeeded","finished_at":"2026-11-03T10:00:00Z"}"#,
            r#"{"id":"d5","to":"r6","status":"running"}"#,
        ]
        .iter()
        .map(|j| record(j))
        .collect();
        let good = GoodReleases::from_records(&records);
        let order: Vec<String> = good
            .releases
            .iter()
            .map(|g| g.release.to_string())
            .collect();
        assert_eq!(order, ["r3", "r4"], "r3 once, at its newest success");
        for except in [None, Some(ReleaseId::parse("r3").unwrap())] {
            assert_eq!(good.newest_except(except), last_succeeded(&records, except));
        }
        let mut again = good.clone();
        again.add(&records[2]);
        assert_eq!(again, good, "the same deploy counts once");
        let mut many = GoodReleases::default();
        for n in 1..=30u64 {
            many.add(&DeploySummary {
                id: DeployId::parse(&format!("d{n:03}")).unwrap(),
                to: ReleaseId::new(n).unwrap(),
                status: DeployStatus::Succeeded,
                finished_at: Some(Utc::now() + chrono::Duration::seconds(n as i64)),
            });
        }
        assert_eq!(many.releases.len(), GoodReleases::KEPT);
        assert_eq!(many.newest_except(None), ReleaseId::new(30));
    }

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
