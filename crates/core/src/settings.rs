//! Typed settings of the functions, read once from the environment at cold
//! start. A missing or malformed setting stops the function with a message
//! that names the variable.

use crate::archive::Limits;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} must be a whole number of bytes, got {value:?}")]
    NotANumber { name: &'static str, value: String },
}

/// Settings of the release function (and of the local control plane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSettings {
    pub bucket: String,
    pub limits: Limits,
    pub users_param: Option<String>,
    pub users_inline: Option<String>,
}

impl ReleaseSettings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        Ok(Self {
            bucket: get("SLIPWAY_BUCKET").ok_or(SettingsError::Missing("SLIPWAY_BUCKET"))?,
            limits: limits_from_lookup(get)?,
            users_param: get("SLIPWAY_USERS_PARAM"),
            users_inline: get("SLIPWAY_USERS"),
        })
    }
}

/// Archive limits from `SLIPWAY_MAX_ARCHIVE_BYTES`,
/// `SLIPWAY_MAX_EXPANDED_BYTES` and `SLIPWAY_MAX_ARCHIVE_ENTRIES`, each
/// defaulting to [`Limits::default`]'s. The release function and the agent
/// read the same names.
pub fn limits_from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Limits, SettingsError> {
    let number = |name: &'static str, default: u64| -> Result<u64, SettingsError> {
        match get(name).filter(|v| !v.trim().is_empty()) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| SettingsError::NotANumber { name, value: v }),
        }
    };
    let defaults = Limits::default();
    Ok(Limits {
        max_archive_bytes: number("SLIPWAY_MAX_ARCHIVE_BYTES", defaults.max_archive_bytes)?,
        max_expanded_bytes: number("SLIPWAY_MAX_EXPANDED_BYTES", defaults.max_expanded_bytes)?,
        max_entries: number("SLIPWAY_MAX_ARCHIVE_ENTRIES", defaults.max_entries)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn settings_default_everything_but_the_bucket() {
        let s = ReleaseSettings::from_lookup(lookup(&[
            ("SLIPWAY_BUCKET", "b"),
            ("SLIPWAY_USERS_PARAM", "/p"),
        ]))
        .unwrap();
        assert_eq!(s.bucket, "b");
        assert_eq!(s.limits, Limits::default());
        assert_eq!(s.users_param.as_deref(), Some("/p"));
    }

    #[test]
    fn a_missing_bucket_or_a_bad_limit_names_the_variable() {
        assert_eq!(
            ReleaseSettings::from_lookup(lookup(&[])),
            Err(SettingsError::Missing("SLIPWAY_BUCKET"))
        );
        let err = ReleaseSettings::from_lookup(lookup(&[
            ("SLIPWAY_BUCKET", "b"),
            ("SLIPWAY_MAX_ARCHIVE_BYTES", "1GB"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("SLIPWAY_MAX_ARCHIVE_BYTES"));
    }
}
