//! Where generated records go: the [`EventSink`] trait and its implementations.
//!
//! The generator drives a sink through its whole life: any number of
//! [`send`](EventSink::send)s, [`flush`](EventSink::flush) whenever readers should be
//! able to see what was sent so far (the generator flushes periodically while paced),
//! and one [`finish`](EventSink::finish) at the end, which makes everything durable.
//! A sink that is dropped without `finish` may lose what it buffered.

use std::fs::File;
use std::io::{BufWriter, Stdout, Write};
use std::path::{Path, PathBuf};

use rushhour_schemas::Endpoint;
use rushhour_streamlog::{LogWriter, WriterOptions};

use crate::ProducerError;

#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kinesis")]
pub mod kinesis;

/// A log sink hands its buffers to the operating system at least this often (bytes),
/// so that a tailing reader keeps up with a long run.
pub const LOG_FLUSH_BYTES: usize = 64 << 10;

/// Receives records, each with its partition key.
pub trait EventSink {
    /// Sends one record: `payload` is one JSON object without a newline; `key` is its
    /// partition key (`store_id` or `rider_id`; empty for a record without one, such
    /// as a malformed one). May buffer.
    fn send(&mut self, key: &str, payload: &[u8]) -> Result<(), ProducerError>;

    /// Makes everything sent so far visible to readers.
    fn flush(&mut self) -> Result<(), ProducerError>;

    /// Flushes and makes everything sent durable (fsync). Call once, at the end.
    fn finish(&mut self) -> Result<(), ProducerError>;
}

impl<S: EventSink + ?Sized> EventSink for Box<S> {
    fn send(&mut self, key: &str, payload: &[u8]) -> Result<(), ProducerError> {
        (**self).send(key, payload)
    }

    fn flush(&mut self) -> Result<(), ProducerError> {
        (**self).flush()
    }

    fn finish(&mut self) -> Result<(), ProducerError> {
        (**self).finish()
    }
}

/// How to open a sink.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// Partitions of a stream created by this run: a new `log:DIR` (4 when `None`), a
    /// missing Kafka topic (which is an error when `None`). Existing streams keep theirs.
    pub partitions: Option<u32>,
    /// Kafka batch compression.
    #[cfg(feature = "kafka")]
    pub compression: kafka::Compression,
    /// Kinesis: at most one record per key in every call (see
    /// [`kinesis::KinesisOptions::strict_key_order`]).
    pub strict_key_order: bool,
    /// The I/O runtime of network sinks (Kinesis); one is started if `None`.
    #[cfg(feature = "kinesis")]
    pub io: Option<rushhour_cloud::Io>,
}

/// Partitions of a new log when none are asked for.
pub const DEFAULT_LOG_PARTITIONS: u32 = 4;

/// Opens the sink an endpoint names.
pub fn open_sink(
    endpoint: &Endpoint,
    opts: &SinkOptions,
) -> Result<Box<dyn EventSink>, ProducerError> {
    match endpoint {
        Endpoint::File(path) => Ok(Box::new(FileSink::create(path)?)),
        Endpoint::Stdio => Ok(Box::new(FileSink::stdout())),
        Endpoint::Log(dir) => Ok(Box::new(LogSink::open(
            dir,
            opts.partitions.unwrap_or(DEFAULT_LOG_PARTITIONS),
        )?)),
        #[cfg(feature = "kafka")]
        Endpoint::Kafka { brokers, topic } => Ok(Box::new(kafka::KafkaSink::open(
            brokers,
            topic,
            &kafka::KafkaOptions {
                create_partitions: opts.partitions,
                compression: opts.compression,
                ..kafka::KafkaOptions::default()
            },
        )?)),
        #[cfg(not(feature = "kafka"))]
        Endpoint::Kafka { .. } => Err(ProducerError::Unsupported(
            "this build has no Kafka support (feature `kafka`); use log:DIR or file:PATH".into(),
        )),
        #[cfg(feature = "kinesis")]
        Endpoint::Kinesis { stream } => {
            let io = match &opts.io {
                Some(io) => io.clone(),
                None => rushhour_cloud::Io::new(1).map_err(|e| ProducerError::Kinesis {
                    sink: endpoint.to_string(),
                    reason: format!("cannot start the I/O runtime: {e}"),
                })?,
            };
            Ok(Box::new(kinesis::KinesisSink::open(
                stream,
                &kinesis::KinesisOptions {
                    create_shards: opts.partitions,
                    strict_key_order: opts.strict_key_order,
                },
                &io,
            )?))
        }
        #[cfg(not(feature = "kinesis"))]
        Endpoint::Kinesis { .. } => Err(ProducerError::Unsupported(
            "this build has no Kinesis support (feature `kinesis`); use log:DIR or file:PATH"
                .into(),
        )),
    }
}

enum Target {
    File(BufWriter<File>),
    Stdout(BufWriter<Stdout>),
}

/// Newline-delimited JSON in a file, or on stdout: one record per line, buffered.
/// Keys are not written (a file has no partitions).
pub struct FileSink {
    name: String,
    target: Target,
}

impl FileSink {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: &Path) -> Result<FileSink, ProducerError> {
        let name = format!("file:{}", path.display());
        let file = File::create(path).map_err(|source| ProducerError::Io {
            sink: name.clone(),
            path: Some(path.to_owned()),
            source,
        })?;
        Ok(FileSink {
            name,
            target: Target::File(BufWriter::with_capacity(256 << 10, file)),
        })
    }

    /// Writes to the process's standard output (`file:-`).
    pub fn stdout() -> FileSink {
        FileSink {
            name: "file:-".into(),
            target: Target::Stdout(BufWriter::with_capacity(64 << 10, std::io::stdout())),
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match &mut self.target {
            Target::File(w) => w,
            Target::Stdout(w) => w,
        }
    }

    fn io_error(&self, source: std::io::Error) -> ProducerError {
        let path = self
            .name
            .strip_prefix("file:")
            .filter(|p| *p != "-")
            .map(PathBuf::from);
        ProducerError::Io {
            sink: self.name.clone(),
            path,
            source,
        }
    }
}

impl EventSink for FileSink {
    fn send(&mut self, _key: &str, payload: &[u8]) -> Result<(), ProducerError> {
        let w = self.writer();
        let result = w.write_all(payload).and_then(|()| w.write_all(b"\n"));
        result.map_err(|e| self.io_error(e))
    }

    fn flush(&mut self) -> Result<(), ProducerError> {
        let result = self.writer().flush();
        result.map_err(|e| self.io_error(e))
    }

    fn finish(&mut self) -> Result<(), ProducerError> {
        self.flush()?;
        let result = match &mut self.target {
            Target::File(w) => w.get_ref().sync_all(),
            Target::Stdout(_) => Ok(()),
        };
        result.map_err(|e| self.io_error(e))
    }
}

/// The embedded stream log (`log:DIR`): each record appended to the partition its key
/// hashes to, as a Kafka producer would.
pub struct LogSink {
    name: String,
    dir: PathBuf,
    writer: LogWriter,
    unflushed: usize,
}

impl LogSink {
    /// Opens the log at `dir` for appending, creating it with `partitions` partitions
    /// if it does not exist.
    pub fn open(dir: &Path, partitions: u32) -> Result<LogSink, ProducerError> {
        let name = format!("log:{}", dir.display());
        if partitions == 0 {
            return Err(ProducerError::Config(format!(
                "{name}: a log needs at least one partition"
            )));
        }
        let writer = LogWriter::open(
            dir,
            WriterOptions {
                partitions,
                ..WriterOptions::default()
            },
        )
        .map_err(|source| ProducerError::Log {
            sink: name.clone(),
            source,
        })?;
        Ok(LogSink {
            name,
            dir: dir.to_owned(),
            writer,
            unflushed: 0,
        })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log's number of partitions (an existing log's own).
    pub fn partitions(&self) -> u32 {
        self.writer.partitions()
    }

    fn log_error(&self, source: rushhour_streamlog::LogError) -> ProducerError {
        ProducerError::Log {
            sink: self.name.clone(),
            source,
        }
    }
}

impl EventSink for LogSink {
    fn send(&mut self, key: &str, payload: &[u8]) -> Result<(), ProducerError> {
        if let Err(e) = self.writer.append_keyed(key.as_bytes(), payload) {
            return Err(self.log_error(e));
        }
        self.unflushed += payload.len();
        if self.unflushed >= LOG_FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ProducerError> {
        self.unflushed = 0;
        self.writer.flush().map_err(|e| self.log_error(e))
    }

    fn finish(&mut self) -> Result<(), ProducerError> {
        self.unflushed = 0;
        self.writer.sync().map_err(|e| self.log_error(e))
    }
}

/// Keeps records in memory: for tests and for embedding the generator.
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    /// (key, payload) of every record sent, in order.
    pub records: Vec<(String, Vec<u8>)>,
    /// How many times `flush` was called.
    pub flushes: u64,
    /// Whether `finish` was called.
    pub finished: bool,
}

impl EventSink for MemorySink {
    fn send(&mut self, key: &str, payload: &[u8]) -> Result<(), ProducerError> {
        self.records.push((key.to_owned(), payload.to_vec()));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ProducerError> {
        self.flushes += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ProducerError> {
        self.finished = true;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{SimConfig, Simulation};
    use rushhour_streamlog::{LogReader, ReadBatch, ReadStatus, partition_for_key};

    fn sample() -> Vec<crate::Produced> {
        let config = SimConfig {
            seed: 5,
            ..SimConfig::default()
        };
        Simulation::new(&config, Some(20)).unwrap().collect()
    }

    #[test]
    fn file_sink_writes_one_record_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let records = sample();
        let mut sink = open_sink(&Endpoint::File(path.clone()), &SinkOptions::default()).unwrap();
        for r in &records {
            sink.send(&r.key, r.payload.as_bytes()).unwrap();
        }
        sink.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), records.len());
        for (line, r) in lines.iter().zip(&records) {
            assert_eq!(*line, r.payload);
            rushhour_schemas::decode(line.as_bytes()).unwrap();
        }
        // Creating again truncates.
        let mut sink = FileSink::create(&path).unwrap();
        sink.finish().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn log_sink_partitions_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let records = sample();
        let opts = SinkOptions {
            partitions: Some(3),
            ..SinkOptions::default()
        };
        let mut sink = open_sink(&Endpoint::Log(dir.path().to_owned()), &opts).unwrap();
        for r in &records {
            sink.send(&r.key, r.payload.as_bytes()).unwrap();
        }
        sink.finish().unwrap();
        drop(sink);

        let mut reader = LogReader::open(dir.path()).unwrap();
        assert_eq!(reader.partitions.len(), 3);
        let mut got = 0;
        for (p, part) in reader.partitions.iter_mut().enumerate() {
            let expected: Vec<&crate::Produced> = records
                .iter()
                .filter(|r| partition_for_key(r.key.as_bytes(), 3) == p as u32)
                .collect();
            let mut batch = ReadBatch::default();
            let mut payloads = Vec::new();
            while let ReadStatus::Records(_) = part.read(&mut batch, 1 << 20).unwrap() {
                for i in 0..batch.records.len() {
                    payloads.push(String::from_utf8(batch.payload(i).to_vec()).unwrap());
                }
                batch.clear();
            }
            assert_eq!(payloads.len(), expected.len());
            for (a, b) in payloads.iter().zip(expected) {
                assert_eq!(*a, b.payload);
            }
            got += payloads.len();
        }
        assert_eq!(got, records.len());
    }

    #[test]
    fn errors_name_the_sink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/out.jsonl");
        let err = FileSink::create(&path).err().unwrap();
        assert!(err.to_string().contains("no/such/dir/out.jsonl"), "{err}");
    }
}
