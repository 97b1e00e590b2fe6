//! The agent's output: one logfmt line per step (`at=download release=r7
//! bytes=… ms=…`), so the SSM output and the deploy record read as a story,
//! and a last line that sums it up.
//!
//! Values are data from manifests and errors, so every value is quoted
//! when it needs to be and control characters are escaped: one step is
//! always one line.
//!
//! Tests stop the agent at a named step with `SLIPWAY_AGENT_PAUSE_AT=<step>`:
//! the agent prints `at=pause step=<step>` and sleeps until it is killed,
//! so a test can SIGKILL it at exactly that point.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Instant;

/// The environment variable that pauses the agent at a step (tests only).
pub const PAUSE_ENV: &str = "SLIPWAY_AGENT_PAUSE_AT";

pub struct Story {
    started: Instant,
    pause_at: Option<String>,
}

/// One line in the making: `at=<step>` then `key=value` pairs.
pub struct Line {
    text: String,
}

impl Line {
    pub fn kv(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        let value = value.to_string();
        self.text.push(' ');
        self.text.push_str(key);
        self.text.push('=');
        push_value(&mut self.text, &value);
        self
    }

    pub fn opt(self, key: &str, value: Option<impl std::fmt::Display>) -> Self {
        match value {
            Some(v) => self.kv(key, v),
            None => self,
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

fn push_value(out: &mut String, value: &str) {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if plain {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Default for Story {
    fn default() -> Self {
        Self::new()
    }
}

impl Story {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            pause_at: std::env::var(PAUSE_ENV).ok().filter(|s| !s.is_empty()),
        }
    }

    pub fn line(&self, at: &str) -> Line {
        Line {
            text: format!("at={at}"),
        }
    }

    /// Prints a line on stdout, at once (SSM and tests read it live).
    pub fn say(&self, line: Line) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", line.text);
        let _ = out.flush();
    }

    /// Milliseconds since the agent started.
    pub fn elapsed_ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }

    /// Stops here forever if a test asked to pause at `step`.
    pub fn checkpoint(&self, step: &str) {
        if self.pause_at.as_deref() == Some(step) {
            self.say(self.line("pause").kv("step", step));
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_only_when_they_need_it_and_stay_on_one_line() {
        let story = Story::new();
        let line = story
            .line("failed")
            .kv("release", "r7")
            .kv("reason", "health check: \"503\"\nthen=exit")
            .kv("empty", "");
        assert_eq!(
            line.text(),
            r#"at=failed release=r7 reason="health check: \"503\"\nthen=exit" empty="""#
        );
    }
}
