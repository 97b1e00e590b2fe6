//! The releases deploys succeeded with (`<app>/<env>/good.json`, newest
//! first): what a rollback goes back to. The engine adds each success with
//! a conditional write, so two deploys finishing at once both count; a
//! rollback reads one object instead of every deploy record. An
//! environment from before the file gets it made from its records once.

use slipway_core::deploys::{DeploySummary, GoodReleases};
use slipway_core::ids::JobKind;
use slipway_core::keys::good_key;
use slipway_core::names::{EnvRef, ReleaseId};
use slipway_core::objects::{ObjectError, Write};

use super::record::DeployRecord;
use super::service::{DeployError, Deploys};

/// Writers racing on the file (deploys of one environment finish one at a
/// time, a rebuild from the records may race one of them).
const ATTEMPTS: usize = 5;

fn summary(r: &DeployRecord) -> DeploySummary {
    DeploySummary {
        id: r.id.clone(),
        to: r.to,
        status: r.status,
        finished_at: r.finished_at,
    }
}

impl Deploys {
    /// The file and its version; made from the records when it is not
    /// there yet (then with no version).
    async fn good(&self, env: &EnvRef) -> Result<(GoodReleases, Option<String>), DeployError> {
        if let Some(object) = self.objects.get(&good_key(env)).await? {
            // A file this build cannot read is made again from the records.
            if let Ok(good) = serde_json::from_slice(&object.body) {
                return Ok((good, Some(object.etag)));
            }
        }
        let records: Vec<DeployRecord> =
            crate::jobs::history::newest(&self.objects, env, JobKind::Deploy, usize::MAX).await?;
        let summaries: Vec<DeploySummary> = records.iter().map(summary).collect();
        Ok((GoodReleases::from_records(&summaries), None))
    }

    async fn put_good(
        &self,
        env: &EnvRef,
        good: &GoodReleases,
        etag: Option<&str>,
    ) -> Result<(), ObjectError> {
        let body = serde_json::to_vec_pretty(good).expect("good releases serialise");
        let write = etag.map_or(Write::IfAbsent, Write::IfMatch);
        self.objects
            .put(&good_key(env), body, "application/json", write)
            .await
            .map(|_| ())
    }

    /// Counts a deploy that succeeded.
    pub async fn add_good(&self, env: &EnvRef, record: &DeployRecord) -> Result<(), DeployError> {
        for _ in 0..ATTEMPTS {
            let (mut good, etag) = self.good(env).await?;
            let before = good.clone();
            good.add(&summary(record));
            if good == before && etag.is_some() {
                return Ok(());
            }
            match self.put_good(env, &good, etag.as_deref()).await {
                Ok(()) => return Ok(()),
                Err(ObjectError::Precondition { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(DeployError::Concurrent)
    }

    /// What a rollback would do now: from `current` to the newest release
    /// a deploy succeeded with other than it.
    pub async fn rollback_target(
        &self,
        env: &EnvRef,
    ) -> Result<(Option<ReleaseId>, Option<ReleaseId>), DeployError> {
        let from = self.store.current(env).await?;
        Ok((from, self.last_good(env, from).await?))
    }

    /// The newest release a deploy succeeded with, other than `except`:
    /// one read (the first time on an environment from before the file, a
    /// walk of its records, kept).
    pub(super) async fn last_good(
        &self,
        env: &EnvRef,
        except: Option<ReleaseId>,
    ) -> Result<Option<ReleaseId>, DeployError> {
        let (good, etag) = self.good(env).await?;
        if etag.is_none() {
            match self.put_good(env, &good, None).await {
                // A deploy that finished meanwhile wrote it first.
                Ok(()) | Err(ObjectError::Precondition { .. }) => {}
                Err(e) => {
                    tracing::warn!(env = %env, error = %e, "could not keep the good releases")
                }
            }
        }
        Ok(good.newest_except(except))
    }
}
