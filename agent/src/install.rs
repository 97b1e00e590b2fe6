//! Getting a release onto the instance: its manifest, its verified source
//! tree and its config.
//!
//! The archive streams from the store straight into extraction into
//! `releases/r<N>.partial`, hashed as it goes; only when its sha256 and
//! size match the manifest is the directory renamed to `r<N>`. The config
//! snapshot is checked against the manifest's `config_sha256` the same way,
//! so nothing the agent runs came from anywhere but the release it was
//! asked for.

use std::os::unix::ffi::OsStrExt;
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

/// Gives a release tree, just unpacked by root, to the user the app runs
/// as. The walk goes by descriptor (`openat` with
/// `O_NOFOLLOW|O_DIRECTORY`, `fchownat` without following links) and
/// gives a directory away only after everything in it: until then it is
/// root's, so the app user cannot swap an entry for a link to `/` while
/// root walks it.
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    chown_tree_watched(dir, uid, gid, &mut |_| {})
}

/// `chown_tree`, calling `before_descent` with each subdirectory's path
/// just before the walk enters it (the tests swap it for a link there).
fn chown_tree_watched(
    dir: &Path,
    uid: u32,
    gid: u32,
    before_descent: &mut dyn FnMut(&Path),
) -> std::io::Result<()> {
    let fd = nix::fcntl::open(dir, DIR_FLAGS, nix::sys::stat::Mode::empty())
        .map_err(|e| walk_error(dir, e))?;
    give_away(fd, dir, uid, gid, before_descent)
}

const DIR_FLAGS: nix::fcntl::OFlag = nix::fcntl::OFlag::O_RDONLY
    .union(nix::fcntl::OFlag::O_DIRECTORY)
    .union(nix::fcntl::OFlag::O_NOFOLLOW)
    .union(nix::fcntl::OFlag::O_CLOEXEC);

fn give_away(
    fd: std::os::fd::OwnedFd,
    path: &Path,
    uid: u32,
    gid: u32,
    before_descent: &mut dyn FnMut(&Path),
) -> std::io::Result<()> {
    use nix::dir::{Dir, Type};
    use nix::fcntl::{AtFlags, openat};
    use nix::sys::stat::{Mode, SFlag, fstatat};
    use nix::unistd::{Gid, Uid, fchown, fchownat};
    let (owner, group) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    let mut entries = Vec::new();
    {
        let dup = fd.try_clone()?;
        let mut listing = Dir::from_fd(dup).map_err(|e| walk_error(path, e))?;
        for entry in listing.iter() {
            let entry = entry.map_err(|e| walk_error(path, e))?;
            let name = entry.file_name().to_owned();
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                entries.push((name, entry.file_type()));
            }
        }
    }
    for (name, kind) in entries {
        let child = path.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        let is_dir = match kind {
            Some(kind) => kind == Type::Directory,
            None => fstatat(&fd, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
                .map_err(|e| walk_error(&child, e))?,
        };
        if is_dir {
            before_descent(&child);
            let sub = openat(&fd, name.as_c_str(), DIR_FLAGS, Mode::empty())
                .map_err(|e| walk_error(&child, e))?;
            give_away(sub, &child, uid, gid, before_descent)?;
        } else {
            fchownat(
                &fd,
                name.as_c_str(),
                owner,
                group,
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| walk_error(&child, e))?;
        }
    }
    fchown(&fd, owner, group).map_err(|e| walk_error(path, e))
}

fn walk_error(path: &Path, errno: nix::errno::Errno) -> std::io::Error {
    use nix::errno::Errno;
    let why = match errno {
        Errno::ELOOP | Errno::ENOTDIR => {
            "was swapped for something else while being given to the app user".to_owned()
        }
        other => other.desc().to_owned(),
    };
    std::io::Error::other(format!("{}: {why}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    const APP_USER: u32 = 65534;

    fn owner(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().uid()
    }

    /// `r1/{a/b/f, c, l -> /}` and a directory outside it, all root's.
    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let release = tmp.path().join("r1");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(release.join("a/b")).unwrap();
        std::fs::create_dir_all(outside.join("etc")).unwrap();
        std::fs::write(release.join("a/b/f"), "x").unwrap();
        std::fs::write(release.join("c"), "x").unwrap();
        std::fs::write(outside.join("etc/passwd"), "root:x:0:0\n").unwrap();
        symlink(&outside, release.join("l")).unwrap();
        (tmp, release, outside)
    }

    fn root_only() -> bool {
        let root = nix::unistd::geteuid().is_root();
        if !root {
            eprintln!("skipped: only root can give files away");
        }
        root
    }

    #[test]
    fn a_release_tree_is_given_away_whole_and_its_links_are_not_followed() {
        if !root_only() {
            return;
        }
        let (_tmp, release, outside) = tree();

        chown_tree(&release, APP_USER, APP_USER).unwrap();

        for path in ["", "a", "a/b", "a/b/f", "c", "l"] {
            assert_eq!(owner(&release.join(path)), APP_USER, "{path}");
        }
        assert_eq!(owner(&outside), 0);
        assert_eq!(owner(&outside.join("etc/passwd")), 0);
    }

    #[test]
    fn a_directory_swapped_for_a_link_during_the_walk_is_not_followed() {
        if !root_only() {
            return;
        }
        let (_tmp, release, outside) = tree();
        let mut parents_still_roots = true;

        let result = chown_tree_watched(&release, APP_USER, APP_USER, &mut |dir| {
            // The app user could swap `dir` only if its parent were already
            // theirs; swap it anyway, as root, and see that nothing follows.
            parents_still_roots &= owner(dir.parent().unwrap()) == 0;
            if dir.ends_with("a") {
                std::fs::rename(dir, dir.with_file_name("a.moved")).unwrap();
                symlink(outside.join("etc"), dir).unwrap();
            }
        });

        let err = result.unwrap_err().to_string();
        assert!(err.contains("swapped"), "{err}");
        assert!(
            parents_still_roots,
            "a directory was given away before its children"
        );
        assert_eq!(owner(&outside.join("etc")), 0);
        assert_eq!(owner(&outside.join("etc/passwd")), 0);
    }
}
