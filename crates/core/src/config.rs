//! Config vars: the dotenv format, a canonical rendering, and masked diffs.
//!
//! The parser is our own on purpose: the common dotenv crates expand `$VAR`
//! and `${VAR}` from the *process* environment, and in a Lambda that
//! environment holds the function's AWS credentials. A config value is data,
//! never a template. The canonical rendering (sorted keys, quoted only where
//! needed, `$` always escaped inside quotes) makes equal configs equal bytes,
//! so a release's config is identified by its sha256.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A rendered config larger than this is refused: config vars are for
/// settings and secrets references, not files.
pub const MAX_CONFIG_BYTES: usize = 128 * 1024;

/// What a masked value is shown as. It hides the length too.
pub const MASK: &str = "********";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("config line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error(
        "invalid config key {shown:?}: a key starts with a letter or underscore and has only letters, digits and underscores"
    )]
    Key { shown: String },
    #[error("config value of {key} contains a NUL byte, which no environment variable can hold")]
    Nul { key: String },
    #[error("config is {size} bytes; at most {MAX_CONFIG_BYTES} are allowed")]
    TooLarge { size: usize },
    #[error(
        "config value of {key} refers to a parameter outside {path}: an environment's ssm: values live under {path}"
    )]
    SecretOutsidePath { key: String, path: String },
}

/// A config value `ssm:<name>` is resolved on the instance from Parameter
/// Store, and an instance may read only its environment's parameters.
pub const SECRET_PREFIX: &str = "ssm:";

/// Where an environment's `ssm:` parameters live: `/<app>/<env>/`.
pub fn secret_path(env: &crate::names::EnvRef) -> String {
    format!("/{}/{}/", env.app, env.env)
}

/// Refuses a value among `vars` that refers to a parameter outside the
/// environment's path (the instance could not read it anyway).
pub fn check_secret_paths<'a>(
    env: &crate::names::EnvRef,
    vars: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), ConfigError> {
    let path = secret_path(env);
    for (key, value) in vars {
        if let Some(name) = value.strip_prefix(SECRET_PREFIX)
            && (!name.starts_with(&path) || name.len() == path.len() || name.contains(".."))
        {
            return Err(ConfigError::SecretOutsidePath {
                key: key.clone(),
                path,
            });
        }
    }
    Ok(())
}

/// A set of config vars, always in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config(BTreeMap<String, String>);

pub fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_key(key: &str) -> Result<(), ConfigError> {
    if is_valid_key(key) {
        Ok(())
    } else {
        Err(ConfigError::Key {
            shown: key.chars().filter(|c| !c.is_control()).take(40).collect(),
        })
    }
}

impl Config {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let vars = Parser::new(text).parse()?;
        let config = Self(vars);
        config.check_size()?;
        Ok(config)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A copy with `set` applied, then `unset` removed. Keys and values are
    /// checked; a key in both is an error rather than a guess.
    pub fn with_changes(
        &self,
        set: &BTreeMap<String, String>,
        unset: &[String],
    ) -> Result<Self, ConfigError> {
        let mut next = self.0.clone();
        for (k, v) in set {
            check_key(k)?;
            if v.contains('\0') {
                return Err(ConfigError::Nul { key: k.clone() });
            }
            next.insert(k.clone(), v.clone());
        }
        for k in unset {
            check_key(k)?;
            if set.contains_key(k) {
                return Err(ConfigError::Syntax {
                    line: 0,
                    message: format!("{k} is both set and unset"),
                });
            }
            next.remove(k);
        }
        let config = Self(next);
        config.check_size()?;
        Ok(config)
    }

    fn check_size(&self) -> Result<(), ConfigError> {
        let size = self.render().len();
        if size > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge { size });
        }
        Ok(())
    }

    /// The canonical dotenv text: one `KEY=value` per line, sorted by key.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.0 {
            out.push_str(k);
            out.push('=');
            render_value(v, &mut out);
            out.push('\n');
        }
        out
    }

    /// The sha256 of the canonical rendering, in hex.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.render().as_bytes()))
    }

    /// Keys with their values, or with every value masked.
    pub fn view(&self, reveal: bool) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), if reveal { v.clone() } else { MASK.into() }))
            .collect()
    }

    /// What changes from `self` to `next`.
    pub fn diff(&self, next: &Config) -> ConfigDiff {
        let mut diff = ConfigDiff::default();
        for (k, new) in &next.0 {
            match self.0.get(k) {
                None => {
                    diff.added.insert(k.clone(), new.clone());
                }
                Some(old) if old != new => {
                    diff.changed.insert(k.clone(), (old.clone(), new.clone()));
                }
                Some(_) => {}
            }
        }
        for (k, old) in &self.0 {
            if !next.0.contains_key(k) {
                diff.removed.insert(k.clone(), old.clone());
            }
        }
        diff
    }
}

fn value_needs_quotes(v: &str) -> bool {
    v.is_empty()
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:@,+%^~".contains(&b))
}

fn render_value(v: &str, out: &mut String) {
    if !value_needs_quotes(v) {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The changes between two configs, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    pub added: BTreeMap<String, String>,
    pub removed: BTreeMap<String, String>,
    pub changed: BTreeMap<String, (String, String)>,
}

/// One line of a diff as shown to people and clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffEntry {
    pub key: String,
    /// `added`, `removed` or `changed`.
    pub change: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// Every key that changed, in key order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        let mut keys: BTreeSet<&str> = BTreeSet::new();
        keys.extend(self.added.keys().map(String::as_str));
        keys.extend(self.removed.keys().map(String::as_str));
        keys.extend(self.changed.keys().map(String::as_str));
        keys.into_iter()
    }

    /// The diff in key order, values masked unless `reveal`.
    pub fn entries(&self, reveal: bool) -> Vec<DiffEntry> {
        let show = |v: &String| Some(if reveal { v.clone() } else { MASK.to_owned() });
        self.keys()
            .map(|k| {
                if let Some(v) = self.added.get(k) {
                    DiffEntry {
                        key: k.to_owned(),
                        change: "added".into(),
                        old: None,
                        new: show(v),
                    }
                } else if let Some(v) = self.removed.get(k) {
                    DiffEntry {
                        key: k.to_owned(),
                        change: "removed".into(),
                        old: show(v),
                        new: None,
                    }
                } else {
                    let (o, n) = &self.changed[k];
                    DiffEntry {
                        key: k.to_owned(),
                        change: "changed".into(),
                        old: show(o),
                        new: show(n),
                    }
                }
            })
            .collect()
    }
}

struct Parser<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Self {
            chars: text.chars().peekable(),
            line: 1,
        }
    }

    fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Syntax {
            line: self.line,
            message: message.into(),
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next();
        if c == Some('\n') {
            self.line += 1;
        }
        c
    }

    fn skip_blanks(&mut self) {
        while matches!(self.chars.peek(), Some(' ' | '\t')) {
            self.bump();
        }
    }

    fn skip_rest_of_line(&mut self) {
        while let Some(c) = self.bump() {
            if c == '\n' {
                break;
            }
        }
    }

    /// After a value: only blanks and an optional comment may follow.
    fn end_of_line(&mut self) -> Result<(), ConfigError> {
        self.skip_blanks();
        match self.chars.peek() {
            None => Ok(()),
            Some('\n') => {
                self.bump();
                Ok(())
            }
            Some('\r') => {
                self.bump();
                if self.bump().is_none_or(|c| c == '\n') {
                    Ok(())
                } else {
                    Err(self.err("stray carriage return"))
                }
            }
            Some('#') => {
                self.skip_rest_of_line();
                Ok(())
            }
            Some(&c) => Err(self.err(format!("unexpected {c:?} after the closing quote"))),
        }
    }

    fn parse(mut self) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut vars = BTreeMap::new();
        loop {
            // Leading whitespace and blank lines.
            while matches!(self.chars.peek(), Some(' ' | '\t' | '\r' | '\n')) {
                self.bump();
            }
            match self.chars.peek() {
                None => break,
                Some('#') => {
                    self.skip_rest_of_line();
                    continue;
                }
                _ => {}
            }
            let line = self.line;
            let mut key = self.word();
            if key == "export" && matches!(self.chars.peek(), Some(' ' | '\t')) {
                self.skip_blanks();
                key = self.word();
            }
            check_key(&key).map_err(|e| ConfigError::Syntax {
                line,
                message: e.to_string(),
            })?;
            self.skip_blanks();
            if self.bump() != Some('=') {
                return Err(ConfigError::Syntax {
                    line,
                    message: format!("expected = after {key}"),
                });
            }
            self.skip_blanks();
            let value = match self.chars.peek() {
                Some('"') => {
                    self.bump();
                    let v = self.double_quoted()?;
                    self.end_of_line()?;
                    v
                }
                Some('\'') => {
                    self.bump();
                    let v = self.single_quoted()?;
                    self.end_of_line()?;
                    v
                }
                _ => self.unquoted(),
            };
            if value.contains('\0') {
                return Err(ConfigError::Nul { key });
            }
            if vars.insert(key.clone(), value).is_some() {
                return Err(ConfigError::Syntax {
                    line,
                    message: format!("{key} is set twice"),
                });
            }
        }
        Ok(vars)
    }

    fn word(&mut self) -> String {
        let mut w = String::new();
        while let Some(&c) = self.chars.peek() {
            if c.is_whitespace() || c == '=' || c == '#' {
                break;
            }
            w.push(c);
            self.bump();
        }
        w
    }

    fn double_quoted(&mut self) -> Result<String, ConfigError> {
        let start = self.line;
        let mut v = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(ConfigError::Syntax {
                        line: start,
                        message: "unterminated double-quoted value".into(),
                    });
                }
                Some('"') => return Ok(v),
                Some('\\') => match self.bump() {
                    Some('n') => v.push('\n'),
                    Some('r') => v.push('\r'),
                    Some('t') => v.push('\t'),
                    Some(c @ ('"' | '\\' | '$' | '\'' | '`')) => v.push(c),
                    Some('\n') => {} // a line continuation
                    Some(c) => return Err(self.err(format!("unknown escape \\{c}"))),
                    None => return Err(self.err("unterminated double-quoted value")),
                },
                Some(c) => v.push(c),
            }
        }
    }

    fn single_quoted(&mut self) -> Result<String, ConfigError> {
        let start = self.line;
        let mut v = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(ConfigError::Syntax {
                        line: start,
                        message: "unterminated single-quoted value".into(),
                    });
                }
                Some('\'') => return Ok(v),
                Some(c) => v.push(c),
            }
        }
    }

    /// Up to the end of the line or a ` #` comment, trimmed.
    fn unquoted(&mut self) -> String {
        let mut v = String::new();
        while let Some(&c) = self.chars.peek() {
            if c == '\n' {
                self.bump();
                break;
            }
            if c == '#' && (v.is_empty() || v.ends_with([' ', '\t'])) {
                self.skip_rest_of_line();
                break;
            }
            v.push(c);
            self.bump();
        }
        v.trim_end().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn the_dotenv_forms_people_write_all_parse() {
        let c = parse(include_str!("../testdata/sample.env"));
        assert_eq!(c.get("PLAIN"), Some("value"));
        assert_eq!(c.get("EXPORTED"), Some("yes"));
        assert_eq!(c.get("SINGLE"), Some("no $expansion \\n here"));
        assert_eq!(c.get("DOUBLE"), Some("tab\tquote\" dollar$HOME"));
        assert_eq!(c.get("MULTI"), Some("line one\nline two\n"));
        assert_eq!(c.get("ESCAPED_MULTI"), Some("a\nb"));
        assert_eq!(c.get("INLINE_COMMENT"), Some("kept"));
        assert_eq!(c.get("HASH_IN_VALUE"), Some("a#b"));
        assert_eq!(c.get("EMPTY"), Some(""));
        assert_eq!(c.get("SPACED"), Some("spaced out"));
        assert_eq!(
            c.get("URL"),
            Some("postgres://u:p@db:5432/app?sslmode=require")
        );
        assert_eq!(c.get("_UNDERSCORE"), Some("1"));
        assert_eq!(c.len(), 12);
    }

    #[test]
    fn variables_are_never_expanded_from_the_environment() {
        // SAFETY of the assertion: HOME is set in every test environment.
        let c = parse("A=$HOME\nB=\"${HOME}\"\n");
        assert_eq!(c.get("A"), Some("$HOME"));
        assert_eq!(c.get("B"), Some("${HOME}"));
    }

    #[test]
    fn bad_keys_and_broken_quotes_are_errors_with_line_numbers() {
        let cases = [
            ("1ABC=x", 1, "starts with a letter or underscore"),
            ("OK=1\nBAD-KEY=x", 2, "starts with a letter or underscore"),
            ("A=\"never closed", 1, "unterminated double-quoted"),
            ("A='never closed", 1, "unterminated single-quoted"),
            ("A=1\nA=2", 2, "set twice"),
            ("JUSTAKEY", 1, "expected = after JUSTAKEY"),
            ("A=\"x\" trailing", 1, "after the closing quote"),
            ("A=\"\\q\"", 1, "unknown escape"),
        ];
        for (text, line, needle) in cases {
            match Config::parse(text) {
                Err(ConfigError::Syntax { line: l, message }) => {
                    assert_eq!(l, line, "{text:?}");
                    assert!(message.contains(needle), "{text:?}: {message}");
                }
                other => panic!("{text:?}: expected a syntax error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_nul_byte_in_a_value_is_refused_by_key() {
        assert_eq!(
            Config::parse("A=\"x\0y\""),
            Err(ConfigError::Nul { key: "A".into() })
        );
    }

    #[test]
    fn equal_configs_render_to_equal_bytes_whatever_their_spelling() {
        let a = parse("B=2\nexport A='x y'\n# comment\n");
        let b = parse("A=\"x y\"\n\n\nB=2");
        assert_eq!(a.render(), "A=\"x y\"\nB=2\n");
        assert_eq!(a.render(), b.render());
        assert_eq!(a.sha256(), b.sha256());
    }

    #[test]
    fn rendering_then_parsing_gives_back_the_same_config() {
        let mut set = BTreeMap::new();
        for (i, v) in [
            "",
            "plain",
            "with space",
            "quote\"s",
            "back\\slash",
            "$dollar",
            "new\nline",
            "cr\rlf",
            "tab\t",
            "'single'",
            "#hash",
            "a #b",
            "ünïcödé ✓",
            " lead",
            "trail ",
            "=eq",
            "`tick`",
        ]
        .iter()
        .enumerate()
        {
            set.insert(format!("K{i}"), v.to_string());
        }
        let c = Config::new().with_changes(&set, &[]).unwrap();
        assert_eq!(Config::parse(&c.render()).unwrap(), c);
    }

    #[test]
    fn changes_set_then_unset_and_refuse_bad_keys() {
        let c = parse("A=1\nB=2\n");
        let set = BTreeMap::from([("C".to_string(), "3".to_string()), ("A".into(), "9".into())]);
        let next = c.with_changes(&set, &["B".to_string()]).unwrap();
        assert_eq!(next.render(), "A=9\nC=3\n");

        let bad = BTreeMap::from([("NO-DASH".to_string(), "x".to_string())]);
        assert!(matches!(
            c.with_changes(&bad, &[]),
            Err(ConfigError::Key { .. })
        ));
        assert!(matches!(
            c.with_changes(&BTreeMap::new(), &["../x".into()]),
            Err(ConfigError::Key { .. })
        ));
        let both = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert!(
            c.with_changes(&both, &["A".into()])
                .unwrap_err()
                .to_string()
                .contains("both set and unset")
        );
    }

    #[test]
    fn a_config_over_the_size_limit_is_refused() {
        let set = BTreeMap::from([("BIG".to_string(), "x".repeat(MAX_CONFIG_BYTES))]);
        assert!(matches!(
            Config::new().with_changes(&set, &[]),
            Err(ConfigError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_diff_lists_added_removed_and_changed_keys_masked_unless_revealed() {
        let old = parse("KEEP=1\nGONE=secret-old\nCHANGE=a\n");
        let new = parse("KEEP=1\nCHANGE=b\nNEW=secret-new\n");
        let diff = old.diff(&new);
        let masked = diff.entries(false);
        assert_eq!(
            masked,
            vec![
                DiffEntry {
                    key: "CHANGE".into(),
                    change: "changed".into(),
                    old: Some(MASK.into()),
                    new: Some(MASK.into())
                },
                DiffEntry {
                    key: "GONE".into(),
                    change: "removed".into(),
                    old: Some(MASK.into()),
                    new: None
                },
                DiffEntry {
                    key: "NEW".into(),
                    change: "added".into(),
                    old: None,
                    new: Some(MASK.into())
                },
            ]
        );
        let text = serde_json::to_string(&masked).unwrap();
        assert!(!text.contains("secret"), "{text}");
        let revealed = diff.entries(true);
        assert_eq!(revealed[2].new.as_deref(), Some("secret-new"));
        assert!(old.diff(&old).is_empty());
    }
}
