//! Sources: where records come from, with positions a checkpoint can store.
//!
//! A [`Source`] hands over batches of raw records of one partition at a time, in
//! arrival order, each with its offset. The processor, not the source system, is the
//! keeper of positions: a source reports where each partition stands
//! ([`Source::positions`], one typed [`Position`] per partition) and can be reopened
//! there, which is what exactly-once recovery and moving a partition between
//! processes are built on.
//!
//! Most sources read a fixed set of partitions ([`Source::partitions`]). A source whose
//! partitions come and go while it runs — a Kafka consumer group — is given a
//! [`PartitionHandler`] ([`Source::attach`]) and tells the pipeline through it, waiting
//! for the answer: an assigned partition's state is restored before its first record
//! is read, and a revoked one is checkpointed and released before the source lets it go.

mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kinesis")]
pub mod kinesis;
mod log;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PositionStyle {
    /// The offset is a 1-based line number: `17`.
    Line,
    /// `partition:offset`: `3:1042`.
    PartitionOffset,
    /// `topic/partition/offset`, Kafka's usual spelling: `orders/3/1042`.
    TopicPartitionOffset(String),
}

/// Where a partition of a source stands: the next record to hand over. One type for
/// every source, serialised into checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// A file: the next line's number (1-based) and the byte it starts at.
    File {
        /// Line number.
        line: u64,
        /// Byte offset.
        byte: u64,
    },
    /// The stream log: the next record's offset, and where its frame is.
    Log {
        /// Offset in the partition.
        offset: u64,
        /// Base offset of the segment holding it.
        segment: u64,
        /// Byte of its frame in that segment.
        byte: u64,
    },
    /// A Kafka partition: the next offset.
    Kafka {
        /// The offset.
        offset: i64,
    },
    /// A Kinesis shard: after which record to go on.
    Kinesis {
        /// The sequence number of the last record handed over; `None` before the first.
        after: Option<SequenceNumber>,
        /// Records handed over from the shard so far (the next record's offset in the
        /// `position` column).
        count: u64,
        /// Before the first record: start with the records that arrived at or after this
        /// time (ms since the epoch; a new pipeline started `--start latest`), or, when
        /// `None`, with the shard's oldest record.
        since_ms: Option<i64>,
    },
}

/// A Kinesis sequence number: a decimal of up to 76 digits (the service's are 56), kept
/// in two integers so that positions stay `Copy`; written as its decimal string.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct SequenceNumber {
    hi: u128,
    lo: u128,
}

/// Digits kept in [`SequenceNumber::lo`].
const SEQ_LO_DIGITS: usize = 38;

impl std::str::FromStr for SequenceNumber {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a sequence number (up to 76 decimal digits)");
        if s.is_empty() || s.len() > 2 * SEQ_LO_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let split = s.len().saturating_sub(SEQ_LO_DIGITS);
        let hi = if split == 0 {
            0
        } else {
            s[..split].parse().map_err(|_| bad())?
        };
        let lo = s[split..].parse().map_err(|_| bad())?;
        Ok(SequenceNumber { hi, lo })
    }
}

impl From<SequenceNumber> for String {
    fn from(seq: SequenceNumber) -> String {
        seq.to_string()
    }
}

impl TryFrom<String> for SequenceNumber {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl std::fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.hi == 0 {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}{:038}", self.hi, self.lo)
        }
    }
}

impl Position {
    /// Whether this position is at or past `end`, a position of the same partition
    /// (Kafka offsets; positions of different kinds never are).
    pub fn is_at_or_past(&self, end: &Position) -> bool {
        match (self, end) {
            (Position::Kafka { offset }, Position::Kafka { offset: end }) => offset >= end,
            (Position::Kinesis { count, .. }, Position::Kinesis { count: end, .. }) => count >= end,
            (Position::Log { offset, .. }, Position::Log { offset: end, .. }) => offset >= end,
            (Position::File { byte, .. }, Position::File { byte: end, .. }) => byte >= end,
            _ => false,
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::File { line, .. } => write!(f, "line {line}"),
            Position::Log { offset, .. } => write!(f, "offset {offset}"),
            Position::Kafka { offset } => write!(f, "offset {offset}"),
            Position::Kinesis {
                after: Some(seq),
                count,
                ..
            } => write!(f, "record {count}, after sequence number {seq}"),
            Position::Kinesis { count, .. } => write!(f, "record {count}, at the shard's start"),
        }
    }
}

/// Positions by partition.
pub type Positions = BTreeMap<u32, Position>;

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
    /// A broker, or the consumer-group protocol, failed.
    #[error("{source_url}: {reason}")]
    Broker {
        /// The source.
        source_url: String,
        /// What failed.
        reason: String,
    },
    /// The pipeline could not take over or give up a partition (its checkpoint store
    /// failed, or its state could not be restored).
    #[error("{0}")]
    Handover(String),
    /// Building the raw rows of a batch failed (a bug: the raw schemas are fixed).
    #[error("building raw rows: {0}")]
    Decode(String),
}

/// What a source whose partitions change while it runs calls, from its reading thread,
/// when they do. Each call blocks until the pipeline has done what it asks.
pub trait PartitionHandler: Send + Sync {
    /// These partitions are now this process's, each with where the source would start
    /// it if no checkpoint holds it (its settings: the earliest offset, say, resolved
    /// to a number): the pipeline takes over their state (from the newest committed
    /// checkpoint holding them, whoever wrote it). Returns where to read each one from.
    fn assigned(&self, defaults: &Positions) -> Result<Positions, SourceError>;

    /// Partitions `children` continue `parents`, which are read to their end (a Kinesis
    /// split or merge): the pipeline holds each child it does not hold yet, with the
    /// parents' lowest watermark (a child's records follow its parents', key by key),
    /// and answers where to read each one from (`children`: where the source would
    /// start them).
    fn continued(&self, parents: &[u32], children: &Positions) -> Result<Positions, SourceError> {
        let _ = parents;
        self.assigned(children)
    }

    /// These partitions are about to be taken away: the pipeline applies every batch
    /// handed over before, commits a checkpoint holding them, and releases them.
    fn revoked(&self, partitions: &[u32]) -> Result<(), SourceError>;

    /// The positions the newest committed checkpoint holds, once after each commit
    /// (`None` when there was no commit since the last call): a source may report them
    /// to its system (Kafka: commit them to the group, so that lag tools see progress).
    fn committed(&self) -> Option<Positions>;

    /// A bounded run has read these partitions (everything it holds) to their end
    /// (`ends`: every partition's end): the pipeline commits a checkpoint holding them,
    /// hands them over (so another process never has to fence this one for them) and
    /// counts them as done — `true`; the source stops reading them. `false`: not yet,
    /// their rider windows wait for credits from partitions read elsewhere; the source
    /// keeps them and asks again a little later.
    fn finished(&self, partitions: &[u32], ends: &Positions) -> Result<bool, SourceError>;

    /// Whether every partition in `ends` has been read up to its end and handed over
    /// by whichever process last held it: how a bounded run that holds no partition
    /// (an idle group member) knows that the group is done.
    fn done_elsewhere(&self, _ends: &Positions) -> bool {
        false
    }
}

/// A source of raw records.
pub trait Source: Send {
    /// The source's URL, stamped on raw and dead-letter rows.
    fn name(&self) -> &str;

    /// The partitions it reads from the start, all of them for a file or a log; none
    /// for a source whose partitions are assigned while it runs (see
    /// [`attach`](Source::attach)).
    fn partitions(&self) -> Vec<u32>;

    /// Every partition of the source, whoever reads it: [`partitions`](Source::partitions)
    /// unless partitions are assigned while it runs.
    fn all_partitions(&self) -> Vec<u32> {
        self.partitions()
    }

    /// How record positions are labelled.
    fn position_style(&self) -> PositionStyle;

    /// Gives a source whose partitions change while it runs the handler it must call
    /// when they do. Called once, before the first poll; sources with fixed
    /// partitions ignore it.
    fn attach(&mut self, _handler: Arc<dyn PartitionHandler>) {}

    /// Fills `batch` (cleared first) with the next records of one partition. Sources
    /// take turns over partitions in a fixed order, so that reading a bounded input
    /// twice interleaves its partitions the same way.
    fn poll(&mut self, batch: &mut SourceBatch) -> Result<Poll, SourceError>;

    /// The status of every partition it reads, by partition number.
    fn statuses(&self) -> BTreeMap<u32, PartitionStatus>;

    /// The position of each partition it reads: where the next record to be handed
    /// over is. Reopening the source there resumes without loss or repetition.
    fn positions(&self) -> Positions;

    /// How far its slowest partition was behind the newest record at its last read
    /// (Kinesis' `MillisBehindLatest`), for progress displays; `None` when unknown.
    fn behind_ms(&self) -> Option<i64> {
        None
    }

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
    /// Consumer-group settings of a `kafka://` source.
    #[cfg(feature = "kafka")]
    pub kafka: kafka::KafkaSettings,
    /// Settings of a `kinesis://` source.
    #[cfg(feature = "kinesis")]
    pub kinesis: kinesis::KinesisSettings,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            until_end: false,
            idle_timeout: Duration::from_secs(30),
            batch_bytes: 1 << 20,
            #[cfg(feature = "kafka")]
            kafka: kafka::KafkaSettings::default(),
            #[cfg(feature = "kinesis")]
            kinesis: kinesis::KinesisSettings::default(),
        }
    }
}

/// How a source over `endpoint` labels positions (known before it is opened).
pub fn position_style(endpoint: &Endpoint) -> PositionStyle {
    match endpoint {
        Endpoint::File(_) | Endpoint::Stdio => PositionStyle::Line,
        Endpoint::Log(_) | Endpoint::Kinesis { .. } => PositionStyle::PartitionOffset,
        Endpoint::Kafka { topic, .. } => PositionStyle::TopicPartitionOffset(topic.clone()),
    }
}

/// Opens a source for an endpoint, at the given saved positions (from the start when
/// `None`).
pub fn open_source(
    endpoint: &Endpoint,
    opts: &SourceOptions,
    positions: Option<&Positions>,
) -> Result<Box<dyn Source>, SourceError> {
    match endpoint {
        Endpoint::File(_) | Endpoint::Stdio => {
            Ok(Box::new(FileSource::open(endpoint, opts, positions)?))
        }
        Endpoint::Log(dir) => Ok(Box::new(LogSource::open(dir, opts, positions)?)),
        #[cfg(feature = "kafka")]
        Endpoint::Kafka { brokers, topic } => Ok(Box::new(kafka::KafkaSource::open(
            brokers,
            topic,
            &opts.kafka,
            opts,
        )?)),
        #[cfg(not(feature = "kafka"))]
        Endpoint::Kafka { .. } => Err(SourceError::Unsupported(format!(
            "{endpoint}: this build has no Kafka support (feature `kafka`)"
        ))),
        #[cfg(feature = "kinesis")]
        Endpoint::Kinesis { stream } => Ok(Box::new(kinesis::KinesisSource::open(
            stream,
            &opts.kinesis,
            opts,
            positions,
        )?)),
        #[cfg(not(feature = "kinesis"))]
        Endpoint::Kinesis { .. } => Err(SourceError::Unsupported(format!(
            "{endpoint}: this build has no Kinesis support (feature `kinesis`)"
        ))),
    }
}
