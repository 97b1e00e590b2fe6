//! `slipway-agent stop`: an instance being retired stops its apps'
//! processes (the local platform does this for every instance the group
//! terminated). Releases stay installed: `boot` starts them again.

use slipway_core::names::AppName;

use super::{Agent, Failure};
use crate::layout::Layout;

impl Agent {
    /// Stops the processes of `app`, or of every app installed here.
    pub async fn stop(&self, app: Option<&AppName>) -> Result<(), Failure> {
        let apps = match app {
            Some(app) => vec![app.clone()],
            None => self.apps(),
        };
        for app in apps {
            let layout = Layout::new(&self.root, &app);
            let _lock = self.lock(&layout)?;
            self.supervisor
                .stop(&layout)
                .await
                .map_err(|e| Failure::at("stop", e))?;
            self.story.say(self.story.line("stopped").kv("app", &app));
        }
        Ok(())
    }
}
