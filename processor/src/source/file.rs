//! `file:PATH` and `file:-`: newline-delimited JSON, one partition.
//!
//! The position is the line number (1-based) of the next line together with its byte
//! offset, so a resumed file source seeks straight to it. Blank lines are skipped
//! but still counted, so positions are the line numbers an editor shows.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rushhour_schemas::{Endpoint, is_blank};

use std::collections::BTreeMap;

use super::{
    PartitionStatus, Poll, Position, PositionStyle, Positions, Source, SourceBatch, SourceError,
    SourceOptions,
};

enum Input {
    File(File),
    Stdin(std::io::Stdin),
}

impl Input {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Input::File(f) => f.read(buf),
            Input::Stdin(s) => s.lock().read(buf),
        }
    }
}

/// Reads newline-delimited records from a file or stdin.
pub struct FileSource {
    name: String,
    path: PathBuf,
    input: Input,
    follow: bool,
    /// Bytes read but not yet handed over (an incomplete last line).
    pending: Vec<u8>,
    /// Line number of the first line in `pending`.
    next_line: u64,
    /// Byte offset of the first byte of `pending`.
    next_byte: u64,
    eof: bool,
    last_data: Instant,
    idle_timeout: Duration,
    batch_bytes: usize,
}

impl FileSource {
    /// Opens the file (or stdin), resuming at the position of partition 0 when given.
    pub fn open(
        endpoint: &Endpoint,
        opts: &SourceOptions,
        positions: Option<&Positions>,
    ) -> Result<FileSource, SourceError> {
        let name = endpoint.to_string();
        let (path, mut input) = match endpoint {
            Endpoint::Stdio => (PathBuf::from("-"), Input::Stdin(std::io::stdin())),
            Endpoint::File(path) => {
                let file = File::open(path).map_err(|source| SourceError::Io {
                    path: path.clone(),
                    source,
                })?;
                if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
                    return Err(SourceError::Io {
                        path: path.clone(),
                        source: std::io::Error::other("is a directory, not a file"),
                    });
                }
                (path.clone(), Input::File(file))
            }
            other => {
                return Err(SourceError::Unsupported(format!(
                    "{other} is not a file source"
                )));
            }
        };
        let (mut next_line, mut next_byte) = (1, 0);
        if let Some(positions) = positions {
            let bad = |reason: &str| SourceError::BadPosition {
                source_url: name.clone(),
                reason: reason.into(),
            };
            let Some(&Position::File { line, byte }) = positions.get(&0) else {
                return Err(bad("the checkpoint holds no file position for partition 0"));
            };
            (next_line, next_byte) = (line, byte);
            match &mut input {
                Input::File(f) => {
                    let len = f
                        .metadata()
                        .map_err(|source| SourceError::Io {
                            path: path.clone(),
                            source,
                        })?
                        .len();
                    if next_byte > len {
                        return Err(bad(
                            "the file is shorter than the saved position (was it replaced?)",
                        ));
                    }
                    f.seek(SeekFrom::Start(next_byte))
                        .map_err(|source| SourceError::Io {
                            path: path.clone(),
                            source,
                        })?;
                }
                Input::Stdin(_) => return Err(bad("stdin cannot be resumed")),
            }
        }
        Ok(FileSource {
            name,
            path,
            // stdin ends at EOF; a file is followed like `tail -f` unless --until-end.
            follow: !opts.until_end && matches!(input, Input::File(_)),
            input,
            pending: Vec::new(),
            next_line,
            next_byte,
            eof: false,
            last_data: Instant::now(),
            idle_timeout: opts.idle_timeout,
            batch_bytes: opts.batch_bytes.max(1),
        })
    }

    /// Moves whole lines from `pending` into `batch`; with `final_chunk`, a last line
    /// without a newline is a record too.
    fn split_lines(&mut self, batch: &mut SourceBatch, final_chunk: bool) {
        let base = batch.data.len();
        let buf = &self.pending;
        let mut start = 0;
        let mut line = self.next_line;
        while start < buf.len() {
            let end = match memchr::memchr(b'\n', &buf[start..]) {
                Some(i) => start + i,
                None if final_chunk => buf.len(),
                None => break,
            };
            let mut content_end = end;
            if content_end > start && buf[content_end - 1] == b'\r' {
                content_end -= 1;
            }
            if !is_blank(&buf[start..content_end]) {
                batch.records.push((base + start..base + content_end, line));
            }
            line += 1;
            start = (end + 1).min(buf.len());
        }
        self.next_line = line;
        self.next_byte += start as u64;
        if start == 0 {
            return; // no line complete yet: keep reading into the same buffer
        }
        if base == 0 {
            // Hand the buffer over whole and keep only the unfinished tail: every byte
            // is copied once (by the read), not twice.
            let mut rest = std::mem::take(&mut batch.data);
            rest.clear();
            rest.extend_from_slice(&self.pending[start..]);
            batch.data = std::mem::replace(&mut self.pending, rest);
            batch.data.truncate(start);
        } else {
            batch.data.extend_from_slice(&buf[..start]);
            self.pending.drain(..start);
        }
    }
}

impl Source for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn partitions(&self) -> Vec<u32> {
        vec![0]
    }

    fn position_style(&self) -> PositionStyle {
        PositionStyle::Line
    }

    fn poll(&mut self, batch: &mut SourceBatch) -> Result<Poll, SourceError> {
        batch.clear();
        batch.partition = 0;
        loop {
            if self.eof && self.pending.is_empty() {
                return Ok(Poll::Ended);
            }
            let old = self.pending.len();
            self.pending.resize(old + self.batch_bytes, 0);
            let got = match self.input.read(&mut self.pending[old..]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    self.pending.truncate(old);
                    continue; // a signal, not the end of the input
                }
                Err(source) => {
                    self.pending.truncate(old);
                    return Err(SourceError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            };
            self.pending.truncate(old + got);
            if got == 0 && !self.follow {
                self.eof = true;
            }
            if got > 0 {
                self.last_data = Instant::now();
            }
            self.split_lines(batch, self.eof);
            if !batch.records.is_empty() {
                return Ok(Poll::Records);
            }
            if self.eof {
                continue;
            }
            if got == 0 {
                return Ok(Poll::Pending);
            }
        }
    }

    fn statuses(&self) -> BTreeMap<u32, PartitionStatus> {
        // Only a followed file can be idle: a bounded input is read to its end, and a
        // stall of this process must not count as silence of the input.
        let status = if self.eof {
            PartitionStatus::Finished
        } else if self.follow && self.last_data.elapsed() >= self.idle_timeout {
            PartitionStatus::Idle
        } else {
            PartitionStatus::Active
        };
        BTreeMap::from([(0, status)])
    }

    fn positions(&self) -> Positions {
        BTreeMap::from([(
            0,
            Position::File {
                line: self.next_line,
                byte: self.next_byte,
            },
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(content: &[u8], until_end: bool) -> Vec<(String, u64)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, content).unwrap();
        let opts = SourceOptions {
            until_end,
            batch_bytes: 1,
            ..Default::default()
        };
        let mut src = FileSource::open(&Endpoint::File(path), &opts, None).unwrap();
        let mut out = Vec::new();
        let mut batch = SourceBatch::default();
        while src.poll(&mut batch).unwrap() == Poll::Records {
            for i in 0..batch.records.len() {
                out.push((
                    String::from_utf8(batch.payload(i).to_vec()).unwrap(),
                    batch.records[i].1,
                ));
            }
        }
        out
    }

    #[test]
    fn lines_blank_lines_crlf_and_a_last_line_without_newline() {
        let got = read_all(b"a\n\n  \nb\r\nc", true);
        assert_eq!(got, vec![("a".into(), 1), ("b".into(), 4), ("c".into(), 5)]);
    }

    #[test]
    fn following_waits_for_the_newline() {
        let got = read_all(b"a\nb", false);
        assert_eq!(got, vec![("a".into(), 1)]);
    }

    #[test]
    fn resumes_at_a_saved_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, b"one\ntwo\n\nthree\n").unwrap();
        let opts = SourceOptions {
            until_end: true,
            batch_bytes: 1,
            ..Default::default()
        };
        let ep = Endpoint::File(path);
        let mut src = FileSource::open(&ep, &opts, None).unwrap();
        let mut batch = SourceBatch::default();
        assert_eq!(src.poll(&mut batch).unwrap(), Poll::Records);
        let first: Vec<_> = (0..batch.records.len())
            .map(|i| batch.payload(i).to_vec())
            .collect();
        let pos = src.positions();
        let mut again = FileSource::open(&ep, &opts, Some(&pos)).unwrap();
        let mut rest = Vec::new();
        while again.poll(&mut batch).unwrap() == Poll::Records {
            for i in 0..batch.records.len() {
                rest.push((batch.payload(i).to_vec(), batch.records[i].1));
            }
        }
        let mut all: Vec<Vec<u8>> = first;
        all.extend(rest.iter().map(|r| r.0.clone()));
        assert_eq!(
            all,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert_eq!(rest.last().unwrap().1, 4);
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = FileSource::open(
            &Endpoint::File("/no/such/file".into()),
            &SourceOptions::default(),
            None,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("/no/such/file"), "{err}");
    }
}
