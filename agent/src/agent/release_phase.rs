//! `slipway-agent release-phase`: the Procfile's `release:` command, once,
//! in a scratch copy of the built release.

use std::time::{Duration, Instant};

use super::{Agent, Failure};
use crate::command::{self, process_env};
use crate::install::{self, chown_tree};
use crate::layout::{Layout, remove_tree_if_exists};
use crate::source::ReleaseUrl;

impl Agent {
    /// `slipway-agent release-phase <url>`: the Procfile's `release:`
    /// command, once, in a scratch copy of the (built) release.
    pub async fn release_phase(&self, url: &ReleaseUrl) -> Result<(), Failure> {
        let id = url.id;
        let layout = Layout::new(&self.root, &url.env.app);
        self.story.say(
            self.story
                .line("release-phase")
                .kv("app", &url.env.app)
                .kv("release", id),
        );
        let _lock = self.lock(&layout)?;
        self.kill_leftover_command(&layout);
        let store = self.store(&url.location).await;
        let settings = install::env_settings(&store, url)
            .await
            .map_err(|e| Failure::at("settings", e))?;
        let manifest = install::manifest(&store, url)
            .await
            .map_err(|e| Failure::at("fetch", e))?;
        let Some(release_cmd) = manifest.procfile.release() else {
            self.story.say(
                self.story
                    .line("done")
                    .kv("release", id)
                    .kv("skipped", "no release: command"),
            );
            return Ok(());
        };
        let config = install::config(&store, url, &manifest)
            .await
            .map_err(|e| Failure::at("fetch", e))?;
        let vars = self
            .resolve(&url.env, &config)
            .await
            .map_err(|e| Failure::at("config", e))?;
        let scratch = layout
            .scratch()
            .join(format!("{id}-{}", std::process::id()));
        std::fs::create_dir_all(layout.scratch()).map_err(|e| Failure::at("download", e))?;
        let result = async {
            let unpacked = install::unpack(&store, &manifest, scratch.clone(), self.limits)
                .await
                .map_err(|e| Failure::at("download", e))?;
            if let Some(user) = &self.run_as {
                chown_tree(&scratch, user.uid, user.gid).map_err(|e| Failure::at("download", e))?;
            }
            self.story.say(
                self.story
                    .line("download")
                    .kv("release", id)
                    .kv("bytes", unpacked.extracted.size)
                    .kv("ms", unpacked.millis),
            );
            let mut env = process_env(&vars);
            env.extend(self.identity(&url.env, id));
            let timeout = Duration::from_secs(settings.build_timeout_secs);
            for (what, cmd) in [
                ("build", manifest.procfile.build()),
                ("release", Some(release_cmd)),
            ] {
                let Some(cmd) = cmd else { continue };
                let started = Instant::now();
                command::run(command::Run {
                    what,
                    command: cmd,
                    dir: &scratch,
                    env: &env,
                    timeout,
                    run_as: self.run_as.as_ref(),
                    pidfile: Some(&layout.command_pidfile()),
                })
                .await
                .map_err(|e| Failure::at(if what == "build" { "build" } else { "release" }, e))?;
                self.story.say(
                    self.story
                        .line(what)
                        .kv("release", id)
                        .kv("ms", started.elapsed().as_millis()),
                );
            }
            Ok(())
        }
        .await;
        let _ = remove_tree_if_exists(&scratch);
        let _ = std::fs::remove_dir(layout.scratch());
        result?;
        self.story.say(
            self.story
                .line("done")
                .kv("release", id)
                .kv("ms", self.story.elapsed_ms()),
        );
        Ok(())
    }
}
