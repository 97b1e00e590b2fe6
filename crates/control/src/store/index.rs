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
/// entry `after`: one request per 1,000 entries.
pub async fn newest(
    objects: &S3Objects,
    prefix: &str,
    after: Option<&str>,
    max: usize,
) -> Result<Vec<String>, ObjectError> {
    let mut keys: Vec<String> = Vec::new();
    let mut after = after.map(str::to_owned);
    while keys.len() < max {
        let want = (max - keys.len()).min(PAGE);
        let page = objects.list_page(prefix, after.as_deref(), want).await?;
        let done = page.len() < want;
        keys.extend(page);
        if done {
            break;
        }
        after = keys.last().cloned();
    }
    Ok(keys)
}

/// The most keys one listing answers.
const PAGE: usize = 1000;

#[cfg(test)]
mod tests {
    use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
    use aws_sdk_s3::types::Object;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;

    fn page(from: usize, to: usize) -> ListObjectsV2Output {
        let mut out = ListObjectsV2Output::builder();
        for n in from..to {
            out = out.contents(Object::builder().key(format!("i/{n:05}")).build());
        }
        out.build()
    }

    #[tokio::test]
    async fn more_than_a_thousand_entries_are_read_a_page_at_a_time_after_the_last() {
        let first = mock!(aws_sdk_s3::Client::list_objects_v2)
            .match_requests(|r| r.start_after().is_none() && r.max_keys() == Some(1000))
            .then_output(|| page(0, 1000));
        let second = mock!(aws_sdk_s3::Client::list_objects_v2)
            .match_requests(|r| r.start_after() == Some("i/00999") && r.max_keys() == Some(200))
            .then_output(|| page(1000, 1100));
        let client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&first, &second]);
        let objects = S3Objects::new(client, "bucket");
        let keys = newest(&objects, "i/", None, 1200).await.unwrap();
        assert_eq!(keys.len(), 1100, "every entry there is, and no more pages");
        assert_eq!(keys[1000], "i/01000");
        assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
    }
}
