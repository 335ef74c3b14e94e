//! Sources: where records come from, with positions a checkpoint can store.
//!
//! A [`Source`] hands over batches of raw records of one partition at a time, in
//! arrival order, each with its offset. The processor, not the source system, is the
//! keeper of positions: a source reports where each partition stands
//! ([`Source::positions`]) and can be reopened there, which is what exactly-once
//! recovery and moving a partition between processes are built on.

mod file;
mod log;

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

pub use file::FileSource;
pub use log::LogSource;
use rushhour_schemas::Endpoint;

/// Raw records of one partition. Payloads are ranges of `data`.
#[derive(Debug, Default)]
pub struct SourceBatch {
    /// The partition the records came from.
    pub partition: u32,
    /// Bytes holding the payloads.
    pub data: Vec<u8>,
    /// (payload range in `data`, offset) of each record, in arrival order.
    pub records: Vec<(Range<usize>, u64)>,
}

impl SourceBatch {
    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.records.clear();
    }

    /// The payload of the `i`-th record.
    pub fn payload(&self, i: usize) -> &[u8] {
        &self.data[self.records[i].0.clone()]
    }
}

/// What a poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// The batch holds records.
    Records,
    /// Nothing new right now; poll again later.
    Pending,
    /// A bounded source is exhausted: every partition has ended.
    Ended,
}

/// The state of a partition, for the effective watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PartitionStatus {
    /// Records may come.
    Active,
    /// Nothing arrived for the idle timeout; does not hold the watermark back.
    Idle,
    /// A bounded partition that has ended; does not hold the watermark back.
    Finished,
}

/// How a source labels the position of a record in the `position` columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionStyle {
    /// The offset is a 1-based line number: `17`.
    Line,
    /// `partition:offset`: `3:1042`.
    PartitionOffset,
}

/// Errors of sources.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The stream log failed.
    #[error(transparent)]
    Log(#[from] rushhour_streamlog::LogError),
    /// The endpoint is not a source this build can read.
    #[error("{0}")]
    Unsupported(String),
    /// A saved position does not fit this source.
    #[error("cannot resume {source_url}: {reason}")]
    BadPosition {
        /// The source.
        source_url: String,
        /// Why.
        reason: String,
    },
}

/// A source of raw records.
pub trait Source: Send {
    /// The source's URL, stamped on raw and dead-letter rows.
    fn name(&self) -> &str;

    /// How many partitions it has (fixed for the life of the source).
    fn partitions(&self) -> u32;

    /// How record positions are labelled.
    fn position_style(&self) -> PositionStyle;

    /// Fills `batch` (cleared first) with the next records of one partition. Sources
    /// take turns over partitions in a fixed order, so that reading a bounded input
    /// twice interleaves its partitions the same way.
    fn poll(&mut self, batch: &mut SourceBatch) -> Result<Poll, SourceError>;

    /// The status of every partition, by partition number.
    fn statuses(&self) -> Vec<PartitionStatus>;

    /// Opaque, serialisable position of each partition: where the next record to be
    /// handed over is. Reopening the source there resumes without loss or repetition.
    fn positions(&self) -> Vec<String>;

    /// Which partition's turn is next, so a resumed source interleaves its partitions
    /// exactly as an uninterrupted one would.
    fn cursor(&self) -> u32 {
        0
    }

    /// Restores [`cursor`](Source::cursor).
    fn set_cursor(&mut self, _cursor: u32) {}
}

/// How to read.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Stop at the end of the input (`--until-end`) instead of following it.
    pub until_end: bool,
    /// A partition with nothing new for this long stops holding the watermark back.
    pub idle_timeout: Duration,
    /// Upper bound on the bytes of one batch.
    pub batch_bytes: usize,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            until_end: false,
            idle_timeout: Duration::from_secs(30),
            batch_bytes: 1 << 20,
        }
    }
}

/// Opens a source for an endpoint, at the given saved positions (from the start when
/// `None`).
pub fn open_source(
    endpoint: &Endpoint,
    opts: &SourceOptions,
    positions: Option<&[String]>,
) -> Result<Box<dyn Source>, SourceError> {
    match endpoint {
        Endpoint::File(_) | Endpoint::Stdio => {
            Ok(Box::new(FileSource::open(endpoint, opts, positions)?))
        }
        Endpoint::Log(dir) => Ok(Box::new(LogSource::open(dir, opts, positions)?)),
        Endpoint::Kafka { .. } | Endpoint::Kinesis { .. } => {
            Err(SourceError::Unsupported(format!(
                "{endpoint}: Kafka and Kinesis sources arrive in a later release; use file:PATH or log:DIR"
            )))
        }
    }
}
