//! The I/O edge of rushhour: everything that talks to a network service or an object
//! store starts here.
//!
//! - [`Io`]: the one async runtime all blocking code hands its I/O to. The processor's
//!   threads (reader, pipeline, Parquet encoder) are plain threads; they call
//!   [`Io::block_on`], and the runtime's own workers keep driving what was spawned in
//!   the meantime — an epoch's uploads and their parts proceed in parallel.
//! - [`LakeUrl`]: the one parser of lake (and checkpoint directory) URLs, used by every
//!   command that takes `--lake` or `--checkpoint`.
//! - [`open_store`]: a lake URL → an `object_store` (a local directory, or S3 configured
//!   from the standard AWS environment) and the root prefix inside it.
//! - [`aws_config`]: the AWS SDK configuration (region, credentials, endpoints) from the
//!   same environment, on the SDK's HTTPS client with rustls and ring.

mod io;
mod retry;
mod store;
mod url;

pub use io::Io;
pub use retry::{is_transient, retrying};
pub use store::{StoreError, open_store, s3_settings};
pub use url::{BadLakeUrl, LakeUrl};

/// What to check when an AWS error reads like `text` (a whole error chain): the usual
/// mistakes of the settings, which the clients' own messages do not name.
pub fn hint(text: &str) -> Option<&'static str> {
    if text.contains("169.254.169.254")
        || text.contains("MissingSigningRegion")
        || text.contains("no credentials")
    {
        Some(
            "no AWS credentials or region found: set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY \
             and AWS_REGION (for the local servers: eval \"$(infra/local-stack.sh start s3 kinesis)\")",
        )
    } else if text.contains("Connection refused") || text.contains("dispatch failure") {
        Some(
            "the service did not answer: check AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL_KINESIS \
             (or AWS_ENDPOINT_URL) and that the server is running",
        )
    } else if text.contains("NoSuchBucket") {
        Some("the bucket does not exist: rushhour does not create buckets; create it first")
    } else {
        None
    }
}

/// An AWS SDK error as its code and message, or, when the service gave no answer, the
/// whole chain of causes (a refused connection, missing credentials).
pub fn describe<E>(e: &E) -> String
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error,
{
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => format!(
            "no answer from the service: {}",
            aws_sdk_kinesis::error::DisplayErrorContext(e)
        ),
    }
}

/// The AWS SDK configuration from the environment (`AWS_REGION`, credentials, profiles,
/// `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`), on rustls with ring. Call it from
/// inside [`Io::block_on`] (it may read instance metadata).
pub async fn aws_config() -> aws_config::SdkConfig {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await
}
