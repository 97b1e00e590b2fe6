//! `slipway-agent boot`: a new instance deploys its environment's `current`
//! release, or falls back, loudly, to the last release a deploy succeeded
//! with, so a bad `current` cannot make the group churn instances.

use slipway_core::deploys::{DeploySummary, GoodReleases, last_succeeded};
use slipway_core::keys::is_record_key;
use slipway_core::keys::{current_key, deploys_prefix, good_key};
use slipway_core::names::{EnvRef, ReleaseId};

use super::{Agent, Failure};
use crate::source::{Location, ReleaseUrl, Store};

impl Agent {
    /// `slipway-agent boot`: deploy the environment's `current` release;
    /// if it cannot become healthy, the newest release a deploy succeeded
    /// with, loudly.
    pub async fn boot(&self, location: &Location, env: &EnvRef) -> Result<ReleaseId, Failure> {
        self.story.say(
            self.story
                .line("boot")
                .kv("app", &env.app)
                .kv("env", &env.env),
        );
        let store = self.store(location).await;
        let current = store
            .get(&current_key(env))
            .await
            .map_err(|e| Failure::at("boot", e))?;
        let Some(current) = current else {
            self.story.say(
                self.story
                    .line("done")
                    .kv("skipped", "the environment has no current release yet"),
            );
            return Err(Failure::at(
                "boot",
                "the environment has no current release yet",
            ));
        };
        let current = std::str::from_utf8(&current)
            .ok()
            .and_then(|s| ReleaseId::parse(s.trim()).ok())
            .ok_or_else(|| Failure::at("boot", "the environment's current pointer is damaged"))?;
        let url = ReleaseUrl {
            location: location.clone(),
            env: env.clone(),
            id: current,
        };
        let failure = match self.deploy(&url).await {
            Ok(id) => return Ok(id),
            Err(f) => f,
        };
        let Some(good) = self.fallback(&store, env, current).await else {
            self.story.say(
                self.story
                    .line("boot")
                    .kv("fallback", "none")
                    .kv("error", "no earlier release was ever deployed successfully"),
            );
            return Err(failure);
        };
        self.story.say(
            self.story
                .line("boot")
                .kv(
                    "WARNING",
                    format!("current release {current} failed; falling back to {good}"),
                )
                .kv("failed", current)
                .kv("fallback", good)
                .kv("reason", &failure.reason),
        );
        let url = ReleaseUrl { id: good, ..url };
        self.fallback_from.set(Some(current));
        let deployed = self.deploy(&url).await;
        self.fallback_from.set(None);
        let id = deployed?;
        self.tag_release(id, Some(current)).await;
        self.story.say(
            self.story
                .line("boot")
                .kv(
                    "WARNING",
                    format!("serving {good} instead of current {current}"),
                )
                .kv("release", good)
                .kv("fallback_from", current),
        );
        Ok(id)
    }

    /// The newest release a deploy succeeded with, other than `current`:
    /// from `good.json` (one read), or on an environment from before it,
    /// from every deploy record.
    async fn fallback(&self, store: &Store, env: &EnvRef, current: ReleaseId) -> Option<ReleaseId> {
        match store.get(&good_key(env)).await {
            Ok(Some(bytes)) => match serde_json::from_slice::<GoodReleases>(&bytes) {
                Ok(good) => return good.newest_except(Some(current)),
                Err(e) => self.story.say(
                    self.story
                        .line("boot")
                        .kv("skipped", good_key(env))
                        .kv("error", e),
                ),
            },
            Ok(None) => {}
            Err(e) => self.story.say(self.story.line("boot").kv("error", e)),
        }
        let records = self.deploy_records(store, env).await;
        last_succeeded(&records, Some(current))
    }

    async fn deploy_records(&self, store: &Store, env: &EnvRef) -> Vec<DeploySummary> {
        let prefix = deploys_prefix(env);
        let keys = match store.list(&prefix).await {
            Ok(keys) => keys,
            Err(e) => {
                self.story.say(self.story.line("boot").kv("error", e));
                return Vec::new();
            }
        };
        let mut records = Vec::new();
        for key in keys.iter().filter(|k| is_record_key(&prefix, k)) {
            match store.get(key).await {
                Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                    Ok(r) => records.push(r),
                    Err(e) => self
                        .story
                        .say(self.story.line("boot").kv("skipped", key).kv("error", e)),
                },
                Ok(None) => {}
                Err(e) => self.story.say(self.story.line("boot").kv("error", e)),
            }
        }
        records
    }
}
