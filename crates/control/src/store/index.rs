//! Newest-first indexes: empty objects whose names sort the newest record
//! first (`slipway_core::keys` builds them), so a page of releases or of
//! deploys is one listing with a delimiter and one read per record, however
//! long the history is. Entries are written before their record (a reader
//! skips an entry whose record is missing); adding one twice is adding it
//! once. An environment from before the index is indexed once, on first
//! use, from a listing of its records.

use futures::{StreamExt, TryStreamExt, stream};

use slipway_core::objects::{ObjectError, S3Objects, Write};

/// Adds one entry.
pub async fn add(objects: &S3Objects, key: &str) -> Result<(), ObjectError> {
    objects
        .put(key, Vec::new(), "application/octet-stream", Write::Always)
        .await
        .map(|_| ())
}

/// Adds every entry of `keys` (an environment indexed for the first time),
/// a few at a time.
pub async fn add_all(objects: &S3Objects, keys: &[String]) -> Result<(), ObjectError> {
    stream::iter(keys.iter().cloned())
        .map(|key| async move { add(objects, &key).await })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

/// The first `max` entry keys under `prefix` (newest first) after the
/// entry `after`: one request.
pub async fn newest(
    objects: &S3Objects,
    prefix: &str,
    after: Option<&str>,
    max: usize,
) -> Result<Vec<String>, ObjectError> {
    objects.list_page(prefix, after, max).await
}
