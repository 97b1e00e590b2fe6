//! Deploys as the API sees them: start one (resolve the target, take the
//! lock, write the queued record), read them, cancel one; and the S3
//! deploy log the engine writes through.

use chrono::{DateTime, Utc};

use super::notify::WebhookRefused;
use super::record::DeployRecord;
use super::{DeployLog, Engine, Options, Strategy};
use crate::fleet::Fleet;
use crate::jobs::lock::{self, Held, Lock, LockError};
use crate::jobs::{Claim, JobError, Launcher, S3Job};
use crate::runner::Runner;
use crate::store::{ReleaseStore, StoreError};
use slipway_core::deploys::DeployStatus;
use slipway_core::env_settings::EnvSettings;
use slipway_core::ids::JobKind;
use slipway_core::ids::{DeployId, JobId};
use slipway_core::keys::settings_key;
use slipway_core::names::{EnvRef, ReleaseId};
use slipway_core::objects::{ObjectError, S3Objects, Write};

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(
        "{} by {} holds the environment since {}",
        .0.holder(), .0.user, .0.acquired_at.to_rfc3339()
    )]
    Locked(Box<Lock>),
    #[error("{env} has no release to deploy yet")]
    NoRelease { env: String },
    #[error("release {0} does not exist")]
    UnknownRelease(ReleaseId),
    #[error("there is no earlier successfully deployed release to roll back to")]
    NothingToRollBackTo,
    #[error("deploy {0} not found")]
    NotFound(DeployId),
    #[error("settings.json is invalid: {0}")]
    Settings(String),
    #[error("{0}")]
    BadSettings(String),
    #[error("the settings changed meanwhile; read them again and retry")]
    Concurrent,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error("the environment lock: {0}")]
    Lock(LockError),
    /// The worker could not be started; the deploy was recorded as failed
    /// and the environment freed.
    #[error("the rollout could not be started: {0}")]
    NotLaunched(#[from] crate::jobs::LaunchError),
}

impl From<LockError> for DeployError {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Held(holder) => Self::Locked(Box::new(holder)),
            e => Self::Lock(e),
        }
    }
}

impl From<JobError> for DeployError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Lock(e) => e.into(),
            JobError::Store(e) => e.into(),
            JobError::Objects(e) => e.into(),
            JobError::Launch(e) => e.into(),
        }
    }
}

impl crate::jobs::JobRecord for DeployRecord {
    fn resumable(&self) -> bool {
        (self.status == DeployStatus::Queued && !self.waiting)
            || (self.status == DeployStatus::Running && self.handed_off)
    }

    fn is_finished(&self) -> bool {
        DeployRecord::is_finished(self)
    }

    /// Running, and no longer handed off, in the same conditional write
    /// that counts the worker: a second delivery of the same event (Lambda
    /// delivers at least once) finds it taken instead of claiming it too.
    fn take_up(&mut self) {
        self.status = DeployStatus::Running;
        self.handed_off = false;
        self.workers += 1;
    }

    fn heartbeat_at(&self) -> DateTime<Utc> {
        self.heartbeat_at.unwrap_or(self.created_at)
    }

    fn beat(&mut self, now: DateTime<Utc>) {
        self.heartbeat_at = Some(now);
    }

    fn user(&self) -> &str {
        &self.user
    }

    fn waiting(&self) -> bool {
        self.waiting
    }

    fn set_waiting(&mut self, waiting: bool) {
        self.waiting = waiting;
    }

    fn end_unrun(&mut self, failed: bool, cause: &str, now: DateTime<Utc>) {
        self.waiting = false;
        self.status = if failed {
            DeployStatus::Failed
        } else {
            DeployStatus::Cancelled
        };
        self.cause = Some(cause.to_owned());
        self.finished_at = Some(now);
    }
}

/// Runs a queued deploy to its end (or until it hands over to a fresh
/// worker through `launcher`): what the launched worker does.
// The worker's whole context, each part supplied by a different caller.
#[allow(clippy::too_many_arguments)]
pub async fn run_queued<F: Fleet, R: Runner>(
    deploys: &Deploys,
    env: &EnvRef,
    deploy_id: &DeployId,
    fleet: &F,
    runner: &R,
    release_url: &(dyn Fn(ReleaseId) -> String + Sync),
    options: Options,
    launcher: Option<std::sync::Arc<dyn Launcher>>,
) -> Result<DeployRecord, DeployError> {
    let record =
        match crate::jobs::claim(&deploys.objects, env, &JobId::Deploy(deploy_id.clone())).await? {
            Claim::Ours(record) => record,
            // A repeated launch of a deploy that already ran, or runs.
            Claim::NotOurs(record) => return Ok(record),
            Claim::Missing => return Err(DeployError::NotFound(deploy_id.clone())),
        };
    let log = deploys.log_for(env, &record, launcher).await?;
    let engine = Engine {
        fleet,
        runner,
        log: &log,
        release_url,
        options,
    };
    Ok(engine.run(record).await)
}

/// What a caller asks for.
#[derive(Debug, Clone, Default)]
pub struct StartDeploy {
    pub release: Option<ReleaseId>,
    pub strategy: Option<Strategy>,
    pub auto_rollback: Option<bool>,
    /// Roll back: the target defaults to the previous good release.
    pub rollback: bool,
    pub user: String,
}

use slipway_core::keys::{deploy_chat_key as response_url_key, deploy_key as record_key};

#[derive(Clone)]
pub struct Deploys {
    pub objects: S3Objects,
    pub store: ReleaseStore,
    /// Where deploy notifications may go.
    pub webhooks: super::notify::WebhookPolicy,
    /// What a chat command's response URL must start with: checked when it
    /// is read back from the bucket, not only when chat received it.
    pub response_prefixes: Vec<String>,
}

impl Deploys {
    pub fn new(store: ReleaseStore) -> Self {
        Self {
            objects: store.objects().clone(),
            store,
            webhooks: Default::default(),
            response_prefixes: vec![super::notify::SLACK_RESPONSE_PREFIX.into()],
        }
    }

    pub async fn settings(&self, env: &EnvRef) -> Result<EnvSettings, DeployError> {
        match self.objects.get(&settings_key(env)).await? {
            None => Ok(EnvSettings::default()),
            Some(o) => {
                EnvSettings::parse(&o.body).map_err(|e| DeployError::Settings(e.to_string()))
            }
        }
    }

    /// Applies `patch` (some of the settings' fields) and stores the result
    /// if it is valid; a concurrent change makes this fail rather than be
    /// lost. Fields this version does not know, already in the file, stay.
    pub async fn change_settings(
        &self,
        env: &EnvRef,
        patch: serde_json::Map<String, serde_json::Value>,
    ) -> Result<EnvSettings, DeployError> {
        let known = serde_json::to_value(EnvSettings::default()).expect("settings serialise");
        if let Some(unknown) = patch.keys().find(|k| known.get(k.as_str()).is_none()) {
            return Err(DeployError::BadSettings(format!(
                "unknown setting {:?}",
                unknown.chars().take(40).collect::<String>()
            )));
        }
        let key = settings_key(env);
        let current = self.objects.get(&key).await?;
        let mut merged = current
            .as_ref()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.body).ok())
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| serde_json::json!({}));
        // Settings read from the API and sent back carry the webhook and
        // the syslog destination redacted: that means "unchanged".
        let mut patch = patch;
        type Redact = fn(&str) -> String;
        let redactions: [(&str, Redact); 2] = [
            ("notify_url", slipway_core::env_settings::redact_url),
            ("syslog", slipway_core::syslog::SyslogDestination::redacted),
        ];
        for (name, redact) in redactions {
            if let (Some(sent), Some(stored)) = (
                patch.get(name).and_then(|v| v.as_str()),
                merged.get(name).and_then(|v| v.as_str()),
            ) && sent == redact(stored)
            {
                patch.remove(name);
            }
        }
        let new_webhook = patch
            .get("notify_url")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        if let Some(object) = merged.as_object_mut() {
            object.extend(patch);
        }
        let body = serde_json::to_vec_pretty(&merged).expect("json serialises");
        let settings =
            EnvSettings::parse(&body).map_err(|e| DeployError::BadSettings(e.to_string()))?;
        // Checked again before every post (addresses change); refused now
        // when it already cannot be posted to. A host that does not resolve
        // yet is kept.
        if let Some(url) = new_webhook {
            match self.webhooks.check(&url).await {
                Err(e @ (WebhookRefused::NotHttps | WebhookRefused::Internal(_))) => {
                    return Err(DeployError::BadSettings(format!(
                        "notify_url is refused: {e}"
                    )));
                }
                Err(WebhookRefused::Unresolved) | Ok(_) => {}
            }
        }
        let guard = match &current {
            Some(o) => Write::IfMatch(&o.etag),
            None => Write::IfAbsent,
        };
        match self
            .objects
            .put(&key, body, "application/json", guard)
            .await
        {
            Ok(_) => Ok(settings),
            Err(ObjectError::Precondition { .. }) => Err(DeployError::Concurrent),
            Err(e) => Err(e.into()),
        }
    }

    /// Resolves the target, takes the lock and writes the queued record.
    pub async fn start(
        &self,
        env: &EnvRef,
        req: StartDeploy,
        now: DateTime<Utc>,
    ) -> Result<(DeployRecord, Held), DeployError> {
        let settings = self.settings(env).await?;
        let record = self.new_record(env, req, &settings, now).await?;
        let held = lock::acquire(
            &self.objects,
            env,
            Lock::new(record.id.clone(), &record.user, now),
            now,
        )
        .await?;
        self.save_record(env, &record, &held).await?;
        Ok((record, held))
    }

    /// A new deploy's record (not written yet): the target resolved, the
    /// strategy and rollback from the request or the settings.
    pub(super) async fn new_record(
        &self,
        env: &EnvRef,
        req: StartDeploy,
        settings: &EnvSettings,
        now: DateTime<Utc>,
    ) -> Result<DeployRecord, DeployError> {
        let from = self.store.current(env).await?;
        let to = match (req.release, req.rollback) {
            (Some(id), _) => {
                self.store.release(env, id).await.map_err(|e| match e {
                    StoreError::ReleaseNotFound { .. } => DeployError::UnknownRelease(id),
                    e => e.into(),
                })?;
                id
            }
            (None, false) => self
                .store
                .list_releases(env, None, 1)
                .await?
                .releases
                .first()
                .map(|m| m.id)
                .ok_or_else(|| DeployError::NoRelease {
                    env: env.to_string(),
                })?,
            (None, true) => self
                .last_good(env, from)
                .await?
                .ok_or(DeployError::NothingToRollBackTo)?,
        };
        Ok(DeployRecord {
            id: DeployId::new(now),
            app: env.app.clone(),
            env: env.env.clone(),
            user: req.user,
            from,
            to,
            strategy: req.strategy.unwrap_or(settings.strategy),
            min_healthy_percent: settings.min_healthy_percent,
            auto_rollback: req.auto_rollback.unwrap_or(settings.auto_rollback),
            status: DeployStatus::Queued,
            cause: None,
            created_at: now,
            finished_at: None,
            prepare: None,
            release_phase: None,
            batches: Vec::new(),
            rollback: None,
            notes: Vec::new(),
            plan: Vec::new(),
            workers: 0,
            handed_off: false,
            heartbeat_at: None,
            suspended: Vec::new(),
            surge: false,
            roll_back_requested: false,
            waiting: false,
            queue_position: None,
        })
    }

    /// Writes the record of a deploy that holds the lock; if it cannot be
    /// written, the lock is released.
    pub(super) async fn save_record(
        &self,
        env: &EnvRef,
        record: &DeployRecord,
        held: &Held,
    ) -> Result<(), DeployError> {
        if let Err(e) = self.create(env, record).await {
            let _ = lock::release(&self.objects, env, held).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// Writes a new deploy's record, with its entry in the history.
    pub(super) async fn create(
        &self,
        env: &EnvRef,
        record: &DeployRecord,
    ) -> Result<(), ObjectError> {
        let mut stored = record.clone();
        stored.queue_position = None;
        let id = record.id.clone().into();
        crate::jobs::history::create(&self.objects, env, &id, &stored, Write::Always)
            .await
            .map(|_| ())
    }

    async fn save(&self, env: &EnvRef, record: &DeployRecord) -> Result<(), ObjectError> {
        let mut stored = record.clone();
        stored.queue_position = None;
        let body = serde_json::to_vec_pretty(&stored).expect("a record always serialises");
        self.objects
            .put(
                &record_key(env, &record.id),
                body,
                "application/json",
                Write::Always,
            )
            .await?;
        Ok(())
    }

    /// The record, with its place in the queue if it waits.
    pub async fn get(&self, env: &EnvRef, id: &DeployId) -> Result<DeployRecord, DeployError> {
        let record = crate::jobs::record(&self.objects, env, &id.clone().into())
            .await?
            .ok_or_else(|| DeployError::NotFound(id.clone()))?
            .0;
        Ok(self.with_positions(env, vec![record]).await?.remove(0))
    }

    /// Records newest first, at most `limit`, with their places in the
    /// queue.
    pub async fn list(&self, env: &EnvRef, limit: usize) -> Result<Vec<DeployRecord>, DeployError> {
        let records =
            crate::jobs::history::newest(&self.objects, env, JobKind::Deploy, limit).await?;
        self.with_positions(env, records).await
    }

    /// A queued deploy that could not be launched: record why and free the
    /// environment.
    pub async fn abandon(
        &self,
        env: &EnvRef,
        mut record: DeployRecord,
        held: &Held,
        cause: String,
    ) {
        record.status = DeployStatus::Failed;
        record.cause = Some(cause);
        record.finished_at = Some(Utc::now());
        if let Err(e) = self.save(env, &record).await {
            tracing::warn!(deploy = %record.id, error = %e, "could not record an abandoned deploy");
        }
        if let Err(e) = lock::release(&self.objects, env, held).await {
            tracing::warn!(deploy = %record.id, error = %e, "could not release the lock");
        }
    }

    /// Starts the worker of a deploy [`start`](Self::start) queued; if it
    /// cannot be started the deploy is recorded as failed and the
    /// environment freed, so nothing waits for a worker that never comes.
    pub async fn launch(
        &self,
        env: &EnvRef,
        record: DeployRecord,
        held: &Held,
        launcher: &dyn Launcher,
    ) -> Result<DeployRecord, DeployError> {
        match launcher.launch(env.clone(), record.id.clone().into()).await {
            Ok(()) => Ok(record),
            Err(e) => {
                tracing::error!(deploy = %record.id, error = %e, "the rollout could not be started");
                self.abandon(env, record, held, "the rollout could not be started".into())
                    .await;
                Err(e.into())
            }
        }
    }

    /// Asks a running deploy to stop: the running batch's command is
    /// cancelled, no further batch starts.
    pub async fn cancel(&self, env: &EnvRef, id: &DeployId) -> Result<DeployRecord, DeployError> {
        if let Some(cancelled) = self
            .drop_waiting(env, id, "cancelled while it waited its turn")
            .await?
        {
            return Ok(cancelled);
        }
        crate::jobs::cancel(&self.objects, env, &id.clone().into())
            .await?
            .ok_or_else(|| DeployError::NotFound(id.clone()))
    }

    /// The log a worker runs the engine with, for a deploy whose lock it
    /// holds.
    pub async fn log_for(
        &self,
        env: &EnvRef,
        record: &DeployRecord,
        launcher: Option<std::sync::Arc<dyn Launcher>>,
    ) -> Result<S3DeployLog, DeployError> {
        let job = S3Job::adopt(&self.objects, env, &record.id.clone().into(), launcher).await?;
        let webhook = self.settings(env).await.ok().and_then(|s| s.notify_url);
        let notifier = super::notify::Notifier::new(
            webhook,
            self.response_url(env, &record.id).await,
            self.webhooks,
        );
        // News is told against the record as the previous step left it: a
        // fresh deploy's claim already marked it running, and its start is
        // news; a resumed one (its plan stored) started long ago.
        let mut before = record.clone();
        if record.plan.is_empty() {
            before.status = DeployStatus::Queued;
        }
        Ok(S3DeployLog {
            deploys: self.clone(),
            env: env.clone(),
            job,
            notifier,
            last: tokio::sync::Mutex::new(Some(before)),
        })
    }

    /// Where a chat command that started this deploy wants progress.
    pub async fn set_response_url(
        &self,
        env: &EnvRef,
        id: &DeployId,
        url: &str,
    ) -> Result<(), DeployError> {
        let body = serde_json::to_vec(&serde_json::json!({ "response_url": url })).expect("json");
        self.objects
            .put(
                &response_url_key(env, id),
                body,
                "application/json",
                Write::Always,
            )
            .await?;
        Ok(())
    }

    /// Where a chat command that started this deploy wants progress, if
    /// it is still an allowed place.
    pub async fn response_url(&self, env: &EnvRef, id: &DeployId) -> Option<String> {
        let object = self.objects.get(&response_url_key(env, id)).await.ok()??;
        let value: serde_json::Value = serde_json::from_slice(&object.body).ok()?;
        let url = value["response_url"].as_str()?;
        self.response_prefixes
            .iter()
            .any(|p| url.starts_with(p.as_str()))
            .then(|| url.to_owned())
    }
}

/// The engine's deploy log on S3.
pub struct S3DeployLog {
    deploys: Deploys,
    env: EnvRef,
    job: S3Job,
    notifier: super::notify::Notifier,
    /// The record as last saved, to tell what changed.
    last: tokio::sync::Mutex<Option<DeployRecord>>,
}

impl crate::jobs::JobLog<DeployRecord> for S3DeployLog {
    async fn save(&self, record: &DeployRecord) -> Result<(), JobError> {
        // Every save of a running worker is a heartbeat.
        let mut beating = record.clone();
        if !record.is_finished() {
            beating.heartbeat_at = Some(Utc::now());
        }
        self.deploys.save(&self.env, &beating).await?;
        if record.status == DeployStatus::Succeeded
            && record.finished_at.is_some()
            && let Err(e) = self.deploys.add_good(&self.env, record).await
        {
            tracing::warn!(deploy = %record.id, error = %e, "could not count the deploy among the good releases");
        }
        let mut last = self.last.lock().await;
        self.notifier.record_changed(last.as_ref(), record).await;
        *last = Some(record.clone());
        Ok(())
    }

    async fn renew_lock(&self) -> Result<(), JobError> {
        self.job.renew_lock().await
    }

    async fn release_lock(&self) {
        self.job.release_lock().await;
        // The environment is free: the next deploy in its queue goes.
        if let Some(launcher) = self.job.launcher()
            && let Err(e) = self.deploys.promote(&self.env, launcher.as_ref()).await
        {
            tracing::warn!(env = %self.env, error = %e, "could not promote a queued deploy");
        }
    }

    async fn cancel_requested(&self, _: &DeployRecord) -> bool {
        self.job.cancel_requested().await
    }

    async fn hand_off(&self, _: &DeployRecord) -> Result<(), JobError> {
        self.job.hand_off().await
    }
}

impl DeployLog for S3DeployLog {
    async fn set_current(&self, env: &EnvRef, id: ReleaseId) -> Result<(), JobError> {
        Ok(self.deploys.store.set_current(env, id).await?)
    }
}
