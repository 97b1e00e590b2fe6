//! Writing checked entries under the destination directory.
//!
//! Creating 10,000 small files is mostly file-system metadata work, so
//! regular files go to a pool of writer threads while entries keep being
//! checked in archive order. Order still holds where it matters: an entry
//! whose path (or hard-link target) has a write in flight waits for the
//! pool to drain first, so a later entry of the same name wins as in tar and
//! a hard link always finds its target. Directories are created once each.
//! Files lose setuid, setgid and sticky bits; nothing is written through a
//! link (the entry policy guarantees it).

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::Scope;

use crate::archive::{ArchiveError, CheckedEntry};

/// Files larger than this are written in place rather than buffered for
/// the pool, which bounds the memory in flight.
const POOLED_MAX: u64 = 1024 * 1024;
/// Files queued for the pool at most.
const QUEUED: usize = 64;

pub(super) fn write_err(path: &Path, e: io::Error) -> ArchiveError {
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

/// The process's umask, read once (Linux reports it in `/proc`): files
/// whose mode it leaves alone need no `chmod` after they are created.
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            // Unknown: assume the bits may be taken, and always chmod.
            .unwrap_or(0o777)
    })
}

/// Creates `full` (replacing a file or link of that name) with `mode`,
/// and lets `fill` write its contents.
fn create_file(
    full: &Path,
    mode: u32,
    fill: impl FnOnce(&mut fs::File) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let mode = mode & 0o777; // no setuid, setgid or sticky bit
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(full)
    };
    let mut file = match open() {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            clear(full)?;
            open().map_err(|e| write_err(full, e))?
        }
        Err(e) => return Err(write_err(full, e)),
    };
    fill(&mut file)?;
    if mode & umask() != 0 {
        // The umask took bits the archive asked for.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| write_err(full, e))?;
    }
    Ok(())
}

struct Job {
    full: PathBuf,
    mode: u32,
    data: Vec<u8>,
}

/// A finished write, and its buffer back for reuse.
type Done = (Result<(), ArchiveError>, Vec<u8>);

fn writer(jobs: Arc<Mutex<Receiver<Job>>>, done: std::sync::mpsc::Sender<Done>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let result = create_file(&job.full, job.mode, |f| {
            f.write_all(&job.data).map_err(|e| write_err(&job.full, e))
        });
        if done.send((result, job.data)).is_err() {
            return;
        }
    }
}

pub(super) struct Unpacker<'a> {
    dest: &'a Path,
    made: HashSet<PathBuf>,
    /// Paths with a pooled write not yet known to be done.
    in_flight: HashSet<PathBuf>,
    outstanding: usize,
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    /// Buffers of finished writes, reused for the next files.
    spare: Vec<Vec<u8>>,
    buf: Vec<u8>,
}

impl<'a> Unpacker<'a> {
    pub(super) fn new<'scope, 'env>(dest: &'a Path, scope: &'scope Scope<'scope, 'env>) -> Self {
        let (jobs, queue) = sync_channel::<Job>(QUEUED);
        let (done_tx, done) = channel();
        let queue = Arc::new(Mutex::new(queue));
        let writers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        for _ in 0..writers {
            let (queue, done_tx) = (queue.clone(), done_tx.clone());
            scope.spawn(move || writer(queue, done_tx));
        }
        Self {
            dest,
            made: HashSet::new(),
            in_flight: HashSet::new(),
            outstanding: 0,
            jobs: Some(jobs),
            done,
            spare: Vec::new(),
            buf: vec![0; 128 * 1024],
        }
    }

    /// Takes finished writes' results without waiting; fails on the first
    /// error.
    fn reap(&mut self) -> Result<(), ArchiveError> {
        while let Ok(done) = self.done.try_recv() {
            self.finished(done)?;
        }
        Ok(())
    }

    fn finished(&mut self, (result, buf): Done) -> Result<(), ArchiveError> {
        self.outstanding -= 1;
        // Keep a bounded set of small buffers: at most QUEUED of 256 KiB.
        if self.spare.len() < QUEUED && buf.capacity() <= 256 * 1024 {
            self.spare.push(buf);
        }
        result
    }

    /// Waits until every pooled write is done.
    fn drain(&mut self) -> Result<(), ArchiveError> {
        while self.outstanding > 0 {
            let done = self
                .done
                .recv()
                .map_err(|_| ArchiveError::Corrupt("a writer thread failed".into()))?;
            self.finished(done)?;
        }
        self.in_flight.clear();
        Ok(())
    }

    /// Waits for the pool if `path` has a write in flight.
    fn settle(&mut self, path: &Path) -> Result<(), ArchiveError> {
        if self.in_flight.contains(path) {
            self.drain()?;
        }
        Ok(())
    }

    /// Every write done (or the first error), and the pool stopped.
    pub(super) fn finish(mut self) -> Result<(), ArchiveError> {
        let drained = self.drain();
        self.jobs = None;
        drained
    }

    fn parent_dirs(&mut self, path: &Path) -> Result<(), ArchiveError> {
        let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        if self.made.contains(parent) {
            return Ok(());
        }
        let full = self.dest.join(parent);
        fs::create_dir_all(&full).map_err(|e| write_err(&full, e))?;
        // The policy never lets an entry replace a directory, so it stays one.
        self.made.insert(parent.to_owned());
        Ok(())
    }

    pub(super) fn entry(
        &mut self,
        entry: &CheckedEntry,
        data: &mut dyn Read,
    ) -> Result<(), ArchiveError> {
        self.reap()?;
        let dest = self.dest;
        let read_err = |e: io::Error| ArchiveError::Corrupt(e.to_string());
        match entry {
            CheckedEntry::Skip => Ok(()),
            CheckedEntry::Dir(path) => {
                self.settle(path)?;
                let full = dest.join(path);
                fs::create_dir_all(&full).map_err(|e| write_err(&full, e))?;
                self.made.insert(path.clone());
                Ok(())
            }
            CheckedEntry::File { path, mode, size } => {
                self.settle(path)?;
                self.parent_dirs(path)?;
                let full = dest.join(path);
                if *size <= POOLED_MAX
                    && let Some(jobs) = &self.jobs
                {
                    let mut bytes = self.spare.pop().unwrap_or_default();
                    bytes.clear();
                    bytes.reserve(*size as usize);
                    data.read_to_end(&mut bytes).map_err(read_err)?;
                    jobs.send(Job {
                        full,
                        mode: *mode,
                        data: bytes,
                    })
                    .map_err(|_| ArchiveError::Corrupt("the writer threads stopped".into()))?;
                    self.outstanding += 1;
                    self.in_flight.insert(path.clone());
                    return Ok(());
                }
                let buf = &mut self.buf;
                create_file(&full, *mode, |file| {
                    loop {
                        let n = match data.read(buf) {
                            Ok(0) => return Ok(()),
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => return Err(read_err(e)),
                        };
                        file.write_all(&buf[..n]).map_err(|e| write_err(&full, e))?;
                    }
                })
            }
            CheckedEntry::Symlink { path, target } => {
                self.settle(path)?;
                self.parent_dirs(path)?;
                let full = dest.join(path);
                clear(&full)?;
                symlink(target, &full).map_err(|e| write_err(&full, e))
            }
            CheckedEntry::HardLink { path, target } => {
                self.settle(path)?;
                self.settle(target)?;
                let source = dest.join(target);
                let is_file = fs::symlink_metadata(&source).is_ok_and(|m| m.is_file());
                if !is_file {
                    return Err(ArchiveError::LinkEscapes {
                        path: path.display().to_string(),
                        target: target.display().to_string(),
                    });
                }
                self.parent_dirs(path)?;
                let full = dest.join(path);
                clear(&full)?;
                fs::hard_link(&source, &full).map_err(|e| write_err(&full, e))
            }
        }
    }
}
