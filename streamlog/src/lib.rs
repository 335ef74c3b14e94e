//! The embedded stream log behind `log:DIR`: Kafka's shape without a broker.
//!
//! A log is a directory of partitions; each partition is an append-only sequence of
//! records split into segment files. A record's *offset* is its index in its
//! partition. One process appends (an exclusive lock guards the directory) while any
//! number of others read, including while it is written (tailing).
//!
//! ```text
//! DIR/streamlog.json                      {"format":"rushhour-streamlog","version":1,"partitions":4}
//! DIR/p0003/00000000000000120000.seg      segment of partition 3 whose first offset is 120000
//! ```
//!
//! A segment is a sequence of frames `len: u32 LE | crc32(payload): u32 LE | payload`.
//! A frame that is cut short or whose checksum does not match at the end of the last
//! segment is a torn append (a crash mid-write, or a write still in progress): readers
//! stop before it and wait, and the next writer truncates it away before appending.
//! A bad frame *followed by more data* is corruption and is reported, never read as data.
//!
//! Positions ([`LogPosition`]) name the next record to read as (offset, segment,
//! byte), so a checkpoint can resume a reader without scanning.

mod murmur;
mod reader;
mod writer;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use murmur::{murmur2, partition_for_key};
pub use reader::{LogReader, PartitionReader, ReadBatch, ReadStatus};
pub use writer::{LogWriter, WriterOptions};

/// Name of the metadata file at the root of a log.
pub const META_FILE: &str = "streamlog.json";
const FORMAT: &str = "rushhour-streamlog";
const VERSION: u32 = 1;
/// Bytes of a frame header.
pub const FRAME_HEADER: usize = 8;
/// The largest record accepted, a guard against reading garbage lengths as sizes.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// Errors of the stream log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O error on a file of the log.
    #[error("stream log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The directory is not a stream log, or one of another format or version.
    #[error("{path} is not a usable stream log: {reason}")]
    NotALog {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another process holds the writer lock.
    #[error("stream log {0} is being written by another process")]
    Locked(PathBuf),
    /// A bad frame with more data after it.
    #[error("stream log {path} is corrupt at byte {byte}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where the bad frame starts.
        byte: u64,
        /// What is wrong.
        reason: String,
    },
    /// A partition number outside the log.
    #[error("partition {partition} does not exist (the log has {partitions})")]
    NoSuchPartition {
        /// The asked partition.
        partition: u32,
        /// How many there are.
        partitions: u32,
    },
    /// A record larger than [`MAX_RECORD_BYTES`].
    #[error("record of {0} bytes is larger than the limit of {MAX_RECORD_BYTES}")]
    RecordTooLarge(usize),
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { path, source }
    }
}

/// Result of stream-log operations.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// Where a partition reader is: the next record's offset, the segment it is in (its
/// base offset) and the byte within that segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogPosition {
    /// Offset of the next record to read.
    pub offset: u64,
    /// Base offset of the segment holding it.
    pub segment: u64,
    /// Byte position of its frame in that segment.
    pub byte: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: String,
    version: u32,
    partitions: u32,
}

/// Reads a log's metadata: its number of partitions.
pub fn partitions(dir: &Path) -> Result<u32> {
    let path = dir.join(META_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            LogError::NotALog {
                path: dir.to_owned(),
                reason: format!(
                    "no {META_FILE} (create the log with `rushhour generate --to log:DIR`)"
                ),
            }
        } else {
            LogError::Io {
                path: path.clone(),
                source: e,
            }
        }
    })?;
    let meta: Meta = serde_json::from_str(&text).map_err(|e| LogError::NotALog {
        path: dir.to_owned(),
        reason: format!("unreadable {META_FILE}: {e}"),
    })?;
    if meta.format != FORMAT || meta.version != VERSION {
        return Err(LogError::NotALog {
            path: dir.to_owned(),
            reason: format!(
                "format {} version {} (this build reads {FORMAT} version {VERSION})",
                meta.format, meta.version
            ),
        });
    }
    if meta.partitions == 0 {
        return Err(LogError::NotALog {
            path: dir.to_owned(),
            reason: "zero partitions".into(),
        });
    }
    Ok(meta.partitions)
}

fn partition_dir(dir: &Path, partition: u32) -> PathBuf {
    dir.join(format!("p{partition:04}"))
}

fn segment_path(dir: &Path, partition: u32, base: u64) -> PathBuf {
    partition_dir(dir, partition).join(format!("{base:020}.seg"))
}

/// Base offsets of a partition's segments, ascending.
fn segments(dir: &Path, partition: u32) -> Result<Vec<u64>> {
    let pdir = partition_dir(dir, partition);
    let entries = match std::fs::read_dir(&pdir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(LogError::Io {
                path: pdir,
                source: e,
            });
        }
    };
    let mut bases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(LogError::io(&pdir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = name
            .strip_suffix(".seg")
            .and_then(|b| b.parse::<u64>().ok())
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// What the frame at the start of `buf` is.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// A whole, checked record: its payload range within `buf` and the frame's length.
    Record {
        payload: std::ops::Range<usize>,
        len: usize,
    },
    /// Not enough bytes for the whole frame (yet).
    Incomplete,
    /// The header or checksum is wrong.
    Bad(String),
}

fn parse_frame(buf: &[u8]) -> Frame {
    if buf.len() < FRAME_HEADER {
        return Frame::Incomplete;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > MAX_RECORD_BYTES {
        return Frame::Bad(format!("frame length {len} exceeds the limit"));
    }
    // Writers never append empty records, so a zero length is a zero-filled tail.
    if len == 0 {
        return Frame::Bad("empty frame".into());
    }
    if buf.len() < FRAME_HEADER + len {
        return Frame::Incomplete;
    }
    let payload = FRAME_HEADER..FRAME_HEADER + len;
    if crc32fast::hash(&buf[payload.clone()]) != crc {
        return Frame::Bad("checksum mismatch".into());
    }
    Frame::Record {
        payload,
        len: FRAME_HEADER + len,
    }
}

#[cfg(test)]
mod tests;
