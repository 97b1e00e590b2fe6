//! The AWS emulator (moto server) for the local platform: installed into
//! the repository's `.venv` when missing (`scripts/install-emulator`),
//! started on a free loopback port by `scripts/emulator.py`, and stopped
//! when this process lets go of its stdin (so even a crash stops it).
//! Local instances register as its managed nodes in `hosts`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use aws_config::{BehaviorVersion, SdkConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::hosts::{HOSTS_VAR, Hosts, TIME_SCALE_VAR};

/// Where the emulator records the calls it serves.
pub const CALLS_VAR: &str = "SLIPWAY_EMULATOR_CALLS";

/// The emulator's S3 fault injection as it stands
/// (`GET /_slipway/faults`, `scripts/slipway_emulator/faults.py`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct FaultCounts {
    /// The fraction of S3 requests answered `503 SlowDown` (0: none).
    pub s3_slowdown: f64,
    /// The S3 requests the emulator has seen since the fraction was set.
    pub s3_requests: u64,
    /// Of those, the ones answered `SlowDown` instead of being run.
    pub s3_injected: u64,
}

pub struct Emulator {
    pub endpoint: String,
    /// Where local instances register as managed nodes.
    pub hosts: Hosts,
    _hosts_dir: tempfile::TempDir,
    child: Child,
    stdin: Option<ChildStdin>,
}

/// The checkout `ship` belongs to: the directory with `scripts/emulator.py`
/// at or above `start`, else the one it was built from.
pub fn repo_root(start: &Path) -> PathBuf {
    start
        .ancestors()
        .find(|d| d.join("scripts/emulator.py").is_file() && d.join("infra").is_dir())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
}

impl Emulator {
    pub async fn start(repo: &Path) -> anyhow::Result<Self> {
        Self::start_scaled(repo, 1.0).await
    }

    /// Started with its load balancers' probes and drains taking
    /// `time_scale` of AWS's times.
    pub async fn start_scaled(repo: &Path, time_scale: f64) -> anyhow::Result<Self> {
        Self::start_with(repo, time_scale, None).await
    }

    /// Started as [`Emulator::start_scaled`], recording every call it
    /// serves to `calls` (for the IAM check).
    pub async fn start_recording(
        repo: &Path,
        time_scale: f64,
        calls: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_with(repo, time_scale, Some(calls)).await
    }

    async fn start_with(
        repo: &Path,
        time_scale: f64,
        calls: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let python = repo.join(".venv/bin/python");
        let installed = python.is_file()
            && Command::new(&python)
                .args(["-c", "import moto"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
        if !installed {
            eprintln!(
                "installing the AWS emulator (moto) into {}",
                repo.join(".venv").display()
            );
            let status = Command::new(repo.join("scripts/install-emulator"))
                .status()
                .await
                .context("running scripts/install-emulator")?;
            if !status.success() {
                bail!("could not install the AWS emulator (scripts/install-emulator failed)");
            }
        }
        let hosts_dir = tempfile::tempdir().context("a directory for managed nodes")?;
        let mut command = Command::new(&python);
        if let Some(calls) = calls {
            command.env(CALLS_VAR, calls);
        }
        let mut child = command
            .arg(repo.join("scripts/emulator.py"))
            .env(HOSTS_VAR, hosts_dir.path())
            .env(TIME_SCALE_VAR, time_scale.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the AWS emulator")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .await
            .context("reading the emulator's READY line")?;
        let Some(port) = line.trim().strip_prefix("READY ") else {
            bail!("the AWS emulator did not start: {line:?}");
        };
        Ok(Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            hosts: Hosts::new(hosts_dir.path()),
            _hosts_dir: hosts_dir,
            stdin: child.stdin.take(),
            child,
        })
    }

    /// SDK config pointed at the emulator, with its dummy credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config(&self.endpoint).await
    }

    /// From now on, answers `fraction` (0 to 1; 0 turns it off) of S3
    /// requests, each drawn on its own, with S3's `503 SlowDown` without
    /// running them, as S3 does under load: for testing that the SDK's
    /// retries ride over it. With a `seed` the same requests (in the same
    /// order) are faulted on every run. Starts [`Emulator::s3_faults`]'
    /// counts again; a fraction outside 0..1 is refused.
    pub async fn set_s3_faults(&self, fraction: f64, seed: Option<u64>) -> anyhow::Result<()> {
        let body = serde_json::json!({ "s3_slowdown": fraction, "seed": seed });
        let response = control_client()?
            .post(self.faults_url())
            .json(&body)
            .send()
            .await
            .context("setting the emulator's S3 faults")?;
        let status = response.status();
        if !status.is_success() {
            let answer = response.text().await.unwrap_or_default();
            bail!("the emulator refused S3 faults of {fraction}: {status} {answer}");
        }
        Ok(())
    }

    /// The S3 fault fraction in force and what it has done since it was set.
    pub async fn s3_faults(&self) -> anyhow::Result<FaultCounts> {
        control_client()?
            .get(self.faults_url())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .context("reading the emulator's S3 faults")?
            .json()
            .await
            .context("reading the emulator's S3 faults")
    }

    fn faults_url(&self) -> String {
        format!("{}/_slipway/faults", self.endpoint)
    }

    pub async fn stop(mut self) {
        drop(self.stdin.take());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

/// A client for the emulator's own endpoints (`/_slipway/…`): on loopback,
/// so never through a proxy.
fn control_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .context("an HTTP client for the emulator")
}

pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(slipway_core::objects::retry_config())
        .region("us-east-1")
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "emulator",
        ))
        .load()
        .await
}

/// The variables that point an AWS SDK (the agent's) at the emulator.
pub fn aws_env(endpoint: &str) -> [(&'static str, String); 5] {
    [
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}
