//! The driver: source → pipeline → sink, in epochs.
//!
//! The pipeline runs on the calling thread; the sink runs on a thread of its own
//! behind a bounded channel, so Parquet encoding overlaps with parsing (two cores) and
//! a slow sink slows the reader down instead of filling memory.
//!
//! Every `commit_interval` the runtime closes an epoch: it hands over everything the
//! pipeline holds for the sink, asks the sink to complete the epoch's files in staging,
//! and publishes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::output::TableBatch;
use crate::pipeline::{Counters, Pipeline};
use crate::sink::{BoxError, LakeSink, StagedFile};
use crate::source::{Poll, Source, SourceBatch, SourceError};

/// Errors that stop a run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The sink failed.
    #[error("writing the lake failed: {0}")]
    Sink(BoxError),
    /// Building Arrow batches failed (a bug: the schemas are fixed).
    #[error("internal error building Arrow batches: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Close an epoch (publish files) this often.
    pub commit_interval: Duration,
    /// How long to wait before polling a source that had nothing new.
    pub poll_backoff: Duration,
    /// Set to stop the run at the next batch boundary (Ctrl-C, SIGTERM).
    pub stop: Arc<AtomicBool>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            commit_interval: Duration::from_secs(10),
            poll_backoff: Duration::from_millis(50),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// A view of a running pipeline, for progress displays.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Counts so far.
    pub counters: Counters,
    /// The effective watermark (epoch ms, `i64::MIN` before any record).
    pub watermark: i64,
    /// Entries of state held.
    pub state_entries: usize,
    /// Epochs committed.
    pub epochs: u64,
    /// Time since the start.
    pub elapsed: Duration,
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Final counts.
    pub counters: Counters,
    /// Epochs committed.
    pub epochs: u64,
    /// Files published.
    pub files: u64,
    /// Whether the input ended (as opposed to a stop request).
    pub ended: bool,
    /// Wall time.
    pub elapsed: Duration,
}

enum SinkMsg {
    Write(TableBatch),
    Commit(u64, SyncSender<Result<Vec<StagedFile>, BoxError>>),
}

struct SinkThread {
    tx: Option<SyncSender<SinkMsg>>,
    handle: Option<JoinHandle<Result<(), BoxError>>>,
}

impl SinkThread {
    fn start(mut sink: Box<dyn LakeSink>) -> SinkThread {
        let (tx, rx): (SyncSender<SinkMsg>, Receiver<SinkMsg>) = sync_channel(8);
        let handle = std::thread::Builder::new()
            .name("rushhour-sink".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        SinkMsg::Write(batch) => sink.write(batch)?,
                        SinkMsg::Commit(epoch, reply) => {
                            let result = sink
                                .prepare_commit(epoch)
                                .and_then(|files| sink.publish(&files).map(|()| files));
                            let failed = result.is_err();
                            let _ = reply.send(result);
                            if failed {
                                return Ok(());
                            }
                        }
                    }
                }
                Ok(())
            });
        match handle {
            Ok(handle) => SinkThread {
                tx: Some(tx),
                handle: Some(handle),
            },
            Err(e) => {
                let err: BoxError = Box::new(e);
                SinkThread {
                    tx: None,
                    handle: Some(std::thread::spawn(move || Err(err))),
                }
            }
        }
    }

    /// The sink's own error when it has stopped, or a generic one.
    fn failure(&mut self) -> RuntimeError {
        self.tx = None;
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => RuntimeError::Sink(e),
            Some(Err(_)) => RuntimeError::Sink("the sink thread panicked".into()),
            _ => RuntimeError::Sink("the sink stopped unexpectedly".into()),
        }
    }

    fn send(&mut self, batches: Vec<TableBatch>) -> Result<(), RuntimeError> {
        for batch in batches {
            let sent = self.tx.as_ref().map(|tx| tx.send(SinkMsg::Write(batch)));
            if !matches!(sent, Some(Ok(()))) {
                return Err(self.failure());
            }
        }
        Ok(())
    }

    fn commit(&mut self, epoch: u64) -> Result<Vec<StagedFile>, RuntimeError> {
        let (reply_tx, reply_rx) = sync_channel(1);
        let sent = self
            .tx
            .as_ref()
            .map(|tx| tx.send(SinkMsg::Commit(epoch, reply_tx)));
        if !matches!(sent, Some(Ok(()))) {
            return Err(self.failure());
        }
        match reply_rx.recv() {
            Ok(Ok(files)) => Ok(files),
            Ok(Err(e)) => Err(RuntimeError::Sink(e)),
            Err(_) => Err(self.failure()),
        }
    }

    fn close(mut self) -> Result<(), RuntimeError> {
        self.tx = None;
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(Ok(()))) | None => Ok(()),
            Some(Ok(Err(e))) => Err(RuntimeError::Sink(e)),
            Some(Err(_)) => Err(RuntimeError::Sink("the sink thread panicked".into())),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs `pipeline` over `source` into `sink` until the source ends or a stop is
/// requested. At the end of a bounded source every window is flushed.
pub fn run(
    source: &mut dyn Source,
    pipeline: &mut Pipeline,
    sink: Box<dyn LakeSink>,
    opts: &RunOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<RunReport, RuntimeError> {
    let started = Instant::now();
    let mut sink = SinkThread::start(sink);
    let mut batch = SourceBatch::default();
    let mut epoch = 1u64;
    let mut files = 0u64;
    let mut last_commit = Instant::now();
    let mut last_progress = Instant::now();
    let mut ended = false;
    let report = |pipeline: &Pipeline, epochs: u64| Progress {
        counters: pipeline.counters(),
        watermark: pipeline.watermark(),
        state_entries: pipeline.state_entries(),
        epochs,
        elapsed: started.elapsed(),
    };
    while !opts.stop.load(Ordering::Relaxed) {
        match source.poll(&mut batch)? {
            Poll::Records => {
                pipeline.process_batch(&batch, now_ms())?;
                pipeline.set_statuses(&source.statuses());
                pipeline.advance();
            }
            Poll::Pending => {
                pipeline.set_statuses(&source.statuses());
                pipeline.advance();
                std::thread::sleep(opts.poll_backoff);
            }
            Poll::Ended => {
                pipeline.flush_all();
                ended = true;
            }
        }
        sink.send(pipeline.take_output(ended)?)?;
        if ended {
            break;
        }
        if last_commit.elapsed() >= opts.commit_interval {
            sink.send(pipeline.take_output(true)?)?;
            files += sink.commit(epoch)?.len() as u64;
            epoch += 1;
            last_commit = Instant::now();
        }
        if last_progress.elapsed() >= Duration::from_millis(200) {
            progress(&report(pipeline, epoch - 1));
            last_progress = Instant::now();
        }
    }
    sink.send(pipeline.take_output(true)?)?;
    files += sink.commit(epoch)?.len() as u64;
    sink.close()?;
    progress(&report(pipeline, epoch));
    Ok(RunReport {
        counters: pipeline.counters(),
        epochs: epoch,
        files,
        ended,
        elapsed: started.elapsed(),
    })
}
