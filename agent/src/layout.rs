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
//!
//! The agent runs as root and the app as its own user, so nothing the agent
//! opens may be the app's to swap: `<root>`, `<root>/<app>` and `releases/`
//! are root's and 0755, `env/` root's and 0700 (a directory left owned by
//! anyone else, as an older image's app home was, is taken back), and the
//! agent never follows a symbolic link it did not make — directories are
//! opened with `O_NOFOLLOW|O_DIRECTORY` and files it reads or appends to
//! with `O_NOFOLLOW`. Only a release's own tree is the app user's.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;

use slipway_core::names::{AppName, ReleaseId};

/// Where the agent keeps apps unless told otherwise.
pub const DEFAULT_ROOT: &str = "/srv/slipway";

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

    /// Creates the directories, or checks the ones there: none is a link,
    /// and under root each is root's; `env/` is readable by its owner only.
    pub fn create(&self) -> io::Result<()> {
        let agent_root = self.root.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(agent_root)?;
        for (dir, mode) in [
            (agent_root.to_owned(), 0o755),
            (self.root.clone(), 0o755),
            (self.releases(), 0o755),
            (self.root.join("env"), 0o700),
            (self.run_dir(), 0o755),
            (self.log_dir(), 0o755),
        ] {
            ensure_dir(&dir, mode)?;
        }
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

/// The error for a link where the agent expects a file or directory.
fn link_refused(path: &Path) -> io::Error {
    io::Error::other(format!(
        "{} is a symbolic link; the agent does not follow links in an app's directory",
        path.display()
    ))
}

fn nofollow(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| {
        if e.raw_os_error() == Some(Errno::ELOOP as i32) {
            link_refused(path)
        } else {
            e
        }
    }
}

/// Opens `path` with `O_NOFOLLOW`: a link there is refused, not followed.
pub fn open_nofollow(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    options
        .custom_flags(OFlag::O_NOFOLLOW.bits() | OFlag::O_CLOEXEC.bits())
        .open(path)
        .map_err(nofollow(path))
}

/// Reads a file the agent wrote, never through a link.
pub fn read_nofollow(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_nofollow(path, OpenOptions::new().read(true))?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Makes `dir` (its parent must exist) or checks it: a directory, not a
/// link, with `mode`, and when the agent is root, owned by root. The
/// checks are made on the opened directory, so nothing can be swapped in
/// between.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).bits())
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            Some(n) if n == Errno::ELOOP as i32 || n == Errno::ENOTDIR as i32 => {
                if fs::symlink_metadata(dir).is_ok_and(|m| m.is_symlink()) {
                    link_refused(dir)
                } else {
                    io::Error::other(format!("{} is not a directory", dir.display()))
                }
            }
            _ => e,
        })?;
    let meta = opened.metadata()?;
    if nix::unistd::geteuid().is_root() && (meta.uid() != 0 || meta.gid() != 0) {
        nix::unistd::fchown(
            &opened,
            Some(nix::unistd::Uid::from_raw(0)),
            Some(nix::unistd::Gid::from_raw(0)),
        )?;
    }
    if meta.permissions().mode() & 0o7777 != mode {
        opened.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(())
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

    #[test]
    fn a_root_agent_takes_back_directories_the_app_user_owns() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: only root can give a directory away");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let l = layout(tmp.path());
        let app_user = 65534;
        for dir in [tmp.path().to_owned(), l.dir().to_owned(), l.releases()] {
            std::os::unix::fs::lchown(&dir, Some(app_user), Some(app_user)).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        }

        l.create().unwrap();

        for dir in [tmp.path().to_owned(), l.dir().to_owned(), l.releases()] {
            let meta = fs::symlink_metadata(&dir).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (0, 0), "{}", dir.display());
            assert_eq!(
                meta.permissions().mode() & 0o7777,
                0o755,
                "{}",
                dir.display()
            );
        }
    }

    #[test]
    fn a_link_in_place_of_a_directory_is_refused_and_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let l = Layout::new(tmp.path(), &AppName::parse("hello").unwrap());
        symlink(outside.path(), l.dir()).unwrap();

        let err = l.create().unwrap_err();

        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_image_and_the_user_data_make_the_root_roots_and_the_app_home_elsewhere() {
        let infra = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra");
        for file in ["base-image/provision.sh", "environment.yaml"] {
            let text = fs::read_to_string(infra.join(file)).unwrap();
            let homes: Vec<&str> = text
                .split("--home-dir ")
                .skip(1)
                .filter_map(|rest| rest.split_whitespace().next())
                .collect();
            assert!(!homes.is_empty(), "{file} makes no app user");
            for home in homes {
                assert!(
                    !Path::new(home).starts_with(DEFAULT_ROOT),
                    "{file}: the app user's home {home} is in the agent's root"
                );
            }
            let root_owned = format!("install -d -o root -g root -m 0755 {DEFAULT_ROOT}");
            assert!(
                text.contains(&root_owned),
                "{file} does not make {DEFAULT_ROOT} root's"
            );
        }
    }
}
