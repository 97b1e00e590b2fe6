//! Where an app lives on an instance, under `<root>/<app>/`:
//!
//! ```text
//! releases/r<N>/        the unpacked source of a release (r<N>.partial while unpacking)
//! releases/r<N>.ok      written once r<N> is verified and built: only then is it installed
//! current -> releases/r<N>   what the supervisor runs; switched by an atomic rename
//! env/r<N>.env          the release's resolved config, mode 0600, outside the source tree
//! state.json            what serves and is known healthy, the previous release, history
//! lock                  flock'ed by the agent working on this app
//! run/, log/            the direct supervisor's pidfiles and process output
//! scratch/              release-phase copies, removed after use
//! ```
//!
//! Files that matter are written to a temporary name, fsynced and renamed,
//! and the directory is fsynced, so a crash leaves the old or the new
//! version, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};

use slipway_core::names::{AppName, ReleaseId};

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    app: AppName,
}

impl Layout {
    pub fn new(root: &Path, app: &AppName) -> Self {
        Self {
            root: root.join(app.as_str()),
            app: app.clone(),
        }
    }

    pub fn app(&self) -> &AppName {
        &self.app
    }

    pub fn dir(&self) -> &Path {
        &self.root
    }

    pub fn releases(&self) -> PathBuf {
        self.root.join("releases")
    }

    pub fn release(&self, id: ReleaseId) -> PathBuf {
        self.releases().join(id.to_string())
    }

    pub fn partial(&self, id: ReleaseId) -> PathBuf {
        self.releases().join(format!("{id}.partial"))
    }

    fn ready_marker(&self, id: ReleaseId) -> PathBuf {
        self.releases().join(format!("{id}.ok"))
    }

    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }

    pub fn env_file(&self, id: ReleaseId) -> PathBuf {
        self.root.join("env").join(format!("{id}.env"))
    }

    /// `env/r<N>.procfile`: the verified manifest's Procfile, written by
    /// the agent beside the env file. Units are rendered from it, never
    /// from the Procfile in the release tree, which is the app's to rewrite.
    pub fn procfile(&self, id: ReleaseId) -> PathBuf {
        self.root.join("env").join(format!("{id}.procfile"))
    }

    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// `<root>/<app>`: everything of the app on this instance.
    pub fn app_root(&self) -> &Path {
        &self.root
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }

    /// The process group of a running build or release command.
    pub fn command_pidfile(&self) -> PathBuf {
        self.root.join("command.pid")
    }

    pub fn scratch(&self) -> PathBuf {
        self.root.join("scratch")
    }

    /// Creates the directories; `env/` is readable by its owner only.
    pub fn create(&self) -> io::Result<()> {
        fs::create_dir_all(self.releases())?;
        let env = self.root.join("env");
        fs::create_dir_all(&env)?;
        fs::set_permissions(&env, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        Ok(())
    }

    /// The release `current` points at, if any.
    pub fn current_release(&self) -> Option<ReleaseId> {
        let target = fs::read_link(self.current()).ok()?;
        ReleaseId::parse(target.file_name()?.to_str()?).ok()
    }

    /// A release is installed once verified, unpacked and built.
    pub fn is_installed(&self, id: ReleaseId) -> bool {
        self.ready_marker(id).is_file() && self.release(id).is_dir()
    }

    pub fn mark_installed(&self, id: ReleaseId) -> io::Result<()> {
        write_atomic(&self.ready_marker(id), b"", 0o644)
    }

    /// Every installed release, oldest first.
    pub fn installed(&self) -> Vec<ReleaseId> {
        let mut ids: Vec<ReleaseId> = fs::read_dir(self.releases())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| ReleaseId::parse(e.file_name().to_str()?).ok())
            .filter(|id| self.is_installed(*id))
            .collect();
        ids.sort();
        ids
    }

    /// Removes a release: marker first, so a crash halfway leaves a
    /// directory that is plainly not installed.
    pub fn remove_release(&self, id: ReleaseId) -> io::Result<()> {
        remove_if_exists(&self.ready_marker(id))?;
        remove_tree_if_exists(&self.release(id))?;
        remove_if_exists(&self.procfile(id))?;
        remove_if_exists(&self.env_file(id))
    }

    /// Points `current` at `releases/<id>` with one atomic rename.
    pub fn switch_current(&self, id: ReleaseId) -> io::Result<()> {
        let tmp = self
            .root
            .join(format!(".current.{}.tmp", std::process::id()));
        remove_if_exists(&tmp)?;
        symlink(Path::new("releases").join(id.to_string()), &tmp)?;
        fs::rename(&tmp, self.current())?;
        sync_dir(&self.root)
    }

    /// Removes `current` (a first deploy that failed leaves nothing running).
    pub fn clear_current(&self) -> io::Result<()> {
        remove_if_exists(&self.current())?;
        sync_dir(&self.root)
    }

    /// Removes what a crashed agent may have left: unpacking directories,
    /// temporary files, releases never marked installed, scratch copies.
    /// Returns what it removed. Call with the lock held.
    pub fn sweep(&self) -> io::Result<Vec<String>> {
        let mut removed = Vec::new();
        for dir in [self.releases(), self.root.join("env"), self.root.clone()] {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                if name.ends_with(".partial") || name.ends_with(".tmp") {
                    remove_tree_if_exists(&path)?;
                    removed.push(name);
                } else if dir == self.releases()
                    && let Ok(id) = ReleaseId::parse(&name)
                    && !self.ready_marker(id).is_file()
                {
                    // Unpacked, but its build never finished.
                    self.remove_release(id)?;
                    removed.push(name);
                }
            }
        }
        if self.scratch().exists() {
            remove_tree_if_exists(&self.scratch())?;
            removed.push("scratch".into());
        }
        Ok(removed)
    }
}

pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub fn remove_tree_if_exists(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    remove_if_exists(&tmp)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn layout(tmp: &Path) -> Layout {
        let l = Layout::new(tmp, &AppName::parse("hello").unwrap());
        l.create().unwrap();
        l
    }

    fn r(n: u64) -> ReleaseId {
        ReleaseId::new(n).unwrap()
    }

    #[test]
    fn current_switches_by_rename_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let l = layout(tmp.path());
        assert_eq!(l.current_release(), None);
        l.switch_current(r(3)).unwrap();
        assert_eq!(l.current_release(), Some(r(3)));
        l.switch_current(r(4)).unwrap();
        assert_eq!(l.current_release(), Some(r(4)));
        assert_eq!(
            fs::read_link(l.current()).unwrap(),
            Path::new("releases/r4")
        );
        l.clear_current().unwrap();
        assert_eq!(l.current_release(), None);
    }

    #[test]
    fn sweep_removes_partials_temporaries_and_unfinished_releases_only() {
        let tmp = tempfile::tempdir().unwrap();
        let l = layout(tmp.path());
        fs::create_dir_all(l.release(r(1))).unwrap();
        l.mark_installed(r(1)).unwrap();
        fs::create_dir_all(l.release(r(2))).unwrap(); // never marked
        fs::create_dir_all(l.partial(r(3))).unwrap();
        fs::write(l.dir().join(".state.json.9.tmp"), b"x").unwrap();
        fs::create_dir_all(l.scratch().join("r1-5")).unwrap();

        let mut removed = l.sweep().unwrap();
        removed.sort();

        assert_eq!(
            removed,
            [".state.json.9.tmp", "r2", "r3.partial", "scratch"]
        );
        assert_eq!(l.installed(), [r(1)]);
        assert!(l.release(r(1)).is_dir());
    }

    #[test]
    fn the_env_directory_is_private_and_atomic_writes_keep_their_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let l = layout(tmp.path());
        write_atomic(&l.env_file(r(1)), b"A=1\n", 0o600).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&l.dir().join("env")), 0o700);
        assert_eq!(mode(&l.env_file(r(1))), 0o600);
        write_atomic(&l.procfile(r(1)), b"{}", 0o600).unwrap();
        l.remove_release(r(1)).unwrap();
        assert!(!l.env_file(r(1)).exists());
        assert!(!l.procfile(r(1)).exists());
    }
}
