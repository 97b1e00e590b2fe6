//! Where releases come from: the release bucket on S3 (or the emulator,
//! through `AWS_ENDPOINT_URL`), or the same layout on disk (`file://`).
//!
//! A release URL names exactly one release of one environment:
//! `s3://<bucket>/<app>/<env>/releases/r<N>` or
//! `file:///<dir>/<app>/<env>/releases/r<N>`. It is parsed into validated
//! names before anything is fetched, so a hostile URL cannot point the agent
//! anywhere else.

use std::io;
use std::path::{Component, Path, PathBuf};

use aws_sdk_s3::primitives::ByteStream;
use slipway_core::names::{EnvRef, ReleaseId};
use slipway_core::objects::{ObjectError, S3Objects};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "{shown:?} is not a release URL: expected s3://BUCKET/APP/ENV/releases/rN or file:///DIR/APP/ENV/releases/rN ({why})"
    )]
    BadUrl { shown: String, why: String },
    #[error("{what} is missing from the release store")]
    Missing { what: String },
    #[error(transparent)]
    S3(#[from] ObjectError),
    #[error("could not read {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// The bucket or directory that holds the release store's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    S3 { bucket: String },
    Dir(PathBuf),
}

impl Location {
    /// A bucket name, or a `file://` URL of a directory.
    pub fn parse(raw: &str) -> Result<Self, SourceError> {
        let bad = |why: &str| SourceError::BadUrl {
            shown: raw.chars().take(200).collect(),
            why: why.into(),
        };
        if let Some(path) = raw.strip_prefix("file://") {
            return Ok(Self::Dir(clean_dir(path).map_err(bad)?));
        }
        let bucket = raw
            .strip_prefix("s3://")
            .unwrap_or(raw)
            .trim_end_matches('/');
        if !valid_bucket(bucket) {
            return Err(bad("not a valid bucket name"));
        }
        Ok(Self::S3 {
            bucket: bucket.to_owned(),
        })
    }

    /// The URL of one release here.
    pub fn release_url(&self, env: &EnvRef, id: ReleaseId) -> String {
        match self {
            Self::S3 { bucket } => slipway_core::keys::release_url(bucket, env, id),
            Self::Dir(dir) => format!(
                "file://{}/{}",
                dir.display(),
                slipway_core::keys::release_key(env, id, "").trim_end_matches('/')
            ),
        }
    }
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && !b.starts_with(['-', '.'])
        && !b.ends_with(['-', '.'])
}

fn clean_dir(path: &str) -> Result<PathBuf, &'static str> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err("a file:// URL needs an absolute path");
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err("the path may not contain . or ..");
    }
    if path.contains(['\0', '%', '?', '#']) {
        return Err("the path may not contain NUL, %, ? or #");
    }
    Ok(p.to_path_buf())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseUrl {
    pub location: Location,
    pub env: EnvRef,
    pub id: ReleaseId,
}

impl ReleaseUrl {
    pub fn parse(raw: &str) -> Result<Self, SourceError> {
        let bad = |why: &str| SourceError::BadUrl {
            shown: raw.chars().take(200).collect(),
            why: why.into(),
        };
        let trimmed = raw.trim_end_matches('/');
        let (location, rest) = if let Some(rest) = trimmed.strip_prefix("s3://") {
            let (bucket, rest) = rest.split_once('/').ok_or_else(|| bad("no key"))?;
            (Location::parse(bucket)?, rest.to_owned())
        } else if trimmed.starts_with("file://") {
            // The last four segments are APP/ENV/releases/rN; the rest is the directory.
            let segments: Vec<&str> = trimmed.rsplitn(5, '/').collect();
            if segments.len() != 5 {
                return Err(bad("too few path segments"));
            }
            let dir = segments[4];
            let dir = if dir == "file://" { "file:///" } else { dir };
            let location = Location::parse(dir)?;
            let rest = format!(
                "{}/{}/{}/{}",
                segments[3], segments[2], segments[1], segments[0]
            );
            (location, rest)
        } else {
            return Err(bad("unknown scheme"));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let [app, env, releases, id] = parts.as_slice() else {
            return Err(bad("expected APP/ENV/releases/rN after the bucket"));
        };
        if *releases != "releases" {
            return Err(bad("expected APP/ENV/releases/rN after the bucket"));
        }
        let env = EnvRef::parse(app, env).map_err(|e| bad(&e.to_string()))?;
        let id = ReleaseId::parse(id).map_err(|e| bad(&e.to_string()))?;
        Ok(Self { location, env, id })
    }
}

impl std::fmt::Display for ReleaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.location.release_url(&self.env, self.id))
    }
}

/// A body to read: a local file (read on a blocking thread as it is) or an
/// S3 stream.
pub enum Body {
    File(std::fs::File),
    Stream(ByteStream),
}

/// The release store, read-only, as the agent sees it.
pub enum Store {
    S3(S3Objects),
    Dir(PathBuf),
}

impl Store {
    pub fn new(location: &Location, s3: impl FnOnce() -> aws_sdk_s3::Client) -> Self {
        match location {
            Location::S3 { bucket } => Self::S3(S3Objects::new(s3(), bucket.clone())),
            Location::Dir(dir) => Self::Dir(dir.clone()),
        }
    }

    fn io(key: &str, source: io::Error) -> SourceError {
        SourceError::Io {
            what: key.to_owned(),
            source,
        }
    }

    /// A small object's bytes, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, SourceError> {
        match self {
            Self::S3(objects) => Ok(objects.get(key).await?.map(|o| o.body.to_vec())),
            Self::Dir(dir) => match tokio::fs::read(dir.join(key)).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Self::io(key, e)),
            },
        }
    }

    pub async fn open(&self, key: &str) -> Result<Body, SourceError> {
        let missing = || SourceError::Missing {
            what: key.to_owned(),
        };
        match self {
            Self::S3(objects) => objects
                .open(key, None)
                .await?
                .map(Body::Stream)
                .ok_or_else(missing),
            Self::Dir(dir) => match std::fs::File::open(dir.join(key)) {
                Ok(f) => Ok(Body::File(f)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing()),
                Err(e) => Err(Self::io(key, e)),
            },
        }
    }

    /// Keys of the objects directly under `prefix` (which ends with `/`).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, SourceError> {
        match self {
            Self::S3(objects) => Ok(objects.list_keys(prefix).await?),
            Self::Dir(dir) => {
                let mut keys = Vec::new();
                let mut entries = match tokio::fs::read_dir(dir.join(prefix)).await {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(keys),
                    Err(e) => return Err(Self::io(prefix, e)),
                };
                while let Some(entry) = entries
                    .next_entry()
                    .await
                    .map_err(|e| Self::io(prefix, e))?
                {
                    if let Some(name) = entry.file_name().to_str() {
                        keys.push(format!("{prefix}{name}"));
                    }
                }
                Ok(keys)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_and_file_urls_parse_into_names() {
        let u = ReleaseUrl::parse("s3://my-bucket/hello/prod/releases/r12").unwrap();
        assert_eq!(
            u.location,
            Location::S3 {
                bucket: "my-bucket".into()
            }
        );
        assert_eq!(u.env.qualified(), "hello-prod");
        assert_eq!(u.id.to_string(), "r12");
        assert_eq!(u.to_string(), "s3://my-bucket/hello/prod/releases/r12");

        let u = ReleaseUrl::parse("file:///var/store/hello/prod/releases/r3/").unwrap();
        assert_eq!(u.location, Location::Dir("/var/store".into()));
        assert_eq!(u.to_string(), "file:///var/store/hello/prod/releases/r3");

        let u = ReleaseUrl::parse("file:///hello/prod/releases/r3").unwrap();
        assert_eq!(u.location, Location::Dir("/".into()));
    }

    #[test]
    fn hostile_or_malformed_urls_are_refused() {
        for raw in [
            "",
            "http://x/hello/prod/releases/r1",
            "s3://my-bucket",
            "s3://My_Bucket/hello/prod/releases/r1",
            "s3://my-bucket/hello/prod/releases/r1/source.tar.gz",
            "s3://my-bucket/hello/prod/release/r1",
            "s3://my-bucket/../prod/releases/r1",
            "s3://my-bucket/hello/prod/releases/r01",
            "s3://my-bucket/Hello/prod/releases/r1",
            "file://relative/hello/prod/releases/r1",
            "file:///a/../b/hello/prod/releases/r1",
            "file:///a/%2e%2e/hello/prod/releases/r1",
            "file://hello/prod/releases/r1",
        ] {
            let err = ReleaseUrl::parse(raw);
            assert!(
                matches!(err, Err(SourceError::BadUrl { .. })),
                "{raw}: {err:?}"
            );
        }
    }

    #[test]
    fn a_location_is_a_bucket_name_or_a_directory_url() {
        assert_eq!(
            Location::parse("releases-1").unwrap(),
            Location::S3 {
                bucket: "releases-1".into()
            }
        );
        assert_eq!(
            Location::parse("file:///tmp/store").unwrap(),
            Location::Dir("/tmp/store".into())
        );
        assert!(Location::parse("a").is_err());
        assert!(Location::parse("file://x").is_err());
    }
}
