//! The commands of `ship`, one module per group of verbs, each a plain
//! function of a [`Ctx`]: what `cli` dispatches to, and what the demo reuses.

pub mod deploy;
pub mod envs;
pub mod fleet;
pub mod logs;
pub mod release;
pub mod settings;

use clap::Subcommand;
use slipway_core::names::EnvRef;

pub use deploy::{follow, start_deploy};
pub use fleet::print_formation;
pub use release::{ReleaseOptions, release};

use crate::client::Client;

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Set KEY=VALUE pairs
    Set {
        #[arg(required = true)]
        pairs: Vec<String>,
    },
    /// Remove keys
    Unset {
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SettingsAction {
    /// Set KEY=VALUE pairs (values are JSON when they parse as JSON)
    Set {
        #[arg(required = true)]
        pairs: Vec<String>,
    },
}

/// What a command needs: the client, the environment, the output mode.
pub struct Ctx {
    pub client: Client,
    pub env: EnvRef,
    pub json: bool,
}

impl Ctx {
    pub fn path(&self, rest: &str) -> String {
        crate::client::env_path(&self.env, rest)
    }

    /// Prints `value` as JSON in `--json` mode; true if it did.
    pub fn json(&self, value: &impl serde::Serialize) -> bool {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).expect("JSON prints")
            );
        }
        self.json
    }
}
