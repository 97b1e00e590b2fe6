//! The Procfile: Heroku's `name: command` list of an app's process types.
//!
//! Three names mean something to Slipway: `web` (serves `$PORT`, health
//! checked, required), `build` (runs on each instance before the switch) and
//! `release` (runs once per deploy). Every other name is a long-running
//! process type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A Procfile larger than this is not a Procfile.
pub const MAX_PROCFILE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcfileError {
    #[error("Procfile line {line}: {message}")]
    Line { line: usize, message: String },
    /// A stored (already parsed) Procfile that is no longer valid.
    #[error("Procfile: {0}")]
    Entry(String),
    #[error("Procfile has no web process type; add a line such as `web: ./server --port $PORT`")]
    NoWeb,
    #[error("Procfile is not UTF-8 text")]
    NotText,
    #[error("Procfile is larger than {MAX_PROCFILE_BYTES} bytes")]
    TooLarge,
}

/// What a process type is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessKind {
    Web,
    Build,
    Release,
    Worker,
}

/// A parsed Procfile: process type → command, in name order. A command is
/// one line of text: it ends up in a systemd unit line (which `\r` and NUL
/// would end early, letting the rest become directives of its own), so
/// every control character but tab is refused, here and when a stored
/// manifest's Procfile is read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct Procfile(BTreeMap<String, String>);

/// What is wrong with one entry, if anything.
fn check_entry(name: &str, command: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "invalid process type {:?}: use letters, digits, _ and -",
            name.chars().take(40).collect::<String>()
        ));
    }
    if command.is_empty() {
        return Err(format!("process type {name} has an empty command"));
    }
    if let Some(c) = command.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(format!(
            "the command of {name} contains the control character U+{:04X}: a command is one line of text",
            c as u32
        ));
    }
    Ok(())
}

impl TryFrom<BTreeMap<String, String>> for Procfile {
    type Error = ProcfileError;
    fn try_from(types: BTreeMap<String, String>) -> Result<Self, ProcfileError> {
        for (name, command) in &types {
            check_entry(name, command).map_err(ProcfileError::Entry)?;
        }
        if !types.contains_key("web") {
            return Err(ProcfileError::NoWeb);
        }
        Ok(Self(types))
    }
}

impl From<Procfile> for BTreeMap<String, String> {
    fn from(p: Procfile) -> Self {
        p.0
    }
}

impl Procfile {
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, ProcfileError> {
        if bytes.len() > MAX_PROCFILE_BYTES {
            return Err(ProcfileError::TooLarge);
        }
        Self::parse(std::str::from_utf8(bytes).map_err(|_| ProcfileError::NotText)?)
    }

    pub fn parse(text: &str) -> Result<Self, ProcfileError> {
        let mut types = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |message: String| ProcfileError::Line { line, message };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (name, command) = trimmed
                .split_once(':')
                .ok_or_else(|| err("expected `name: command`".into()))?;
            let name = name.trim();
            let command = command.trim();
            check_entry(name, command).map_err(err)?;
            if types.insert(name.to_owned(), command.to_owned()).is_some() {
                return Err(err(format!("process type {name} is defined twice")));
            }
        }
        if !types.contains_key("web") {
            return Err(ProcfileError::NoWeb);
        }
        Ok(Self(types))
    }

    pub fn kind(name: &str) -> ProcessKind {
        match name {
            "web" => ProcessKind::Web,
            "build" => ProcessKind::Build,
            "release" => ProcessKind::Release,
            _ => ProcessKind::Worker,
        }
    }

    pub fn command(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn web(&self) -> &str {
        // Parsing guarantees a web type.
        self.0.get("web").map(String::as_str).unwrap_or_default()
    }

    pub fn build(&self) -> Option<&str> {
        self.command("build")
    }

    pub fn release(&self) -> Option<&str> {
        self.command("release")
    }

    /// The long-running process types (web first, then the others by name).
    pub fn processes(&self) -> impl Iterator<Item = (&str, &str)> {
        let web = self.0.get_key_value("web");
        let others = self
            .0
            .iter()
            .filter(|(n, _)| Self::kind(n) == ProcessKind::Worker);
        web.into_iter()
            .chain(others)
            .map(|(n, c)| (n.as_str(), c.as_str()))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, c)| (n.as_str(), c.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_procfile_with_comments_blank_lines_and_known_types_parses() {
        let p = Procfile::parse(
            "# processes\nweb: python3 app.py --port $PORT\n\nworker:  python3 worker.py\nbuild: make\nrelease: ./migrate\nclock_2-x: ./tick\n",
        )
        .unwrap();
        assert_eq!(p.web(), "python3 app.py --port $PORT");
        assert_eq!(p.build(), Some("make"));
        assert_eq!(p.release(), Some("./migrate"));
        let procs: Vec<_> = p.processes().map(|(n, _)| n).collect();
        assert_eq!(procs, ["web", "clock_2-x", "worker"]);
        assert_eq!(Procfile::kind("clock_2-x"), ProcessKind::Worker);
    }

    #[test]
    fn a_command_with_a_control_character_is_refused_with_its_line() {
        for bad in [
            "web: x\rUser=root\rExecStart=\rExecStart=+/bin/sh -c 'id'\r#",
            "web: x\0y",
            "web: a\nworker: b\u{1b}[2J",
            "web: a\u{85}b",
        ] {
            let e = Procfile::parse(bad).unwrap_err().to_string();
            assert!(e.contains("control character"), "{bad:?}: {e}");
        }
        assert!(
            Procfile::parse("web: a\nworker: b\u{1b}")
                .unwrap_err()
                .to_string()
                .starts_with("Procfile line 2:")
        );
        // Tabs are text; CRLF line ends are line ends.
        assert_eq!(
            Procfile::parse("web:\tpython3\tapp.py").unwrap().web(),
            "python3\tapp.py"
        );
        assert_eq!(
            Procfile::parse("web: a\r\nworker: b\r\n").unwrap().web(),
            "a"
        );
    }

    #[test]
    fn a_stored_procfile_is_checked_again_when_it_is_read() {
        let stored = r#"{"web": "x\rUser=root"}"#;
        assert!(serde_json::from_str::<Procfile>(stored).is_err());
        assert!(serde_json::from_str::<Procfile>(r#"{"worker": "x"}"#).is_err());
        let ok: Procfile = serde_json::from_str(r#"{"web": "python3 app.py"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"web":"python3 app.py"}"#
        );
    }

    #[test]
    fn a_command_may_contain_colons() {
        let p = Procfile::parse("web: gunicorn app:main -b 0.0.0.0:$PORT").unwrap();
        assert_eq!(p.web(), "gunicorn app:main -b 0.0.0.0:$PORT");
    }

    #[test]
    fn duplicates_empty_commands_and_bad_names_are_errors_with_their_line() {
        let cases = [
            ("web: a\nweb: b", 2, "defined twice"),
            ("web: a\nworker:", 2, "empty command"),
            ("web: a\nwork er: x", 2, "invalid process type"),
            ("web: a\n: x", 2, "invalid process type"),
            ("web: a\njust words", 2, "expected `name: command`"),
            ("wéb: a", 1, "invalid process type"),
        ];
        for (text, line, needle) in cases {
            match Procfile::parse(text) {
                Err(ProcfileError::Line { line: l, message }) => {
                    assert_eq!(l, line, "{text:?}");
                    assert!(message.contains(needle), "{text:?}: {message}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_procfile_without_web_is_refused_with_an_example() {
        let err = Procfile::parse("worker: x\n").unwrap_err();
        assert_eq!(err, ProcfileError::NoWeb);
        assert!(err.to_string().contains("web: "));
    }

    #[test]
    fn binary_or_huge_procfiles_are_refused() {
        assert_eq!(
            Procfile::parse_bytes(&[0xff, 0xfe, b'w']),
            Err(ProcfileError::NotText)
        );
        let huge = vec![b'#'; MAX_PROCFILE_BYTES + 1];
        assert_eq!(Procfile::parse_bytes(&huge), Err(ProcfileError::TooLarge));
    }
}
