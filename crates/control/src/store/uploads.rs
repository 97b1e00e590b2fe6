//! Uploads: archives that arrive under `<app>/<env>/uploads/` and become
//! releases, or are moved to `rejected/` with a reason.
//!
//! S3 delivers events at least once, so the same upload may arrive twice,
//! even at once. The upload's key and ETag are recorded in the release's
//! manifest (already in its pending claim), and a second delivery that finds
//! them returns the existing release instead of making another. A processed
//! upload is deleted; a delivery for an upload that is gone is a no-op.

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
        if let Some(id) = self.find_upload(env, key, &head.etag).await? {
            self.objects.delete(key).await?;
            return Ok(UploadOutcome::Duplicate(id));
        }
        if head.size > self.limits.max_archive_bytes {
            let err = ArchiveError::ArchiveTooLarge {
                limit: self.limits.max_archive_bytes,
            };
            return self.reject(env, key, &head.etag, &err).await;
        }
        let stream = match self.objects.open(key, Some(&head.etag)).await {
            Ok(Some(stream)) => stream,
            Ok(None) | Err(ObjectError::Precondition { .. }) => return Ok(UploadOutcome::Gone),
            Err(e) => return Err(e.into()),
        };
        let reader = SyncIoBridge::new(stream.into_async_read());
        let limits = self.limits;
        let inspection = tokio::task::spawn_blocking(move || archive::inspect(reader, &limits))
            .await
            .map_err(|e| StoreError::Read(e.to_string()))?;
        let inspection = match inspection {
            Ok(i) => i,
            // The network failed, not the archive: let S3 deliver it again.
            Err(ArchiveError::Read(detail)) => return Err(StoreError::Read(detail)),
            Err(err) => return self.reject(env, key, &head.etag, &err).await,
        };
        let meta = |k: &str| {
            head.metadata
                .get(k)
                .and_then(|v| decode_meta(v))
                .filter(|v| !v.is_empty())
        };
        let created_by = meta(META_USER).unwrap_or_else(|| uploader.to_owned());
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
            origin: Origin::Upload {
                key: key.to_owned(),
                etag: head.etag.clone(),
            },
        };
        let manifest = self.create_release(new).await?;
        self.objects.delete(key).await?;
        Ok(UploadOutcome::Created(manifest))
    }

    /// A release (ready or still being made) of this exact upload version.
    async fn find_upload(
        &self,
        env: &EnvRef,
        key: &str,
        etag: &str,
    ) -> Result<Option<ReleaseId>, StoreError> {
        let ids = self.release_ids(env, None, DUPLICATE_WINDOW).await?;
        let files: Vec<_> = stream::iter(ids)
            .map(|id| async move { self.release_file(env, id).await.map(|f| (id, f)) })
            .buffered(8)
            .collect()
            .await;
        for file in files {
            let (id, file) = file?;
            if let Some((file, _)) = file
                && let Origin::Upload { key: k, etag: e } = ReleaseFile::origin(&file)
                && k == key
                && e == etag
            {
                return Ok(Some(id));
            }
        }
        Ok(None)
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
        if let Some(object) = self.objects.get(&reason_key).await? {
            let reason = serde_json::from_slice::<serde_json::Value>(&object.body)
                .ok()
                .and_then(|v| v.get("reason")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| "rejected".into());
            return Ok(Some(UploadStatus::Rejected { reason }));
        }
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
        let name = key
            .strip_prefix(&slipway_core::keys::uploads_prefix(env))
            .unwrap_or(key);
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
