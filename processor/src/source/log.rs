//! `log:DIR`: the embedded stream log, one source partition per log partition.
//!
//! Partitions are read in turns, a bounded number of bytes each, in partition order:
//! reading the same finished log twice interleaves the partitions identically, which
//! keeps a bounded run deterministic.

use std::path::Path;
use std::time::{Duration, Instant};

use rushhour_streamlog::{LogPosition, PartitionReader, ReadBatch, ReadStatus};

use std::collections::BTreeMap;

use super::{
    PartitionStatus, Poll, Position, PositionStyle, Positions, Source, SourceBatch, SourceError,
    SourceOptions,
};

struct Part {
    reader: PartitionReader,
    ended: bool,
    last_data: Instant,
}

/// Reads every partition of a stream log.
pub struct LogSource {
    name: String,
    parts: Vec<Part>,
    next: usize,
    until_end: bool,
    idle_timeout: Duration,
    batch_bytes: usize,
    scratch: ReadBatch,
}

impl LogSource {
    /// Opens the log at `dir`, resuming each partition at its saved position.
    pub fn open(
        dir: &Path,
        opts: &SourceOptions,
        positions: Option<&Positions>,
    ) -> Result<LogSource, SourceError> {
        let name = format!("log:{}", dir.display());
        let n = rushhour_streamlog::partitions(dir)?;
        if let Some(p) = positions
            && p.keys().any(|&k| k >= n)
        {
            return Err(SourceError::BadPosition {
                source_url: name,
                reason: format!("the checkpoint has partitions the log (of {n}) does not"),
            });
        }
        let mut parts = Vec::with_capacity(n as usize);
        for partition in 0..n {
            let from = match positions.and_then(|p| p.get(&partition)) {
                Some(&Position::Log {
                    offset,
                    segment,
                    byte,
                }) => Some(LogPosition {
                    offset,
                    segment,
                    byte,
                }),
                Some(other) => {
                    return Err(SourceError::BadPosition {
                        source_url: name,
                        reason: format!("partition {partition}: {other:?} is not a log position"),
                    });
                }
                None => None,
            };
            parts.push(Part {
                reader: PartitionReader::open(dir, partition, from)?,
                ended: false,
                last_data: Instant::now(),
            });
        }
        Ok(LogSource {
            name,
            parts,
            next: 0,
            until_end: opts.until_end,
            idle_timeout: opts.idle_timeout,
            batch_bytes: opts.batch_bytes.max(1),
            scratch: ReadBatch::default(),
        })
    }
}

impl Source for LogSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn partitions(&self) -> Vec<u32> {
        (0..self.parts.len() as u32).collect()
    }

    fn position_style(&self) -> PositionStyle {
        PositionStyle::PartitionOffset
    }

    fn poll(&mut self, batch: &mut SourceBatch) -> Result<Poll, SourceError> {
        batch.clear();
        let n = self.parts.len();
        for _ in 0..n {
            let i = self.next;
            self.next = (self.next + 1) % n;
            let part = &mut self.parts[i];
            if part.ended {
                continue;
            }
            self.scratch.clear();
            match part.reader.read(&mut self.scratch, self.batch_bytes)? {
                ReadStatus::Records(_) => {
                    part.last_data = Instant::now();
                    batch.partition = i as u32;
                    std::mem::swap(&mut batch.data, &mut self.scratch.data);
                    std::mem::swap(&mut batch.records, &mut self.scratch.records);
                    return Ok(Poll::Records);
                }
                ReadStatus::AtEnd => {
                    if self.until_end {
                        part.ended = true;
                    }
                }
            }
        }
        if self.parts.iter().all(|p| p.ended) {
            Ok(Poll::Ended)
        } else {
            Ok(Poll::Pending)
        }
    }

    fn statuses(&self) -> BTreeMap<u32, PartitionStatus> {
        // A bounded run reads every partition to its end: a stall of this process
        // must not count as silence of a partition, so only a followed log has idle ones.
        self.parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let status = if p.ended {
                    PartitionStatus::Finished
                } else if !self.until_end && p.last_data.elapsed() >= self.idle_timeout {
                    PartitionStatus::Idle
                } else {
                    PartitionStatus::Active
                };
                (i as u32, status)
            })
            .collect()
    }

    fn cursor(&self) -> u32 {
        self.next as u32
    }

    fn set_cursor(&mut self, cursor: u32) {
        self.next = cursor as usize % self.parts.len().max(1);
    }

    fn positions(&self) -> Positions {
        self.parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let LogPosition {
                    offset,
                    segment,
                    byte,
                } = p.reader.position();
                (
                    i as u32,
                    Position::Log {
                        offset,
                        segment,
                        byte,
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rushhour_streamlog::{LogWriter, WriterOptions};

    #[test]
    fn round_robin_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(
            dir.path(),
            WriterOptions {
                partitions: 2,
                segment_bytes: 50,
            },
        )
        .unwrap();
        for i in 0..10 {
            w.append(i % 2, format!("r{i}").as_bytes()).unwrap();
        }
        w.flush().unwrap();
        let opts = SourceOptions {
            until_end: true,
            batch_bytes: 12,
            ..Default::default()
        };
        let mut src = LogSource::open(dir.path(), &opts, None).unwrap();
        let mut batch = SourceBatch::default();
        let mut seen = Vec::new();
        assert_eq!(src.poll(&mut batch).unwrap(), Poll::Records);
        let first = batch.records.len();
        seen.push(batch.partition);
        let saved = src.positions();
        let mut resumed = LogSource::open(dir.path(), &opts, Some(&saved)).unwrap();
        let mut rest = 0;
        while resumed.poll(&mut batch).unwrap() == Poll::Records {
            rest += batch.records.len();
            seen.push(batch.partition);
        }
        assert_eq!(first + rest, 10);
        assert!(seen.contains(&0) && seen.contains(&1));
        assert!(
            resumed
                .statuses()
                .values()
                .all(|s| *s == PartitionStatus::Finished)
        );
    }
}
