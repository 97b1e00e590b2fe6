//! `state.json`: what this instance knows about an app, beyond the
//! `current` link. `current` says what the supervisor runs; the state says
//! which release was last *proven* healthy, so a crash between the switch
//! and the health check is recognised and a failure goes back to a release
//! that is known to work.

use std::io;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use slipway_core::env_settings::EnvSettings;
use slipway_core::names::{EnvName, ReleaseId};

use crate::layout::{Layout, write_atomic};

/// How many past releases the state remembers.
const HISTORY: usize = 20;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub env: Option<EnvName>,
    /// The release that serves and passed its health check.
    #[serde(default)]
    pub current: Option<ReleaseId>,
    /// The release before it: what `rollback` goes back to.
    #[serde(default)]
    pub previous: Option<ReleaseId>,
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Releases that served here, oldest first.
    #[serde(default)]
    pub history: Vec<ReleaseId>,
    /// Where the health check of `current` goes.
    #[serde(default)]
    pub port: Option<u16>,
    /// The environment's settings as of that deploy (health check, grace
    /// periods): what `rollback` and `status` use.
    #[serde(default)]
    pub settings: Option<EnvSettings>,
    /// Set when boot could not start the environment's `current` release
    /// and fell back to an older one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_from: Option<ReleaseId>,
}

impl State {
    pub fn load(layout: &Layout) -> io::Result<Self> {
        Self::load_path(&layout.state())
    }

    fn load_path(path: &Path) -> io::Result<Self> {
        match crate::layout::read_nofollow(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io::Error::other(format!("{} is damaged: {e}", path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, layout: &Layout) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        write_atomic(&layout.state(), &json, 0o644)
    }

    /// Records that `id` now serves, healthy.
    pub fn served(&mut self, id: ReleaseId, now: DateTime<Utc>) {
        if self.current != Some(id) {
            self.previous = self.current;
            self.current = Some(id);
            self.since = Some(now);
        }
        self.history.retain(|r| *r != id);
        self.history.push(id);
        let excess = self.history.len().saturating_sub(HISTORY);
        self.history.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: u64) -> ReleaseId {
        ReleaseId::new(n).unwrap()
    }

    #[test]
    fn serving_a_release_moves_current_to_previous_once() {
        let now = Utc::now();
        let mut s = State::default();
        s.served(r(1), now);
        s.served(r(2), now);
        s.served(r(2), now);
        assert_eq!((s.current, s.previous), (Some(r(2)), Some(r(1))));
        s.served(r(1), now);
        assert_eq!((s.current, s.previous), (Some(r(1)), Some(r(2))));
        assert_eq!(s.history, [r(2), r(1)]);
    }

    #[test]
    fn the_state_round_trips_through_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path(), &"hello".parse().unwrap());
        layout.create().unwrap();
        assert_eq!(State::load(&layout).unwrap(), State::default());
        let mut s = State::default();
        s.served(r(7), Utc::now());
        s.port = Some(8000);
        s.save(&layout).unwrap();
        assert_eq!(State::load(&layout).unwrap(), s);
    }
}
