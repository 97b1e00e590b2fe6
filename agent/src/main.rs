//! `slipway-agent`: parses the command line and the instance's settings
//! file, builds the agent once and runs one command.
//!
//! Exit status: 0 the command succeeded; 1 it failed and the release that
//! served before still serves (or nothing served before); 2 bad usage or
//! input; 3 it failed and the instance has no healthy release.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use slipway_agent::agent::{Agent, Failure};
use slipway_agent::command::RunAs;
use slipway_agent::source::{Location, ReleaseUrl};
use slipway_agent::supervisor::{
    Supervisor, cloudwatch::CloudWatchAgent, direct::Direct, rsyslog::Rsyslog, systemd::Systemd,
};
use slipway_core::config::Config;
use slipway_core::names::{AppName, EnvRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SupervisorKind {
    Systemd,
    Direct,
}

/// The deploy program on every Slipway instance.
#[derive(Debug, Parser)]
#[command(name = "slipway-agent", version)]
struct Cli {
    /// Where apps are installed [default: /srv/slipway]
    #[arg(long, env = "SLIPWAY_ROOT", global = true)]
    root: Option<PathBuf>,
    /// How processes are run [default: systemd]
    #[arg(long, env = "SLIPWAY_SUPERVISOR", global = true)]
    supervisor: Option<SupervisorKind>,
    /// This instance's EC2 id, off EC2 (on EC2 it comes from IMDSv2)
    #[arg(long, env = "SLIPWAY_INSTANCE_ID", global = true)]
    instance_id: Option<String>,
    /// The web port, overriding the environment's settings (the local
    /// platform runs several instances on one machine)
    #[arg(long, env = "SLIPWAY_PORT", global = true)]
    port: Option<u16>,
    /// The instance's settings file, written by user data
    #[arg(
        long,
        env = "SLIPWAY_AGENT_CONFIG",
        global = true,
        default_value = "/etc/slipway/agent.env"
    )]
    config: PathBuf,
    /// How long to wait for another agent working on the same app
    #[arg(long, global = true, default_value_t = 900)]
    lock_wait_secs: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install a release and make it serve (s3://BUCKET/APP/ENV/releases/rN or file:///DIR/APP/ENV/releases/rN)
    Deploy { release_url: String },
    /// Install a release beside the running one without switching to it
    /// (download, verify, unpack, config, build), so a deploy of it only
    /// switches and restarts
    Prepare { release_url: String },
    /// Deploy the environment's current release (at instance start)
    Boot {
        /// The release bucket, or file:///DIR
        #[arg(long, env = "SLIPWAY_BUCKET")]
        bucket: Option<String>,
        #[arg(long, env = "SLIPWAY_APP")]
        app: Option<String>,
        #[arg(long, env = "SLIPWAY_ENV")]
        env: Option<String>,
    },
    /// Run the Procfile's release: command once, in a scratch copy
    ReleasePhase { release_url: String },
    /// Print what runs, as JSON
    Status {
        #[arg(long)]
        app: Option<String>,
    },
    /// Switch back to the previous release on this instance
    Rollback {
        #[arg(long)]
        app: Option<String>,
    },
    /// Stop the processes of an app (all apps without --app)
    Stop {
        #[arg(long)]
        app: Option<String>,
    },
}

/// The settings file: `KEY=value` lines (SLIPWAY_ROOT, SLIPWAY_SUPERVISOR,
/// SLIPWAY_BUCKET, SLIPWAY_APP, SLIPWAY_ENV, SLIPWAY_PORT, SLIPWAY_RUN_AS,
/// SLIPWAY_SYSTEMD_DIR). Flags and the environment win over it.
fn read_settings_file(cli: &Cli) -> Result<Config, String> {
    match std::fs::read_to_string(&cli.config) {
        Ok(text) => Config::parse(&text).map_err(|e| format!("{}: {e}", cli.config.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::new()),
        Err(e) => Err(format!("{}: {e}", cli.config.display())),
    }
}

fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("slipway-agent: {message}");
    ExitCode::from(2)
}

fn failed(agent: &Agent, failure: Failure) -> ExitCode {
    agent.story.say(
        agent
            .story
            .line("failed")
            .kv("step", failure.step)
            .kv("reason", &failure.reason)
            .opt("serving", failure.serving)
            .kv("ms", agent.story.elapsed_ms()),
    );
    ExitCode::from(if failure.degraded { 3 } else { 1 })
}

/// The instance's user for app processes under systemd.
fn run_as(user: &str) -> Result<RunAs, String> {
    let found = nix::unistd::User::from_name(user)
        .map_err(|e| format!("looking up user {user}: {e}"))?
        .ok_or_else(|| format!("user {user} does not exist (the base image creates it)"))?;
    Ok(RunAs {
        uid: found.uid.as_raw(),
        gid: found.gid.as_raw(),
        home: found.dir,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = match read_settings_file(&cli) {
        Ok(file) => file,
        Err(e) => return usage(e),
    };
    let setting = |name: &str| {
        std::env::var(name)
            .ok()
            .or_else(|| file.get(name).map(str::to_owned))
            .filter(|v| !v.is_empty())
    };
    let root = cli
        .root
        .clone()
        .or_else(|| setting("SLIPWAY_ROOT").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(slipway_agent::layout::DEFAULT_ROOT));
    let kind = match cli.supervisor {
        Some(k) => k,
        None => match setting("SLIPWAY_SUPERVISOR").as_deref() {
            None | Some("systemd") => SupervisorKind::Systemd,
            Some("direct") => SupervisorKind::Direct,
            Some(other) => return usage(format!("unknown supervisor {other:?}")),
        },
    };
    let port = match cli.port {
        Some(p) => Some(p),
        None => match setting("SLIPWAY_PORT").map(|p| p.parse::<u16>()) {
            None => None,
            Some(Ok(p)) if p > 0 => Some(p),
            Some(_) => return usage("SLIPWAY_PORT must be a port number"),
        },
    };
    let (supervisor, run_as) = match kind {
        SupervisorKind::Direct => (Supervisor::Direct(Direct::default()), None),
        SupervisorKind::Systemd => {
            let user = setting("SLIPWAY_RUN_AS").unwrap_or_else(|| "slipway".into());
            let run_as = match run_as(&user) {
                Ok(r) => r,
                Err(e) => return usage(e),
            };
            let unit_dir = setting("SLIPWAY_SYSTEMD_DIR")
                .unwrap_or_else(|| "/etc/systemd/system".into())
                .into();
            let ctl = PathBuf::from(setting("SLIPWAY_CLOUDWATCH_AGENT_CTL").unwrap_or_else(|| {
                "/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl".into()
            }));
            let cloudwatch = ctl.is_file().then_some(CloudWatchAgent { ctl });
            let rsyslogd = PathBuf::from(
                setting("SLIPWAY_RSYSLOGD").unwrap_or_else(|| "/usr/sbin/rsyslogd".into()),
            );
            let rsyslog_dir = PathBuf::from(
                setting("SLIPWAY_RSYSLOG_DIR").unwrap_or_else(|| "/etc/rsyslog.d".into()),
            );
            let rsyslog = (rsyslogd.is_file() && rsyslog_dir.is_dir()).then(|| Rsyslog {
                dir: rsyslog_dir,
                ca_file: setting("SLIPWAY_CA_FILE")
                    .unwrap_or_else(|| "/etc/pki/tls/certs/ca-bundle.crt".into()),
                rsyslogd,
                restart: ["systemctl", "restart", "rsyslog"]
                    .map(String::from)
                    .to_vec(),
            });
            (
                Supervisor::Systemd(Systemd {
                    unit_dir,
                    user,
                    cloudwatch,
                    rsyslog,
                }),
                Some(run_as),
            )
        }
    };
    let limits = match slipway_core::settings::limits_from_lookup(setting) {
        Ok(l) => l,
        Err(e) => return usage(e),
    };
    let instance_id = cli
        .instance_id
        .clone()
        .or_else(|| setting("SLIPWAY_INSTANCE_ID"));
    if let Some(id) = &instance_id
        && let Err(e) = slipway_core::names::InstanceId::parse(id)
    {
        return usage(e);
    }
    let agent = Agent::new(
        root,
        supervisor,
        instance_id,
        port,
        Duration::from_secs(cli.lock_wait_secs),
        limits,
        run_as,
    );

    let result = match &cli.command {
        Command::Deploy { release_url } => match ReleaseUrl::parse(release_url) {
            Ok(url) => agent.deploy(&url).await.map(drop),
            Err(e) => return usage(e),
        },
        Command::Prepare { release_url } => match ReleaseUrl::parse(release_url) {
            Ok(url) => agent.prepare_release(&url).await.map(drop),
            Err(e) => return usage(e),
        },
        Command::ReleasePhase { release_url } => match ReleaseUrl::parse(release_url) {
            Ok(url) => agent.release_phase(&url).await,
            Err(e) => return usage(e),
        },
        Command::Boot { bucket, app, env } => {
            let pick = |given: &Option<String>, name: &str| given.clone().or_else(|| setting(name));
            let (Some(bucket), Some(app), Some(env)) = (
                pick(bucket, "SLIPWAY_BUCKET"),
                pick(app, "SLIPWAY_APP"),
                pick(env, "SLIPWAY_ENV"),
            ) else {
                return usage(format!(
                    "boot needs SLIPWAY_BUCKET, SLIPWAY_APP and SLIPWAY_ENV (flags, environment or {})",
                    cli.config.display()
                ));
            };
            let location = match Location::parse(&bucket) {
                Ok(l) => l,
                Err(e) => return usage(e),
            };
            let env = match EnvRef::parse(&app, &env) {
                Ok(e) => e,
                Err(e) => return usage(e),
            };
            agent.boot(&location, &env).await.map(drop)
        }
        Command::Status { app } => {
            let app = match app.as_deref().map(AppName::parse).transpose() {
                Ok(a) => a,
                Err(e) => return usage(e),
            };
            let report = agent.status(app.as_ref()).await;
            match serde_json::to_string_pretty(&report) {
                Ok(json) => {
                    println!("{json}");
                    return ExitCode::SUCCESS;
                }
                Err(e) => return usage(e),
            }
        }
        Command::Rollback { app } => {
            let app = match app.as_deref().map(AppName::parse).transpose() {
                Ok(Some(a)) => Ok(a),
                Ok(None) => agent.only_app(),
                Err(e) => return usage(e),
            };
            match app {
                Ok(app) => agent.rollback(&app).await.map(drop),
                Err(f) => Err(f),
            }
        }
        Command::Stop { app } => match app.as_deref().map(AppName::parse).transpose() {
            Ok(app) => agent.stop(app.as_ref()).await,
            Err(e) => return usage(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => failed(&agent, f),
    }
}
