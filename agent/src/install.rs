//! Getting a release onto the instance: its manifest, its verified source
//! tree and its config.
//!
//! The archive streams from the store straight into extraction into
//! `releases/r<N>.partial`, hashed as it goes; only when its sha256 and
//! size match the manifest is the directory renamed to `r<N>`. The config
//! snapshot is checked against the manifest's `config_sha256` the same way,
//! so nothing the agent runs came from anywhere but the release it was
//! asked for.

use std::path::{Path, PathBuf};
use std::time::Instant;

use slipway_core::archive::Limits;
use slipway_core::config::Config;
use slipway_core::env_settings::EnvSettings;
use slipway_core::extract::{ExtractError, Extracted, extract_verified};
use slipway_core::keys::{release_key, settings_key};
use slipway_core::manifest::{Manifest, ReleaseFile};
use slipway_core::names::ReleaseId;
use tokio_util::io::SyncIoBridge;

use crate::layout::{Layout, remove_tree_if_exists};
use crate::source::{Body, ReleaseUrl, SourceError, Store};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("release {0} does not exist")]
    NoRelease(ReleaseId),
    #[error("release {0} is still being made; try again in a moment")]
    Pending(ReleaseId),
    #[error("release.json of {id} is damaged: {why}")]
    BadManifest { id: ReleaseId, why: String },
    #[error("the config snapshot of {id} {why}")]
    BadConfig { id: ReleaseId, why: String },
    #[error("settings.json: {0}")]
    BadSettings(String),
    #[error("unpacking {id}: {source}")]
    Extract {
        id: ReleaseId,
        #[source]
        source: ExtractError,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InstallError {
    let what = what.into();
    move |source| InstallError::Io { what, source }
}

/// Reads and checks `release.json`: ready, and about the release the URL
/// names, with its source where the layout puts it.
pub async fn manifest(store: &Store, url: &ReleaseUrl) -> Result<Manifest, InstallError> {
    let id = url.id;
    let key = release_key(&url.env, id, "release.json");
    let bytes = store.get(&key).await?.ok_or(InstallError::NoRelease(id))?;
    let bad = |why: String| InstallError::BadManifest { id, why };
    let file: ReleaseFile = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let manifest = file.ready().ok_or(InstallError::Pending(id))?;
    if manifest.id != id || manifest.app != url.env.app || manifest.env != url.env.env {
        return Err(bad(format!(
            "it describes {}/{}/{}",
            manifest.app, manifest.env, manifest.id
        )));
    }
    let expected = release_key(&url.env, id, &manifest.source.format.source_file_name());
    if manifest.source.key != expected {
        return Err(bad(format!(
            "its source is at {}, not {expected}",
            manifest.source.key
        )));
    }
    Ok(manifest)
}

/// The environment's settings; an environment without the file gets the
/// defaults.
pub async fn env_settings(store: &Store, url: &ReleaseUrl) -> Result<EnvSettings, InstallError> {
    match store.get(&settings_key(&url.env)).await? {
        None => Ok(EnvSettings::default()),
        Some(bytes) => {
            EnvSettings::parse(&bytes).map_err(|e| InstallError::BadSettings(e.to_string()))
        }
    }
}

/// The release's config snapshot, checked against the manifest.
pub async fn config(
    store: &Store,
    url: &ReleaseUrl,
    manifest: &Manifest,
) -> Result<Config, InstallError> {
    let id = url.id;
    let bad = |why: String| InstallError::BadConfig { id, why };
    let bytes = store
        .get(&release_key(&url.env, id, "env"))
        .await?
        .ok_or_else(|| bad("is missing".into()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("is not text".into()))?;
    // Parse errors name the line, never the value.
    let config = Config::parse(text).map_err(|e| bad(format!("is not valid: {e}")))?;
    if config.sha256() != manifest.config_sha256 {
        return Err(bad("does not match the manifest's config_sha256".into()));
    }
    Ok(config)
}

/// What unpacking measured.
pub struct Unpacked {
    pub extracted: Extracted,
    pub millis: u128,
}

/// Streams the source into `dest` (which must not exist) and verifies it;
/// on any failure `dest` is gone.
pub async fn unpack(
    store: &Store,
    manifest: &Manifest,
    dest: PathBuf,
    limits: Limits,
) -> Result<Unpacked, InstallError> {
    let id = manifest.id;
    let started = Instant::now();
    let body = store.open(&manifest.source.key).await?;
    let sha256 = manifest.source.sha256.clone();
    let size = manifest.source.size;
    let bridge = match body {
        Body::File(file) => Err(file),
        Body::Stream(stream) => Ok(SyncIoBridge::new(stream.into_async_read())),
    };
    let result = tokio::task::spawn_blocking(move || match bridge {
        Err(file) => extract_verified(file, &dest, &limits, &sha256, size),
        Ok(stream) => extract_verified(stream, &dest, &limits, &sha256, size),
    })
    .await
    .map_err(|e| InstallError::Io {
        what: "the unpacking thread".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let extracted = result.map_err(|source| InstallError::Extract { id, source })?;
    Ok(Unpacked {
        extracted,
        millis: started.elapsed().as_millis(),
    })
}

/// Unpacks into `r<N>.partial` and renames it to `r<N>` once verified.
pub async fn install_source(
    store: &Store,
    manifest: &Manifest,
    layout: &Layout,
    limits: Limits,
) -> Result<Unpacked, InstallError> {
    let id = manifest.id;
    let partial = layout.partial(id);
    let final_dir = layout.release(id);
    remove_tree_if_exists(&partial).map_err(io_err(format!("removing {}", partial.display())))?;
    remove_tree_if_exists(&final_dir)
        .map_err(io_err(format!("removing {}", final_dir.display())))?;
    let unpacked = unpack(store, manifest, partial.clone(), limits).await?;
    std::fs::rename(&partial, &final_dir)
        .map_err(io_err(format!("renaming {}", partial.display())))?;
    crate::layout::sync_dir(&layout.releases()).map_err(io_err("syncing releases/"))?;
    Ok(unpacked)
}

/// Gives a tree to the user the app runs as (lchown: links are not
/// followed).
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            chown_tree(&path, uid, gid)?;
        } else {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}
