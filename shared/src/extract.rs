//! Unpacking a release archive into a directory, as the agent does on every
//! instance.
//!
//! The archive is read once, through the same hash, decompressor and entry
//! policy as [`archive::inspect`](crate::archive::inspect), straight into a
//! new directory (the caller's `r<N>.partial`). Files lose setuid, setgid and
//! sticky bits; links are created only as the policy allows; nothing is ever
//! written through a link. The sha256 and size are compared with the
//! manifest's at the end, and on any failure the directory is removed, so a
//! directory that survives holds exactly the archive the manifest names.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::Path;

use crate::archive::{ArchiveError, CheckedEntry, Limits, scan};

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("archive {what} is {actual}, but the manifest says {expected}")]
    Mismatch {
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{path} already exists")]
    Exists { path: String },
    #[error("could not create {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// What was unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub sha256: String,
    pub size: u64,
    pub entries: u64,
}

fn write_err(path: &Path, e: io::Error) -> ArchiveError {
    ArchiveError::Write {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Removes whatever is at `path`, unless it is a directory; never follows a
/// link.
fn clear(path: &Path) -> Result<(), ArchiveError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(write_err(
            path,
            io::Error::other("a directory is in the way"),
        )),
        Ok(_) => fs::remove_file(path).map_err(|e| write_err(path, e)),
        Err(_) => Ok(()),
    }
}

fn parent_dirs(dest: &Path, path: &Path) -> Result<(), ArchiveError> {
    match dest.join(path).parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(|e| write_err(parent, e)),
        None => Ok(()),
    }
}

fn unpack_entry(
    dest: &Path,
    entry: &CheckedEntry,
    data: &mut dyn Read,
) -> Result<(), ArchiveError> {
    match entry {
        CheckedEntry::Skip => Ok(()),
        CheckedEntry::Dir(path) => {
            let full = dest.join(path);
            fs::create_dir_all(&full).map_err(|e| write_err(&full, e))
        }
        CheckedEntry::File { path, mode } => {
            parent_dirs(dest, path)?;
            let full = dest.join(path);
            clear(&full)?;
            let mode = mode & 0o777; // no setuid, setgid or sticky bit
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&full)
                .map_err(|e| write_err(&full, e))?;
            io::copy(data, &mut file).map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
            // The umask may have taken bits the archive asked for.
            fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                .map_err(|e| write_err(&full, e))
        }
        CheckedEntry::Symlink { path, target } => {
            parent_dirs(dest, path)?;
            let full = dest.join(path);
            clear(&full)?;
            symlink(target, &full).map_err(|e| write_err(&full, e))
        }
        CheckedEntry::HardLink { path, target } => {
            let source = dest.join(target);
            let is_file = fs::symlink_metadata(&source).is_ok_and(|m| m.is_file());
            if !is_file {
                return Err(ArchiveError::LinkEscapes {
                    path: path.display().to_string(),
                    target: target.display().to_string(),
                });
            }
            parent_dirs(dest, path)?;
            let full = dest.join(path);
            clear(&full)?;
            fs::hard_link(&source, &full).map_err(|e| write_err(&full, e))
        }
    }
}

/// Unpacks `source` into the new directory `dest` and checks it against the
/// manifest's sha256 and size. On any error `dest` is gone.
pub fn extract_verified<R: Read>(
    source: R,
    dest: &Path,
    limits: &Limits,
    expected_sha256: &str,
    expected_size: u64,
) -> Result<Extracted, ExtractError> {
    match fs::create_dir(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(ExtractError::Exists {
                path: dest.display().to_string(),
            });
        }
        Err(source) => {
            return Err(ExtractError::Io {
                path: dest.display().to_string(),
                source,
            });
        }
    }
    let result = scan(source, limits, &mut |entry, data| {
        unpack_entry(dest, entry, data)
    })
    .map_err(ExtractError::from)
    .and_then(|scan| {
        if scan.size != expected_size {
            return Err(ExtractError::Mismatch {
                what: "size",
                expected: expected_size.to_string(),
                actual: scan.size.to_string(),
            });
        }
        if scan.sha256 != expected_sha256 {
            return Err(ExtractError::Mismatch {
                what: "sha256",
                expected: expected_sha256.to_owned(),
                actual: scan.sha256,
            });
        }
        Ok(Extracted {
            sha256: scan.sha256,
            size: scan.size,
            entries: scan.walk.entries,
        })
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(dest);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TarBuilder, gzip, zstd_compress};
    use sha2::{Digest, Sha256};

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    fn unpack(bytes: &[u8], dest: &Path) -> Result<Extracted, ExtractError> {
        extract_verified(
            bytes,
            dest,
            &Limits::default(),
            &sha(bytes),
            bytes.len() as u64,
        )
    }

    #[test]
    fn files_dirs_links_and_modes_are_unpacked_and_setuid_is_stripped() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("r1.partial");
        let mut t = TarBuilder::new();
        t.dir("bin/");
        t.executable("bin/serve", b"#!/bin/sh\n");
        t.file_with_mode("bin/suid", b"x", 0o4755);
        t.file("Procfile", b"web: bin/serve\n");
        t.symlink("lib/current", "../bin");
        t.hardlink("Procfile.copy", "Procfile");
        t.file("dup", b"first");
        t.file("dup", b"second");
        let bytes = zstd_compress(&t.finish());

        let got = unpack(&bytes, &dest).unwrap();

        assert_eq!(got.sha256, sha(&bytes));
        assert_eq!(
            fs::read(dest.join("Procfile")).unwrap(),
            b"web: bin/serve\n"
        );
        assert_eq!(
            fs::read(dest.join("Procfile.copy")).unwrap(),
            b"web: bin/serve\n"
        );
        assert_eq!(
            fs::read(dest.join("dup")).unwrap(),
            b"second",
            "a later entry wins, as in tar"
        );
        let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("bin/serve"), 0o755);
        assert_eq!(mode("bin/suid"), 0o755, "setuid stripped");
        assert_eq!(
            fs::read_link(dest.join("lib/current")).unwrap(),
            Path::new("../bin")
        );
        assert!(
            dest.join("lib/current/serve").exists(),
            "the link resolves inside the tree"
        );
    }

    #[test]
    fn a_sha256_or_size_other_than_the_manifests_removes_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("r2.partial");
        let bytes = crate::testing::app_archive("x");

        let wrong_hash = extract_verified(
            &bytes[..],
            &dest,
            &Limits::default(),
            &"0".repeat(64),
            bytes.len() as u64,
        );
        assert!(
            matches!(
                wrong_hash,
                Err(ExtractError::Mismatch { what: "sha256", .. })
            ),
            "{wrong_hash:?}"
        );
        assert!(!dest.exists());

        let wrong_size = extract_verified(&bytes[..], &dest, &Limits::default(), &sha(&bytes), 1);
        assert!(
            matches!(wrong_size, Err(ExtractError::Mismatch { what: "size", .. })),
            "{wrong_size:?}"
        );
        assert!(!dest.exists());
    }

    #[test]
    fn a_hostile_archive_writes_nothing_outside_and_leaves_no_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("releases/r3.partial");
        fs::create_dir_all(tmp.path().join("releases")).unwrap();
        let cases = [
            gzip(
                TarBuilder::new()
                    .file("ok", b"1")
                    .raw_file("../escaped", b"x")
                    .finish()
                    .as_slice(),
            ),
            gzip(
                TarBuilder::new()
                    .symlink("out", "../../..")
                    .finish()
                    .as_slice(),
            ),
            gzip(
                TarBuilder::new()
                    .symlink("d", "sub")
                    .raw_file("d/x", b"x")
                    .finish()
                    .as_slice(),
            ),
            gzip(
                TarBuilder::new()
                    .special("fifo", tar::EntryType::Fifo)
                    .finish()
                    .as_slice(),
            ),
            gzip(
                TarBuilder::new()
                    .hardlink("h", "missing")
                    .finish()
                    .as_slice(),
            ),
        ];
        for bytes in cases {
            let err = unpack(&bytes, &dest).unwrap_err();
            assert!(matches!(err, ExtractError::Archive(_)), "{err:?}");
            assert!(!dest.exists(), "{err}");
        }
        let left: Vec<_> = fs::read_dir(tmp.path().join("releases")).unwrap().collect();
        assert!(left.is_empty() && !tmp.path().join("escaped").exists());
    }

    #[test]
    fn an_existing_directory_is_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("r1");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("keep"), b"serving").unwrap();
        let bytes = crate::testing::app_archive("x");
        assert!(matches!(
            unpack(&bytes, &dest),
            Err(ExtractError::Exists { .. })
        ));
        assert_eq!(fs::read(dest.join("keep")).unwrap(), b"serving");
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("r4.partial");
        let mut t = TarBuilder::new();
        t.file("zeros", &vec![0u8; 16 << 20]);
        let bytes = gzip(&t.finish());
        let limits = Limits {
            max_expanded_bytes: 1 << 20,
            ..Limits::default()
        };
        let err = extract_verified(&bytes[..], &dest, &limits, &sha(&bytes), bytes.len() as u64)
            .unwrap_err();
        assert!(
            matches!(
                err,
                ExtractError::Archive(ArchiveError::ExpandedTooLarge { .. })
            ),
            "{err:?}"
        );
        assert!(!dest.exists());
    }
}
