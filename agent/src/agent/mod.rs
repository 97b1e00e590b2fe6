//! The agent's commands: deploy, rollback, release-phase, boot, status.
//!
//! A deploy installs the release beside the running one (download, verify,
//! unpack, config, build: nothing running is touched; `prepare` does only
//! this, on every instance before the first batch), then switches
//! `current`, restarts the processes and waits for the health check. Any
//! failure after the switch switches back and restarts the release that
//! last passed its health check here, and waits for it to be healthy
//! again. The state file records a release as serving only after its
//! health check, so re-running an interrupted deploy converges.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use chrono::Utc;
use slipway_core::archive::Limits;
use slipway_core::config::Config;
use slipway_core::env_settings::EnvSettings;
use slipway_core::names::{EnvRef, ReleaseId};
use slipway_core::procfile::Procfile;
use tokio::sync::OnceCell;

use crate::command::{self, RunAs, process_env};
use crate::health::Probe;
use crate::install::{self, chown_tree};
use crate::layout::{Layout, write_atomic};
use crate::lock::AppLock;
use crate::secrets::{self, ParameterStore};
use crate::source::{Location, ReleaseUrl, Store};
use crate::state::State;
use crate::story::Story;
use crate::supervisor::{Plan, Supervisor};
use crate::tag;

mod boot;
mod release_phase;
mod rollback;
mod status;
mod stop;

pub use status::{AppStatus, Health, StatusReport};

/// Why a command failed, and what serves now.
#[derive(Debug)]
pub struct Failure {
    pub step: &'static str,
    pub reason: String,
    /// The release that serves after the failure, if any.
    pub serving: Option<ReleaseId>,
    /// True when the instance is left without a healthy release that
    /// was healthy before.
    pub degraded: bool,
}

impl Failure {
    fn at(step: &'static str, reason: impl ToString) -> Self {
        Self {
            step,
            reason: reason.to_string(),
            serving: None,
            degraded: false,
        }
    }

    fn serving(mut self, serving: Option<ReleaseId>) -> Self {
        self.serving = serving;
        self
    }
}

/// A deploy or prepare under way: the app's lock (held until it ends), its
/// state, where its release comes from and the environment's settings.
struct Begun {
    _lock: AppLock,
    state: State,
    store: Store,
    settings: EnvSettings,
}

/// Everything the commands share, built once by `main`.
pub struct Agent {
    pub root: PathBuf,
    pub supervisor: Supervisor,
    pub instance_id: Option<String>,
    pub port: Option<u16>,
    pub lock_wait: Duration,
    pub limits: Limits,
    pub run_as: Option<RunAs>,
    pub story: Story,
    aws: OnceCell<SdkConfig>,
    /// Set by boot while it deploys a fallback, so the locked deploy
    /// records it in the state.
    fallback_from: std::cell::Cell<Option<ReleaseId>>,
}

impl Agent {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        root: PathBuf,
        supervisor: Supervisor,
        instance_id: Option<String>,
        port: Option<u16>,
        lock_wait: Duration,
        limits: Limits,
        run_as: Option<RunAs>,
    ) -> Self {
        Self {
            root,
            supervisor,
            instance_id,
            port,
            lock_wait,
            limits,
            run_as,
            story: Story::new(),
            aws: OnceCell::new(),
            fallback_from: std::cell::Cell::new(None),
        }
    }

    async fn aws(&self) -> &SdkConfig {
        self.aws
            .get_or_init(slipway_core::objects::load_aws_config)
            .await
    }

    pub async fn store(&self, location: &Location) -> Store {
        match location {
            Location::S3 { .. } => {
                let client = slipway_core::objects::s3_client(self.aws().await);
                Store::new(location, || client)
            }
            Location::Dir(_) => Store::new(location, || unreachable!("a directory needs no S3")),
        }
    }

    fn lock(&self, layout: &Layout) -> Result<AppLock, Failure> {
        let started = Instant::now();
        layout.create().map_err(|e| {
            Failure::at("lock", format!("creating {}: {e}", layout.dir().display()))
        })?;
        let lock = AppLock::acquire(layout, self.lock_wait, |holder| {
            self.story.say(
                self.story
                    .line("lock")
                    .kv("waiting", "true")
                    .kv("holder_pid", holder),
            );
        })
        .map_err(|e| Failure::at("lock", e))?;
        self.story.say(
            self.story
                .line("lock")
                .kv("ms", started.elapsed().as_millis()),
        );
        Ok(lock)
    }

    /// What a deploy and a prepare share before they install: the app's
    /// lock, leftovers swept, the state (which must be of this
    /// environment), the store and the environment's settings.
    async fn begin(&self, url: &ReleaseUrl, layout: &Layout) -> Result<Begun, Failure> {
        self.story.checkpoint("lock");
        let lock = self.lock(layout)?;
        self.kill_leftover_command(layout);
        let swept = layout.sweep().map_err(|e| Failure::at("sweep", e))?;
        if !swept.is_empty() {
            self.story
                .say(self.story.line("sweep").kv("removed", swept.join(",")));
        }
        let state = State::load(layout).map_err(|e| Failure::at("state", e))?;
        if let Some(env) = &state.env
            && *env != url.env.env
        {
            return Err(Failure::at(
                "deploy",
                format!(
                    "this instance runs {}/{env}; it does not take releases of {}",
                    url.env.app, url.env
                ),
            )
            .serving(state.current));
        }
        let store = self.store(&url.location).await;
        let settings = install::env_settings(&store, url)
            .await
            .map_err(|e| Failure::at("settings", e).serving(state.current))?;
        Ok(Begun {
            _lock: lock,
            state,
            store,
            settings,
        })
    }

    /// `slipway-agent prepare <release-url>`: everything a deploy does
    /// before the switch (download, verify, unpack, config, build into
    /// `releases/rN`), on every instance at once before the first batch,
    /// while the instance serves on. Nothing switches, nothing restarts:
    /// the batch's `deploy` then finds the release installed. Preparing a
    /// release already installed only writes its config again.
    pub async fn prepare_release(&self, url: &ReleaseUrl) -> Result<ReleaseId, Failure> {
        let id = url.id;
        let layout = Layout::new(&self.root, &url.env.app);
        self.story.say(
            self.story
                .line("prepare")
                .kv("app", &url.env.app)
                .kv("env", &url.env.env)
                .kv("release", id),
        );
        let Begun {
            _lock,
            mut state,
            store,
            settings,
        } = self.begin(url, &layout).await?;
        self.prepare(&store, url, &layout, &settings, &mut state)
            .await
            .map_err(|f| f.serving(state.current))?;
        // Only the environment's name, if this is its first release here:
        // what serves is unchanged.
        state.save(&layout).map_err(|e| Failure::at("state", e))?;
        self.story.say(
            self.story
                .line("done")
                .kv("release", id)
                .kv("prepared", "true")
                .opt("serving", state.current)
                .kv("ms", self.story.elapsed_ms()),
        );
        Ok(id)
    }

    /// `slipway-agent deploy <release-url>`.
    pub async fn deploy(&self, url: &ReleaseUrl) -> Result<ReleaseId, Failure> {
        let id = url.id;
        let layout = Layout::new(&self.root, &url.env.app);
        self.story.say(
            self.story
                .line("deploy")
                .kv("app", &url.env.app)
                .kv("env", &url.env.env)
                .kv("release", id)
                .kv("supervisor", self.supervisor.name()),
        );
        let Begun {
            _lock,
            mut state,
            store,
            settings,
        } = self.begin(url, &layout).await?;
        let port = self.port.unwrap_or(settings.port);
        let probe = Probe::new(port, &settings.health_path);

        if layout.current_release() == Some(id)
            && state.current == Some(id)
            && self.supervisor.check(&layout).await.is_ok()
            && probe.once().await.is_ok()
        {
            self.tag_release(id, None).await;
            self.story.say(
                self.story
                    .line("done")
                    .kv("release", id)
                    .kv("already", "serving")
                    .kv("ms", self.story.elapsed_ms()),
            );
            return Ok(id);
        }

        let installed = self
            .prepare(&store, url, &layout, &settings, &mut state)
            .await
            .map_err(|f| f.serving(state.current))?;
        debug_assert_eq!(installed, id);

        let plan = self.plan(&layout, url.env.clone(), id, &settings, port)?;
        // What to go back to if this fails: the release proven healthy here,
        // or when that is the one being redeployed, the one before it.
        let good = [state.current, state.previous]
            .into_iter()
            .flatten()
            .find(|r| *r != id && layout.is_installed(*r));
        state.fallback_from = self.fallback_from.get();
        self.activate(&layout, &mut state, plan, good, &probe, &settings)
            .await?;
        self.prune(&layout, &state, &settings);
        self.tag_release(id, None).await;
        self.story.say(
            self.story
                .line("done")
                .kv("release", id)
                .opt("previous", state.previous)
                .kv("ms", self.story.elapsed_ms()),
        );
        Ok(id)
    }

    /// A build or release command whose agent was killed may still run:
    /// it must not write into a tree being swept, or run twice at once.
    fn kill_leftover_command(&self, layout: &Layout) {
        if let Some(pid) = crate::command::kill_leftover(&layout.command_pidfile()) {
            self.story
                .say(self.story.line("sweep").kv("killed_command_pid", pid));
        }
    }

    /// Download, verify, unpack, write config, build: everything before the
    /// switch, none of which touches what runs.
    async fn prepare(
        &self,
        store: &Store,
        url: &ReleaseUrl,
        layout: &Layout,
        settings: &EnvSettings,
        state: &mut State,
    ) -> Result<ReleaseId, Failure> {
        let id = url.id;
        self.story.checkpoint("fetch");
        let started = Instant::now();
        let manifest = install::manifest(store, url)
            .await
            .map_err(|e| Failure::at("fetch", e))?;
        let config = install::config(store, url, &manifest)
            .await
            .map_err(|e| Failure::at("fetch", e))?;
        self.story.say(
            self.story
                .line("fetch")
                .kv("release", id)
                .kv("format", manifest.source.format.extension())
                .kv("bytes", manifest.source.size)
                .kv("ms", started.elapsed().as_millis()),
        );
        let fresh = !layout.is_installed(id);
        if fresh {
            self.story.checkpoint("download");
            let unpacked = install::install_source(store, &manifest, layout, self.limits)
                .await
                .map_err(|e| Failure::at("download", e))?;
            if let Some(user) = &self.run_as {
                chown_tree(&layout.release(id), user.uid, user.gid)
                    .map_err(|e| Failure::at("download", format!("chown: {e}")))?;
            }
            self.story.say(
                self.story
                    .line("download")
                    .kv("release", id)
                    .kv("bytes", unpacked.extracted.size)
                    .kv("entries", unpacked.extracted.entries)
                    .kv("sha256", &unpacked.extracted.sha256[..12])
                    .kv("ms", unpacked.millis),
            );
        } else {
            self.story.say(
                self.story
                    .line("download")
                    .kv("release", id)
                    .kv("cached", "true"),
            );
        }

        self.story.checkpoint("config");
        let started = Instant::now();
        let vars = self.resolve(&url.env, &config).await.map_err(|e| {
            if fresh {
                let _ = layout.remove_release(id);
            }
            Failure::at("config", e)
        })?;
        let reserved: Vec<String> = vars
            .keys()
            .filter(|k| *k == "PORT" || k.starts_with("SLIPWAY_"))
            .cloned()
            .collect();
        let mut vars = vars;
        for key in &reserved {
            vars.remove(key);
        }
        if !reserved.is_empty() {
            // The agent sets these itself, the same way under every supervisor.
            self.story
                .say(self.story.line("config").kv("ignored", reserved.join(",")));
        }
        let env_file = layout.env_file(id);
        write_atomic(&env_file, crate::envfile::render(&vars).as_bytes(), 0o600)
            .map_err(|e| Failure::at("config", format!("writing {}: {e}", env_file.display())))?;
        let procfile = layout.procfile(id);
        let verified = serde_json::to_vec(&manifest.procfile).expect("a Procfile serialises");
        write_atomic(&procfile, &verified, 0o600)
            .map_err(|e| Failure::at("config", format!("writing {}: {e}", procfile.display())))?;
        self.story.say(
            self.story
                .line("config")
                .kv("vars", vars.len())
                .kv("ms", started.elapsed().as_millis()),
        );

        if fresh {
            if let Some(build) = manifest.procfile.build() {
                self.story.checkpoint("build");
                let started = Instant::now();
                let mut env = process_env(&vars);
                env.extend(self.identity(&url.env, id));
                let result = command::run(command::Run {
                    what: "build",
                    command: build,
                    dir: &layout.release(id),
                    env: &env,
                    timeout: Duration::from_secs(settings.build_timeout_secs),
                    run_as: self.run_as.as_ref(),
                    pidfile: Some(&layout.command_pidfile()),
                })
                .await;
                if let Err(e) = result {
                    let _ = layout.remove_release(id);
                    return Err(Failure::at("build", e));
                }
                self.story.say(
                    self.story
                        .line("build")
                        .kv("release", id)
                        .kv("ms", started.elapsed().as_millis()),
                );
            }
            layout
                .mark_installed(id)
                .map_err(|e| Failure::at("build", e))?;
        }
        state.env.get_or_insert_with(|| url.env.env.clone());
        Ok(id)
    }

    fn identity(&self, env: &EnvRef, id: ReleaseId) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("SLIPWAY_APP".to_owned(), env.app.to_string()),
            ("SLIPWAY_ENV".to_owned(), env.env.to_string()),
            ("SLIPWAY_RELEASE".to_owned(), id.to_string()),
        ])
    }

    /// The config with `ssm:` references replaced by their values.
    async fn resolve(
        &self,
        env: &EnvRef,
        config: &Config,
    ) -> Result<BTreeMap<String, String>, String> {
        let vars: BTreeMap<String, String> = config
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let names = secrets::references(&vars).map_err(|e| e.to_string())?;
        // The instance role reads only the environment's own parameters.
        slipway_core::config::check_secret_paths(env, &vars).map_err(|e| e.to_string())?;
        if names.is_empty() {
            return Ok(vars);
        }
        let ssm = ParameterStore::new(aws_sdk_ssm::Client::new(self.aws().await));
        let values = ssm.get_all(&names).await.map_err(|e| e.to_string())?;
        Ok(secrets::substitute(&vars, &values))
    }

    /// What to run for an installed release: the Procfile of its verified
    /// manifest, as the agent kept it when it installed the release.
    fn plan(
        &self,
        layout: &Layout,
        env: EnvRef,
        id: ReleaseId,
        settings: &EnvSettings,
        port: u16,
    ) -> Result<Plan, Failure> {
        let path = layout.procfile(id);
        let bytes = std::fs::read(&path).map_err(|e| {
            Failure::at(
                "start",
                format!(
                    "{id} has no verified Procfile here ({}: {e}); deploy it again",
                    path.display()
                ),
            )
        })?;
        let procfile: Procfile = serde_json::from_slice(&bytes)
            .map_err(|e| Failure::at("start", format!("{}: {e}", path.display())))?;
        Ok(Plan {
            app: env.app,
            env: env.env,
            release: id,
            procfile,
            settings: settings.clone(),
            port,
            env_file: layout.env_file(id),
        })
    }

    /// Switches to `plan`'s release, starts it and waits for its health
    /// check; on failure goes back to `good` (if any) and waits for it.
    async fn activate(
        &self,
        layout: &Layout,
        state: &mut State,
        plan: Plan,
        good: Option<ReleaseId>,
        probe: &Probe,
        settings: &EnvSettings,
    ) -> Result<(), Failure> {
        let id = plan.release;
        let from = layout.current_release();
        self.story.checkpoint("switch");
        let started = Instant::now();
        let switched = match self.supervisor.stop(layout).await {
            Err(e) => Err(("stop", e.to_string())),
            Ok(()) => {
                self.story.checkpoint("stopped");
                layout
                    .switch_current(id)
                    .map_err(|e| ("switch", e.to_string()))
            }
        };
        if let Err((step, reason)) = switched {
            self.story
                .say(self.story.line(step).kv("release", id).kv("error", &reason));
            return Err(self
                .go_back(layout, plan, good, probe, settings, step, reason)
                .await);
        }
        self.story.say(
            self.story
                .line("switch")
                .opt("from", from)
                .kv("to", id)
                .kv("ms", started.elapsed().as_millis()),
        );
        self.story.checkpoint("start");
        let outcome = match self.supervisor.start(layout, &plan).await {
            Err(e) => Err(("start", e.to_string())),
            Ok(()) => {
                let names: Vec<String> = plan.processes().iter().map(|p| p.name()).collect();
                self.story.say(
                    self.story
                        .line("start")
                        .kv("release", id)
                        .kv("processes", names.join(",")),
                );
                self.watch(layout, &plan).await;
                self.story.checkpoint("health");
                probe
                    .wait(Duration::from_secs(settings.health_timeout_secs), || {
                        self.supervisor.check(layout)
                    })
                    .await
                    .map_err(|e| ("health", e))
            }
        };
        match outcome {
            Ok(took) => {
                self.story.say(
                    self.story
                        .line("health")
                        .kv("release", id)
                        .kv("url", probe.url())
                        .kv("ms", took.as_millis()),
                );
                self.story.checkpoint("record");
                state.served(id, Utc::now());
                state.port = Some(plan.port);
                state.settings = Some(settings.clone());
                state
                    .save(layout)
                    .map_err(|e| Failure::at("record", e).serving(Some(id)))?;
                Ok(())
            }
            Err((step, reason)) => {
                self.story
                    .say(self.story.line(step).kv("release", id).kv("error", &reason));
                Err(self
                    .go_back(layout, plan, good, probe, settings, step, reason)
                    .await)
            }
        }
    }

    /// Points the metrics collector at the processes just started and the
    /// app's lines at the environment's syslog destination. Their failures
    /// are said, not fatal: the app serves without them.
    async fn watch(&self, layout: &Layout, plan: &Plan) {
        let said = |step: &str, key: &str, outcome: Result<&str, String>| match outcome {
            Ok(done) => self.story.line(step).kv(key, done),
            Err(e) => self.story.line(step).kv(key, "failed").kv("warning", e),
        };
        if let Some(outcome) = self.supervisor.watch(layout, plan).await {
            self.story
                .say(said("metrics", "cloudwatch", outcome.map(|a| a.as_str())));
        }
        if let Some(outcome) = self.supervisor.forward_logs(plan).await {
            self.story
                .say(said("logs", "syslog", outcome.map(|f| f.as_str())));
        }
    }

    /// After a failed start: back to the release that was healthy.
    #[allow(clippy::too_many_arguments)]
    async fn go_back(
        &self,
        layout: &Layout,
        failed: Plan,
        good: Option<ReleaseId>,
        probe: &Probe,
        settings: &EnvSettings,
        step: &'static str,
        reason: String,
    ) -> Failure {
        let stopped = self.supervisor.stop(layout).await;
        let Some(good) = good else {
            let served_before = State::load(layout).is_ok_and(|s| s.current.is_some());
            let cleared = layout.clear_current();
            let note = match (stopped, cleared) {
                (Ok(()), Ok(())) if served_before => {
                    "no other release is installed here to go back to: nothing is running"
                        .to_owned()
                }
                (Ok(()), Ok(())) => {
                    "nothing was serving before: no process left running".to_owned()
                }
                (Err(e), _) => format!("and stopping its processes failed: {e}"),
                (_, Err(e)) => format!("and removing current failed: {e}"),
            };
            self.story.say(
                self.story
                    .line("rollback")
                    .kv("to", "none")
                    .kv("note", &note),
            );
            return Failure {
                step,
                reason: format!("{reason}; {note}"),
                serving: None,
                degraded: served_before,
            };
        };
        let env = EnvRef {
            app: failed.app.clone(),
            env: failed.env.clone(),
        };
        let restored = async {
            layout.switch_current(good).map_err(|e| e.to_string())?;
            let plan = self
                .plan(layout, env, good, settings, failed.port)
                .map_err(|f| f.reason)?;
            self.supervisor
                .start(layout, &plan)
                .await
                .map_err(|e| e.to_string())?;
            self.watch(layout, &plan).await;
            probe
                .wait(Duration::from_secs(settings.health_timeout_secs), || {
                    self.supervisor.check(layout)
                })
                .await
        }
        .await;
        match restored {
            Ok(took) => {
                self.story.say(
                    self.story
                        .line("rollback")
                        .kv("to", good)
                        .kv("healthy", "true")
                        .kv("ms", took.as_millis()),
                );
                Failure {
                    step,
                    reason: format!("{reason}; rolled back to {good}, which serves"),
                    serving: Some(good),
                    degraded: false,
                }
            }
            Err(e) => {
                self.story.say(
                    self.story
                        .line("rollback")
                        .kv("to", good)
                        .kv("healthy", "false")
                        .kv("error", &e),
                );
                Failure {
                    step,
                    reason: format!("{reason}; rolling back to {good} failed too: {e}"),
                    serving: None,
                    degraded: true,
                }
            }
        }
    }

    /// Keeps the newest `releases_kept` releases, and always the current
    /// and previous ones.
    fn prune(&self, layout: &Layout, state: &State, settings: &EnvSettings) {
        let installed = layout.installed();
        let keep = settings.releases_kept as usize;
        let mut removed = Vec::new();
        let excess = installed.len().saturating_sub(keep);
        for id in installed.into_iter().take(excess) {
            if Some(id) == state.current || Some(id) == state.previous {
                continue;
            }
            match layout.remove_release(id) {
                Ok(()) => removed.push(id.to_string()),
                Err(e) => self
                    .story
                    .say(self.story.line("prune").kv("release", id).kv("error", e)),
            }
        }
        if !removed.is_empty() {
            self.story
                .say(self.story.line("prune").kv("removed", removed.join(",")));
        }
    }

    async fn tag_release(&self, id: ReleaseId, fallback_from: Option<ReleaseId>) {
        let instance = match tag::instance_id(self.instance_id.as_deref()).await {
            Ok(Some(instance)) => instance,
            Ok(None) => {
                self.story.say(
                    self.story
                        .line("tag")
                        .kv("skipped", "not on EC2 and no --instance-id"),
                );
                return;
            }
            Err(e) => {
                self.story.say(self.story.line("tag").kv("error", e));
                return;
            }
        };
        let mut set = vec![(tag::RELEASE_TAG, id.to_string())];
        let mut remove = vec![];
        match fallback_from {
            Some(failed) => set.push((
                tag::FALLBACK_TAG,
                format!("{failed} failed at boot; serving {id}"),
            )),
            None => remove.push(tag::FALLBACK_TAG),
        }
        match tag::tag(self.aws().await, &instance, &set, &remove).await {
            Ok(()) => self.story.say(
                self.story
                    .line("tag")
                    .kv("instance", &instance)
                    .kv(tag::RELEASE_TAG, id),
            ),
            Err(e) => self.story.say(
                self.story
                    .line("tag")
                    .kv("instance", &instance)
                    .kv("error", e),
            ),
        }
    }
}
