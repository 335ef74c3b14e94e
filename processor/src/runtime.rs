//! The driver: source → pipeline → sink, in epochs.
//!
//! The source is read and its records decoded on a thread of their own; the pipeline
//! (de-duplication, watermarks, operators) runs on the calling thread; the sink encodes
//! Parquet on a third. Bounded channels link them, so decoding, the stateful steps and
//! Parquet encoding overlap, and a slow stage slows the reader down instead of filling
//! memory.
//!
//! Every `commit_interval` the runtime closes an epoch: it hands over everything the
//! pipeline holds for the sink, asks the sink to complete the epoch's files in staging,
//! commits a checkpoint (state, source positions, the staged files), and only then
//! publishes the files. See [`crate::checkpoint`] for why that order makes recovery
//! exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::checkpoint::{
    CheckpointError, Checkpointer, EpochEnd, RecoveryPoint, StartRecord, StateRef,
};
use crate::operator::StateError;
use crate::output::TableBatch;
use crate::pipeline::{Counters, Decoded, Pipeline, decode_batch};
use crate::sink::{BoxError, LakeSink, StagedFile};
use crate::source::{PartitionStatus, Poll, Source, SourceBatch, SourceError};

/// Errors that stop a run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The sink failed.
    #[error("writing the lake failed: {0}")]
    Sink(BoxError),
    /// Checkpointing failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Encoding or restoring state failed.
    #[error("pipeline state: {0}")]
    State(#[from] StateError),
    /// The thread reading the source died (a bug).
    #[error("reading the source failed: {0}")]
    Reader(String),
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
    /// Final counts (including what earlier runs counted, after a restore).
    pub counters: Counters,
    /// Epochs committed by this run.
    pub epochs: u64,
    /// The number of the last epoch.
    pub last_epoch: u64,
    /// The last checkpoint's size and duration (zero without checkpoints).
    pub checkpoint: CheckpointStats,
    /// Files published.
    pub files: u64,
    /// Whether the input ended (as opposed to a stop request).
    pub ended: bool,
    /// Wall time.
    pub elapsed: Duration,
}

enum SinkMsg {
    Write(TableBatch),
    Prepare(u64, SyncSender<Result<Vec<StagedFile>, BoxError>>),
    Verify(
        Vec<StagedFile>,
        SyncSender<Result<Vec<StagedFile>, BoxError>>,
    ),
    Publish(Vec<StagedFile>, SyncSender<Result<(), BoxError>>),
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
                        SinkMsg::Prepare(epoch, reply) => {
                            let result = sink.prepare_commit(epoch);
                            let failed = result.is_err();
                            let _ = reply.send(result);
                            if failed {
                                return Ok(());
                            }
                        }
                        SinkMsg::Verify(files, reply) => {
                            let result = sink.verify_staged(&files).map(|()| files);
                            let failed = result.is_err();
                            let _ = reply.send(result);
                            if failed {
                                return Ok(());
                            }
                        }
                        SinkMsg::Publish(files, reply) => {
                            let result = sink.publish(&files);
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

    fn ask<T>(
        &mut self,
        msg: impl FnOnce(SyncSender<Result<T, BoxError>>) -> SinkMsg,
    ) -> Result<T, RuntimeError> {
        let (reply_tx, reply_rx) = sync_channel(1);
        let sent = self.tx.as_ref().map(|tx| tx.send(msg(reply_tx)));
        if !matches!(sent, Some(Ok(()))) {
            return Err(self.failure());
        }
        match reply_rx.recv() {
            Ok(Ok(value)) => Ok(value),
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

/// Wall-clock time, epoch ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Crash injection for recovery tests: the process aborts (like `kill -9`) when the
/// environment variable `RUSHHOUR_FAILPOINT` names this point, after saying so on
/// stderr (so a test can tell that the point was reached). Points: `start-committed`,
/// `epoch-staged`, `checkpoint-state-written`, `checkpoint-committed`, `mid-publish`,
/// `epoch-published`.
pub fn failpoint(name: &str) {
    if std::env::var_os("RUSHHOUR_FAILPOINT").is_some_and(|v| v == name) {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("rushhour: failpoint {name} reached: aborting");
        }
        std::process::abort();
    }
}

/// Start-up recovery, once the lease is held, `point` has been read
/// ([`Checkpointer::recovery_point`]) and the source reopened at its positions:
///
/// 1. restores the pipeline's state from the checkpoint resumed from;
/// 2. commits a *start checkpoint*, numbered one past the newest manifest of any kind:
///    the fence — no earlier process can commit after it (see [`crate::checkpoint`]);
///    it names the resumed checkpoint's state and files, so a crash from here on
///    resumes from it;
/// 3. finishes publishing the resumed checkpoint's files (idempotently);
/// 4. deletes what earlier, now fenced, processes staged;
/// 5. retracts the published files of undone epochs — those between the checkpoint
///    resumed from and the start checkpoint (newer checkpoints that were damaged), and
///    those the resumed checkpoint itself undid, in case a crash cut that short;
/// 6. prunes old checkpoints.
///
/// Returns the number of the first epoch to run. Fails with
/// [`CheckpointError::Fenced`] if another process committed the start checkpoint's
/// epoch first (a paused process that has not yet noticed it lost the lease): read the
/// recovery point again and retry.
pub fn recover(
    checkpointer: &Checkpointer,
    point: &RecoveryPoint,
    pipeline: &mut Pipeline,
    source: &mut dyn Source,
    sink: &mut dyn LakeSink,
) -> Result<u64, RuntimeError> {
    let restored = point.restored.as_ref();
    if restored.is_none()
        && let Some(newest) = point.newest
    {
        return Err(RuntimeError::Checkpoint(CheckpointError::Incompatible {
            location: checkpointer.location(),
            name: format!("manifest of epoch {newest}"),
            reason: "no checkpoint there is usable".into(),
        }));
    }
    let start_epoch = point.newest.unwrap_or(0) + 1;
    let (state, positions, cursor, staged, resumed_from) = match restored {
        Some(r) => {
            pipeline.restore(&r.state)?;
            source.set_cursor(r.manifest.cursor);
            (
                StateRef::of(&r.manifest),
                r.manifest.positions.clone(),
                r.manifest.cursor,
                r.manifest.staged.clone(),
                r.manifest.epoch,
            )
        }
        None => (
            checkpointer.write_state(start_epoch, &pipeline.snapshot()?)?,
            source.positions(),
            source.cursor(),
            Vec::new(),
            0,
        ),
    };
    checkpointer.commit(
        &state,
        EpochEnd {
            epoch: start_epoch,
            positions,
            cursor,
            counters: pipeline.counters(),
            staged: staged.clone(),
            start: Some(StartRecord { resumed_from }),
            created_at_ms: now_ms(),
            state_encode_ms: 0.0,
        },
    )?;
    failpoint("start-committed");
    sink.publish(&staged).map_err(RuntimeError::Sink)?;
    let cleaned = sink.clean_staging().map_err(RuntimeError::Sink)?;
    if cleaned > 0 {
        tracing::info!(
            files = cleaned,
            "deleted files staged by earlier processes for epochs that never committed"
        );
    }
    let mut undone = Vec::new();
    if let Some(range) = restored.and_then(|r| r.manifest.undone()) {
        undone.push(range);
    }
    if resumed_from + 1 < start_epoch {
        undone.push((resumed_from, start_epoch));
    }
    for (after, before) in undone {
        let listed = checkpointer.files_of(after, before)?;
        let retracted = sink
            .retract(after, before, &listed)
            .map_err(RuntimeError::Sink)?;
        tracing::warn!(
            resumed_from = after,
            undone_epochs = before - after - 1,
            retracted_files = retracted,
            "fell back past damaged checkpoints; their epochs are processed again"
        );
    }
    checkpointer.prune()?;
    Ok(start_epoch + 1)
}

/// Where a run starts: the first epoch number and the checkpointer, if any.
pub struct Start<'a> {
    /// Number of the first epoch (1 on a fresh start, the checkpoint's + 1 after one).
    pub epoch: u64,
    /// Checkpoints to take at the end of every epoch.
    pub checkpointer: Option<&'a Checkpointer>,
}

/// What the reader thread hands the pipeline, in the order it read it. Each item
/// carries the source's view at that moment (partition statuses, positions after it),
/// so the pipeline sees exactly what a single thread would have seen, and a checkpoint
/// records the positions of the last item applied — batches still in the channel are
/// read again after a restart.
enum Read {
    /// A batch, decoded.
    Records {
        batch: SourceBatch,
        decoded: Vec<Decoded>,
        at: SourceView,
    },
    /// Nothing new for now.
    Pending(SourceView),
    /// A bounded source has ended.
    Ended(SourceView),
}

/// A source's statuses and positions after a poll.
struct SourceView {
    statuses: Vec<PartitionStatus>,
    positions: Vec<String>,
    cursor: u32,
}

impl SourceView {
    fn of(source: &dyn Source) -> SourceView {
        SourceView {
            statuses: source.statuses(),
            positions: source.positions(),
            cursor: source.cursor(),
        }
    }
}

/// Batches read ahead of the pipeline (each up to the source's batch size).
const READ_AHEAD: usize = 4;

/// The reader thread: polls the source and decodes each batch, so decoding (the
/// costliest stateless step) runs beside the pipeline. Returns when the source ends,
/// fails, or the pipeline side hangs up.
fn read_ahead(
    source: &mut dyn Source,
    to_pipeline: SyncSender<Result<Read, SourceError>>,
    recycled: Receiver<SourceBatch>,
    stop: &AtomicBool,
    poll_backoff: Duration,
) {
    let mut spare = None;
    loop {
        // Batches come back once applied: their buffers are reused, not reallocated.
        let mut batch = spare
            .take()
            .or_else(|| recycled.try_recv().ok())
            .unwrap_or_default();
        let read = match source.poll(&mut batch) {
            Err(e) => Err(e),
            Ok(Poll::Records) => {
                let decoded = decode_batch(&batch);
                Ok(Read::Records {
                    batch,
                    decoded,
                    at: SourceView::of(source),
                })
            }
            Ok(Poll::Pending) => {
                spare = Some(batch);
                Ok(Read::Pending(SourceView::of(source)))
            }
            Ok(Poll::Ended) => Ok(Read::Ended(SourceView::of(source))),
        };
        let last = !matches!(read, Ok(Read::Records { .. } | Read::Pending(_)));
        let pending = matches!(read, Ok(Read::Pending(_)));
        if to_pipeline.send(read).is_err() || last {
            return;
        }
        if pending {
            std::thread::sleep(poll_backoff);
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// Runs `pipeline` over `source` into `sink` until the source ends or a stop is
/// requested. At the end of a bounded source every window is flushed. Every epoch ends
/// with stage → checkpoint → publish; the last one too, so a stopped or finished run
/// can be resumed.
///
/// Three threads: the source is read and decoded on one, the pipeline runs on the
/// calling thread, and the sink encodes Parquet on a third.
///
/// The reader owns the source. After a stop or an error it is not waited for: it may
/// be blocked in a read (stdin, a FIFO) that nothing will interrupt, and it ends by
/// itself at its next read or when the process exits.
pub fn run(
    mut source: Box<dyn Source>,
    pipeline: &mut Pipeline,
    sink: Box<dyn LakeSink>,
    opts: &RunOptions,
    start: Start<'_>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<RunReport, RuntimeError> {
    let mut at = SourceView::of(source.as_ref());
    let (to_pipeline, from_reader) = sync_channel(READ_AHEAD);
    let (recycle, recycled) = sync_channel(READ_AHEAD);
    let (stop, poll_backoff) = (opts.stop.clone(), opts.poll_backoff);
    let handle = std::thread::Builder::new()
        .name("rushhour-read".into())
        .spawn(move || read_ahead(source.as_mut(), to_pipeline, recycled, &stop, poll_backoff))
        .map_err(|e| RuntimeError::Reader(format!("cannot start the reader thread: {e}")))?;
    let reader = Reader {
        from: from_reader,
        recycle,
    };
    let result = drive(&reader, &mut at, pipeline, sink, opts, start, progress);
    // Hanging up stops the reader at its next send.
    drop(reader);
    let panicked = |panic: Box<dyn std::any::Any + Send>| {
        RuntimeError::Reader(
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the source reader panicked".into()),
        )
    };
    match result {
        Err(RuntimeError::Reader(_)) => Err(match handle.join() {
            Err(panic) => panicked(panic),
            Ok(()) => RuntimeError::Reader("the source reader stopped unexpectedly".into()),
        }),
        // A reader that is done (after the end of the source, or on seeing the stop)
        // is joined so that a panic is never lost; one blocked in a read is left.
        result => {
            let done = matches!(&result, Ok(report) if report.ended) || handle.is_finished();
            if done && let Err(panic) = handle.join() {
                return Err(panicked(panic));
            }
            result
        }
    }
}

/// The pipeline's ends of the channels to and from the reader thread.
struct Reader {
    from: Receiver<Result<Read, SourceError>>,
    recycle: SyncSender<SourceBatch>,
}

/// The pipeline's side of [`run`].
fn drive(
    reader: &Reader,
    at: &mut SourceView,
    pipeline: &mut Pipeline,
    mut sink: Box<dyn LakeSink>,
    opts: &RunOptions,
    start: Start<'_>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<RunReport, RuntimeError> {
    let started = Instant::now();
    sink.begin_epoch(start.epoch);
    let mut sink = SinkThread::start(sink);
    let first_epoch = start.epoch;
    let mut epoch = start.epoch;
    let mut files = 0u64;
    let mut checkpoint = CheckpointStats::default();
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
    let mut close_epoch =
        |sink: &mut SinkThread, at: &SourceView, pipeline: &mut Pipeline, epoch: u64| {
            sink.send(pipeline.take_output(true)?)?;
            let staged = sink.ask(|reply| SinkMsg::Prepare(epoch, reply))?;
            failpoint("epoch-staged");
            let staged = if let Some(cp) = start.checkpointer {
                let t = Instant::now();
                let state = pipeline.snapshot()?;
                let state_encode_ms = t.elapsed().as_secs_f64() * 1e3;
                let state_ref = cp.write_state(epoch, &state)?;
                failpoint("checkpoint-state-written");
                // The last moment before the commit: every file it names is there.
                let staged = sink.ask(|reply| SinkMsg::Verify(staged, reply))?;
                cp.commit(
                    &state_ref,
                    EpochEnd {
                        epoch,
                        positions: at.positions.clone(),
                        cursor: at.cursor,
                        counters: pipeline.counters(),
                        staged: staged.clone(),
                        start: None,
                        created_at_ms: now_ms(),
                        state_encode_ms,
                    },
                )?;
                checkpoint = CheckpointStats {
                    bytes: state.len() as u64,
                    duration: t.elapsed(),
                };
                tracing::debug!(
                    epoch,
                    bytes = state.len(),
                    ms = t.elapsed().as_secs_f64() * 1e3,
                    "checkpoint committed"
                );
                failpoint("checkpoint-committed");
                staged
            } else {
                staged
            };
            let n = staged.len() as u64;
            sink.ask(|reply| SinkMsg::Publish(staged, reply))?;
            failpoint("epoch-published");
            if let Some(cp) = start.checkpointer {
                cp.prune()?;
            }
            Ok::<u64, RuntimeError>(n)
        };
    while !opts.stop.load(Ordering::Relaxed) {
        // Wake up now and then to see the stop flag and the epoch clock.
        let read = match reader.from.recv_timeout(opts.poll_backoff) {
            Ok(read) => Some(read?),
            Err(RecvTimeoutError::Timeout) => None,
            // The reader hangs up after `Ended` (handled below), after a stop, or
            // because it failed: then nothing past `at` can be trusted to come.
            Err(RecvTimeoutError::Disconnected) if opts.stop.load(Ordering::Relaxed) => break,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(RuntimeError::Reader(String::new()));
            }
        };
        match read {
            Some(Read::Records {
                batch,
                decoded,
                at: view,
            }) => {
                pipeline.process_decoded(&batch, &decoded, now_ms())?;
                pipeline.set_statuses(&view.statuses);
                pipeline.advance();
                *at = view;
                // Full or gone: then the buffer is simply dropped.
                let _ = reader.recycle.try_send(batch);
            }
            Some(Read::Pending(view)) => {
                pipeline.set_statuses(&view.statuses);
                pipeline.advance();
                *at = view;
            }
            Some(Read::Ended(view)) => {
                *at = view;
                pipeline.flush_all();
                ended = true;
                break;
            }
            None => {}
        }
        sink.send(pipeline.take_output(false)?)?;
        if let Some(cp) = start.checkpointer
            && cp.lease().is_lost()
        {
            // The renewal found the lease gone: stop now rather than at the commit.
            cp.lease().check().map_err(CheckpointError::from)?;
        }
        if last_commit.elapsed() >= opts.commit_interval {
            files += close_epoch(&mut sink, at, pipeline, epoch)?;
            epoch += 1;
            last_commit = Instant::now();
        }
        if last_progress.elapsed() >= Duration::from_millis(200) {
            progress(&report(pipeline, epoch - first_epoch));
            last_progress = Instant::now();
        }
    }
    files += close_epoch(&mut sink, at, pipeline, epoch)?;
    sink.close()?;
    progress(&report(pipeline, epoch + 1 - first_epoch));
    Ok(RunReport {
        counters: pipeline.counters(),
        epochs: epoch + 1 - first_epoch,
        last_epoch: epoch,
        files,
        ended,
        checkpoint,
        elapsed: started.elapsed(),
    })
}

/// Size and duration of a checkpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckpointStats {
    /// Bytes of the (compressed) state.
    pub bytes: u64,
    /// Time to encode and commit it.
    pub duration: Duration,
}
