//! The release store: releases, config and the `current` pointer in S3.
//!
//! Layout (see DESIGN.md): `<app>/<env>/env`, `releases/r<N>/{source.*,env,
//! release.json}`, `current`. Every write that two writers could race is
//! conditional: a release number is taken by creating `release.json` with
//! `If-None-Match: *` (a pending claim), and the claim becomes the ready
//! manifest with `If-Match` once the source and config snapshot are stored,
//! so `release.json` in its ready form is always written last. Config
//! changes use `If-Match` on `env` so no concurrent change is lost.

pub mod index;
mod uploads;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use futures::stream::{self, StreamExt, TryStreamExt};

pub use slipway_core::keys::{config_key, current_key, deploys_prefix, release_key, settings_key};
use slipway_core::keys::{release_in_index, release_index_key, release_index_prefix};
pub use slipway_core::manifest::{Claim, Manifest, Origin, ReleaseFile, Source};
pub use slipway_core::objects::{Head, Object, ObjectError, PresignedPut, S3Objects, Write};
pub use uploads::{MAX_DESCRIPTION, UploadOutcome, UploadStatus, UploadTicket, parse_upload_key};

use slipway_core::archive::{ArchiveFormat, Limits};
use slipway_core::config::{Config, ConfigDiff, ConfigError};
use slipway_core::names::{EnvRef, ReleaseId};
use slipway_core::procfile::Procfile;

/// A pending claim older than this belongs to a writer that died; the next
/// writer may take its number over.
pub const CLAIM_TTL: Duration = Duration::from_secs(15 * 60);
const MAX_NUMBERING_ATTEMPTS: u32 = 1000;
const MAX_CONFIG_ATTEMPTS: u32 = 10;
pub const MAX_PAGE: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("release {id} of {env} not found")]
    ReleaseNotFound { env: String, id: ReleaseId },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("stored {what} is unreadable: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("could not take a release number after {0} attempts")]
    Contention(u32),
    #[error("release {0} was taken over by another writer while it was being made")]
    ClaimLost(ReleaseId),
    #[error("the source archive could not be read: {0}")]
    Read(String),
    #[error(transparent)]
    Objects(#[from] ObjectError),
}

/// A page of releases, newest first.
#[derive(Debug, Clone)]
pub struct ReleasePage {
    pub releases: Vec<Manifest>,
    /// Pass as `before` to get the next page.
    pub next: Option<ReleaseId>,
}

/// The outcome of a config change.
#[derive(Debug, Clone)]
pub struct ConfigChange {
    pub config: Config,
    pub diff: ConfigDiff,
    /// The release made from the current source with the new config, if
    /// the environment has a release to build on and anything changed.
    pub release: Option<Manifest>,
}

/// A release numbered and its source stored, its manifest not yet written.
struct Started {
    id: ReleaseId,
    claim_etag: String,
    format: ArchiveFormat,
    source_key: String,
}

/// Everything about a release except its number and config snapshot.
struct NewRelease<'a> {
    env: &'a EnvRef,
    copy_from: &'a str,
    copy_etag: Option<&'a str>,
    format: ArchiveFormat,
    sha256: String,
    size: u64,
    procfile: Procfile,
    git_ref: Option<String>,
    description: Option<String>,
    created_by: &'a str,
    origin: Origin,
}

impl<'a> NewRelease<'a> {
    /// A new release of `env` with the same source as `base`.
    fn reusing(
        env: &'a EnvRef,
        base: &'a Manifest,
        created_by: &'a str,
        origin: Origin,
        description: Option<String>,
    ) -> Self {
        Self {
            env,
            copy_from: &base.source.key,
            copy_etag: None,
            format: base.source.format,
            sha256: base.source.sha256.clone(),
            size: base.source.size,
            procfile: base.procfile.clone(),
            git_ref: base.git_ref.clone(),
            description,
            created_by,
            origin,
        }
    }
}

/// A JSON record (a deploy's, a cycle's) and its version; `what` names it
/// when it no longer parses.
pub async fn read_record<T: serde::de::DeserializeOwned>(
    objects: &S3Objects,
    key: &str,
    what: &str,
) -> Result<Option<(T, String)>, StoreError> {
    let Some(object) = objects.get(key).await? else {
        return Ok(None);
    };
    let record = serde_json::from_slice(&object.body).map_err(|e| StoreError::Corrupt {
        what: what.to_owned(),
        detail: e.to_string(),
    })?;
    Ok(Some((record, object.etag)))
}

fn corrupt(what: impl Into<String>, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: what.into(),
        detail: detail.to_string(),
    }
}

#[derive(Clone, Debug)]
pub struct ReleaseStore {
    objects: S3Objects,
    limits: Limits,
}

impl ReleaseStore {
    pub fn new(objects: S3Objects, limits: Limits) -> Self {
        Self { objects, limits }
    }

    pub fn objects(&self) -> &S3Objects {
        &self.objects
    }

    /// The environment's config vars; no `env` object is an empty config.
    pub async fn config(&self, env: &EnvRef) -> Result<Config, StoreError> {
        Ok(self.config_with_etag(env).await?.0)
    }

    async fn config_with_etag(&self, env: &EnvRef) -> Result<(Config, Option<String>), StoreError> {
        let key = config_key(env);
        match self.objects.get(&key).await? {
            None => Ok((Config::new(), None)),
            Some(obj) => {
                let text = std::str::from_utf8(&obj.body).map_err(|e| corrupt(&key, e))?;
                let config = Config::parse(text).map_err(|e| corrupt(&key, e))?;
                Ok((config, Some(obj.etag)))
            }
        }
    }

    /// Sets and unsets config vars, then makes a release of the current
    /// source with the new config.
    pub async fn change_config(
        &self,
        env: &EnvRef,
        set: &BTreeMap<String, String>,
        unset: &[String],
        user: &str,
    ) -> Result<ConfigChange, StoreError> {
        let key = config_key(env);
        let mut attempt = 0;
        let (old, new) = loop {
            attempt += 1;
            let (old, etag) = self.config_with_etag(env).await?;
            slipway_core::config::check_secret_paths(env, set)?;
            let new = old.with_changes(set, unset)?;
            if new == old {
                return Ok(ConfigChange {
                    config: new,
                    diff: ConfigDiff::default(),
                    release: None,
                });
            }
            let guard = etag.as_deref().map_or(Write::IfAbsent, Write::IfMatch);
            match self
                .objects
                .put(&key, new.render(), "text/plain; charset=utf-8", guard)
                .await
            {
                Ok(_) => break (old, new),
                Err(ObjectError::Precondition { .. }) if attempt < MAX_CONFIG_ATTEMPTS => continue,
                Err(ObjectError::Precondition { .. }) => {
                    return Err(StoreError::Contention(attempt));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let diff = old.diff(&new);
        let base = match self.current(env).await? {
            Some(id) => Some(self.release(env, id).await?),
            None => self
                .list_releases(env, None, 1)
                .await?
                .releases
                .into_iter()
                .next(),
        };
        let release = match base {
            None => None,
            Some(base) => {
                let changed: Vec<&str> = diff.keys().collect();
                let description = Some(format!("config: {}", changed.join(", ")));
                let new = NewRelease::reusing(
                    env,
                    &base,
                    user,
                    Origin::Config { from: base.id },
                    description,
                );
                Some(self.create_release(new).await?)
            }
        };
        Ok(ConfigChange {
            config: new,
            diff,
            release,
        })
    }

    /// A release of `from` becomes a new release of `to` (another
    /// environment of the same app), with `to`'s config.
    pub async fn promote(
        &self,
        from: &EnvRef,
        id: ReleaseId,
        to: &EnvRef,
        user: &str,
    ) -> Result<Manifest, StoreError> {
        let base = self.release(from, id).await?;
        let origin = Origin::Promote {
            env: from.env.clone(),
            release: id,
        };
        let new = NewRelease::reusing(to, &base, user, origin, base.description.clone());
        self.create_release(new).await
    }

    /// One ready release.
    pub async fn release(&self, env: &EnvRef, id: ReleaseId) -> Result<Manifest, StoreError> {
        self.release_file(env, id)
            .await?
            .and_then(|(file, _)| file.ready())
            .ok_or_else(|| StoreError::ReleaseNotFound {
                env: env.to_string(),
                id,
            })
    }

    async fn release_file(
        &self,
        env: &EnvRef,
        id: ReleaseId,
    ) -> Result<Option<(ReleaseFile, String)>, StoreError> {
        let key = release_key(env, id, "release.json");
        match self.objects.get(&key).await? {
            None => Ok(None),
            Some(obj) => {
                let file: ReleaseFile =
                    serde_json::from_slice(&obj.body).map_err(|e| corrupt(&key, e))?;
                Ok(Some((file, obj.etag)))
            }
        }
    }

    /// Every release number that has a folder, newest first: how an
    /// environment from before the release index is indexed, once.
    async fn index_folders(&self, env: &EnvRef) -> Result<Vec<ReleaseId>, StoreError> {
        let prefix = slipway_core::keys::releases_prefix(env);
        let mut ids: Vec<ReleaseId> = self
            .objects
            .list_folders(&prefix)
            .await?
            .iter()
            .filter_map(|f| f.strip_prefix(&prefix)?.strip_suffix('/'))
            .filter_map(|name| ReleaseId::parse(name).ok())
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let keys: Vec<String> = ids.iter().map(|id| release_index_key(env, *id)).collect();
        index::add_all(&self.objects, &keys).await?;
        if !ids.is_empty() {
            tracing::info!(env = %env, releases = ids.len(), "indexed the releases of an environment from before the index");
        }
        Ok(ids)
    }

    /// Up to `max` claimed release numbers older than `before`, newest
    /// first, from the index: one listing.
    async fn release_ids(
        &self,
        env: &EnvRef,
        before: Option<ReleaseId>,
        max: usize,
    ) -> Result<Vec<ReleaseId>, StoreError> {
        let after = before.map(|b| release_index_key(env, b));
        let keys = index::newest(
            &self.objects,
            &release_index_prefix(env),
            after.as_deref(),
            max,
        )
        .await?;
        if keys.is_empty() && before.is_none() {
            let mut ids = self.index_folders(env).await?;
            ids.truncate(max);
            return Ok(ids);
        }
        Ok(keys
            .iter()
            .filter_map(|k| release_in_index(env, k))
            .collect())
    }

    /// Ready releases newest first, `limit` at most, older than `before`:
    /// a listing of the index and a read of each release's manifest (more
    /// only where claims failed or are still being filled).
    pub async fn list_releases(
        &self,
        env: &EnvRef,
        before: Option<ReleaseId>,
        limit: usize,
    ) -> Result<ReleasePage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut releases: Vec<Manifest> = Vec::new();
        let mut after = before;
        loop {
            // One more than the page, to know whether there is a next one.
            let ids = self.release_ids(env, after, limit + 1).await?;
            let files: Vec<_> = stream::iter(ids.iter().copied())
                .map(|id| self.release_file(env, id))
                .buffered(16)
                .try_collect()
                .await?;
            releases.extend(files.into_iter().flatten().filter_map(|(f, _)| f.ready()));
            if releases.len() > limit || ids.len() <= limit {
                break;
            }
            after = ids.last().copied();
        }
        let next = (releases.len() > limit).then(|| releases[limit - 1].id);
        releases.truncate(limit);
        Ok(ReleasePage { releases, next })
    }

    /// The release new instances boot with, if any.
    pub async fn current(&self, env: &EnvRef) -> Result<Option<ReleaseId>, StoreError> {
        let key = current_key(env);
        match self.objects.get(&key).await? {
            None => Ok(None),
            Some(obj) => {
                let text = std::str::from_utf8(&obj.body).map_err(|e| corrupt(&key, e))?;
                ReleaseId::parse(text.trim())
                    .map(Some)
                    .map_err(|e| corrupt(&key, e))
            }
        }
    }

    /// Points `current` at a ready release.
    pub async fn set_current(&self, env: &EnvRef, id: ReleaseId) -> Result<(), StoreError> {
        self.release(env, id).await?;
        let key = current_key(env);
        self.objects
            .put(&key, format!("{id}\n"), "text/plain", Write::Always)
            .await?;
        Ok(())
    }

    /// Takes the next release number: a conditional create of its
    /// `release.json` as a pending claim. Returns the number and the claim's
    /// ETag, which the final write must match.
    async fn claim_number(
        &self,
        env: &EnvRef,
        claim: &Claim,
    ) -> Result<(ReleaseId, String), StoreError> {
        let ids = self.release_ids(env, None, 1).await?;
        let mut candidate = match ids.first() {
            None => ReleaseId::FIRST,
            Some(&top) => match self.release_file(env, top).await? {
                // An entry without release.json: a writer that failed.
                None => top,
                file => match self.take_over(env, top, file, claim).await? {
                    Some(won) => return Ok(won),
                    None => top.next(),
                },
            },
        };
        for _ in 0..MAX_NUMBERING_ATTEMPTS {
            // The entry first: a claim is never missing from the index (an
            // entry whose claim failed is the next number to try).
            index::add(&self.objects, &release_index_key(env, candidate)).await?;
            let key = release_key(env, candidate, "release.json");
            let body = claim_body(claim, candidate)?;
            match self
                .objects
                .put(&key, body, "application/json", Write::IfAbsent)
                .await
            {
                Ok(etag) => return Ok((candidate, etag)),
                // Taken: by a writer still at work, or by one that died
                // (stale: take it over).
                Err(ObjectError::Precondition { .. }) => {
                    let file = self.release_file(env, candidate).await?;
                    if let Some(won) = self.take_over(env, candidate, file, claim).await? {
                        return Ok(won);
                    }
                    candidate = candidate.next();
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Contention(MAX_NUMBERING_ATTEMPTS))
    }

    /// Takes over `id`'s claim (`file`, as read) if it is pending and older
    /// than `CLAIM_TTL`: `If-Match` on the version read, so one writer wins.
    async fn take_over(
        &self,
        env: &EnvRef,
        id: ReleaseId,
        file: Option<(ReleaseFile, String)>,
        claim: &Claim,
    ) -> Result<Option<(ReleaseId, String)>, StoreError> {
        let Some((ReleaseFile::Pending(old), etag)) = file else {
            return Ok(None);
        };
        if !is_stale(&old) {
            return Ok(None);
        }
        let body = claim_body(claim, id)?;
        let key = release_key(env, id, "release.json");
        match self
            .objects
            .put(&key, body, "application/json", Write::IfMatch(&etag))
            .await
        {
            Ok(etag) => {
                tracing::warn!(env = %env, release = %id, stale_since = %old.claimed_at, "took over a stale release claim");
                Ok(Some((id, etag)))
            }
            Err(ObjectError::Precondition { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Numbers a release, stores its source and config snapshot, then its
    /// ready manifest, last.
    async fn create_release(&self, new: NewRelease<'_>) -> Result<Manifest, StoreError> {
        let config = self.config(new.env).await?;
        let started = self
            .start_release(
                new.env,
                new.created_by,
                &new.origin,
                new.format,
                new.copy_from,
                new.copy_etag,
            )
            .await?;
        self.finish_release(new, &started, &config).await
    }

    /// Claims the next number for a release and copies its source into
    /// it (`copy_etag`: only that version of `copy_from`). A failure gives
    /// the number back.
    async fn start_release(
        &self,
        env: &EnvRef,
        created_by: &str,
        origin: &Origin,
        format: ArchiveFormat,
        copy_from: &str,
        copy_etag: Option<&str>,
    ) -> Result<Started, StoreError> {
        let claim = Claim {
            id: ReleaseId::FIRST,
            claimed_at: Utc::now(),
            claimed_by: created_by.to_owned(),
            origin: origin.clone(),
        };
        let (id, claim_etag) = self.claim_number(env, &claim).await?;
        let started = Started {
            id,
            claim_etag,
            format,
            source_key: release_key(env, id, &format.source_file_name()),
        };
        match self
            .objects
            .copy(copy_from, copy_etag, &started.source_key, None)
            .await
        {
            Ok(()) => Ok(started),
            Err(e) => {
                self.abandon(env, &started).await;
                Err(e.into())
            }
        }
    }

    /// Stores a started release's config snapshot, then its ready
    /// manifest: from then on the release exists. A failure gives the
    /// number back.
    async fn finish_release(
        &self,
        new: NewRelease<'_>,
        started: &Started,
        config: &Config,
    ) -> Result<Manifest, StoreError> {
        let env = new.env;
        let written = async {
            let id = started.id;
            let env_key = release_key(env, id, "env");
            self.objects
                .put(
                    &env_key,
                    config.render(),
                    "text/plain; charset=utf-8",
                    Write::Always,
                )
                .await?;
            let manifest = Manifest {
                id,
                app: env.app.clone(),
                env: env.env.clone(),
                source: Source {
                    key: started.source_key.clone(),
                    format: started.format,
                    sha256: new.sha256,
                    size: new.size,
                },
                config_sha256: config.sha256(),
                procfile: new.procfile,
                git_ref: new.git_ref,
                description: new.description,
                created_at: Utc::now(),
                created_by: new.created_by.to_owned(),
                origin: new.origin,
            };
            let body = serde_json::to_vec_pretty(&ReleaseFile::Ready(manifest.clone()))
                .map_err(|e| corrupt("manifest", e))?;
            let key = release_key(env, id, "release.json");
            match self
                .objects
                .put(
                    &key,
                    body,
                    "application/json",
                    Write::IfMatch(&started.claim_etag),
                )
                .await
            {
                Ok(_) => Ok(manifest),
                Err(ObjectError::Precondition { .. }) => Err(StoreError::ClaimLost(id)),
                Err(e) => Err(e.into()),
            }
        };
        match written.await {
            Ok(m) => {
                tracing::info!(env = %env, release = %m.id, created_by = %m.created_by, "release created");
                Ok(m)
            }
            Err(e) => {
                self.abandon(env, started).await;
                Err(e)
            }
        }
    }

    /// Gives a started release's number back, so the next release can use
    /// it: its copied source, then its claim, only if the claim is still
    /// ours (a claim lives far longer than a function may run, so no other
    /// writer can have taken it over and copied a source of its own).
    async fn abandon(&self, env: &EnvRef, started: &Started) {
        let id = started.id;
        if let Err(e) = self.objects.delete(&started.source_key).await {
            tracing::warn!(env = %env, release = %id, error = %e, "could not remove a failed release's source");
        }
        let key = release_key(env, id, "release.json");
        match self
            .objects
            .delete_if_match(&key, &started.claim_etag)
            .await
        {
            Ok(()) | Err(ObjectError::Precondition { .. }) => {}
            Err(del) => {
                tracing::warn!(env = %env, release = %id, error = %del, "could not release a failed claim")
            }
        }
    }
}

fn is_stale(claim: &Claim) -> bool {
    let age = Utc::now().signed_duration_since(claim.claimed_at);
    age.to_std().is_ok_and(|age| age > CLAIM_TTL)
}

fn claim_body(claim: &Claim, id: ReleaseId) -> Result<Vec<u8>, StoreError> {
    let claim = Claim {
        id,
        ..claim.clone()
    };
    serde_json::to_vec(&ReleaseFile::Pending(claim)).map_err(|e| corrupt("claim", e))
}
