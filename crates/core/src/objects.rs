//! The release bucket, one method per S3 operation.
//!
//! Hides pagination, maps "not there" to `None` and a failed precondition
//! (`If-None-Match` / `If-Match`) to [`ObjectError::Precondition`], so the
//! release store above reasons about conditional writes, not HTTP codes.

use std::collections::HashMap;
use std::time::Duration;

use crate::on_first_use::OnFirstUse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("precondition failed on {key}")]
    Precondition { key: String },
    #[error("S3 {op} {key}: {source}")]
    Aws {
        op: &'static str,
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// How a write is guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write<'a> {
    Always,
    /// `If-None-Match: *`: only if no object has this key.
    IfAbsent,
    /// `If-Match: <etag>`: only if the object is still this version.
    IfMatch(&'a str),
}

/// The object tag the bucket's lifecycle rules select on.
pub const LIFECYCLE_TAG: &str = "slipway-lifecycle";

#[derive(Debug, Clone)]
pub struct Object {
    pub body: Bytes,
    pub etag: String,
}

#[derive(Debug, Clone)]
pub struct Head {
    pub etag: String,
    pub size: u64,
    pub metadata: HashMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct PresignedPut {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

fn status<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

fn aws<E: std::error::Error + Send + Sync + 'static>(
    op: &'static str,
    key: &str,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> ObjectError {
    ObjectError::Aws {
        op,
        key: key.to_owned(),
        source: Box::new(err),
    }
}

/// 412 is a failed precondition; S3 answers 409 when a concurrent
/// conditional write to the same key won the race.
fn is_precondition(code: Option<u16>) -> bool {
    matches!(code, Some(412 | 409))
}

#[derive(Clone, Debug)]
pub struct S3Objects {
    client: OnFirstUse<aws_sdk_s3::Client>,
    bucket: String,
}

impl S3Objects {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client: OnFirstUse::ready(client),
            bucket: bucket.into(),
        }
    }

    /// The bucket through [`s3_client`], built when first read or written.
    pub fn on_first_use(config: &aws_config::SdkConfig, bucket: impl Into<String>) -> Self {
        Self {
            client: OnFirstUse::new(config, s3_client),
            bucket: bucket.into(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub async fn get(&self, key: &str) -> Result<Option<Object>, ObjectError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let etag = out.e_tag.clone().unwrap_or_default();
                let body = out.body.collect().await.map_err(|e| ObjectError::Aws {
                    op: "GetObject",
                    key: key.to_owned(),
                    source: Box::new(e),
                })?;
                Ok(Some(Object {
                    body: body.into_bytes(),
                    etag,
                }))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(aws("GetObject", key, e)),
        }
    }

    /// The body as a stream; with `etag`, only if the object is still that
    /// version.
    pub async fn open(
        &self,
        key: &str,
        etag: Option<&str>,
    ) -> Result<Option<ByteStream>, ObjectError> {
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_if_match(etag.map(str::to_owned));
        match req.send().await {
            Ok(out) => Ok(Some(out.body)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) if is_precondition(status(&e)) => Err(ObjectError::Precondition {
                key: key.to_owned(),
            }),
            Err(e) => Err(aws("GetObject", key, e)),
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<Head>, ObjectError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(Head {
                etag: out.e_tag.unwrap_or_default(),
                size: out.content_length.unwrap_or(0).max(0) as u64,
                metadata: out.metadata.unwrap_or_default(),
            })),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(aws("HeadObject", key, e)),
        }
    }

    /// Writes `body`; returns the new ETag.
    pub async fn put(
        &self,
        key: &str,
        body: impl Into<Bytes>,
        content_type: &str,
        guard: Write<'_>,
    ) -> Result<String, ObjectError> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body.into()));
        req = match guard {
            Write::Always => req,
            Write::IfAbsent => req.if_none_match("*"),
            Write::IfMatch(etag) => req.if_match(etag),
        };
        match req.send().await {
            Ok(out) => Ok(out.e_tag.unwrap_or_default()),
            Err(e) if guard != Write::Always && is_precondition(status(&e)) => {
                Err(ObjectError::Precondition {
                    key: key.to_owned(),
                })
            }
            Err(e) => Err(aws("PutObject", key, e)),
        }
    }

    /// A server-side copy of version `etag` of `from` (when given).
    /// Copies `from` (if still at `etag`) to `to`, without the source's
    /// tags; with `lifecycle`, the copy is tagged
    /// `slipway-lifecycle=<lifecycle>` for the bucket's lifecycle rules.
    pub async fn copy(
        &self,
        from: &str,
        etag: Option<&str>,
        to: &str,
        lifecycle: Option<&str>,
    ) -> Result<(), ObjectError> {
        let source = format!(
            "{}/{}",
            self.bucket,
            percent_encoding::utf8_percent_encode(from, COPY_SOURCE)
        );
        let mut req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(source)
            .set_copy_source_if_match(etag.map(str::to_owned));
        // Never the source's tags: an upload's `slipway-lifecycle=upload`
        // would have its release's source expire with the upload after
        // seven days (and copying tags needs s3:GetObjectTagging and
        // s3:PutObjectTagging, which only the lifecycle tags are granted).
        req = req.tagging_directive(aws_sdk_s3::types::TaggingDirective::Replace);
        if let Some(lifecycle) = lifecycle {
            req = req.tagging(format!("{LIFECYCLE_TAG}={lifecycle}"));
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_precondition(status(&e)) => Err(ObjectError::Precondition {
                key: from.to_owned(),
            }),
            Err(e) => Err(aws("CopyObject", from, e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws("DeleteObject", key, e))
    }

    /// Deletes `key` only while it is still the version `etag`: of a
    /// reader and a writer racing, the delete never removes what the
    /// other just wrote. A missing object or another version is
    /// [`ObjectError::Precondition`].
    pub async fn delete_if_match(&self, key: &str, etag: &str) -> Result<(), ObjectError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .if_match(etag)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_precondition(status(&e)) || status(&e) == Some(404) => {
                Err(ObjectError::Precondition {
                    key: key.to_owned(),
                })
            }
            Err(e) => Err(aws("DeleteObject", key, e)),
        }
    }

    /// The "folders" directly under `prefix` (`a/` for `a/b/c`), each with
    /// its trailing slash: ListObjectsV2 with a `/` delimiter, every page.
    pub async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, ObjectError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut folders = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws("ListObjectsV2", prefix, e))?;
            folders.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix.clone()),
            );
        }
        Ok(folders)
    }

    /// The first `max` (at most 1,000) object keys directly under `prefix`
    /// after `start_after`, in S3's order: one ListObjectsV2 request with a
    /// `/` delimiter, so nothing in a subfolder is walked.
    pub async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Vec<String>, ObjectError> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .delimiter("/")
            .set_start_after(start_after.map(str::to_owned))
            .max_keys(max.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| aws("ListObjectsV2", prefix, e))?;
        Ok(page
            .contents()
            .iter()
            .filter_map(|o| o.key.clone())
            .collect())
    }

    /// Every object key under `prefix` (ListObjectsV2, every page).
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, ObjectError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws("ListObjectsV2", prefix, e))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key.clone()));
        }
        Ok(keys)
    }

    /// A URL that lets its holder PUT exactly this key, with exactly these
    /// metadata headers, until it expires. The object is tagged
    /// `slipway-lifecycle=upload`, so the bucket's lifecycle rule removes an
    /// upload nobody processed (S3 lifecycle filters by prefix cannot
    /// match `<app>/<env>/uploads/`).
    pub async fn presign_put(
        &self,
        key: &str,
        metadata: &[(String, String)],
        expires_in: Duration,
    ) -> Result<PresignedPut, ObjectError> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .tagging(format!("{LIFECYCLE_TAG}=upload"));
        for (k, v) in metadata {
            req = req.metadata(k, v);
        }
        let config = PresigningConfig::expires_in(expires_in).map_err(|e| ObjectError::Aws {
            op: "presign PutObject",
            key: key.to_owned(),
            source: Box::new(e),
        })?;
        let signed = req
            .presigned(config)
            .await
            .map_err(|e| aws("presign PutObject", key, e))?;
        Ok(PresignedPut {
            url: signed.uri().to_owned(),
            headers: signed
                .headers()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        })
    }
}

/// CopySource is `bucket/key` with the key URL-encoded, `/` kept.
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How every Slipway binary's AWS clients retry: the SDK's standard mode
/// (exponential back-off with full jitter, a retry quota that successes
/// refill) for S3's `503 SlowDown`, throttling, 5xx and timeouts, with
/// more attempts than its default three, so a burst of throttling delays a
/// step and does not fail it (at a 20% error rate, eight attempts fail
/// one call in 400,000). A call that keeps failing fails its step.
pub fn retry_config() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard()
        .with_max_attempts(8)
        .with_initial_backoff(std::time::Duration::from_millis(200))
        .with_max_backoff(std::time::Duration::from_secs(10))
}

/// The AWS configuration every Slipway binary loads: the environment's
/// (region, credentials, `AWS_ENDPOINT_URL`), with [`retry_config`] and
/// [`OnFirstRequest`]'s HTTPS client.
pub async fn load_aws_config() -> aws_config::SdkConfig {
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(retry_config())
        .http_client(OnFirstRequest(https_client()));
    // Lambda hands a function its role's credentials in the environment,
    // where the default chain looks first; taken from there directly, the
    // chain's other providers (an STS client among them) are not built at
    // every cold start. Anywhere else (a profile, an instance role), the
    // default chain.
    let in_environment = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        .iter()
        .all(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    let loader = if in_environment {
        loader.credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        )
    } else {
        loader
    };
    // The same for the region: `AWS_REGION` is where the default chain
    // looks first (Lambda always sets it), and taken from there the chain
    // behind it (a profile reader and an IMDS client) is never built:
    // that was a tenth of a function's start.
    let loader = match std::env::var("AWS_REGION") {
        Ok(region) if !region.is_empty() => loader.region(aws_config::Region::new(region)),
        _ => loader,
    };
    loader.load().await
}

/// The HTTPS client the SDK's `default-https-client` makes (hyper 1,
/// rustls with aws-lc, proxies from the environment), one for every
/// service, so one connection pool.
fn https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    use aws_smithy_http_client::{Builder, ConnectorBuilder, proxy::ProxyConfig};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// An HTTP client that gets ready on its first request, not when each SDK
/// client is built. The SDK's own loads the system's certificate store as
/// every client is built (its `validate_base_client_config`), which made
/// that most of a function's cold start (`scripts/bench-lambda`); a request
/// loads it, once, when it is needed.
#[derive(Debug)]
struct OnFirstRequest(aws_smithy_runtime_api::client::http::SharedHttpClient);

impl aws_smithy_runtime_api::client::http::HttpClient for OnFirstRequest {
    fn http_connector(
        &self,
        settings: &aws_smithy_runtime_api::client::http::HttpConnectorSettings,
        components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
    ) -> aws_smithy_runtime_api::client::http::SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

/// The S3 client every Slipway binary uses. When an endpoint is
/// overridden (the emulator), S3 uses path-style addressing because the
/// emulator has no per-bucket hostnames.
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(config.endpoint_url().is_some())
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

#[cfg(test)]
mod tests {
    //! Error paths the emulator cannot produce: S3's 409 for a lost
    //! conditional-write race, server errors, and multi-page listings.

    use super::*;
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
    use aws_sdk_s3::types::CommonPrefix;
    use aws_sdk_s3::types::error::NoSuchKey;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn objects(client: aws_sdk_s3::Client) -> S3Objects {
        S3Objects::new(client, "bucket")
    }

    #[tokio::test]
    async fn a_409_on_a_conditional_write_is_a_lost_race_not_a_failure() {
        let rule = mock!(aws_sdk_s3::Client::put_object)
            .sequence()
            .http_status(409, None)
            .build();
        let s3 = objects(mock_client!(aws_sdk_s3, [&rule]));
        let got = s3.put("k", "v", "text/plain", Write::IfAbsent).await;
        assert!(
            matches!(got, Err(ObjectError::Precondition { ref key }) if key == "k"),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_412_on_if_match_is_a_precondition_failure() {
        let rule = mock!(aws_sdk_s3::Client::put_object)
            .sequence()
            .http_status(412, None)
            .build();
        let s3 = objects(mock_client!(aws_sdk_s3, [&rule]));
        let got = s3
            .put("k", "v", "text/plain", Write::IfMatch("\"e\""))
            .await;
        assert!(
            matches!(got, Err(ObjectError::Precondition { .. })),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_409_on_an_unconditional_write_is_an_error() {
        let rule = mock!(aws_sdk_s3::Client::put_object)
            .sequence()
            .http_status(409, None)
            .build();
        let s3 = objects(mock_client!(aws_sdk_s3, [&rule]));
        let got = s3.put("k", "v", "text/plain", Write::Always).await;
        assert!(
            matches!(
                got,
                Err(ObjectError::Aws {
                    op: "PutObject",
                    ..
                })
            ),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_object_is_none_and_a_server_error_is_an_error() {
        let missing = mock!(aws_sdk_s3::Client::get_object)
            .then_error(|| GetObjectError::NoSuchKey(NoSuchKey::builder().build()));
        let s3 = objects(mock_client!(aws_sdk_s3, [&missing]));
        assert!(s3.get("k").await.unwrap().is_none());

        let broken = mock!(aws_sdk_s3::Client::get_object)
            .sequence()
            .http_status(500, None)
            .repeatedly()
            .build();
        let s3 = objects(mock_client!(aws_sdk_s3, [&broken]));
        assert!(matches!(
            s3.get("k").await,
            Err(ObjectError::Aws {
                op: "GetObject",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn folders_are_collected_across_every_page() {
        let page = |prefixes: &[&str], next: Option<&str>| {
            ListObjectsV2Output::builder()
                .set_common_prefixes(Some(
                    prefixes
                        .iter()
                        .map(|p| CommonPrefix::builder().prefix(*p).build())
                        .collect(),
                ))
                .is_truncated(next.is_some())
                .set_next_continuation_token(next.map(str::to_owned))
                .build()
        };
        let first = mock!(aws_sdk_s3::Client::list_objects_v2)
            .match_requests(|r| r.continuation_token().is_none())
            .then_output(move || page(&["a/b/releases/r1/", "a/b/releases/r2/"], Some("t2")));
        let second = mock!(aws_sdk_s3::Client::list_objects_v2)
            .match_requests(|r| r.continuation_token() == Some("t2"))
            .then_output(move || page(&["a/b/releases/r10/"], None));
        let s3 = objects(mock_client!(
            aws_sdk_s3,
            RuleMode::MatchAny,
            [&first, &second]
        ));
        let folders = s3.list_folders("a/b/releases/").await.unwrap();
        assert_eq!(
            folders,
            ["a/b/releases/r1/", "a/b/releases/r2/", "a/b/releases/r10/"]
        );
        assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn a_page_is_one_request_with_a_delimiter_that_lists_no_subfolder() {
        let only = mock!(aws_sdk_s3::Client::list_objects_v2)
            .match_requests(|r| {
                r.delimiter() == Some("/")
                    && r.start_after() == Some("a/index/2")
                    && r.max_keys() == Some(3)
                    && r.continuation_token().is_none()
            })
            .then_output(|| {
                ListObjectsV2Output::builder()
                    .contents(
                        aws_sdk_s3::types::Object::builder()
                            .key("a/index/3")
                            .build(),
                    )
                    .contents(
                        aws_sdk_s3::types::Object::builder()
                            .key("a/index/4")
                            .build(),
                    )
                    .common_prefixes(CommonPrefix::builder().prefix("a/index/4/").build())
                    .is_truncated(true)
                    .next_continuation_token("more")
                    .build()
            });
        let s3 = objects(mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&only]));
        let keys = s3
            .list_page("a/index/", Some("a/index/2"), 3)
            .await
            .unwrap();
        assert_eq!(keys, ["a/index/3", "a/index/4"]);
        assert_eq!(only.num_calls(), 1, "a truncated page is not followed");
    }
}
