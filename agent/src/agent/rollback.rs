//! `slipway-agent rollback`: back to the previous release on this instance.

use slipway_core::names::{AppName, EnvRef, ReleaseId};

use super::{Agent, Failure};
use crate::health::Probe;
use crate::layout::Layout;
use crate::state::State;

impl Agent {
    /// The single app under the root, when `--app` is not given.
    pub fn only_app(&self) -> Result<AppName, Failure> {
        let apps = self.apps();
        match apps.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Failure::at(
                "app",
                format!("no app is installed under {}", self.root.display()),
            )),
            _ => Err(Failure::at(
                "app",
                "several apps are installed here; say which with --app",
            )),
        }
    }

    pub(super) fn apps(&self) -> Vec<AppName> {
        let mut apps: Vec<AppName> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("releases").is_dir())
            .filter_map(|e| AppName::parse(e.file_name().to_str()?).ok())
            .collect();
        apps.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        apps
    }

    /// `slipway-agent rollback`: back to the previous release here.
    pub async fn rollback(&self, app: &AppName) -> Result<ReleaseId, Failure> {
        let layout = Layout::new(&self.root, app);
        self.story.say(self.story.line("rollback").kv("app", app));
        let _lock = self.lock(&layout)?;
        let mut state = State::load(&layout).map_err(|e| Failure::at("state", e))?;
        let (Some(env), Some(current)) = (state.env.clone(), state.current) else {
            return Err(Failure::at("rollback", "nothing has been deployed here"));
        };
        // After a crash between a switch and its health check, `current`
        // points at an unproven release: going back means the proven one.
        let unproven = layout.current_release() != Some(current);
        let target = if unproven {
            Some(current)
        } else {
            state.previous
        }
        .filter(|p| layout.is_installed(*p))
        .ok_or_else(|| {
            Failure::at("rollback", "there is no previous release installed here")
                .serving(Some(current))
        })?;
        let settings = state.settings.clone().unwrap_or_default();
        let port = self.port.or(state.port).unwrap_or(settings.port);
        let probe = Probe::new(port, &settings.health_path);
        let env = EnvRef {
            app: app.clone(),
            env,
        };
        let plan = self.plan(&layout, env, target, &settings, port)?;
        self.activate(&layout, &mut state, plan, Some(current), &probe, &settings)
            .await?;
        self.tag_release(target, None).await;
        self.story.say(
            self.story
                .line("done")
                .kv("release", target)
                .kv("previous", current)
                .kv("ms", self.story.elapsed_ms()),
        );
        Ok(target)
    }
}
