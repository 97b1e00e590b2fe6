//! An environment's optional `syslog` destination, on instances: the
//! agent writes (or removes) the app's rsyslog forwarding file in
//! `/etc/rsyslog.d` after every start, has rsyslog check it (`rsyslogd
//! -N1`) before it is put in place, and restarts rsyslog only when the file
//! changed. rsyslog keeps its place in the journal across the restart, so
//! no line is lost. The file itself comes from
//! [`SyslogDestination::rsyslog_config`]; `tests/tests/it/rsyslog.rs`
//! runs it in a real rsyslogd against a TLS receiver.

use std::path::{Path, PathBuf};

use slipway_core::names::AppName;
use slipway_core::syslog::{SyslogDestination, rsyslog_file_name};

use super::run_tool;
use crate::layout::{remove_if_exists, write_atomic};

/// rsyslog on this instance.
#[derive(Debug, Clone)]
pub struct Rsyslog {
    /// Where rsyslog includes files from (`/etc/rsyslog.d`).
    pub dir: PathBuf,
    /// The CA bundle TLS destinations are checked against.
    pub ca_file: String,
    /// `rsyslogd`, for `-N1`.
    pub rsyslogd: PathBuf,
    /// How rsyslog is restarted (`systemctl restart rsyslog`).
    pub restart: Vec<String>,
}

/// What [`Rsyslog::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Forwarding was set up or changed; rsyslog restarted.
    On,
    /// Forwarding was removed; rsyslog restarted.
    Off,
    /// Nothing to change.
    Unchanged,
}

impl Forward {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Unchanged => "unchanged",
        }
    }
}

impl Rsyslog {
    fn path(&self, app: &AppName) -> PathBuf {
        self.dir.join(rsyslog_file_name(app))
    }

    async fn restart(&self) -> Result<(), String> {
        let Some((program, args)) = self.restart.split_first() else {
            return Ok(());
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_tool(Path::new(program), &args).await
    }

    /// Puts `app`'s forwarding in line with its `syslog` setting. On any
    /// failure the previous file is back in place and `Err` says why.
    pub async fn apply(&self, app: &AppName, setting: Option<&str>) -> Result<Forward, String> {
        let wanted = setting
            .map(|s| SyslogDestination::parse(s)?.rsyslog_config(app, &self.ca_file))
            .transpose()
            .map_err(|e| e.to_string())?;
        let path = self.path(app);
        let before = std::fs::read_to_string(&path).ok();
        if wanted == before {
            return Ok(Forward::Unchanged);
        }
        let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
        let outcome = match &wanted {
            Some(text) => {
                // Not `*.conf`, so rsyslog never includes it half-checked.
                let staged = path.with_extension("conf.new");
                write_atomic(&staged, text.as_bytes(), 0o644).map_err(|e| io("writing", e))?;
                let checked = run_tool(
                    &self.rsyslogd,
                    &["-N1", "-f", &staged.display().to_string()],
                )
                .await;
                let placed = checked
                    .and_then(|()| std::fs::rename(&staged, &path).map_err(|e| io("placing", e)));
                let _ = remove_if_exists(&staged);
                placed?;
                Forward::On
            }
            None => {
                remove_if_exists(&path).map_err(|e| io("removing", e))?;
                Forward::Off
            }
        };
        if let Err(e) = self.restart().await {
            let _ = match &before {
                Some(old) => write_atomic(&path, old.as_bytes(), 0o644),
                None => remove_if_exists(&path),
            };
            let _ = self.restart().await;
            return Err(e);
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A script that records its arguments in `<dir>/calls` and exits
    /// with `code` (saying an error when it fails).
    fn script(dir: &Path, name: &str, code: i32) -> PathBuf {
        let path = dir.join(name);
        let text = format!(
            "#!/bin/sh\necho \"{name} $*\" >> {calls}\n[ {code} -eq 0 ] || echo \"{name}: error: it went wrong\" >&2\nexit {code}\n",
            calls = dir.join("calls").display(),
        );
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn rsyslog(dir: &Path, check: i32, restart: i32) -> Rsyslog {
        let conf = dir.join("rsyslog.d");
        std::fs::create_dir_all(&conf).unwrap();
        Rsyslog {
            dir: conf,
            ca_file: "/etc/pki/tls/certs/ca-bundle.crt".into(),
            rsyslogd: script(dir, "rsyslogd", check),
            restart: vec![script(dir, "restart", restart).display().to_string()],
        }
    }

    fn calls(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect()
    }

    fn app() -> AppName {
        AppName::parse("hello").unwrap()
    }

    #[tokio::test]
    async fn setting_a_destination_checks_places_and_restarts_once_and_unsetting_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let r = rsyslog(dir.path(), 0, 0);
        let file = r.dir.join("05-slipway-forward-hello.conf");

        let on = r.apply(&app(), Some("logs5.papertrailapp.com:12345")).await;
        let again = r.apply(&app(), Some("logs5.papertrailapp.com:12345")).await;
        let text = std::fs::read_to_string(&file).unwrap();
        let off = r.apply(&app(), None).await;
        let still_off = r.apply(&app(), None).await;

        assert_eq!(
            (on, again, off, still_off),
            (
                Ok(Forward::On),
                Ok(Forward::Unchanged),
                Ok(Forward::Off),
                Ok(Forward::Unchanged)
            )
        );
        assert!(text.contains(r#"target="logs5.papertrailapp.com" port="12345""#));
        assert!(!file.exists());
        assert_eq!(calls(dir.path()), ["rsyslogd", "restart", "restart"]);
        assert_eq!(
            std::fs::read_dir(&r.dir).unwrap().count(),
            0,
            "nothing staged is left"
        );
    }

    #[tokio::test]
    async fn a_file_rsyslog_refuses_is_never_put_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let r = rsyslog(dir.path(), 1, 0);

        let err = r
            .apply(&app(), Some("logs5.papertrailapp.com:12345"))
            .await
            .unwrap_err();

        assert!(err.contains("error: it went wrong"), "{err}");
        assert_eq!(std::fs::read_dir(&r.dir).unwrap().count(), 0);
        assert_eq!(calls(dir.path()), ["rsyslogd"], "rsyslog is not restarted");
    }

    #[tokio::test]
    async fn a_failed_restart_puts_the_previous_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let good = rsyslog(dir.path(), 0, 0);
        good.apply(&app(), Some("logs5.papertrailapp.com:12345"))
            .await
            .unwrap();
        let before =
            std::fs::read_to_string(good.dir.join("05-slipway-forward-hello.conf")).unwrap();
        let failing = rsyslog(dir.path(), 0, 1);

        let err = failing
            .apply(&app(), Some("logs6.papertrailapp.com:999"))
            .await
            .unwrap_err();

        assert!(err.contains("restart"), "{err}");
        let after =
            std::fs::read_to_string(good.dir.join("05-slipway-forward-hello.conf")).unwrap();
        assert_eq!(after, before);
    }

    #[tokio::test]
    async fn a_hostile_setting_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let r = rsyslog(dir.path(), 0, 0);

        let err = r
            .apply(
                &app(),
                Some("x\" action(type=\"omfile\" file=\"/etc/passwd\"):514"),
            )
            .await
            .unwrap_err();

        assert!(err.starts_with("syslog must be host:port"), "{err}");
        assert!(calls(dir.path()).is_empty());
        assert_eq!(std::fs::read_dir(&r.dir).unwrap().count(), 0);
    }
}
