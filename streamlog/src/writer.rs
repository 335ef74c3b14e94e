//! The single appender of a log.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::{
    FORMAT, FRAME_HEADER, Frame, LogError, MAX_RECORD_BYTES, META_FILE, Meta, Result, VERSION,
    parse_frame, partition_dir, partition_for_key, partitions, segment_path, segments,
};

/// How a writer lays out its segments.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Partitions of a log created by this writer (an existing log keeps its own).
    pub partitions: u32,
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            partitions: 4,
            segment_bytes: 128 << 20,
        }
    }
}

struct PartitionWriter {
    partition: u32,
    next_offset: u64,
    segment_len: u64,
    path: PathBuf,
    out: BufWriter<File>,
}

/// Appends records to a log. Holding one keeps other writers out of the directory.
///
/// Appends are buffered: readers see them after [`flush`](LogWriter::flush), and they
/// survive a machine crash after [`sync`](LogWriter::sync).
pub struct LogWriter {
    dir: PathBuf,
    opts: WriterOptions,
    parts: Vec<PartitionWriter>,
    // Dropping the file releases the lock.
    _lock: File,
}

impl LogWriter {
    /// Opens the log at `dir` for appending, creating it (with `opts.partitions`) if it
    /// does not exist. A torn frame at the end of a partition is truncated away.
    pub fn open(dir: &Path, opts: WriterOptions) -> Result<LogWriter> {
        std::fs::create_dir_all(dir).map_err(LogError::io(dir))?;
        let lock_path = dir.join(".writer.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(LogError::io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(LogError::Locked(dir.to_owned())),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(LogError::Io {
                    path: lock_path,
                    source: e,
                });
            }
        }
        if !dir.join(META_FILE).exists() {
            create_meta(dir, opts.partitions)?;
        }
        let n = partitions(dir)?;
        let mut parts = Vec::with_capacity(n as usize);
        for p in 0..n {
            parts.push(PartitionWriter::open(dir, p)?);
        }
        Ok(LogWriter {
            dir: dir.to_owned(),
            opts,
            parts,
            _lock: lock,
        })
    }

    /// The log's number of partitions.
    pub fn partitions(&self) -> u32 {
        self.parts.len() as u32
    }

    /// The offset the next record appended to `partition` will get.
    pub fn next_offset(&self, partition: u32) -> Option<u64> {
        self.parts.get(partition as usize).map(|p| p.next_offset)
    }

    /// Appends `payload` to the partition that `key` hashes to; returns (partition, offset).
    pub fn append_keyed(&mut self, key: &[u8], payload: &[u8]) -> Result<(u32, u64)> {
        let partition = partition_for_key(key, self.partitions());
        Ok((partition, self.append(partition, payload)?))
    }

    /// Appends `payload` to `partition`; returns its offset.
    pub fn append(&mut self, partition: u32, payload: &[u8]) -> Result<u64> {
        if payload.is_empty() || payload.len() > MAX_RECORD_BYTES {
            return Err(LogError::RecordTooLarge(payload.len()));
        }
        let n = self.partitions();
        let segment_bytes = self.opts.segment_bytes;
        let dir = self.dir.clone();
        let part = self
            .parts
            .get_mut(partition as usize)
            .ok_or(LogError::NoSuchPartition {
                partition,
                partitions: n,
            })?;
        if part.segment_len >= segment_bytes {
            part.roll(&dir)?;
        }
        let mut header = [0u8; FRAME_HEADER];
        header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        part.out
            .write_all(&header)
            .map_err(LogError::io(&part.path))?;
        part.out
            .write_all(payload)
            .map_err(LogError::io(&part.path))?;
        part.segment_len += (FRAME_HEADER + payload.len()) as u64;
        let offset = part.next_offset;
        part.next_offset += 1;
        Ok(offset)
    }

    /// Hands buffered appends to the operating system: readers can see them now.
    pub fn flush(&mut self) -> Result<()> {
        for part in &mut self.parts {
            part.out.flush().map_err(LogError::io(&part.path))?;
        }
        Ok(())
    }

    /// Flushes and forces appends to stable storage.
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        for part in &mut self.parts {
            part.out
                .get_ref()
                .sync_data()
                .map_err(LogError::io(&part.path))?;
        }
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Best effort; callers that care call `sync` and see its errors.
        let _ = self.flush();
    }
}

fn create_meta(dir: &Path, partitions: u32) -> Result<()> {
    if partitions == 0 {
        return Err(LogError::NotALog {
            path: dir.to_owned(),
            reason: "zero partitions".into(),
        });
    }
    let meta = Meta {
        format: FORMAT.into(),
        version: VERSION,
        partitions,
    };
    let text = serde_json::to_string(&meta).map_err(|e| LogError::NotALog {
        path: dir.to_owned(),
        reason: e.to_string(),
    })?;
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    std::fs::write(&tmp, text).map_err(LogError::io(&tmp))?;
    for p in 0..partitions {
        let pdir = partition_dir(dir, p);
        std::fs::create_dir_all(&pdir).map_err(LogError::io(&pdir))?;
    }
    // The metadata appears last and atomically: a reader never sees half a log.
    std::fs::rename(&tmp, dir.join(META_FILE)).map_err(LogError::io(dir))
}

impl PartitionWriter {
    fn open(dir: &Path, partition: u32) -> Result<PartitionWriter> {
        let bases = segments(dir, partition)?;
        let base = bases.last().copied().unwrap_or(0);
        let path = segment_path(dir, partition, base);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(LogError::io(&path))?;
        // Recover: count the whole frames, cut off a torn tail.
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(LogError::io(&path))?;
        let mut pos = 0usize;
        let mut records = 0u64;
        while pos < data.len() {
            match parse_frame(&data[pos..]) {
                Frame::Record { len, .. } => {
                    pos += len;
                    records += 1;
                }
                Frame::Incomplete | Frame::Bad(_) => break,
            }
        }
        if pos < data.len() {
            tracing::warn!(
                path = %path.display(),
                torn_bytes = data.len() - pos,
                "truncating a torn append at the end of the stream log"
            );
            file.set_len(pos as u64).map_err(LogError::io(&path))?;
        }
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(pos as u64))
            .map_err(LogError::io(&path))?;
        Ok(PartitionWriter {
            partition,
            next_offset: base + records,
            segment_len: pos as u64,
            path,
            out: BufWriter::with_capacity(256 << 10, file),
        })
    }

    fn roll(&mut self, dir: &Path) -> Result<()> {
        self.out.flush().map_err(LogError::io(&self.path))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(LogError::io(&self.path))?;
        let path = segment_path(dir, self.partition, self.next_offset);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(LogError::io(&path))?;
        self.out = BufWriter::with_capacity(256 << 10, file);
        self.segment_len = 0;
        self.path = path;
        Ok(())
    }
}
