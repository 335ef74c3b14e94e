//! Readers of a log, which may run while it is written.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{
    FRAME_HEADER, Frame, LogError, LogPosition, MAX_RECORD_BYTES, Result, parse_frame, partitions,
    segment_path, segments,
};

/// Records read from one partition: payloads are ranges of `data`.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// Raw bytes holding the payloads (and frame headers, which the ranges skip).
    pub data: Vec<u8>,
    /// (payload range in `data`, offset) of each record, in offset order.
    pub records: Vec<(Range<usize>, u64)>,
}

impl ReadBatch {
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

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// This many records were appended to the batch.
    Records(usize),
    /// No complete record after the position, for now.
    AtEnd,
}

/// Reads one partition from a position onwards.
pub struct PartitionReader {
    dir: PathBuf,
    partition: u32,
    pos: LogPosition,
    file: Option<(File, PathBuf)>,
}

impl PartitionReader {
    /// A reader of `partition` of the log at `dir`, starting at `from` (the beginning
    /// when `None`).
    pub fn open(dir: &Path, partition: u32, from: Option<LogPosition>) -> Result<PartitionReader> {
        let n = partitions(dir)?;
        if partition >= n {
            return Err(LogError::NoSuchPartition {
                partition,
                partitions: n,
            });
        }
        let pos = match from {
            Some(pos) => pos,
            None => {
                let first = segments(dir, partition)?.first().copied().unwrap_or(0);
                LogPosition {
                    offset: first,
                    segment: first,
                    byte: 0,
                }
            }
        };
        Ok(PartitionReader {
            dir: dir.to_owned(),
            partition,
            pos,
            file: None,
        })
    }

    /// The partition read.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The position of the next record to read.
    pub fn position(&self) -> LogPosition {
        self.pos
    }

    /// Appends up to about `max_bytes` of whole records to `batch`.
    pub fn read(&mut self, batch: &mut ReadBatch, max_bytes: usize) -> Result<ReadStatus> {
        let mut chunk = max_bytes.max(4096);
        loop {
            if self.file.is_none() {
                let path = segment_path(&self.dir, self.partition, self.pos.segment);
                match File::open(&path) {
                    Ok(f) => self.file = Some((f, path)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Ok(ReadStatus::AtEnd);
                    }
                    Err(e) => return Err(LogError::Io { path, source: e }),
                }
            }
            let Some((file, path)) = &self.file else {
                return Ok(ReadStatus::AtEnd);
            };
            let start = batch.data.len();
            batch.data.resize(start + chunk, 0);
            let got = read_full_at(file, &mut batch.data[start..], self.pos.byte)
                .map_err(LogError::io(path.clone()))?;
            batch.data.truncate(start + got);

            let mut at = start;
            let mut count = 0;
            let mut stop = None;
            while at < batch.data.len() {
                match parse_frame(&batch.data[at..]) {
                    Frame::Record { payload, len } => {
                        batch
                            .records
                            .push((at + payload.start..at + payload.end, self.pos.offset));
                        at += len;
                        self.pos.offset += 1;
                        self.pos.byte += len as u64;
                        count += 1;
                    }
                    other => {
                        stop = Some(other);
                        break;
                    }
                }
            }
            batch.data.truncate(at);
            if count > 0 {
                return Ok(ReadStatus::Records(count));
            }
            let file_len = file.metadata().map_err(LogError::io(path.clone()))?.len();
            match stop {
                Some(Frame::Bad(reason)) => {
                    let declared =
                        declared_len(file, self.pos.byte).unwrap_or(MAX_RECORD_BYTES as u64);
                    if declared > MAX_RECORD_BYTES as u64
                        || file_len > self.pos.byte + FRAME_HEADER as u64 + declared
                    {
                        return Err(LogError::Corrupt {
                            path: path.clone(),
                            byte: self.pos.byte,
                            reason,
                        });
                    }
                    // A torn or in-progress append at the tail: not data (yet).
                    return Ok(ReadStatus::AtEnd);
                }
                Some(Frame::Incomplete) if got == chunk => {
                    // A record larger than the chunk: read again with room for it.
                    let declared = declared_len(file, self.pos.byte).unwrap_or(0) as usize;
                    chunk = chunk.max(FRAME_HEADER + declared);
                    continue;
                }
                _ => {}
            }
            // Nothing more here. Has the writer moved on to a newer segment?
            let next = segments(&self.dir, self.partition)?
                .into_iter()
                .find(|&b| b > self.pos.segment);
            match next {
                Some(base) if file_len == self.pos.byte => {
                    // Check once more: the writer may have finished this segment's last
                    // record just before creating the next one.
                    let again = file.metadata().map_err(LogError::io(path.clone()))?.len();
                    if again != self.pos.byte {
                        continue;
                    }
                    if base != self.pos.offset {
                        return Err(LogError::Corrupt {
                            path: path.clone(),
                            byte: self.pos.byte,
                            reason: format!(
                                "segment ends at offset {} but the next one starts at {base}",
                                self.pos.offset
                            ),
                        });
                    }
                    self.pos.segment = base;
                    self.pos.byte = 0;
                    self.file = None;
                }
                Some(_) => {
                    return Err(LogError::Corrupt {
                        path: path.clone(),
                        byte: self.pos.byte,
                        reason: "an incomplete record is followed by a newer segment".into(),
                    });
                }
                None => return Ok(ReadStatus::AtEnd),
            }
        }
    }
}

fn declared_len(file: &File, at: u64) -> Option<u64> {
    let mut header = [0u8; 4];
    file.read_exact_at(&mut header, at).ok()?;
    Some(u64::from(u32::from_le_bytes(header)))
}

fn read_full_at(file: &File, buf: &mut [u8], mut at: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], at) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                at += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Readers of every partition of a log.
pub struct LogReader {
    /// One reader per partition, by partition number.
    pub partitions: Vec<PartitionReader>,
}

impl LogReader {
    /// Opens every partition of the log at `dir` at its beginning.
    pub fn open(dir: &Path) -> Result<LogReader> {
        let n = partitions(dir)?;
        let partitions = (0..n)
            .map(|p| PartitionReader::open(dir, p, None))
            .collect::<Result<_>>()?;
        Ok(LogReader { partitions })
    }
}
