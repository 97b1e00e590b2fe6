//! `slipway-agent status`: what runs here, as JSON for scripts and the
//! local platform.

use serde::Serialize;
use slipway_core::names::{AppName, ReleaseId};

use super::Agent;
use crate::health::Probe;
use crate::layout::Layout;
use crate::state::State;
use crate::supervisor::ProcessStatus;

impl Agent {
    /// `slipway-agent status`: what runs, per app.
    pub async fn status(&self, app: Option<&AppName>) -> StatusReport {
        let apps = match app {
            Some(a) => vec![a.clone()],
            None => self.apps(),
        };
        let mut report = StatusReport { apps: Vec::new() };
        for app in apps {
            let layout = Layout::new(&self.root, &app);
            let state = State::load(&layout).unwrap_or_default();
            let health = match state.port {
                Some(port) => {
                    let probe = Probe::new(
                        self.port.unwrap_or(port),
                        state
                            .settings
                            .as_ref()
                            .map_or("/health", |s| s.health_path.as_str()),
                    );
                    let result = probe.once().await;
                    Some(Health {
                        url: probe.url().to_owned(),
                        ok: result.is_ok(),
                        detail: match result {
                            Ok(status) => format!("answered {status}"),
                            Err(e) => e,
                        },
                    })
                }
                None => None,
            };
            report.apps.push(AppStatus {
                serving: layout.current_release(),
                processes: self.supervisor.processes(&layout).await,
                supervisor: self.supervisor.name(),
                app,
                env: state.env.map(|e| e.to_string()),
                release: state.current,
                previous: state.previous,
                since: state.since.map(|s| s.to_rfc3339()),
                fallback_from: state.fallback_from,
                health,
            });
        }
        report
    }
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub apps: Vec<AppStatus>,
}

#[derive(Debug, Serialize)]
pub struct AppStatus {
    pub app: AppName,
    pub env: Option<String>,
    /// The release that last passed its health check here.
    pub release: Option<ReleaseId>,
    /// The release `current` points at (differs while a deploy runs).
    pub serving: Option<ReleaseId>,
    pub previous: Option<ReleaseId>,
    pub since: Option<String>,
    pub fallback_from: Option<ReleaseId>,
    pub supervisor: &'static str,
    pub health: Option<Health>,
    pub processes: Vec<ProcessStatus>,
}

#[derive(Debug, Serialize)]
pub struct Health {
    pub url: String,
    pub ok: bool,
    pub detail: String,
}
