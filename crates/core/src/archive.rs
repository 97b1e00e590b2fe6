//! Source archives: detect the format, hash them, and refuse hostile ones.
//!
//! An archive is read exactly once, as a stream: the raw bytes go through a
//! sha256 and a byte count at the bottom, the decompressor sits on top of
//! that, and the tar reader on top of the decompressor. Nothing is written to
//! disk. The entry policy ([`check_entry`]) is the one the agent applies
//! again when it extracts, so what the release store accepts is exactly what
//! an instance will unpack.

use std::cell::Cell;
use std::io::{self, Cursor, Read};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::procfile::{MAX_PROCFILE_BYTES, Procfile, ProcfileError};

mod pipeline;
pub(crate) use pipeline::scan_pipelined;

/// How a source archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArchiveFormat {
    #[serde(rename = "tar.gz")]
    Gzip,
    #[serde(rename = "tar.zst")]
    Zstd,
}

impl ArchiveFormat {
    pub fn detect(magic: &[u8]) -> Option<Self> {
        match magic {
            [0x1f, 0x8b, ..] => Some(Self::Gzip),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Some(Self::Zstd),
            _ => None,
        }
    }

    /// The file extension, also the manifest's `format` value.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Gzip => "tar.gz",
            Self::Zstd => "tar.zst",
        }
    }

    /// The format a file's name says it has (`….tar.gz`, `….tar.zst`);
    /// its magic bytes may still say otherwise.
    pub fn named(name: &str) -> Option<Self> {
        [Self::Gzip, Self::Zstd]
            .into_iter()
            .find(|f| name.ends_with(&format!(".{}", f.extension())))
    }

    pub fn source_file_name(self) -> String {
        format!("source.{}", self.extension())
    }
}

/// Bounds on what an archive may cost to read and unpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Compressed size.
    pub max_archive_bytes: u64,
    /// Total size once decompressed (the tar stream itself).
    pub max_expanded_bytes: u64,
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_archive_bytes: 1 << 30,
            max_expanded_bytes: 4 << 30,
            max_entries: 200_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a gzip or zstd compressed tar archive")]
    UnknownFormat,
    #[error("archive is larger than {limit} bytes")]
    ArchiveTooLarge { limit: u64 },
    #[error("archive expands to more than {limit} bytes")]
    ExpandedTooLarge { limit: u64 },
    #[error("archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("archive is damaged: {0}")]
    Corrupt(String),
    /// Writing an entry to disk failed (extraction only).
    #[error("could not write {path}: {detail}")]
    Write { path: String, detail: String },
    /// Reading the archive's bytes failed (the network, not the archive).
    #[error("could not read the archive: {0}")]
    Read(String),
    #[error("entry {path:?} has an absolute path")]
    AbsolutePath { path: String },
    #[error("entry {path:?} climbs out of the archive with ..")]
    ParentDir { path: String },
    #[error("entry {path:?} has a name that is not UTF-8")]
    NotUtf8 { path: String },
    #[error("entry {path:?} is a link whose target {target:?} points outside the archive")]
    LinkEscapes { path: String, target: String },
    #[error("entry {path:?} goes through the symbolic link {link:?}")]
    ThroughLink { path: String, link: String },
    #[error("entry {path:?} is a {kind}, which a source archive may not contain")]
    SpecialFile { path: String, kind: &'static str },
    #[error("archive has no Procfile at its top level")]
    NoProcfile,
    #[error("Procfile must be a regular file")]
    ProcfileNotFile,
    #[error(transparent)]
    Procfile(#[from] ProcfileError),
}

/// What one pass over an archive found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub format: ArchiveFormat,
    pub sha256: String,
    pub size: u64,
    pub entries: u64,
    pub expanded_bytes: u64,
    pub procfile: Procfile,
}

/// The kind of an accepted entry, with its clean relative path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckedEntry {
    Dir(PathBuf),
    File {
        path: PathBuf,
        mode: u32,
        /// The entry's data size in bytes.
        size: u64,
    },
    Symlink {
        path: PathBuf,
        target: PathBuf,
    },
    HardLink {
        path: PathBuf,
        target: PathBuf,
    },
    /// Metadata that carries no file (a pax global header, the root `./`).
    Skip,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(200).collect()
}

/// A path inside the archive: relative, no `..`, `./` prefixes dropped.
fn clean_path(raw: &[u8]) -> Result<PathBuf, ArchiveError> {
    let text = std::str::from_utf8(raw).map_err(|_| ArchiveError::NotUtf8 { path: lossy(raw) })?;
    let mut clean = PathBuf::new();
    for c in Path::new(text).components() {
        match c {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(ArchiveError::ParentDir { path: lossy(raw) }),
            Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::AbsolutePath { path: lossy(raw) });
            }
        }
    }
    Ok(clean)
}

/// A symlink target may climb with leading `..` as far as the link's own
/// directory depth allows, then only descend. Anything else could escape
/// through another link (`x -> y/..` with `y -> .`), so it is refused.
fn check_symlink_target(path: &Path, raw_target: &[u8]) -> Result<PathBuf, ArchiveError> {
    let escapes = || ArchiveError::LinkEscapes {
        path: path.display().to_string(),
        target: lossy(raw_target),
    };
    let text = std::str::from_utf8(raw_target).map_err(|_| escapes())?;
    if text.is_empty() {
        return Err(escapes());
    }
    let depth = path.components().count().saturating_sub(1);
    let mut ups = 0;
    let mut descended = false;
    let mut target = PathBuf::new();
    for c in Path::new(text).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if !descended => {
                ups += 1;
                target.push("..");
            }
            Component::Normal(part) => {
                descended = true;
                target.push(part);
            }
            _ => return Err(escapes()),
        }
    }
    if ups > depth {
        return Err(escapes());
    }
    Ok(target)
}

/// The entry policy shared by the release store and the agent.
///
/// `links` holds the symlinks seen so far in this archive: no later entry may
/// be written through one of them.
pub fn check_entry<R: Read>(
    entry: &tar::Entry<'_, R>,
    links: &mut Vec<PathBuf>,
) -> Result<CheckedEntry, ArchiveError> {
    use tar::EntryType as T;
    let header = entry.header();
    let raw_path = entry.path_bytes();
    let kind = header.entry_type();
    if matches!(
        kind,
        T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
    ) {
        return Ok(CheckedEntry::Skip);
    }
    let path = clean_path(&raw_path)?;
    if path.as_os_str().is_empty() {
        return if kind == T::Directory {
            Ok(CheckedEntry::Skip)
        } else {
            Err(ArchiveError::AbsolutePath {
                path: lossy(&raw_path),
            })
        };
    }
    if let Some(link) = links.iter().find(|l| path.starts_with(l) && path != **l) {
        return Err(ArchiveError::ThroughLink {
            path: path.display().to_string(),
            link: link.display().to_string(),
        });
    }
    let special = |kind| ArchiveError::SpecialFile {
        path: path.display().to_string(),
        kind,
    };
    match kind {
        T::Directory => Ok(CheckedEntry::Dir(path)),
        T::Regular | T::Continuous => Ok(CheckedEntry::File {
            mode: header.mode().unwrap_or(0o644),
            size: entry.size(),
            path,
        }),
        T::Symlink => {
            let raw_target = entry.link_name_bytes().unwrap_or_default();
            let target = check_symlink_target(&path, &raw_target)?;
            links.push(path.clone());
            Ok(CheckedEntry::Symlink { path, target })
        }
        T::Link => {
            let raw_target = entry.link_name_bytes().unwrap_or_default();
            let target = clean_path(&raw_target).map_err(|_| ArchiveError::LinkEscapes {
                path: path.display().to_string(),
                target: lossy(&raw_target),
            })?;
            if target.as_os_str().is_empty() || links.iter().any(|l| target.starts_with(l)) {
                return Err(ArchiveError::LinkEscapes {
                    path: path.display().to_string(),
                    target: lossy(&raw_target),
                });
            }
            Ok(CheckedEntry::HardLink { path, target })
        }
        T::Char => Err(special("character device")),
        T::Block => Err(special("block device")),
        T::Fifo => Err(special("FIFO")),
        _ => Err(special("special entry")),
    }
}

/// Which limit a reader ran into, if any: read back after an I/O error.
pub(crate) type Tripped = Rc<Cell<Option<ArchiveError>>>;

/// The bottom of the stack: hashes and counts every raw byte, once.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
    limit: u64,
    tripped: Tripped,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|e| {
            self.tripped.set(Some(ArchiveError::Read(e.to_string())));
        })?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        if self.size > self.limit {
            self.tripped
                .set(Some(ArchiveError::ArchiveTooLarge { limit: self.limit }));
            return Err(io::Error::other("archive size limit"));
        }
        Ok(n)
    }
}

/// Counts decompressed bytes: the decompression-bomb guard.
struct ExpandedReader<R> {
    inner: R,
    count: u64,
    limit: u64,
    tripped: Tripped,
}

impl<R: Read> Read for ExpandedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            self.tripped
                .set(Some(ArchiveError::ExpandedTooLarge { limit: self.limit }));
            return Err(io::Error::other("expanded size limit"));
        }
        Ok(n)
    }
}

/// Counts of one pass over an archive.
pub(crate) struct Walk {
    pub(crate) entries: u64,
    pub(crate) expanded_bytes: u64,
}

/// Called for every accepted entry, with the entry's data to read.
pub(crate) type Visit<'v> =
    dyn FnMut(&CheckedEntry, &mut dyn Read) -> Result<(), ArchiveError> + 'v;

pub(crate) fn walk<D: Read>(
    decoded: D,
    limits: &Limits,
    tripped: &Tripped,
    visit: &mut Visit<'_>,
) -> Result<(Walk, D), ArchiveError> {
    // An error seen while a limit tripped is that limit's error.
    let blame = |e: ArchiveError| tripped.take().unwrap_or(e);
    let fail = |e: io::Error| blame(ArchiveError::Corrupt(e.to_string()));
    let counted = ExpandedReader {
        inner: decoded,
        count: 0,
        limit: limits.max_expanded_bytes,
        tripped: tripped.clone(),
    };
    let mut archive = tar::Archive::new(counted);
    let mut walk = Walk {
        entries: 0,
        expanded_bytes: 0,
    };
    let mut declared: u64 = 0;
    let mut links = Vec::new();
    // Hard links may only point at regular files earlier in the archive.
    let mut files = std::collections::HashSet::new();
    for entry in archive.entries().map_err(fail)? {
        let mut entry = entry.map_err(fail)?;
        walk.entries += 1;
        if walk.entries > limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        declared = declared.saturating_add(entry.header().size().unwrap_or(0));
        if declared > limits.max_expanded_bytes {
            return Err(ArchiveError::ExpandedTooLarge {
                limit: limits.max_expanded_bytes,
            });
        }
        let checked = check_entry(&entry, &mut links)?;
        match &checked {
            CheckedEntry::File { path, .. } => {
                files.insert(path.clone());
            }
            CheckedEntry::HardLink { path, target } if !files.contains(target) => {
                return Err(ArchiveError::LinkEscapes {
                    path: path.display().to_string(),
                    target: target.display().to_string(),
                });
            }
            _ => {}
        }
        visit(&checked, &mut entry).map_err(blame)?;
    }
    // Read what follows the end-of-archive marker, so the decompressor
    // reaches its own end and every compressed byte is hashed.
    let mut counted = archive.into_inner();
    io::copy(&mut counted, &mut io::sink()).map_err(fail)?;
    walk.expanded_bytes = counted.count;
    Ok((walk, counted.inner))
}

/// What one streaming pass measured: format, hash, size and counts.
pub(crate) struct Scan {
    pub(crate) format: ArchiveFormat,
    pub(crate) sha256: String,
    pub(crate) size: u64,
    pub(crate) walk: Walk,
}

/// The raw bytes after format detection: the magic bytes read so far,
/// then the rest, all through the hash.
type Raw<R> = io::Chain<Cursor<Vec<u8>>, HashingReader<R>>;

/// The decompressed stream over the hashed raw bytes.
pub(crate) enum Decoded<R: Read> {
    Gzip(flate2::read::GzDecoder<Raw<R>>),
    Zstd(zstd::stream::read::Decoder<'static, io::BufReader<Raw<R>>>),
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Gzip(d) => d.read(buf),
            Self::Zstd(d) => d.read(buf),
        }
    }
}

/// Puts the hash at the bottom and the right decompressor on top.
pub(crate) fn open<R: Read>(
    source: R,
    limits: &Limits,
    tripped: &Tripped,
) -> Result<(ArchiveFormat, Decoded<R>), ArchiveError> {
    let fail = |e: io::Error| {
        tripped
            .take()
            .unwrap_or_else(|| ArchiveError::Corrupt(e.to_string()))
    };
    let mut raw = HashingReader {
        inner: source,
        hasher: Sha256::new(),
        size: 0,
        limit: limits.max_archive_bytes,
        tripped: tripped.clone(),
    };
    let mut magic = Vec::with_capacity(4);
    (&mut raw).take(4).read_to_end(&mut magic).map_err(fail)?;
    let format = ArchiveFormat::detect(&magic).ok_or(ArchiveError::UnknownFormat)?;
    let stream = Cursor::new(magic).chain(raw);
    let decoded = match format {
        ArchiveFormat::Gzip => Decoded::Gzip(flate2::read::GzDecoder::new(stream)),
        ArchiveFormat::Zstd => {
            Decoded::Zstd(zstd::stream::read::Decoder::new(stream).map_err(fail)?)
        }
    };
    Ok((format, decoded))
}

/// After the decompressed stream has ended: hashes whatever follows it
/// (it still belongs to the object) and returns the sha256 and size.
pub(crate) fn finish<R: Read>(
    decoded: Decoded<R>,
    tripped: &Tripped,
) -> Result<(String, u64), ArchiveError> {
    let mut rest = match decoded {
        Decoded::Gzip(d) => d.into_inner(),
        Decoded::Zstd(d) => d.finish().into_inner(),
    };
    io::copy(&mut rest, &mut io::sink()).map_err(|e| {
        tripped
            .take()
            .unwrap_or_else(|| ArchiveError::Corrupt(e.to_string()))
    })?;
    let (_, raw) = rest.into_inner();
    Ok((hex::encode(raw.hasher.finalize()), raw.size))
}

/// Reads a whole archive once through the hash, the decompressor and the
/// entry policy, handing each accepted entry to `visit`.
pub(crate) fn scan<R: Read>(
    source: R,
    limits: &Limits,
    visit: &mut Visit<'_>,
) -> Result<Scan, ArchiveError> {
    let tripped: Tripped = Rc::new(Cell::new(None));
    let (format, decoded) = open(source, limits, &tripped)?;
    let (walk, decoded) = walk(decoded, limits, &tripped, visit)?;
    let (sha256, size) = finish(decoded, &tripped)?;
    Ok(Scan {
        format,
        sha256,
        size,
        walk,
    })
}

/// Reads a whole archive once: format, sha256, size, entry checks, Procfile.
pub fn inspect<R: Read>(source: R, limits: &Limits) -> Result<Inspection, ArchiveError> {
    let mut procfile = None;
    let scan = scan(source, limits, &mut |checked, data| {
        match checked {
            CheckedEntry::File { path, .. } if path == Path::new("Procfile") => {
                let mut bytes = Vec::new();
                data.take(MAX_PROCFILE_BYTES as u64 + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
                procfile = Some(Procfile::parse_bytes(&bytes).map_err(ArchiveError::from));
            }
            CheckedEntry::Symlink { path, .. } | CheckedEntry::HardLink { path, .. }
                if path == Path::new("Procfile") =>
            {
                procfile = Some(Err(ArchiveError::ProcfileNotFile));
            }
            _ => {}
        }
        Ok(())
    })?;
    let procfile = procfile.ok_or(ArchiveError::NoProcfile)??;
    Ok(Inspection {
        format: scan.format,
        sha256: scan.sha256,
        size: scan.size,
        entries: scan.walk.entries,
        expanded_bytes: scan.walk.expanded_bytes,
        procfile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TarBuilder, gzip, zstd_compress};

    fn procfile_tar() -> TarBuilder {
        let mut t = TarBuilder::new();
        t.file("Procfile", b"web: python3 app.py\n");
        t.file("app.py", b"print('hi')\n");
        t
    }

    #[test]
    fn a_gzip_archive_is_hashed_measured_and_its_procfile_read() {
        let bytes = gzip(&procfile_tar().finish());
        let got = inspect(&bytes[..], &Limits::default()).unwrap();
        assert_eq!(got.format, ArchiveFormat::Gzip);
        assert_eq!(got.size, bytes.len() as u64);
        assert_eq!(got.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(got.procfile.web(), "python3 app.py");
        assert_eq!(got.entries, 2);
    }

    #[test]
    fn a_zstd_archive_with_a_dot_slash_prefix_is_accepted() {
        let mut t = TarBuilder::new();
        t.dir("./");
        t.file("./Procfile", b"web: ./serve\n");
        let bytes = zstd_compress(&t.finish());
        let got = inspect(&bytes[..], &Limits::default()).unwrap();
        assert_eq!(got.format, ArchiveFormat::Zstd);
        assert_eq!(got.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(got.procfile.web(), "./serve");
    }

    #[test]
    fn trailing_bytes_after_the_stream_still_count_in_hash_and_size() {
        let mut bytes = gzip(&procfile_tar().finish());
        bytes.extend_from_slice(&[0u8; 3000]);
        let got = inspect(&bytes[..], &Limits::default()).unwrap();
        assert_eq!(got.size, bytes.len() as u64);
        assert_eq!(got.sha256, hex::encode(Sha256::digest(&bytes)));
    }

    #[test]
    fn plain_tar_zip_and_garbage_are_not_archives() {
        for bytes in [
            procfile_tar().finish(),
            b"PK\x03\x04zip".to_vec(),
            vec![],
            b"\x1f".to_vec(),
        ] {
            assert_eq!(
                inspect(&bytes[..], &Limits::default()),
                Err(ArchiveError::UnknownFormat)
            );
        }
    }

    #[test]
    fn a_truncated_archive_is_reported_as_damaged() {
        let bytes = gzip(&procfile_tar().finish());
        let got = inspect(&bytes[..bytes.len() / 2], &Limits::default());
        assert!(matches!(got, Err(ArchiveError::Corrupt(_))), "{got:?}");
    }

    #[test]
    fn missing_procfile_or_one_without_web_is_refused() {
        let mut t = TarBuilder::new();
        t.file("app.py", b"x");
        t.file("sub/Procfile", b"web: nested is not the top level");
        assert_eq!(
            inspect(&gzip(&t.finish())[..], &Limits::default()),
            Err(ArchiveError::NoProcfile)
        );

        let mut t = TarBuilder::new();
        t.file("Procfile", b"worker: x\n");
        assert_eq!(
            inspect(&gzip(&t.finish())[..], &Limits::default()),
            Err(ArchiveError::Procfile(ProcfileError::NoWeb))
        );
    }

    #[test]
    fn hostile_entries_are_refused_by_name() {
        let cases: Vec<(TarBuilder, ArchiveError)> = vec![
            (
                {
                    let mut t = procfile_tar();
                    t.raw_file("/etc/passwd", b"x");
                    t
                },
                ArchiveError::AbsolutePath {
                    path: "/etc/passwd".into(),
                },
            ),
            (
                {
                    let mut t = procfile_tar();
                    t.raw_file("../../evil", b"x");
                    t
                },
                ArchiveError::ParentDir {
                    path: "../../evil".into(),
                },
            ),
            (
                {
                    let mut t = procfile_tar();
                    t.raw_file("a/../../evil", b"x");
                    t
                },
                ArchiveError::ParentDir {
                    path: "a/../../evil".into(),
                },
            ),
            (
                {
                    let mut t = procfile_tar();
                    t.symlink("link", "/etc");
                    t
                },
                ArchiveError::LinkEscapes {
                    path: "link".into(),
                    target: "/etc".into(),
                },
            ),
            (
                {
                    let mut t = procfile_tar();
                    t.symlink("a/link", "../../etc");
                    t
                },
                ArchiveError::LinkEscapes {
                    path: "a/link".into(),
                    target: "../../etc".into(),
                },
            ),
            (
                {
                    let mut t = procfile_tar();
                    t.symlink("dot", ".");
                    t.symlink("x", "dot/..");
                    t
                },
                ArchiveError::LinkEscapes {
                    path: "x".into(),
                    target: "dot/..".into(),
                },
            ),
            (
                {
                    let mut t = procfile_tar();
                    t.symlink("d", "sub");
                    t.raw_file("d/file", b"x");
                    t
                },
                ArchiveError::ThroughLink {
                    path: "d/file".into(),
                    link: "d".into(),
                },
            ),
            (
                {
                    let mut t = procfile_tar();
                    t.hardlink("h", "../outside");
                    t
                },
                ArchiveError::LinkEscapes {
                    path: "h".into(),
                    target: "../outside".into(),
                },
            ),
            (
                {
                    let mut t = procfile_tar();
                    t.special("dev", tar::EntryType::Char);
                    t
                },
                ArchiveError::SpecialFile {
                    path: "dev".into(),
                    kind: "character device",
                },
            ),
            (
                {
                    let mut t = procfile_tar();
                    t.special("blk", tar::EntryType::Block);
                    t
                },
                ArchiveError::SpecialFile {
                    path: "blk".into(),
                    kind: "block device",
                },
            ),
            (
                {
                    let mut t = procfile_tar();
                    t.special("fifo", tar::EntryType::Fifo);
                    t
                },
                ArchiveError::SpecialFile {
                    path: "fifo".into(),
                    kind: "FIFO",
                },
            ),
            (
                {
                    let mut t = procfile_tar();
                    t.hardlink("h", "not-in-archive");
                    t
                },
                ArchiveError::LinkEscapes {
                    path: "h".into(),
                    target: "not-in-archive".into(),
                },
            ),
            (
                {
                    let mut t = TarBuilder::new();
                    t.file("x", b"web: a");
                    t.symlink("Procfile", "x");
                    t
                },
                ArchiveError::ProcfileNotFile,
            ),
        ];
        for (mut tar, want) in cases {
            assert_eq!(
                inspect(&gzip(&tar.finish())[..], &Limits::default()),
                Err(want)
            );
        }
    }

    #[test]
    fn links_that_stay_inside_the_tree_are_accepted() {
        let mut t = procfile_tar();
        t.symlink("lib/current", "v2");
        t.symlink("lib/up", "../app.py");
        t.hardlink("copy.py", "app.py");
        assert!(inspect(&gzip(&t.finish())[..], &Limits::default()).is_ok());
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_expanded_limit() {
        // 64 MiB of zeros compress to ~64 KiB.
        let mut t = procfile_tar();
        t.file("zeros", &vec![0u8; 64 << 20]);
        let bytes = gzip(&t.finish());
        assert!(bytes.len() < 1 << 20);
        let limits = Limits {
            max_expanded_bytes: 8 << 20,
            ..Limits::default()
        };
        assert_eq!(
            inspect(&bytes[..], &limits),
            Err(ArchiveError::ExpandedTooLarge { limit: 8 << 20 })
        );
    }

    #[test]
    fn archive_and_entry_count_limits_hold() {
        let mut t = procfile_tar();
        for i in 0..20 {
            t.file(&format!("f{i}"), b"x");
        }
        let bytes = gzip(&t.finish());
        let few = Limits {
            max_entries: 10,
            ..Limits::default()
        };
        assert_eq!(
            inspect(&bytes[..], &few),
            Err(ArchiveError::TooManyEntries { limit: 10 })
        );
        let small = Limits {
            max_archive_bytes: 100,
            ..Limits::default()
        };
        assert_eq!(
            inspect(&bytes[..], &small),
            Err(ArchiveError::ArchiveTooLarge { limit: 100 })
        );
    }
}
