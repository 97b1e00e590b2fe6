//! The env file: a release's config vars as systemd's `EnvironmentFile=`
//! reads them, written outside the source tree with mode 0600.
//!
//! Every value is double-quoted; inside, `"`, `\`, `` ` `` and `$` are
//! escaped with a backslash and newlines are literal, which is exactly what
//! systemd's parser takes back unchanged. The direct supervisor reads the
//! same file with [`parse`], the inverse of [`render`].

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("env file line {line}: {why}")]
pub struct EnvFileError {
    line: usize,
    why: &'static str,
}

pub fn render(vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (k, v) in vars {
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            if matches!(c, '"' | '\\' | '`' | '$') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push_str("\"\n");
    }
    out
}

pub fn parse(text: &str) -> Result<BTreeMap<String, String>, EnvFileError> {
    let mut vars = BTreeMap::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let start = line;
        let err = |why| EnvFileError { line: start, why };
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            if c == '\n' {
                return Err(err("expected KEY=\"value\""));
            }
            key.push(c);
        }
        if !slipway_core::config::is_valid_key(&key) {
            return Err(err("invalid key"));
        }
        if chars.next() != Some('"') {
            return Err(err("value must be double-quoted"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                None => return Err(err("unterminated value")),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some(c @ ('"' | '\\' | '`' | '$')) => value.push(c),
                    _ => return Err(err("unknown escape")),
                },
                Some(c) => {
                    if c == '\n' {
                        line += 1;
                    }
                    value.push(c);
                }
            }
        }
        if chars.next() != Some('\n') {
            return Err(err("expected a newline after the value"));
        }
        line += 1;
        vars.insert(key, value);
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tricky_values_round_trip() {
        let vars: BTreeMap<String, String> = [
            ("PLAIN", "hello"),
            ("EMPTY", ""),
            ("QUOTES", r#"say "hi" and 'bye'"#),
            ("DOLLAR", "$HOME ${PATH} `id` \\n"),
            ("MULTI", "line one\nline two\n"),
            ("HASH", "# not a comment = still value"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let text = render(&vars);
        assert_eq!(parse(&text).unwrap(), vars);
        assert!(
            text.contains(r#"DOLLAR="\$HOME \${PATH} \`id\` \\n""#),
            "{text}"
        );
    }

    #[test]
    fn anything_else_is_refused_with_its_line() {
        for (text, line) in [
            ("A=1\n", 1),
            ("A=\"1\"\nB=\"x\\n\"\n", 2),
            ("1A=\"x\"\n", 1),
            ("A=\"open\n", 1),
            ("A=\"x\" B\n", 1),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
        }
    }
}
