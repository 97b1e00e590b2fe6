//! Unpacking a release archive into a directory, as the agent does on every
//! instance.
//!
//! The archive is read once, through the same hash, decompressor and entry
//! policy as [`archive::inspect`](crate::archive::inspect), straight into a
//! new directory (the caller's `r<N>.partial`). Decompression runs on one
//! thread, entries are checked in order on another, and regular files are
//! written by a small pool, so on two cores the decompressor and the file
//! system's work overlap (see [`unpack`]). Files lose setuid, setgid and
//! sticky bits; links are created only as the policy allows; nothing is ever
//! written through a link. The sha256 and size are compared with the
//! manifest's at the end, and on any failure the directory is removed, so a
//! directory that survives holds exactly the archive the manifest names.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use crate::archive::{ArchiveError, Limits, scan_pipelined};

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

mod unpack;
use unpack::Unpacker;

/// Unpacks `source` into the new directory `dest` and checks it against the
/// manifest's sha256 and size. On any error `dest` is gone.
pub fn extract_verified<R: Read + Send>(
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
    let result = std::thread::scope(|scope| {
        let mut unpacker = Unpacker::new(dest, scope);
        let scanned = scan_pipelined(source, limits, &mut |entry, data| {
            unpacker.entry(entry, data)
        });
        let written = unpacker.finish();
        let scanned = scanned?;
        written.map(|()| scanned)
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
    use std::os::unix::fs::PermissionsExt;

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
    fn archive_order_holds_while_writes_are_in_flight() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("r1.partial");
        let mut t = TarBuilder::new();
        t.file("Procfile", b"web: x\n");
        for i in 0..300 {
            t.file(&format!("d{}/f{i}", i % 7), format!("first {i}").as_bytes());
        }
        t.file("d5/f299", b"second");
        t.hardlink("link", "d4/f298");
        t.file("big", &vec![1u8; 3 * 1024 * 1024]);
        t.file("d4/f298", b"replaced after the link");
        let bytes = gzip(&t.finish());

        unpack(&bytes, &dest).unwrap();

        let read = |p: &str| fs::read_to_string(dest.join(p)).unwrap();
        assert_eq!(read("d5/f299"), "second");
        assert_eq!(
            read("link"),
            "first 298",
            "the link was made from the first f298"
        );
        assert_eq!(read("d4/f298"), "replaced after the link");
        assert_eq!(read("d0/f0"), "first 0");
        assert_eq!(
            fs::metadata(dest.join("big")).unwrap().len(),
            3 * 1024 * 1024
        );
        let files = (0..7)
            .map(|d| fs::read_dir(dest.join(format!("d{d}"))).unwrap().count())
            .sum::<usize>();
        assert_eq!(files, 300);
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
