//! Backups in object storage: `s3://` (AWS S3), `oss://` (Aliyun OSS through its
//! S3-compatible API, virtual-host style as OSS requires) and `gs://` (Google Cloud Storage),
//! all through the `object_store` crate.
//!
//! - Writes are create-only (`If-None-Match: *` on S3 and OSS, `x-goog-if-generation-match: 0`
//!   on GCS): a backup is never overwritten, even by a clock that repeats a name.
//! - Credentials come from the environment only, never from the configuration (which is
//!   itself backed up): S3 reads the standard `AWS_*` chain (keys, session token, web
//!   identity, instance metadata); OSS reads `OSS_ACCESS_KEY_ID`, `OSS_ACCESS_KEY_SECRET` and
//!   optionally `OSS_SESSION_TOKEN`; GCS reads `GOOGLE_APPLICATION_CREDENTIALS` /
//!   `GOOGLE_SERVICE_ACCOUNT` (or the metadata server).
//! - Archives are single puts (no multipart: the GCS emulator cannot do XML multipart, and a
//!   node's archive is far below the 5 GB single-put limit).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

use crate::config::RemoteTarget;

/// Which service a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    S3,
    Oss,
    Gcs,
}

/// A parsed `scheme://bucket/prefix[/object]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    pub service: Service,
    pub bucket: String,
    /// The key below the bucket, without leading or trailing `/` (may be empty).
    pub key: String,
}

/// Why a remote URL or target is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RemoteError {
    #[error("{0}: not an object storage URL (s3://, oss:// or gs://bucket/prefix)")]
    Scheme(String),
    #[error("{0}: no bucket")]
    NoBucket(String),
    #[error("{0}: oss:// needs `endpoint` (the region endpoint, e.g. https://oss-cn-hangzhou.aliyuncs.com) and `region`")]
    OssNeedsEndpoint(String),
    #[error("{0}: the endpoint must be an http:// or https:// URL")]
    Endpoint(String),
    #[error("{0}: no dvn-{1}-*.tar.gz archive there")]
    NoArchive(String, String),
}

impl RemoteUrl {
    pub fn parse(url: &str) -> Result<Self, RemoteError> {
        let (service, rest) = if let Some(rest) = url.strip_prefix("s3://") {
            (Service::S3, rest)
        } else if let Some(rest) = url.strip_prefix("oss://") {
            (Service::Oss, rest)
        } else if let Some(rest) = url.strip_prefix("gs://") {
            (Service::Gcs, rest)
        } else {
            return Err(RemoteError::Scheme(url.into()));
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(RemoteError::NoBucket(url.into()));
        }
        Ok(Self {
            service,
            bucket: bucket.into(),
            key: key.trim_matches('/').into(),
        })
    }

    /// Whether `url` names object storage at all (else it is a local path).
    pub fn is_remote(url: &str) -> bool {
        ["s3://", "oss://", "gs://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
    }

    fn scheme(&self) -> &'static str {
        match self.service {
            Service::S3 => "s3",
            Service::Oss => "oss",
            Service::Gcs => "gs",
        }
    }

    fn object(&self, name: &str) -> ObjectPath {
        match self.key.is_empty() {
            true => ObjectPath::from(name),
            false => ObjectPath::from(format!("{}/{name}", self.key)),
        }
    }

    fn display_object(&self, location: &ObjectPath) -> String {
        format!("{}://{}/{location}", self.scheme(), self.bucket)
    }
}

/// Problems with a configured target, for the configuration validator.
pub fn check_target(target: &RemoteTarget) -> Result<(), RemoteError> {
    let url = RemoteUrl::parse(&target.url)?;
    if let Some(endpoint) = &target.endpoint {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(RemoteError::Endpoint(target.url.clone()));
        }
    }
    if url.service == Service::Oss && (target.endpoint.is_none() || target.region.is_none()) {
        return Err(RemoteError::OssNeedsEndpoint(target.url.clone()));
    }
    Ok(())
}

/// `https://oss-cn-hangzhou.aliyuncs.com` → `https://BUCKET.oss-cn-hangzhou.aliyuncs.com`:
/// OSS refuses path-style requests (`SecondLevelDomainForbidden`).
fn virtual_host(endpoint: &str, bucket: &str) -> Result<String, RemoteError> {
    let (scheme, host) = endpoint
        .split_once("://")
        .ok_or_else(|| RemoteError::Endpoint(endpoint.into()))?;
    Ok(format!(
        "{scheme}://{bucket}.{}",
        host.trim_end_matches('/')
    ))
}

/// Bounded retries: a backup that cannot be written is reported within a minute, not after
/// the crate's default three.
fn client_options(endpoint: Option<&str>) -> (ClientOptions, RetryConfig) {
    let options = ClientOptions::new()
        .with_allow_http(endpoint.is_some_and(|e| e.starts_with("http://")))
        .with_timeout(Duration::from_secs(120))
        .with_connect_timeout(Duration::from_secs(10));
    let retry = RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(60),
        ..RetryConfig::default()
    };
    (options, retry)
}

/// An object store client for `url`, with `target`'s endpoint and region when given.
pub fn open(
    url: &RemoteUrl,
    target: Option<&RemoteTarget>,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let endpoint = target.and_then(|t| t.endpoint.as_deref());
    let region = target.and_then(|t| t.region.as_deref());
    let (options, retry) = client_options(endpoint);
    let store: Arc<dyn ObjectStore> = match url.service {
        Service::S3 => {
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(&url.bucket)
                .with_client_options(options)
                .with_retry(retry);
            if let Some(endpoint) = endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = region {
                builder = builder.with_region(region);
            }
            Arc::new(builder.build()?)
        }
        Service::Oss => {
            let (Some(endpoint), Some(region)) = (endpoint, region) else {
                return Err(RemoteError::OssNeedsEndpoint(format!("oss://{}", url.bucket)).into());
            };
            let var = |name: &str| {
                std::env::var(name).map_err(|_| {
                    anyhow::anyhow!("{name} is not set (OSS credentials come from the environment)")
                })
            };
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(&url.bucket)
                .with_endpoint(virtual_host(endpoint, &url.bucket)?)
                .with_virtual_hosted_style_request(true)
                .with_region(region)
                .with_access_key_id(var("OSS_ACCESS_KEY_ID")?)
                .with_secret_access_key(var("OSS_ACCESS_KEY_SECRET")?)
                // OSS implements neither DeleteObjects nor (reliably) aws-chunked bodies.
                .with_disable_bulk_delete(true)
                .with_client_options(options)
                .with_retry(retry);
            if let Ok(token) = std::env::var("OSS_SESSION_TOKEN") {
                builder = builder.with_token(token);
            }
            Arc::new(builder.build()?)
        }
        Service::Gcs => {
            let mut builder = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&url.bucket)
                .with_client_options(options)
                .with_retry(retry);
            if let Some(endpoint) = endpoint {
                builder = builder.with_base_url(endpoint);
            }
            Arc::new(builder.build()?)
        }
    };
    Ok(store)
}

/// The configured target whose URL names the same service and bucket as `url`.
pub fn target_for<'a>(targets: &'a [RemoteTarget], url: &RemoteUrl) -> Option<&'a RemoteTarget> {
    targets.iter().find(|t| {
        RemoteUrl::parse(&t.url)
            .is_ok_and(|parsed| parsed.service == url.service && parsed.bucket == url.bucket)
    })
}

/// Uploads `archive` below `target`'s prefix, create-only; the object's URL.
pub async fn upload(target: &RemoteTarget, archive: &Path) -> anyhow::Result<String> {
    let url = RemoteUrl::parse(&target.url)?;
    let store = open(&url, Some(target))?;
    let name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow::anyhow!("{}: no file name", archive.display()))?;
    let location = url.object(name);
    let bytes = tokio::fs::read(archive).await?;
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let shown = url.display_object(&location);
    store
        .put_opts(&location, PutPayload::from(bytes), options)
        .await
        .map_err(|e| match e {
            object_store::Error::AlreadyExists { .. } => {
                anyhow::anyhow!("{shown} exists: backups are never overwritten")
            }
            e => anyhow::anyhow!("upload to {shown}: {e}"),
        })?;
    Ok(shown)
}

/// This node's archives below `url`'s prefix, oldest first (the names carry the UTC time).
async fn archives(
    store: &dyn ObjectStore,
    url: &RemoteUrl,
    node: &str,
) -> anyhow::Result<Vec<object_store::ObjectMeta>> {
    let prefix = (!url.key.is_empty()).then(|| ObjectPath::from(url.key.as_str()));
    let wanted = format!("dvn-{node}-");
    let mut found: Vec<object_store::ObjectMeta> = store
        .list(prefix.as_ref())
        .try_filter(|meta| {
            let name = meta.location.filename().unwrap_or_default();
            futures::future::ready(name.starts_with(&wanted) && name.ends_with(".tar.gz"))
        })
        .try_collect()
        .await
        .map_err(|e| {
            anyhow::anyhow!("listing {}://{}/{}: {e}", url.scheme(), url.bucket, url.key)
        })?;
    found.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
    Ok(found)
}

/// Deletes this node's archives in `target` last modified more than `days` ago; how many.
pub async fn prune(target: &RemoteTarget, node: &str, days: u64) -> anyhow::Result<usize> {
    let url = RemoteUrl::parse(&target.url)?;
    let store = open(&url, Some(target))?;
    let cutoff = chrono::Utc::now()
        - chrono::Duration::days(i64::try_from(days).unwrap_or(i64::MAX / 86_400_000));
    let mut removed = 0;
    for meta in archives(store.as_ref(), &url, node).await? {
        if meta.last_modified < cutoff {
            store.delete(&meta.location).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Downloads the archive `url` names into `into`: an object ending in `.tar.gz`, or else the
/// newest of `node`'s archives below that prefix. The local file and the object's URL.
pub async fn download(
    url: &str,
    targets: &[RemoteTarget],
    node: &str,
    into: &Path,
) -> anyhow::Result<(PathBuf, String)> {
    let parsed = RemoteUrl::parse(url)?;
    let store = open(&parsed, target_for(targets, &parsed))?;
    let location = if parsed.key.ends_with(".tar.gz") {
        ObjectPath::from(parsed.key.as_str())
    } else {
        archives(store.as_ref(), &parsed, node)
            .await?
            .pop()
            .map(|meta| meta.location)
            .ok_or_else(|| RemoteError::NoArchive(url.into(), node.into()))?
    };
    let shown = parsed.display_object(&location);
    let bytes = store
        .get(&location)
        .await
        .map_err(|e| anyhow::anyhow!("download of {shown}: {e}"))?
        .bytes()
        .await
        .map_err(|e| anyhow::anyhow!("download of {shown} broke off: {e}"))?;
    let name = location.filename().unwrap_or("backup.tar.gz").to_string();
    let file = into.join(name);
    tokio::fs::write(&file, &bytes).await?;
    Ok((file, shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_service_bucket_and_key() {
        let u = RemoteUrl::parse("s3://b/daily/").unwrap();
        assert_eq!(
            (u.service, u.bucket.as_str(), u.key.as_str()),
            (Service::S3, "b", "daily")
        );
        let u = RemoteUrl::parse("oss://b").unwrap();
        assert_eq!((u.service, u.key.as_str()), (Service::Oss, ""));
        let u = RemoteUrl::parse("gs://b/x/dvn-aws-1.tar.gz").unwrap();
        assert_eq!(u.object("n").as_ref(), "x/dvn-aws-1.tar.gz/n");
        assert!(matches!(
            RemoteUrl::parse("ftp://b/x"),
            Err(RemoteError::Scheme(_))
        ));
        assert!(matches!(
            RemoteUrl::parse("s3:///x"),
            Err(RemoteError::NoBucket(_))
        ));
    }

    #[test]
    fn oss_targets_need_endpoint_and_region_and_go_virtual_host() {
        let mut t = RemoteTarget {
            url: "oss://bk/p".into(),
            ..RemoteTarget::default()
        };
        assert!(matches!(
            check_target(&t),
            Err(RemoteError::OssNeedsEndpoint(_))
        ));
        t.endpoint = Some("https://oss-cn-hangzhou.aliyuncs.com/".into());
        t.region = Some("cn-hangzhou".into());
        assert!(check_target(&t).is_ok());
        assert_eq!(
            virtual_host("https://oss-cn-hangzhou.aliyuncs.com/", "bk").unwrap(),
            "https://bk.oss-cn-hangzhou.aliyuncs.com"
        );
        t.endpoint = Some("oss-cn-hangzhou.aliyuncs.com".into());
        assert!(matches!(check_target(&t), Err(RemoteError::Endpoint(_))));
    }
}
