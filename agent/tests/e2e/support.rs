//! A release store on disk, an agent root and a port per test; the agent
//! binary run as a real process; the example app as the real workload.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use chrono::Utc;
use sha2::{Digest, Sha256};
use slipway_core::archive::ArchiveFormat;
use slipway_core::config::Config;
use slipway_core::keys::release_key;
use slipway_core::manifest::{Manifest, Origin, ReleaseFile, Source};
use slipway_core::names::{EnvRef, ReleaseId};
use slipway_core::procfile::Procfile;
use slipway_core::testing::{TarBuilder, gzip, zstd_compress};

pub const AGENT: &str = env!("CARGO_BIN_EXE_slipway-agent");

pub fn example(file: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/hello")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn r(n: u64) -> ReleaseId {
    ReleaseId::new(n).unwrap()
}

/// What goes into a release.
pub struct Spec {
    pub procfile: String,
    pub config: String,
    pub files: Vec<(String, Vec<u8>)>,
    pub format: ArchiveFormat,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            procfile: "web: python3 app.py\n".into(),
            config: "GREETING=Hi\n".into(),
            files: vec![("app.py".into(), example("app.py"))],
            format: ArchiveFormat::Gzip,
        }
    }
}

impl Spec {
    pub fn config(config: &str) -> Self {
        Self {
            config: config.into(),
            ..Self::default()
        }
    }

    pub fn procfile(procfile: &str) -> Self {
        Self {
            procfile: procfile.into(),
            ..Self::default()
        }
    }

    pub fn archive(&self) -> Vec<u8> {
        let mut tar = TarBuilder::new();
        tar.file("Procfile", self.procfile.as_bytes());
        for (path, data) in &self.files {
            tar.file(path, data);
        }
        let tar = tar.finish();
        match self.format {
            ArchiveFormat::Gzip => gzip(&tar),
            ArchiveFormat::Zstd => zstd_compress(&tar),
        }
    }
}

/// The files of one release, as the release store lays them out.
pub fn release_files(
    env: &EnvRef,
    id: ReleaseId,
    spec: &Spec,
    archive: &[u8],
) -> Vec<(String, Vec<u8>)> {
    let config = Config::parse(&spec.config).unwrap();
    let source_key = release_key(env, id, &spec.format.source_file_name());
    let manifest = Manifest {
        id,
        app: env.app.clone(),
        env: env.env.clone(),
        source: Source {
            key: source_key.clone(),
            format: spec.format,
            sha256: hex::encode(Sha256::digest(archive)),
            size: archive.len() as u64,
        },
        config_sha256: config.sha256(),
        procfile: Procfile::parse(&spec.procfile)
            .unwrap_or_else(|_| Procfile::parse("web: x").unwrap()),
        git_ref: None,
        description: None,
        created_at: Utc::now(),
        created_by: "test".into(),
        origin: Origin::Config { from: id },
    };
    vec![
        (source_key, archive.to_vec()),
        (release_key(env, id, "env"), config.render().into_bytes()),
        (
            release_key(env, id, "release.json"),
            serde_json::to_vec(&ReleaseFile::Ready(manifest)).unwrap(),
        ),
    ]
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub store: PathBuf,
    pub root: PathBuf,
    pub port: u16,
    pub env: EnvRef,
}

impl Fixture {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let fixture = Self {
            store,
            root,
            port: free_port(),
            env: EnvRef::parse("hello", "prod").unwrap(),
            tmp,
        };
        fixture.settings(r#"{"health_timeout_secs": 5, "stop_grace_secs": 2}"#);
        fixture
    }

    pub fn put(&self, key: &str, bytes: &[u8]) {
        let path = self.store.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    pub fn settings(&self, json: &str) {
        self.put(
            &format!("{}settings.json", self.env.prefix()),
            json.as_bytes(),
        );
    }

    pub fn publish(&self, n: u64, spec: Spec) -> String {
        let archive = spec.archive();
        self.publish_archive(n, &spec, &archive)
    }

    pub fn publish_archive(&self, n: u64, spec: &Spec, archive: &[u8]) -> String {
        for (key, bytes) in release_files(&self.env, r(n), spec, archive) {
            self.put(&key, &bytes);
        }
        self.url(n)
    }

    pub fn url(&self, n: u64) -> String {
        format!(
            "file://{}/{}releases/r{n}",
            self.store.display(),
            self.env.prefix()
        )
    }

    pub fn app_dir(&self) -> PathBuf {
        self.root.join("hello")
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(AGENT);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--supervisor")
            .arg("direct")
            .arg("--port")
            .arg(self.port.to_string())
            .env("SLIPWAY_AGENT_CONFIG", self.tmp.path().join("no-agent.env"))
            .env_remove("SLIPWAY_INSTANCE_ID")
            .env_remove("SLIPWAY_AGENT_PAUSE_AT")
            .env_remove("SLIPWAY_ROOT");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command().args(args).output().unwrap())
    }

    pub fn deploy(&self, n: u64) -> Run {
        self.run(&["deploy", &self.url(n)])
    }

    /// Starts the agent, waits until it pauses at `step`, kills it with
    /// SIGKILL.
    pub fn kill_at(&self, step: &str, args: &[&str]) -> String {
        let mut child: Child = self
            .command()
            .args(args)
            .env("SLIPWAY_AGENT_PAUSE_AT", step)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut seen = String::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        loop {
            let mut line = String::new();
            if lines.read_line(&mut line).unwrap() == 0 {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("the agent ended before pausing at {step}:\n{seen}\n{err}");
            }
            seen.push_str(&line);
            if line.starts_with(&format!("at=pause step={step}")) {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        seen
    }

    /// The HTTP status and body at `path`, if anything answers.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.get(9..12)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    }

    /// The release the app says it is, asked over HTTP.
    pub fn answering(&self) -> Option<String> {
        let (status, body) = self.get("/")?;
        assert_eq!(status, 200, "{body}");
        let release = body.trim().rsplit(' ').next()?.trim_end_matches('.');
        Some(release.to_owned())
    }

    /// The release answering, waiting up to `wait` for one to start.
    pub fn answering_within(&self, wait: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let answer = self.answering();
            if answer.is_some() || std::time::Instant::now() > deadline {
                return answer;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn status(&self) -> serde_json::Value {
        let run = self.run(&["status", "--app", "hello"]);
        assert!(run.ok(), "{}", run.all);
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        json["apps"][0].clone()
    }

    /// Process groups whose working directory is under this test's root.
    pub fn app_process_groups(&self) -> Vec<i32> {
        let root = self.root.canonicalize().unwrap();
        let mut groups: Vec<i32> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
                if !cwd.starts_with(&root) {
                    return None;
                }
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                let after = &stat[stat.rfind(')')? + 1..];
                let fields: Vec<&str> = after.split_whitespace().collect();
                if fields.first() == Some(&"Z") {
                    return None;
                }
                let _ = pid;
                fields.get(2)?.parse().ok()
            })
            .collect();
        groups.sort();
        groups.dedup();
        groups
    }

    /// Names in `<root>/hello` and its `releases/` and `env/` that a
    /// finished agent should never leave behind.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        for dir in [
            self.app_dir(),
            self.app_dir().join("releases"),
            self.app_dir().join("env"),
        ] {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".partial") || name.ends_with(".tmp") || name == "scratch" {
                    found.push(name);
                }
            }
        }
        found
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for pgid in self.app_process_groups() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    /// stdout then stderr, for assertion messages.
    pub all: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        Self {
            code: out.status.code().unwrap_or(-1),
            all: format!("{stdout}{stderr}"),
            stdout,
        }
    }
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// The last line: the summary.
    pub fn last(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }
}
