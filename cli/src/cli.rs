//! `ship`'s command line: its verbs and flags (clap), and the dispatch
//! that runs each. The work is in `commands` (one module per group of
//! verbs), `demo` and `dev`; this module only decides which.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use slipway_core::maintenance::Cidr;
use slipway_core::names::{EnvRef, ReleaseId};
use slipway_core::strategy::Strategy;
use slipway_http::wire::{RollbackRequest, StartRequest};

use crate::client::Client;
use crate::commands::{
    ConfigAction, Ctx, ReleaseOptions, SettingsAction, deploy, envs, fleet, logs, release, settings,
};
use crate::context;

/// Slipway: releases, deploys and instances of your apps on your own AWS
/// account (or on this machine with `ship dev`).
#[derive(Debug, Parser)]
#[command(name = "ship", version)]
pub struct Cli {
    /// The control plane [env: SLIPWAY_URL; default: the running `ship dev`]
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// The app [default: from .slipway.toml]
    #[arg(long, short = 'a', global = true)]
    pub app: Option<String>,
    /// The environment [default: from .slipway.toml]
    #[arg(long, short = 'e', global = true)]
    pub env: Option<String>,
    /// Print JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a release from a git checkout (the committed tree at --ref)
    Release {
        /// The app's directory in the checkout
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// A description of the release
        #[arg(long, short = 'm')]
        message: Option<String>,
        /// The commit to release
        #[arg(long = "ref", default_value = "HEAD")]
        git_ref: String,
        /// Release even if the directory has uncommitted changes (they are not included)
        #[arg(long)]
        allow_dirty: bool,
        /// Tag the commit r<N> once released
        #[arg(long)]
        tag: bool,
    },
    /// List releases, newest first
    Releases {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Deploy a release (default: the newest) and follow it
    Deploy {
        release: Option<String>,
        /// one-at-a-time, a percentage like 25%, or all-at-once
        #[arg(long)]
        strategy: Option<String>,
        /// Leave moved instances as they are when the deploy fails
        #[arg(long)]
        no_rollback: bool,
        /// Start it and return
        #[arg(long)]
        no_follow: bool,
        /// When another deploy or cycle holds the environment, wait in its
        /// queue instead of being refused
        #[arg(long)]
        wait: bool,
    },
    /// Roll back to the previous good release (or RELEASE) and follow it
    Rollback {
        release: Option<String>,
        #[arg(long)]
        no_follow: bool,
        /// As for deploy
        #[arg(long)]
        wait: bool,
    },
    /// Cancel the running deploy
    Cancel,
    /// List deploys, newest first
    Deploys {
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// The formation: load balancers and instances by availability zone
    Ps,
    /// Search the environment's log lines, or follow them
    Logs(logs::LogArgs),
    /// Replace an instance (the group launches a new one), or all of them
    Cycle {
        instance: Option<String>,
        /// Every instance, one at a time, health-gated
        #[arg(long, conflicts_with = "instance")]
        all: bool,
        /// With --all: when another deploy or cycle holds the environment,
        /// wait in its queue instead of being refused
        #[arg(long, requires = "all")]
        wait: bool,
    },
    /// Set the number of instances (and the group's bounds)
    Scale {
        desired: Option<i32>,
        #[arg(long)]
        min: Option<i32>,
        #[arg(long)]
        max: Option<i32>,
    },
    /// Answer every request with a 503 page but the allowed addresses', or
    /// take the page down; `ship ps` shows which
    Maintenance {
        #[command(subcommand)]
        action: MaintenanceAction,
    },
    /// Show config vars (masked), or change them (a new release)
    Config {
        #[command(subcommand)]
        action: Option<ConfigAction>,
        /// Show values
        #[arg(long)]
        reveal: bool,
    },
    /// Copy a release (default: current) to another environment of the app
    Promote {
        #[arg(long)]
        to: String,
        release: Option<String>,
    },
    /// Show the environment's settings, or change them
    Settings {
        #[command(subcommand)]
        action: Option<SettingsAction>,
    },
    /// Print the web UI's address: the environment's page when the app and
    /// environment are known, else the overview
    Open,
    /// Run Slipway on this machine: emulator, control plane, local fleet
    Dev {
        #[command(subcommand)]
        action: Option<DevAction>,
        /// Where the control plane listens [default: a free port]
        #[arg(long)]
        port: Option<u16>,
    },
    /// The demo: a release, deploys, a broken deploy rolled back, a cycle
    Demo,
    /// Print a users-file line (NAME:argon2 hash) for a password read from stdin
    User { name: String },
    /// Environments on AWS, with your own credentials: create, update, destroy
    Env {
        #[command(subcommand)]
        action: EnvAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceAction {
    /// Put the page up on the environment's load balancer
    On {
        /// What the page says
        #[arg(long)]
        message: Option<String>,
        /// An address or CIDR block that still reaches the app, so the team
        /// can test (up to five)
        #[arg(long, value_parser = |s: &str| Cidr::parse(s))]
        allow: Vec<Cidr>,
    },
    /// Take the page down: every request reaches the app again
    Off,
}

#[derive(Debug, Subcommand)]
pub enum EnvAction {
    /// Create APP ENV's stack from infra/environment.yaml and follow it
    Create {
        app: String,
        env: String,
        #[command(flatten)]
        settings: envs::StackSettings,
        /// The release bucket [default: the control plane stack's]
        #[arg(long)]
        bucket: Option<String>,
        /// The control plane's stack, for its bucket and stack role
        #[arg(long, default_value = "slipway")]
        control_plane: String,
    },
    /// Change instance type, image or sizes; a new launch template is
    /// followed by a health-gated cycle of every instance
    Update {
        app: String,
        env: String,
        #[command(flatten)]
        settings: envs::StackSettings,
    },
    /// Delete APP ENV's stack (confirm with --confirm APP-ENV)
    Destroy {
        app: String,
        env: String,
        #[arg(long)]
        confirm: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevAction {
    /// Environments in the running `ship dev`
    Env {
        #[command(subcommand)]
        action: DevEnvAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevEnvAction {
    /// Create APP ENV from infra/environment.yaml in the emulator
    Create {
        app: String,
        env: String,
        #[arg(long, default_value_t = 2)]
        instances: u32,
    },
}

/// Runs the command; the exit status is 0 only when it did what it says.
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ship: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<bool> {
    let cwd = std::env::current_dir()?;
    match cli.command {
        Command::Dev { action: None, port } => return crate::dev::serve_until_stopped(port).await,
        Command::Dev {
            action:
                Some(DevAction::Env {
                    action:
                        DevEnvAction::Create {
                            app,
                            env,
                            instances,
                        },
                }),
            ..
        } => {
            let env = EnvRef::parse(&app, &env)?;
            let state = context::DevState::find(&cwd).ok_or_else(|| {
                anyhow::anyhow!(
                    "no `ship dev` runs from here: start it first (it writes .slipway/dev.json)"
                )
            })?;
            crate::dev::env::create(&state, &env, instances).await?;
            println!("created {env} with {instances} instances");
            return Ok(true);
        }
        Command::Demo => return crate::demo::run().await,
        Command::Env { action } => {
            return env_command(action, cli.url.as_deref(), cli.json, &cwd).await;
        }
        Command::User { name } => {
            slipway_core::names::AppName::parse(&name).map_err(|_| {
                anyhow::anyhow!("a user name is lowercase letters, digits and dashes")
            })?;
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.len() < 12 {
                anyhow::bail!("use a password of at least 12 characters");
            }
            println!("{name}:{}", slipway_http::auth::hash_password(password));
            return Ok(true);
        }
        _ => {}
    }
    let target = context::target(cli.url.as_deref(), &cwd).map_err(anyhow::Error::msg)?;
    if let Command::Open = cli.command {
        let page = match context::env_ref(cli.app.as_deref(), cli.env.as_deref(), &cwd) {
            Ok(env) => format!("/ui/apps/{}/envs/{}", env.app, env.env),
            Err(_) => "/ui".into(),
        };
        println!("{}{page}", target.url.trim_end_matches('/'));
        return Ok(true);
    }
    let env = context::env_ref(cli.app.as_deref(), cli.env.as_deref(), &cwd)
        .map_err(anyhow::Error::msg)?;
    let ctx = Ctx {
        client: Client::new(target),
        env,
        json: cli.json,
    };
    match cli.command {
        Command::Release {
            dir,
            message,
            git_ref,
            allow_dirty,
            tag,
        } => {
            let options = ReleaseOptions {
                dir,
                message,
                git_ref,
                allow_dirty,
                tag,
                progress: !ctx.json,
            };
            let release = release::release(&ctx, &options).await?;
            if !ctx.json(&serde_json::json!({ "release": release })) {
                println!("{release}");
            }
            Ok(true)
        }
        Command::Releases { limit } => release::list(&ctx, limit).await,
        Command::Deploy {
            release,
            strategy,
            no_rollback,
            no_follow,
            wait,
        } => {
            let body = StartRequest {
                release: release.as_deref().map(ReleaseId::parse).transpose()?,
                strategy: strategy
                    .as_deref()
                    .map(str::parse::<Strategy>)
                    .transpose()?,
                auto_rollback: no_rollback.then_some(false),
                queue: wait.then_some(true),
            };
            deploy::start_and_follow(&ctx, "/deploys", &body, !no_follow).await
        }
        Command::Rollback {
            release,
            no_follow,
            wait,
        } => {
            let body = RollbackRequest {
                release: release.as_deref().map(ReleaseId::parse).transpose()?,
                queue: wait.then_some(true),
            };
            deploy::start_and_follow(&ctx, "/rollback", &body, !no_follow).await
        }
        Command::Cancel => deploy::cancel(&ctx).await,
        Command::Deploys { limit } => deploy::list(&ctx, limit).await,
        Command::Ps => fleet::ps(&ctx).await,
        Command::Logs(args) => logs::logs(&ctx, args).await,
        Command::Cycle {
            instance,
            all,
            wait,
        } => fleet::cycle(&ctx, instance, all, wait).await,
        Command::Scale { desired, min, max } => fleet::scale(&ctx, desired, min, max).await,
        Command::Maintenance { action } => fleet::maintenance(&ctx, action).await,
        Command::Config { action, reveal } => settings::config(&ctx, action, reveal).await,
        Command::Promote { to, release } => settings::promote(&ctx, &to, release).await,
        Command::Settings { action } => settings::settings(&ctx, action).await,
        Command::Open
        | Command::Dev { .. }
        | Command::Demo
        | Command::Env { .. }
        | Command::User { .. } => {
            unreachable!("handled above")
        }
    }
}

async fn env_command(
    action: EnvAction,
    url: Option<&str>,
    json: bool,
    cwd: &std::path::Path,
) -> anyhow::Result<bool> {
    let aws = slipway_control::aws::load_config().await;
    let print = !json;
    match action {
        EnvAction::Create {
            app,
            env,
            settings,
            bucket,
            control_plane,
        } => {
            let env = EnvRef::parse(&app, &env)?;
            let plane = envs::ControlPlane::find(&aws, &control_plane, bucket).await?;
            envs::create(&aws, envs::TEMPLATE, &env, &plane, &settings, print).await?;
            Ok(true)
        }
        EnvAction::Update { app, env, settings } => {
            let env = EnvRef::parse(&app, &env)?;
            let new_template = envs::update(&aws, &env, &settings, print).await?;
            if !new_template {
                return Ok(true);
            }
            match context::target(url, cwd) {
                Ok(target) => {
                    println!("the launch template changed: cycling every instance onto it");
                    let ctx = Ctx {
                        client: Client::new(target),
                        env,
                        json,
                    };
                    fleet::cycle(&ctx, None, true, false).await
                }
                Err(_) => {
                    println!(
                        "the launch template changed: run `ship -a {} -e {} cycle --all` to replace the instances",
                        env.app, env.env
                    );
                    Ok(true)
                }
            }
        }
        EnvAction::Destroy { app, env, confirm } => {
            let env = EnvRef::parse(&app, &env)?;
            if confirm.as_deref() != Some(env.qualified().as_str()) {
                anyhow::bail!(
                    "this deletes {env}'s instances and load balancer: confirm with --confirm {}",
                    env.qualified()
                );
            }
            envs::destroy(&aws, &env, print).await?;
            Ok(true)
        }
    }
}
