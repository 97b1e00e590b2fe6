//! ChatOps: Slack slash commands (`/ship deploy hello production`) run the
//! same operations as the API, for people on an allow-list, and answer at
//! once (Slack waits three seconds); a deploy's progress and outcome then
//! reach the command's `response_url` from the deploy worker itself.

pub mod slack;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;

use slack::SlashCommand;
use slipway_control::cycle::{Cycles, ScaleRequest};
use slipway_control::fleet::FormationSource;
use slipway_control::fleet::{EdgeControl, FleetError, GroupControl};
use slipway_control::jobs::Launcher;
use slipway_control::rollout::{Deploys, StartDeploy};
use slipway_core::maintenance::Maintenance;
use slipway_core::names::{EnvRef, ReleaseId};

/// Who may change things from chat, and where answers may go.
#[derive(Debug, Clone)]
pub struct ChatSettings {
    /// Slack's signing secret.
    pub secret: slipway_control::aws::Secret,
    /// Slack user ids that may deploy, roll back, scale and cancel.
    pub users: BTreeSet<String>,
    /// Slack teams whose every member may.
    pub teams: BTreeSet<String>,
    /// Response URLs must start with one of these.
    pub response_prefixes: Vec<String>,
}

impl ChatSettings {
    /// `SLIPWAY_SLACK_USERS` / `SLIPWAY_SLACK_TEAMS` (comma-separated ids)
    /// and the signing secret.
    pub fn from_lookup(
        secret: slipway_control::aws::Secret,
        get: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let ids = |k: &str| -> BTreeSet<String> {
            get(k)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        Self {
            secret,
            users: ids("SLIPWAY_SLACK_USERS"),
            teams: ids("SLIPWAY_SLACK_TEAMS"),
            response_prefixes: vec![slipway_control::rollout::notify::SLACK_RESPONSE_PREFIX.into()],
        }
    }

    fn may_change(&self, command: &SlashCommand) -> bool {
        self.users.contains(&command.user_id) || self.teams.contains(&command.team_id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatCommand {
    Deploy(EnvRef, Option<ReleaseId>),
    Rollback(EnvRef, Option<ReleaseId>),
    Scale(EnvRef, i32),
    Status(EnvRef),
    Releases(EnvRef),
    Cancel(EnvRef),
    /// Maintenance mode's page up (with its message) or down.
    Maintenance(EnvRef, Option<Maintenance>),
    Help,
}

/// What a chat user is told of a failure: the API's plain message (an
/// internal failure is logged with its chain and shown as "internal
/// error", never with AWS's detail).
fn plain(e: impl Into<crate::api::ApiError>) -> String {
    e.into().client_message()
}

pub const HELP: &str = "Usage: /ship deploy APP ENV [RELEASE] · rollback APP ENV [RELEASE] · scale APP ENV N · status APP ENV · releases APP ENV · cancel APP ENV · maintenance APP ENV on [MESSAGE] | off · help";

impl ChatCommand {
    pub fn parse(text: &str) -> Result<Self, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let env = |i: usize| -> Result<EnvRef, String> {
            match (words.get(i), words.get(i + 1)) {
                (Some(app), Some(env)) => EnvRef::parse(app, env).map_err(plain),
                _ => Err(format!("say which app and environment. {HELP}")),
            }
        };
        let release = |i: usize| -> Result<Option<ReleaseId>, String> {
            words
                .get(i)
                .map(|r| ReleaseId::parse(r).map_err(plain))
                .transpose()
        };
        let max = |n: usize| -> Result<(), String> {
            if words.len() > n {
                Err(format!("too many words. {HELP}"))
            } else {
                Ok(())
            }
        };
        match words.first().copied() {
            None | Some("help") => Ok(Self::Help),
            Some("deploy") => {
                max(4)?;
                Ok(Self::Deploy(env(1)?, release(3)?))
            }
            Some("rollback") => {
                max(4)?;
                Ok(Self::Rollback(env(1)?, release(3)?))
            }
            Some("scale") => {
                max(4)?;
                let n = words
                    .get(3)
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| "say how many instances: /ship scale APP ENV N".to_owned())?;
                Ok(Self::Scale(env(1)?, n))
            }
            Some("status") => max(3).and(env(1)).map(Self::Status),
            Some("releases") => max(3).and(env(1)).map(Self::Releases),
            Some("cancel") => max(3).and(env(1)).map(Self::Cancel),
            Some("maintenance") => {
                let env = env(1)?;
                match words.get(3).copied() {
                    Some("on") => {
                        // Slack sends &, < and > as HTML entities; the
                        // page escapes the message itself.
                        let message = words[4..]
                            .join(" ")
                            .replace("&lt;", "<")
                            .replace("&gt;", ">")
                            .replace("&amp;", "&");
                        let message = Some(message.as_str()).filter(|m| !m.is_empty());
                        let m = Maintenance::new(message, Vec::new()).map_err(|e| e.to_string())?;
                        Ok(Self::Maintenance(env, Some(m)))
                    }
                    Some("off") => max(4).map(|()| Self::Maintenance(env, None)),
                    _ => Err("say on or off: /ship maintenance APP ENV on [MESSAGE] | off".into()),
                }
            }
            Some(other) => Err(format!(
                "unknown command {:?}. {HELP}",
                other.chars().take(20).collect::<String>()
            )),
        }
    }

    fn changes_things(&self) -> bool {
        matches!(
            self,
            Self::Deploy(..)
                | Self::Rollback(..)
                | Self::Scale(..)
                | Self::Cancel(..)
                | Self::Maintenance(..)
        )
    }
}

/// Runs chat commands against the store and the fleet.
#[derive(Clone)]
pub struct Chat<F> {
    pub deploys: Deploys,
    pub fleet: F,
    /// Starts deploy workers.
    pub launcher: Arc<dyn Launcher>,
    pub settings: Arc<ChatSettings>,
}

impl<F: GroupControl + FormationSource + EdgeControl> Chat<F> {
    /// The answer to a verified slash command (shown only to its sender).
    pub async fn answer(&self, command: &SlashCommand) -> String {
        let parsed = match ChatCommand::parse(&command.text) {
            Ok(c) => c,
            Err(e) => return e,
        };
        if parsed.changes_things() && !self.settings.may_change(command) {
            return format!(
                "Sorry, {} may not change environments from chat: ask an admin to add your Slack user id ({}) to SLIPWAY_SLACK_USERS.",
                command.user_name, command.user_id
            );
        }
        let user = format!("slack:{}", command.user_id);
        let result = match parsed {
            ChatCommand::Help => Ok(HELP.to_owned()),
            ChatCommand::Deploy(env, release) => {
                let request = StartDeploy {
                    release,
                    user,
                    ..StartDeploy::default()
                };
                self.start(&env, request, command).await
            }
            ChatCommand::Rollback(env, release) => {
                let request = StartDeploy {
                    release,
                    rollback: true,
                    user,
                    ..StartDeploy::default()
                };
                self.start(&env, request, command).await
            }
            ChatCommand::Scale(env, n) => {
                let request = ScaleRequest {
                    desired: Some(n),
                    ..ScaleRequest::default()
                };
                Cycles::new(self.deploys.store.clone())
                    .scale(&self.fleet, &env, request, &user, Utc::now())
                    .await
                    .map(|r| format!("{env}: {} → {} instances.", r.from.desired, r.to.desired))
                    .map_err(plain)
            }
            ChatCommand::Status(env) => self.status(&env).await,
            ChatCommand::Releases(env) => self.releases(&env).await,
            ChatCommand::Cancel(env) => self.cancel(&env).await,
            ChatCommand::Maintenance(env, m) => {
                let said = match &m {
                    Some(m) => format!(
                        "{env}: maintenance on. The load balancer answers 503 “{}” to everyone.",
                        m.message
                    ),
                    None => format!("{env}: maintenance off. Every request reaches the app."),
                };
                self.fleet
                    .set_maintenance(&env, m.as_ref())
                    .await
                    .map(|()| said)
                    .map_err(plain)
            }
        };
        result.unwrap_or_else(|e| format!("That did not work: {e}"))
    }

    async fn start(
        &self,
        env: &EnvRef,
        request: StartDeploy,
        command: &SlashCommand,
    ) -> Result<String, String> {
        let begun = self
            .deploys
            .begin(env, request, None, Utc::now(), self.launcher.as_ref())
            .await
            .map_err(|e| match e {
                slipway_control::rollout::DeployError::NotLaunched(_) => {
                    "the rollout could not be started".to_owned()
                }
                e => plain(e),
            })?;
        let record = begun.record;
        if let Some(url) = command.response_url(&self.settings.response_prefixes) {
            let _ = self.deploys.set_response_url(env, &record.id, url).await;
        }
        let from = record.from.map_or("nothing".to_owned(), |f| f.to_string());
        if let Some(position) = begun.position.or(record.queue_position) {
            return Ok(format!(
                "Queued {} for {env} ({from} → {}), deploy {}: number {position} in the queue. Progress follows here once it starts.",
                record.to, record.to, record.id
            ));
        }
        Ok(format!(
            "Deploying {} to {env} ({from} → {}, {}), deploy {}. Progress follows here.",
            record.to, record.to, record.strategy, record.id
        ))
    }

    async fn status(&self, env: &EnvRef) -> Result<String, String> {
        let current = self.deploys.store.current(env).await.map_err(plain)?;
        let mut lines = vec![format!(
            "{env}: current release {}",
            current.map_or("none".to_owned(), |r| r.to_string())
        )];
        match self.fleet.formation(env).await {
            Ok(f) => {
                let healthy = f
                    .instances
                    .iter()
                    .filter(|i| {
                        i.target_health.values().all(|h| h == "healthy")
                            && !i.target_health.is_empty()
                    })
                    .count();
                lines.push(format!("{healthy}/{} instances healthy", f.instances.len()));
                if let Some(m) = &f.maintenance {
                    lines.push(format!("maintenance on: “{}”", m.message));
                }
                for i in &f.instances {
                    lines.push(format!(
                        "• {} {} {} {}",
                        i.id,
                        i.availability_zone,
                        i.lifecycle,
                        i.release.as_deref().unwrap_or("-")
                    ));
                }
            }
            Err(FleetError::NoGroup(_)) => lines.push("no Auto Scaling group".into()),
            Err(e) => return Err(plain(e)),
        }
        if let Some(last) = self.deploys.list(env, 1).await.map_err(plain)?.first() {
            lines.push(format!(
                "last deploy {} {:?} ({} → {}) by {}",
                last.id,
                last.status,
                last.from.map_or("-".into(), |r| r.to_string()),
                last.to,
                last.user
            ));
        }
        let waiting = self.deploys.waiting(env).await.map_err(plain)?;
        for (n, id) in waiting.iter().enumerate() {
            lines.push(format!("queued #{}: {} {id}", n + 1, id.kind()));
        }
        Ok(lines.join("\n"))
    }

    async fn releases(&self, env: &EnvRef) -> Result<String, String> {
        let page = self
            .deploys
            .store
            .list_releases(env, None, 5)
            .await
            .map_err(plain)?;
        if page.releases.is_empty() {
            return Ok(format!("{env} has no releases yet."));
        }
        Ok(page
            .releases
            .iter()
            .map(|m| {
                format!(
                    "• {} by {} {}{}",
                    m.id,
                    m.created_by,
                    m.created_at.format("%Y-%m-%d %H:%M UTC"),
                    m.description
                        .as_deref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n"))
    }

    async fn cancel(&self, env: &EnvRef) -> Result<String, String> {
        let running = self
            .deploys
            .list(env, 5)
            .await
            .map_err(plain)?
            .into_iter()
            .find(|d| !d.is_finished())
            .ok_or_else(|| format!("no deploy is running in {env}"))?;
        self.deploys.cancel(env, &running.id).await.map_err(plain)?;
        Ok(format!(
            "Deploy {} stops: its running batch is cancelled.",
            running.id
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failure_is_told_as_the_api_tells_it_never_with_the_aws_detail() {
        // Every AWS call fails: nothing listens at this endpoint.
        let aws = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .build();
        let store = slipway_control::store::ReleaseStore::new(
            slipway_core::objects::S3Objects::new(
                slipway_core::objects::s3_client(&aws),
                "secret-bucket-name",
            ),
            Default::default(),
        );
        struct NoLaunch;
        impl Launcher for NoLaunch {
            fn launch(
                &self,
                _: EnvRef,
                _: slipway_core::ids::JobId,
            ) -> futures::future::BoxFuture<'_, Result<(), slipway_control::jobs::LaunchError>>
            {
                Box::pin(async { Err(slipway_control::jobs::LaunchError::NoLauncher) })
            }
        }
        let chat = Chat {
            deploys: Deploys::new(store),
            fleet: slipway_control::aws::fleet::AwsFleet::new(
                &aws,
                std::time::Duration::from_secs(1),
            ),
            launcher: Arc::new(NoLaunch),
            settings: Arc::new(ChatSettings::from_lookup(
                slipway_control::aws::Secret::fixed("s"),
                |_| None,
            )),
        };
        let command = SlashCommand {
            text: "status hello prod".into(),
            ..SlashCommand::default()
        };
        let answer = chat.answer(&command).await;
        assert_eq!(answer, "That did not work: internal error");
    }

    #[test]
    fn commands_are_parsed_with_their_names_checked() {
        let env = EnvRef::parse("hello", "prod").unwrap();
        assert_eq!(
            ChatCommand::parse("deploy hello prod"),
            Ok(ChatCommand::Deploy(env.clone(), None))
        );
        assert_eq!(
            ChatCommand::parse("  rollback hello prod r3 "),
            Ok(ChatCommand::Rollback(
                env.clone(),
                Some(ReleaseId::parse("r3").unwrap())
            ))
        );
        assert_eq!(
            ChatCommand::parse("scale hello prod 4"),
            Ok(ChatCommand::Scale(env.clone(), 4))
        );
        assert_eq!(ChatCommand::parse(""), Ok(ChatCommand::Help));
        let Ok(ChatCommand::Maintenance(on_env, Some(m))) =
            ChatCommand::parse("maintenance hello prod on back  at &lt;5&gt;")
        else {
            panic!("maintenance on parses")
        };
        assert_eq!((on_env, m.message.as_str()), (env.clone(), "back at <5>"));
        assert_eq!(
            ChatCommand::parse("maintenance hello prod off"),
            Ok(ChatCommand::Maintenance(env.clone(), None))
        );
        for bad in [
            "maintenance hello prod",
            "maintenance hello prod maybe",
            "maintenance hello prod off now",
        ] {
            assert!(ChatCommand::parse(bad).is_err(), "{bad}");
        }
        for bad in [
            "deploy hello",
            "deploy ../x prod",
            "deploy hello prod r0",
            "scale hello prod many",
            "status hello prod extra",
            "launch the rockets",
        ] {
            assert!(ChatCommand::parse(bad).is_err(), "{bad}");
        }
    }
}
