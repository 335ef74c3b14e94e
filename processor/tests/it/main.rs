//! Integration tests of the processor: one binary (linking is slow on two cores).

mod golden;
mod stream_equals_batch;
mod util;
