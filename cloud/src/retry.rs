//! Retrying whole store operations.
//!
//! `object_store` already retries each HTTP request (connection refused, throttling,
//! 5xx) for up to a minute; what reaches us after that is an error of the
//! operation. The idempotent operations of the lake and the checkpoint store (get,
//! head, list, delete, copy, the upload of a complete file) are retried as a whole,
//! with jittered exponential backoff from `backon`, so that a store that comes back
//! after a longer outage costs a pause, not the run.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

/// Whether an error may go away by itself: a failed request (connection, timeout,
/// server error), as opposed to an answer (not found, exists, precondition, denied).
pub fn is_transient(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
    )
}

/// Runs `op` until it succeeds, fails with an answer, or has failed transiently
/// five times more (with jittered backoff from 0.5 s up to 10 s between attempts):
/// with object_store's own retries (a minute each), an outage of about six minutes is
/// ridden out, and a wrong endpoint fails within that; faults object_store does not
/// retry (a connection dropped after the request was sent) are ridden out for about
/// 15 s.
pub async fn retrying<T, F, Fut>(what: &str, op: F) -> object_store::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = object_store::Result<T>>,
{
    op.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(5)
            .with_jitter(),
    )
    .when(is_transient)
    .notify(|e, wait| tracing::warn!(error = %e, ?wait, "{what} failed; retrying"))
    .await
}
