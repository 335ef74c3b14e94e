//! The rushhour stream processor: the record path of CONTRACT §2 and the operators
//! behind the curated tables of §4, with the seams later releases plug into.
//!
//! - [`source`]: the [`Source`](source::Source) trait and the `file:` and `log:` sources;
//!   positions are the processor's to keep.
//! - [`raw`]: decoding and validation, with the raw and dead-letter rows built beside
//!   them on the reader's thread; stateless.
//! - [`pipeline`]: de-duplication, per-partition watermarks, lateness; pure.
//! - [`state`]: the snapshot format (a section per partition).
//! - [`operator`], [`store`], [`rider`]: the windowed operators and the delivery join;
//!   pure, driven by accepted events and watermarks.
//! - [`sink`]: the [`LakeSink`](sink::LakeSink) trait — stage, then publish.
//! - [`checkpoint`]: checkpoints and the commit protocol that makes recovery exact.
//! - [`lease`]: one writer per pipeline, fenced by lease generations.
//! - [`group`]: several processes on one pipeline (a consumer group), each partition
//!   claimed, handed over with its state, and its old holder fenced.
//! - [`runtime`]: drives a source through the pipeline into a sink, in epochs.

pub mod checkpoint;
pub mod dedup;
pub mod group;
pub mod lease;
pub mod operator;
pub mod output;
pub mod partials;
pub mod pipeline;
pub mod raw;
pub mod rider;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod state;
pub mod store;

pub use checkpoint::{CheckpointStore, Checkpointer, Manifest, RecoveryPoint, Restored};
pub use lease::{Holder, Lease, LeaseError, LeaseKeeper, LeaseOptions};
pub use output::TableBatch;
pub use pipeline::{Counters, Pipeline, PipelineConfig};
pub use runtime::{Progress, RunOptions, RunReport, RuntimeError, Start, failpoint, recover, run};
pub use sink::{BoxError, LakeSink, StagedFile};
