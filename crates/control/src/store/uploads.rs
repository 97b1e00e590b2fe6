//! Uploads: archives that arrive under `<app>/<env>/uploads/` and become
//! releases, or are moved to `rejected/` with a reason.
//!
//! S3 delivers events at least once, so the same upload may arrive twice,
//! even at once. The upload's key and ETag are recorded in the release's
//! manifest (already in its pending claim), and a delivery that finds them
//! under a lower number returns that release instead of making another.
//! A delivery numbers its release and copies the archive in while it reads
//! it, and gives the number back when the archive is refused. A processed
//! upload is deleted, and a receipt `released/<name>.json` names its release
//! for whoever asks what became of it; a delivery for an upload that is
//! gone is a no-op.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::io::SyncIoBridge;

use super::{
    Manifest, NewRelease, ObjectError, Origin, ReleaseFile, ReleaseStore, StoreError, Write,
};
use slipway_core::archive::{self, ArchiveError, ArchiveFormat};
use slipway_core::names::{EnvRef, ReleaseId};

/// How long a presigned upload URL stays valid.
pub const UPLOAD_URL_TTL: Duration = Duration::from_secs(15 * 60);
/// How many of the newest releases are checked for a duplicate delivery.
const DUPLICATE_WINDOW: usize = 20;
const META_USER: &str = "slipway-user";
const META_DESCRIPTION: &str = "slipway-description";
const META_GIT_REF: &str = "slipway-git-ref";
pub const MAX_DESCRIPTION: usize = 500;

/// What happened to one upload.
// Short-lived values, one at a time: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum UploadOutcome {
    Created(Manifest),
    /// Already made into this release by an earlier delivery.
    Duplicate(ReleaseId),
    /// Refused and moved aside; it never becomes a release.
    Rejected {
        reason: String,
        moved_to: String,
    },
    /// Nothing to do: processed earlier, or replaced by a newer upload
    /// (which has an event of its own).
    Gone,
}

/// What a client needs to upload an archive straight to S3.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadTicket {
    pub upload_url: String,
    pub key: String,
    pub expires_at: DateTime<Utc>,
    /// Headers the PUT must carry exactly (they are signed).
    pub headers: std::collections::BTreeMap<String, String>,
}

/// What became of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum UploadStatus {
    Pending,
    Released { release: ReleaseId },
    Rejected { reason: String },
}

/// What reading an upload found.
enum Inspected {
    Archive(archive::Inspection),
    /// Deleted or replaced since its event.
    Gone,
    /// Not an archive the policy accepts.
    Refused(ArchiveError),
}

/// `released/<name>.json`: which release an upload became.
#[derive(Debug, Serialize, Deserialize)]
struct Receipt {
    upload: String,
    etag: String,
    release: ReleaseId,
}

/// `<name>` of `env`'s upload key `<app>/<env>/uploads/<name>`.
fn upload_name<'k>(env: &EnvRef, key: &'k str) -> &'k str {
    key.strip_prefix(&slipway_core::keys::uploads_prefix(env))
        .unwrap_or(key)
}

/// Splits `<app>/<env>/uploads/<name>` into the environment and name.
pub fn parse_upload_key(key: &str) -> Option<(EnvRef, &str)> {
    let mut parts = key.splitn(4, '/');
    let (app, env, folder, name) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if folder != "uploads" || name.is_empty() || name.ends_with('/') || key.len() > 1024 {
        return None;
    }
    Some((EnvRef::parse(app, env).ok()?, name))
}

fn encode_meta(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn decode_meta(value: &str) -> Option<String> {
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .ok()
        .map(|s| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(MAX_DESCRIPTION)
                .collect()
        })
}

impl ReleaseStore {
    /// A presigned PUT into `uploads/`; the user, description and git ref
    /// travel as signed object metadata into the release's manifest.
    pub async fn upload_ticket(
        &self,
        env: &EnvRef,
        user: &str,
        description: Option<&str>,
        git_ref: Option<&str>,
        format: ArchiveFormat,
    ) -> Result<UploadTicket, StoreError> {
        let now = Utc::now();
        let key = slipway_core::keys::upload_key(
            env,
            &format!(
                "{}-{}.{}",
                now.format("%Y%m%dT%H%M%SZ"),
                uuid::Uuid::new_v4().simple(),
                format.extension()
            ),
        );
        let mut metadata = vec![(META_USER.to_owned(), encode_meta(user))];
        if let Some(d) = description {
            metadata.push((META_DESCRIPTION.to_owned(), encode_meta(d)));
        }
        if let Some(r) = git_ref {
            metadata.push((META_GIT_REF.to_owned(), encode_meta(r)));
        }
        let signed = self
            .objects
            .presign_put(&key, &metadata, UPLOAD_URL_TTL)
            .await?;
        Ok(UploadTicket {
            upload_url: signed.url,
            key,
            expires_at: now + UPLOAD_URL_TTL,
            headers: signed
                .headers
                .into_iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
                .collect(),
        })
    }

    /// Turns the upload at `key` into the environment's next release.
    /// `uploader` names who put it there when its metadata does not.
    pub async fn release_upload(
        &self,
        env: &EnvRef,
        key: &str,
        uploader: &str,
    ) -> Result<UploadOutcome, StoreError> {
        let Some(head) = self.objects.head(key).await? else {
            return Ok(UploadOutcome::Gone);
        };
        if head.size > self.limits.max_archive_bytes {
            let err = ArchiveError::ArchiveTooLarge {
                limit: self.limits.max_archive_bytes,
            };
            return self.reject(env, key, &head.etag, &err).await;
        }
        let meta = |k: &str| {
            head.metadata
                .get(k)
                .and_then(|v| decode_meta(v))
                .filter(|v| !v.is_empty())
        };
        let created_by = meta(META_USER).unwrap_or_else(|| uploader.to_owned());
        let origin = Origin::Upload {
            key: key.to_owned(),
            etag: head.etag.clone(),
        };
        // Three things at once: the archive is read through its checks, the
        // recent releases are searched for an earlier delivery of it, and
        // the release is started (numbered, this version copied in under
        // the format its name says). A duplicate or a refused archive is
        // rare, and the number and copy it wasted are given back; every
        // other upload is released without waiting for the search and the
        // copy after the read.
        let named = ArchiveFormat::named(key);
        let starting = async {
            let Some(format) = named else {
                return Ok(None);
            };
            let config = self.config(env).await?;
            let started = self
                .start_release(env, &created_by, &origin, format, key, Some(&head.etag))
                .await?;
            Ok::<_, StoreError>(Some((config, started)))
        };
        let (earlier, inspection, started) = tokio::join!(
            self.find_upload(env, key, &head.etag),
            self.inspect(key, &head.etag),
            starting
        );
        // The search may have seen this delivery's own claim; a delivery
        // defers only to a lower number, so of two at once the later gives
        // way and the earlier carries on.
        let ours = match &started {
            Ok(Some((_, started))) => Some(started.id),
            _ => None,
        };
        let earlier = earlier.map(|ids| {
            ids.into_iter()
                .find(|id| ours.is_none_or(|ours| *id < ours))
        });
        // Anything but "no earlier delivery, a sound archive" gives the
        // started release back.
        if !matches!(
            (&earlier, &inspection),
            (Ok(None), Ok(Inspected::Archive(_)))
        ) && let Ok(Some((_, started))) = &started
        {
            self.abandon(env, started).await;
        }
        if let Some(id) = earlier? {
            self.objects.delete(key).await?;
            return Ok(UploadOutcome::Duplicate(id));
        }
        let inspection = match inspection? {
            Inspected::Archive(i) => i,
            Inspected::Gone => return Ok(UploadOutcome::Gone),
            Inspected::Refused(err) => return self.reject(env, key, &head.etag, &err).await,
        };
        let new = NewRelease {
            env,
            copy_from: key,
            copy_etag: Some(&head.etag),
            format: inspection.format,
            sha256: inspection.sha256,
            size: inspection.size,
            procfile: inspection.procfile,
            git_ref: meta(META_GIT_REF),
            description: meta(META_DESCRIPTION),
            created_by: &created_by,
            origin: origin.clone(),
        };
        let started = match started {
            Ok(started) => started,
            // The copy fails once another delivery has released the upload
            // and deleted it; anything else is for S3 to deliver again.
            Err(e) => {
                return match self.objects.head(key).await? {
                    Some(now) if now.etag == head.etag => Err(e),
                    _ => Ok(UploadOutcome::Gone),
                };
            }
        };
        let manifest = match started {
            Some((config, started)) if started.format == inspection.format => {
                self.finish_release(new, &started, &config).await?
            }
            // Named for one format, compressed with the other: the copy
            // has the wrong name, so start again under the right one.
            Some((_, started)) => {
                self.abandon(env, &started).await;
                self.create_release(new).await?
            }
            None => self.create_release(new).await?,
        };
        let receipt = serde_json::to_vec(&Receipt {
            upload: key.to_owned(),
            etag: head.etag.clone(),
            release: manifest.id,
        })
        .map_err(|e| super::corrupt("upload receipt", e))?;
        let name = upload_name(env, key);
        let receipt_key = slipway_core::keys::released_key(env, name);
        tokio::try_join!(
            self.objects
                .put(&receipt_key, receipt, "application/json", Write::Always),
            self.objects.delete(key),
        )?;
        Ok(UploadOutcome::Created(manifest))
    }

    /// Reads the upload at `key` (this version only) through the archive
    /// checks.
    async fn inspect(&self, key: &str, etag: &str) -> Result<Inspected, StoreError> {
        let stream = match self.objects.open(key, Some(etag)).await {
            Ok(Some(stream)) => stream,
            Ok(None) | Err(ObjectError::Precondition { .. }) => return Ok(Inspected::Gone),
            Err(e) => return Err(e.into()),
        };
        let reader = SyncIoBridge::new(stream.into_async_read());
        let limits = self.limits;
        let inspection = tokio::task::spawn_blocking(move || archive::inspect(reader, &limits))
            .await
            .map_err(|e| StoreError::Read(e.to_string()))?;
        match inspection {
            Ok(i) => Ok(Inspected::Archive(i)),
            // The network failed, not the archive: let S3 deliver it again.
            Err(ArchiveError::Read(detail)) => Err(StoreError::Read(detail)),
            Err(err) => Ok(Inspected::Refused(err)),
        }
    }

    /// The releases (ready or still being made) of this exact upload
    /// version among the newest, newest first.
    async fn find_upload(
        &self,
        env: &EnvRef,
        key: &str,
        etag: &str,
    ) -> Result<Vec<ReleaseId>, StoreError> {
        let ids = self.release_ids(env, None, DUPLICATE_WINDOW).await?;
        let files: Vec<_> = stream::iter(ids)
            .map(|id| async move { self.release_file(env, id).await.map(|f| (id, f)) })
            .buffered(8)
            .collect()
            .await;
        let mut found = Vec::new();
        for file in files {
            let (id, file) = file?;
            if let Some((file, _)) = file
                && let Origin::Upload { key: k, etag: e } = ReleaseFile::origin(&file)
                && k == key
                && e == etag
            {
                found.push(id);
            }
        }
        Ok(found)
    }

    /// What became of the upload `<app>/<env>/uploads/<name>`: rejected
    /// (its reason is beside the moved object), released (a recent release
    /// came from it), or still pending. `None` for a name that could not
    /// be an upload's (it never becomes a key).
    pub async fn upload_status(
        &self,
        env: &EnvRef,
        name: &str,
    ) -> Result<Option<UploadStatus>, StoreError> {
        let key = slipway_core::keys::upload_key(env, name);
        if parse_upload_key(&key).is_none_or(|(_, n)| n != name)
            || name.contains('/')
            || name.starts_with('.')
            || !name.bytes().all(|b| b.is_ascii_graphic())
        {
            return Ok(None);
        }
        let reason_key =
            slipway_core::keys::rejection_reason_key(&slipway_core::keys::rejected_key(env, name));
        let released_key = slipway_core::keys::released_key(env, name);
        let (reason, receipt, upload) = tokio::try_join!(
            self.objects.get(&reason_key),
            self.objects.get(&released_key),
            self.objects.head(&key),
        )?;
        if let Some(object) = reason {
            let reason = serde_json::from_slice::<serde_json::Value>(&object.body)
                .ok()
                .and_then(|v| v.get("reason")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| "rejected".into());
            return Ok(Some(UploadStatus::Rejected { reason }));
        }
        if let Some(receipt) = receipt.and_then(|o| serde_json::from_slice::<Receipt>(&o.body).ok())
        {
            return Ok(Some(UploadStatus::Released {
                release: receipt.release,
            }));
        }
        if upload.is_some() {
            return Ok(Some(UploadStatus::Pending));
        }
        // Gone without a receipt: a release whose receipt was never written
        // (its function stopped between the two) is found among the recent
        // ones.
        let recent = self.list_releases(env, None, 20).await?;
        let made = recent.releases.iter().find(
            |m| matches!(&m.origin, slipway_core::manifest::Origin::Upload { key: k, .. } if *k == key),
        );
        Ok(Some(match made {
            Some(m) => UploadStatus::Released { release: m.id },
            None => UploadStatus::Pending,
        }))
    }

    /// Moves a refused upload to `rejected/` beside a JSON reason.
    async fn reject(
        &self,
        env: &EnvRef,
        key: &str,
        etag: &str,
        err: &ArchiveError,
    ) -> Result<UploadOutcome, StoreError> {
        let name = upload_name(env, key);
        let moved_to = slipway_core::keys::rejected_key(env, name);
        let reason = err.to_string();
        match self
            .objects
            .copy(key, Some(etag), &moved_to, Some("rejected"))
            .await
        {
            Ok(()) => {}
            Err(ObjectError::Precondition { .. }) => return Ok(UploadOutcome::Gone),
            Err(e) => return Err(e.into()),
        }
        let record = serde_json::json!({
            "upload": key,
            "etag": etag,
            "reason": reason,
            "rejected_at": Utc::now(),
        });
        let body =
            serde_json::to_vec_pretty(&record).map_err(|e| super::corrupt("rejection", e))?;
        self.objects
            .put(
                &slipway_core::keys::rejection_reason_key(&moved_to),
                body,
                "application/json",
                Write::Always,
            )
            .await?;
        self.objects.delete(key).await?;
        tracing::warn!(env = %env, upload = key, reason = %reason, "upload rejected");
        Ok(UploadOutcome::Rejected { reason, moved_to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_keys_name_their_environment() {
        let (env, name) = parse_upload_key("hello/prod/uploads/my app ✓.tar.gz").unwrap();
        assert_eq!(env.to_string(), "hello/prod");
        assert_eq!(name, "my app ✓.tar.gz");
        let (_, nested) = parse_upload_key("hello/prod/uploads/a/b.tar.zst").unwrap();
        assert_eq!(nested, "a/b.tar.zst");
    }

    #[test]
    fn keys_outside_an_uploads_folder_are_not_uploads() {
        for key in [
            "hello/prod/releases/r1/source.tar.gz",
            "hello/prod/uploads/",
            "hello/prod/uploads/dir/",
            "hello/uploads/x.tar.gz",
            "Hello/prod/uploads/x.tar.gz",
            "../prod/uploads/x.tar.gz",
            "hello/prod/env",
            "",
        ] {
            assert!(parse_upload_key(key).is_none(), "{key}");
        }
    }

    #[test]
    fn metadata_values_survive_any_text_and_lose_control_characters() {
        let text = "Fix: naïve café\nline";
        assert!(encode_meta(text).is_ascii());
        assert_eq!(
            decode_meta(&encode_meta(text)).unwrap(),
            "Fix: naïve caféline"
        );
    }
}
