//! IAM, checked: every call the control plane's functions and the local
//! instances make is recorded with its caller's access key, the IAM
//! actions AWS would authorise, their resources and condition context (the
//! emulator records its own services' calls, `scripts/slipway_emulator/
//! calls.py`; the local Lambda its `Invoke`s), and evaluated against that
//! principal's policies from the templates ([`policy`], [`sam`],
//! [`check`]).

pub mod check;
pub mod policy;
pub mod sam;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One authorisation of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub action: String,
    pub resource: String,
    #[serde(default)]
    pub context: BTreeMap<String, Vec<String>>,
}

/// One call, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub key: Option<String>,
    #[serde(default)]
    pub service: String,
    pub operation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default)]
    pub checks: Vec<Check>,
}

/// An append-only file of calls, one JSON object per line.
pub struct CallLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl CallLog {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn record(&self, call: &Call) {
        if let (Ok(mut file), Ok(line)) = (self.file.lock(), serde_json::to_string(call)) {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// The calls in a log file; a line that is not a call is an error naming
/// the line.
pub fn read_calls(path: &Path) -> anyhow::Result<Vec<Call>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    let mut calls = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let call: Call = serde_json::from_str(&line).map_err(|e| {
            anyhow::anyhow!("{}:{}: not a call ({e}): {line}", path.display(), n + 1)
        })?;
        calls.push(call);
    }
    Ok(calls)
}

/// The access key id of a SigV4-signed request: from its `Authorization`
/// header (`Credential=AKID/…`) or a presigned URL's `X-Amz-Credential`.
pub fn access_key(headers: &axum::http::HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let credential = auth.split("Credential=").nth(1)?;
    credential.split('/').next().map(str::to_owned)
}

/// Who holds a set of local credentials: a function's role, or the
/// instance role of an environment's instance (a session per instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Principal {
    Function {
        logical_id: String,
    },
    Instance {
        app: String,
        env: String,
        instance: String,
    },
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Function { logical_id } => write!(f, "{logical_id}Role"),
            Principal::Instance { app, env, instance } => {
                write!(f, "the instance role of {app}/{env} (instance {instance})")
            }
        }
    }
}

/// Credentials the local platform hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: String,
}

impl Credentials {
    /// The SDK's environment variables for them.
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_SESSION_TOKEN", self.session_token.clone()),
        ]
    }
}

/// The principals behind the access keys handed out, as the emulator sees
/// only the keys.
#[derive(Debug, Clone, Default)]
pub struct Principals(std::sync::Arc<Mutex<BTreeMap<String, (Principal, Credentials)>>>);

impl Principals {
    /// Credentials for `principal`: the same ones each time it asks.
    pub fn credentials(&self, principal: Principal) -> Credentials {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = map.values().find(|(p, _)| *p == principal) {
            return c.clone();
        }
        let random = || uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        let credentials = Credentials {
            access_key: format!("ASIA{}", &random()[..16]),
            secret_key: random(),
            session_token: random(),
        };
        map.insert(
            credentials.access_key.clone(),
            (principal, credentials.clone()),
        );
        credentials
    }

    pub fn get(&self, access_key: &str) -> Option<Principal> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(access_key).map(|(p, _)| p.clone())
    }
}
