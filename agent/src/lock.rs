//! The per-app lock: one agent at a time works on an app. An flock on
//! `<root>/<app>/lock` is released by the kernel when its holder dies, so a
//! killed agent never leaves the app locked. A second agent waits up to a
//! timeout, saying who holds the lock, then fails clearly.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::layout::{Layout, open_nofollow};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another agent (pid {holder}) is working on this app; gave up after {waited_secs} s")]
    Busy { holder: String, waited_secs: u64 },
    #[error("could not open the lock file: {0}")]
    Io(#[from] io::Error),
}

pub struct AppLock {
    _held: Flock<File>,
}

impl AppLock {
    /// Takes the lock, waiting up to `wait`; `on_wait` is called once with
    /// the holder's pid when the lock is busy.
    pub fn acquire(
        layout: &Layout,
        wait: Duration,
        on_wait: impl FnOnce(&str),
    ) -> Result<Self, LockError> {
        let started = Instant::now();
        let mut file = open_nofollow(
            &layout.lock(),
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644),
        )?;
        let mut on_wait = Some(on_wait);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut held) => {
                    held.set_len(0)?;
                    held.rewind()?;
                    write!(held, "{}", std::process::id())?;
                    return Ok(Self { _held: held });
                }
                Err((f, Errno::EWOULDBLOCK)) => {
                    file = f;
                    let holder = holder(&mut file);
                    if started.elapsed() >= wait {
                        return Err(LockError::Busy {
                            holder,
                            waited_secs: wait.as_secs(),
                        });
                    }
                    if let Some(f) = on_wait.take() {
                        f(&holder);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((_, errno)) => return Err(LockError::Io(errno.into())),
            }
        }
    }
}

fn holder(file: &mut File) -> String {
    let mut s = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut s));
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        "unknown".into()
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_waits_then_fails_naming_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path(), &"hello".parse().unwrap());
        layout.create().unwrap();
        let first = AppLock::acquire(&layout, Duration::ZERO, |_| {}).unwrap();

        let mut told = None;
        let err = AppLock::acquire(&layout, Duration::from_millis(120), |h| {
            told = Some(h.to_owned())
        })
        .err()
        .unwrap();

        let me = std::process::id().to_string();
        assert_eq!(told.as_deref(), Some(me.as_str()));
        assert!(err.to_string().contains(&format!("pid {me}")), "{err}");
        drop(first);
        AppLock::acquire(&layout, Duration::ZERO, |_| {}).unwrap();
    }
}
