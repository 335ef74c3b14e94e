//! Lake URL → object store.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use crate::url::LakeUrl;

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The local directory could not be created or used.
    #[error("cannot use directory {path}: {reason}")]
    Local {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// The S3 settings are incomplete or wrong.
    #[error("cannot use {url}: {source}")]
    S3 {
        /// The lake URL.
        url: String,
        /// What object_store said.
        #[source]
        source: object_store::Error,
    },
}

/// The S3 client settings for `bucket`, from the environment: `AWS_REGION` (or
/// `AWS_DEFAULT_REGION`), `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
/// `AWS_SESSION_TOKEN` (or web identity, the container or the instance metadata
/// credentials), `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` for another server
/// (plain `http://` is allowed for such an endpoint). Requests are retried on
/// connection failures, throttling (429/503) and other 5xx answers with exponential
/// backoff for up to a minute.
pub fn s3_settings(bucket: &str) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let endpoint = [AmazonS3ConfigKey::S3Endpoint, AmazonS3ConfigKey::Endpoint]
        .into_iter()
        .find_map(|key| builder.get_config_value(&key));
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(&endpoint);
        if endpoint.starts_with("http://") {
            builder = builder.with_allow_http(true);
        }
    }
    builder.with_retry(RetryConfig {
        // Jittered (each wait is drawn between the first and twice the last), so the
        // count, not the cap, is what carries a request through an outage of seconds.
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 25,
        retry_timeout: Duration::from_secs(60),
    })
}

/// Opens the store of `url` and the root path of the lake in it. A local directory is
/// created when `create`, and must exist otherwise; it is canonicalised, so the
/// returned display name is absolute.
pub fn open_store(
    url: &LakeUrl,
    create: bool,
) -> Result<(Arc<dyn ObjectStore>, Path, String), StoreError> {
    match url {
        LakeUrl::Local(dir) => {
            let local = |reason: String| StoreError::Local {
                path: dir.display().to_string(),
                reason,
            };
            if create {
                std::fs::create_dir_all(dir).map_err(|e| local(e.to_string()))?;
            } else if !dir.is_dir() {
                return Err(local("no such directory".into()));
            }
            let canonical = std::fs::canonicalize(dir).map_err(|e| local(e.to_string()))?;
            if !canonical.is_dir() {
                return Err(local("not a directory".into()));
            }
            let store =
                LocalFileSystem::new_with_prefix(&canonical).map_err(|e| local(e.to_string()))?;
            Ok((
                Arc::new(store),
                Path::default(),
                canonical.display().to_string(),
            ))
        }
        LakeUrl::S3 { bucket, prefix } => {
            let store = s3_settings(bucket)
                .build()
                .map_err(|source| StoreError::S3 {
                    url: url.to_string(),
                    source,
                })?;
            Ok((
                Arc::new(store),
                Path::from(prefix.as_str()),
                url.to_string(),
            ))
        }
    }
}
