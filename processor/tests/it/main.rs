//! Integration tests of the processor: one binary (linking is slow on two cores).

#![allow(
    clippy::unwrap_used,
    clippy::type_complexity,
    clippy::panic,
    missing_docs
)]

mod golden;
mod runtime;
mod stream_equals_batch;
mod util;
