//! Where `ship` finds the control plane, its credentials, and which app
//! and environment a command is about.
//!
//! The control plane: `--url` or `SLIPWAY_URL`, else the `ship dev`
//! running from this directory or a parent (`.slipway/dev.json`), else the
//! user's config file (`$XDG_CONFIG_HOME/slipway/config.toml`, or
//! `~/.config/slipway/config.toml`: `url`, `user`, `password`).
//! Credentials: `SLIPWAY_USER` / `SLIPWAY_PASSWORD`, else from the same
//! place the URL came from. The app and environment: `--app` / `--env`,
//! else `.slipway.toml` (`app = "…"`, `env = "…"`) in the repository.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use slipway_core::names::EnvRef;

/// What `ship dev` started, written to `.slipway/dev.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevState {
    pub url: String,
    pub user: String,
    pub password: String,
    /// The Slack signing secret of the local chat route.
    #[serde(default)]
    pub slack_secret: String,
    pub aws_endpoint: String,
    pub bucket: String,
    /// The process serving it, so a stale file is recognised.
    #[serde(default)]
    pub pid: u32,
}

pub const DEV_STATE: &str = ".slipway/dev.json";
pub const PROJECT_FILE: &str = ".slipway.toml";

impl DevState {
    /// The state of a `ship dev` running from `start` or a parent.
    pub fn find(start: &Path) -> Option<Self> {
        let path = find_upwards(start, DEV_STATE)?;
        let state: Self = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let alive = state.pid == 0 || Path::new(&format!("/proc/{}", state.pid)).exists();
        alive.then_some(state)
    }

    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join(DEV_STATE);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("serialises"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }
}

/// `.slipway.toml`: the app and environment a repository deploys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    pub app: Option<String>,
    pub env: Option<String>,
}

impl Project {
    pub fn find(start: &Path) -> Result<Self, String> {
        let Some(path) = find_upwards(start, PROJECT_FILE) else {
            return Ok(Self::default());
        };
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))
    }
}

/// The user's config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserConfig {
    url: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

fn user_config() -> Result<UserConfig, String> {
    let dir = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    let Some(path) = dir.map(|d| d.join("slipway/config.toml")) else {
        return Ok(UserConfig::default());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))
        }
        Err(_) => Ok(UserConfig::default()),
    }
}

pub fn find_upwards(start: &Path, relative: &str) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(relative))
        .find(|candidate| candidate.is_file())
}

/// The control plane and who talks to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub user: String,
    pub password: String,
}

/// Resolves the control plane: flag, environment, `ship dev`, config file.
pub fn target(url_flag: Option<&str>, cwd: &Path) -> Result<Target, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let dev = DevState::find(cwd);
    let file = user_config()?;
    let from_dev = url_flag.is_none() && env("SLIPWAY_URL").is_none() && dev.is_some();
    let url = url_flag
        .map(str::to_owned)
        .or_else(|| env("SLIPWAY_URL"))
        .or_else(|| dev.as_ref().map(|d| d.url.clone()))
        .or_else(|| file.url.clone())
        .ok_or(
            "no control plane: start one with `ship dev`, or set SLIPWAY_URL (or url in ~/.config/slipway/config.toml)",
        )?;
    let (dev_user, dev_password) = match (&dev, from_dev) {
        (Some(d), true) => (Some(d.user.clone()), Some(d.password.clone())),
        _ => (None, None),
    };
    let user = env("SLIPWAY_USER")
        .or(dev_user)
        .or(file.user)
        .ok_or("no user: set SLIPWAY_USER (and SLIPWAY_PASSWORD)")?;
    let password = env("SLIPWAY_PASSWORD")
        .or(dev_password)
        .or(file.password)
        .ok_or("no password: set SLIPWAY_PASSWORD")?;
    Ok(Target {
        url: url.trim_end_matches('/').to_owned(),
        user,
        password,
    })
}

/// Resolves the app and environment: flags, then `.slipway.toml`.
pub fn env_ref(app: Option<&str>, env: Option<&str>, cwd: &Path) -> Result<EnvRef, String> {
    let project = Project::find(cwd)?;
    let app = app
        .map(str::to_owned)
        .or(project.app)
        .ok_or("which app? say --app NAME, or put app = \"NAME\" in .slipway.toml")?;
    let env = env
        .map(str::to_owned)
        .or(project.env)
        .ok_or("which environment? say --env NAME, or put env = \"NAME\" in .slipway.toml")?;
    EnvRef::parse(&app, &env).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_and_environment_come_from_flags_before_the_project_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(PROJECT_FILE),
            "app = \"hello\"\nenv = \"production\"\n",
        )
        .unwrap();
        let nested = dir.path().join("src/deep");
        std::fs::create_dir_all(&nested).unwrap();

        let found = env_ref(None, None, &nested).unwrap();
        assert_eq!(found.qualified(), "hello-production");
        let flagged = env_ref(Some("other"), Some("staging"), &nested).unwrap();
        assert_eq!(flagged.qualified(), "other-staging");
        assert!(env_ref(Some("Bad Name"), None, &nested).is_err());
    }

    #[test]
    fn a_missing_app_says_how_to_name_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = env_ref(None, Some("prod"), dir.path()).unwrap_err();
        assert!(err.contains("--app"), "{err}");
        std::fs::write(dir.path().join(PROJECT_FILE), "app = 3\n").unwrap();
        assert!(env_ref(None, None, dir.path()).is_err());
    }

    #[test]
    fn the_dev_state_is_found_from_a_subdirectory_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = DevState {
            url: "http://127.0.0.1:9".into(),
            user: "dev".into(),
            password: "pw".into(),
            slack_secret: "s".into(),
            aws_endpoint: "http://127.0.0.1:8".into(),
            bucket: "b".into(),
            pid: std::process::id(),
        };
        let path = state.write(dir.path()).unwrap();
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();

        assert_eq!(DevState::find(&sub), Some(state));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
