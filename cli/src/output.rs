//! Human output: aligned tables, ages, durations.

use chrono::{DateTime, Utc};

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = vec![line(headers.to_vec())];
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

/// "3s", "4m", "2h", "5d" since `t`.
pub fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A JSON string field, or "-".
pub fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// An optional value in words, or "-".
pub fn opt(value: Option<impl std::fmt::Display>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The age of an optional time, or "-".
pub fn age_opt(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| age(t, Utc::now()))
}

/// A value as its API spells it (a status, a strategy), or "-".
pub fn word(value: &impl serde::Serialize) -> String {
    text(&serde_json::to_value(value).unwrap_or_default())
}

pub fn seconds(d: std::time::Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let t = table(
            &["ID", "STATE"],
            &[
                vec!["i-1".into(), "InService".into()],
                vec!["i-123456".into(), "Standby".into()],
            ],
        );
        assert_eq!(t, "ID        STATE\ni-1       InService\ni-123456  Standby");
    }

    #[test]
    fn ages_are_short() {
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::seconds(5), now), "5s");
        assert_eq!(age(now - chrono::Duration::minutes(90), now), "1h");
        assert_eq!(age(now + chrono::Duration::seconds(5), now), "0s");
    }
}
