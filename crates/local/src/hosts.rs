//! The emulator's managed nodes: each local instance's host registers it
//! here, so the emulator's Run Command (`scripts/slipway_emulator/ssm.py`)
//! can run a document on it — in its directory, with its environment, the
//! agent at the path the document names mapped to the local binary — and
//! the emulator's load balancer probes it on its port. A node is Online
//! while the process that registered it lives.
//!
//! Also the `Slipway-Deploy` document itself, taken from
//! `infra/template.yaml` as CloudFormation would make it, never a copy.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;
use slipway_core::names::InstanceId;

/// Where the emulator finds registered nodes (`SLIPWAY_EMULATOR_HOSTS`).
pub const HOSTS_VAR: &str = "SLIPWAY_EMULATOR_HOSTS";

/// The emulator's load-balancer times as a share of AWS's.
pub const TIME_SCALE_VAR: &str = "SLIPWAY_EMULATOR_TIME_SCALE";

/// The path the document runs the agent at on an instance.
pub const AGENT_PATH: &str = "/usr/local/bin/slipway-agent";

/// The document hands the agent's output to the journal with
/// `systemd-cat`; instances here have no journal, so each gets this in
/// its place, appending to `journal.log` in the instance's directory.
pub const JOURNAL_PROGRAM: &str = "systemd-cat";

/// Where an instance's `systemd-cat` stand-in is.
pub fn journal_shim(dir: &Path) -> PathBuf {
    dir.join("bin").join(JOURNAL_PROGRAM)
}

/// Writes the instance's `systemd-cat` stand-in and returns its path.
pub fn install_journal_shim(dir: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = journal_shim(dir);
    std::fs::create_dir_all(dir.join("bin"))?;
    std::fs::write(
        &path,
        "#!/bin/sh\ncat >> \"$(dirname \"$0\")/../journal.log\"\n",
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// What a node's commands run in.
#[derive(Debug, Clone, Serialize)]
pub struct LocalHost {
    pub dir: PathBuf,
    pub env: BTreeMap<String, String>,
    /// Instance paths the document names, and what runs in their place.
    pub programs: BTreeMap<String, PathBuf>,
    /// Where the instance serves: the load balancer's health checks (and
    /// traffic) go to `127.0.0.1:<port>` whatever the target group's port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Serialize)]
struct Registration<'a> {
    #[serde(flatten)]
    host: &'a LocalHost,
    pid: u32,
}

#[derive(Debug, Clone)]
pub struct Hosts {
    dir: PathBuf,
}

impl Hosts {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes `id` a managed node run by `host`, owned by this process.
    pub fn register(&self, id: &InstanceId, host: &LocalHost) -> io::Result<()> {
        let json = serde_json::to_vec(&Registration {
            host,
            pid: std::process::id(),
        })
        .map_err(io::Error::other)?;
        let path = self.dir.join(format!("{id}.json"));
        let tmp = self.dir.join(format!(".{id}.json.tmp"));
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)
    }

    /// `id` is no longer a managed node.
    pub fn unregister(&self, id: &InstanceId) -> io::Result<()> {
        match std::fs::remove_file(self.dir.join(format!("{id}.json"))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The `Content` of `DeployDocument` in `infra/template.yaml`, as the
/// stack would create it for `bucket`: the block, dedented, with its one
/// `!Sub` resolved. Any other intrinsic function is refused, so the copy
/// can never silently differ from what CloudFormation makes.
pub fn deploy_document(template: &str, bucket: &str) -> anyhow::Result<String> {
    let start = template
        .find("\n  DeployDocument:\n")
        .context("infra/template.yaml has no DeployDocument")?;
    let mut lines = template[start + 1..].lines().skip(1);
    for line in lines.by_ref() {
        if line.trim() == "Content:" {
            break;
        }
        if !line.starts_with("    ") {
            bail!("DeployDocument has no Content");
        }
    }
    let indent = 8;
    let mut content = String::new();
    for line in lines {
        let blank = line.trim().is_empty();
        if !blank && !line.starts_with(&" ".repeat(indent)) {
            break;
        }
        let line = if blank { "" } else { &line[indent..] };
        let line = match line.split_once("!Sub ") {
            Some((head, quoted)) => format!(
                "{head}{}",
                quoted.replace("${ReleaseBucket}", &regex_quote(bucket))
            ),
            None => line.to_owned(),
        };
        if line.contains(" !") || line.contains("${") {
            bail!("DeployDocument's Content holds an intrinsic this copy cannot resolve: {line}");
        }
        content.push_str(&line);
        content.push('\n');
    }
    if !content.contains("mainSteps:") {
        bail!("DeployDocument's Content has no mainSteps");
    }
    Ok(content)
}

/// A bucket name inside the document's `allowedPattern`: its dots are
/// literal. (Bucket names hold only lowercase letters, digits, `-`, `.`.)
fn regex_quote(bucket: &str) -> String {
    bucket.replace('.', "\\\\.")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = include_str!("../../../infra/template.yaml");

    #[test]
    fn the_document_is_the_templates_with_its_bucket_filled_in() {
        let doc = deploy_document(TEMPLATE, "my-bucket").unwrap();
        assert!(doc.starts_with("schemaVersion: \"2.2\"\n"), "{doc}");
        assert!(
            doc.contains(r#"allowedPattern: "^s3://my-bucket/[a-z]"#),
            "{doc}"
        );
        assert!(
            doc.contains(&format!("{AGENT_PATH} '{{{{ Action }}}}'")),
            "{doc}"
        );
        assert!(
            !doc.contains("InstanceRoleBoundary"),
            "it ran past the document"
        );
    }

    #[test]
    fn an_intrinsic_the_copy_cannot_resolve_is_refused() {
        let template = TEMPLATE.replace(
            "allowedValues: [deploy, prepare, release-phase]",
            "allowedValues: !Ref Actions",
        );
        assert!(deploy_document(&template, "b").is_err());
    }
}
