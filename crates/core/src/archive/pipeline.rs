//! The same single pass as [`scan`](super::scan), on two threads: one reads,
//! hashes and decompresses, the other checks entries and hands them to the
//! visitor (the agent writes files). On two cores this overlaps the
//! decompressor with the file system, as `tar -xzf` does with its `gzip`
//! child process. Entries are seen in order and every byte is still hashed
//! exactly once; the result is the same as `scan`'s.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use super::{ArchiveError, Limits, Scan, Tripped, Visit, finish, open, walk};

/// Decompressed bytes travel in chunks of this size…
const CHUNK: usize = 256 * 1024;
/// …with at most this many in flight.
const IN_FLIGHT: usize = 8;

/// How the reading thread ended early.
enum Stop {
    /// The archive is bad: this error explains everything.
    Failed(ArchiveError),
    /// The other side stopped listening (it has its own error).
    Abandoned,
}

fn fill<D: Read>(decoded: &mut D, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match decoded.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A chunk: a buffer and how much of it holds data. Buffers go back to
/// the reading thread once consumed, so the pass reuses a fixed set of
/// them instead of allocating (and faulting in) fresh memory per chunk.
type Chunk = (Vec<u8>, usize);

fn produce<R: Read>(
    source: R,
    limits: &Limits,
    chunks: SyncSender<Chunk>,
    spare: Receiver<Vec<u8>>,
) -> Result<(super::ArchiveFormat, String, u64), Stop> {
    let tripped: Tripped = Rc::new(Cell::new(None));
    let (format, mut decoded) = open(source, limits, &tripped).map_err(Stop::Failed)?;
    loop {
        let mut buf = match spare.try_recv() {
            Ok(buf) if buf.len() == CHUNK => buf,
            _ => vec![0u8; CHUNK],
        };
        let n = fill(&mut decoded, &mut buf).map_err(|e| {
            Stop::Failed(
                tripped
                    .take()
                    .unwrap_or_else(|| ArchiveError::Corrupt(e.to_string())),
            )
        })?;
        if n == 0 {
            break;
        }
        chunks.send((buf, n)).map_err(|_| Stop::Abandoned)?;
    }
    drop(chunks);
    let (sha256, size) = finish(decoded, &tripped).map_err(Stop::Failed)?;
    Ok((format, sha256, size))
}

struct ChunkReader {
    chunks: Receiver<Chunk>,
    spare: Sender<Vec<u8>>,
    current: Chunk,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.current.1 {
            match self.chunks.recv() {
                Ok(next) => {
                    let (used, _) = std::mem::replace(&mut self.current, next);
                    if !used.is_empty() {
                        // The reading thread may be gone; then it is just freed.
                        let _ = self.spare.send(used);
                    }
                    self.pos = 0;
                }
                // The reading thread is done (or failed: it says why).
                Err(_) => return Ok(0),
            }
        }
        let (data, len) = (&self.current.0, self.current.1);
        let n = buf.len().min(len - self.pos);
        buf[..n].copy_from_slice(&data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

pub(crate) fn scan_pipelined<R: Read + Send>(
    source: R,
    limits: &Limits,
    visit: &mut Visit<'_>,
) -> Result<Scan, ArchiveError> {
    let (sender, chunks) = sync_channel(IN_FLIGHT);
    let (spare, spares) = channel();
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || produce(source, limits, sender, spares));
        let reader = ChunkReader {
            chunks,
            spare,
            current: (Vec::new(), 0),
            pos: 0,
        };
        let tripped: Tripped = Rc::new(Cell::new(None));
        // The reader is dropped when `walk` returns, which lets a producer
        // blocked on a full channel finish.
        let walked = walk(reader, limits, &tripped, visit).map(|(w, _)| w);
        let produced = producer
            .join()
            .map_err(|_| ArchiveError::Corrupt("the decompressing thread failed".into()))?;
        match (produced, walked) {
            (Err(Stop::Failed(e)), _) => Err(e),
            (_, Err(e)) => Err(e),
            (Ok((format, sha256, size)), Ok(walk)) => Ok(Scan {
                format,
                sha256,
                size,
                walk,
            }),
            (Err(Stop::Abandoned), Ok(_)) => Err(ArchiveError::Corrupt(
                "the archive ended before its data".into(),
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Limits, scan};
    use super::*;
    use crate::testing::{TarBuilder, gzip, zstd_compress};

    fn names(bytes: &[u8], pipelined: bool) -> Result<(Vec<String>, String, u64), String> {
        let mut seen = Vec::new();
        let mut visit = |e: &super::super::CheckedEntry, data: &mut dyn Read| {
            let mut body = Vec::new();
            data.read_to_end(&mut body)
                .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
            seen.push(format!("{e:?}:{}", body.len()));
            Ok(())
        };
        let limits = Limits::default();
        let scanned = if pipelined {
            scan_pipelined(bytes, &limits, &mut visit)
        } else {
            scan(bytes, &limits, &mut visit)
        }
        .map_err(|e| e.to_string())?;
        Ok((seen, scanned.sha256, scanned.size))
    }

    #[test]
    fn both_passes_see_the_same_entries_and_hash() {
        let mut t = TarBuilder::new();
        t.file("Procfile", b"web: x\n");
        for i in 0..50 {
            t.file(&format!("d/f{i}"), &vec![i as u8; 40_000 + i * 997]);
        }
        let tar = t.finish();
        for bytes in [gzip(&tar), zstd_compress(&tar)] {
            let mut with_tail = bytes.clone();
            with_tail.extend_from_slice(b"trailing");
            for b in [&bytes, &with_tail] {
                assert_eq!(names(b, true), names(b, false));
            }
        }
    }

    #[test]
    fn errors_are_the_same_whichever_side_finds_them() {
        let mut t = TarBuilder::new();
        t.file("Procfile", b"web: x\n");
        t.file("big", &vec![7u8; 2_000_000]);
        t.raw_file("../evil", b"x");
        let tar = t.finish();
        let gz = gzip(&tar);
        let truncated = &gz[..gz.len() / 2];
        for b in [&gz[..], truncated, b"garbage!"] {
            let (a, b2) = (names(b, true), names(b, false));
            assert!(a.is_err(), "{a:?}");
            assert_eq!(a.unwrap_err(), b2.unwrap_err());
        }
    }
}
