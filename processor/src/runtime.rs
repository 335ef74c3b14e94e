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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::checkpoint::{
    CheckpointError, Checkpointer, EpochEnd, RecoveryPoint, StartRecord, StateRef,
};
use crate::group::{LakeRepair, Member};
use crate::operator::StateError;
use crate::output::TableBatch;
use crate::pipeline::{Counters, Pipeline};
use crate::raw::{DecodedBatch, Decoder};
use crate::sink::{BoxError, LakeSink, StagedFile, Stale};
use crate::source::{
    PartitionHandler, PartitionStatus, Poll, Positions, Source, SourceBatch, SourceError,
};

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
    /// The record path stopped.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
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
    /// How far the source's slowest partition was behind its newest record at its last
    /// read (Kinesis' `MillisBehindLatest`), when the source knows.
    pub behind_ms: Option<i64>,
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
    Clean(Stale, SyncSender<Result<u64, BoxError>>),
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
                        SinkMsg::Clean(which, reply) => {
                            let result = sink.clean_staging(which);
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
/// ([`Checkpointer::recovery_point`], whose `accept` restored the checkpoint's state
/// into `pipeline`) and the source reopened at its positions:
///
/// 1. the pipeline holds the state of the checkpoint resumed from (or, on a fresh
///    start, every partition of the source afresh);
/// 2. commits a *start checkpoint*, numbered one past the newest manifest of any kind:
///    the fence — no earlier process can commit after it (see [`crate::checkpoint`]);
///    it names the resumed checkpoint's state and files, so a crash from here on
///    resumes from it;
/// 3. finishes publishing the resumed checkpoint's files (idempotently);
/// 4. deletes what earlier, now fenced, processes staged;
/// 5. retracts the published files of undone epochs — those between the checkpoint
///    resumed from and the start checkpoint (newer checkpoints that were damaged; when
///    the checkpoint resumed from is itself a start checkpoint, from where *it* resumed,
///    so a retraction a crash cut short is finished);
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
    let start_epoch =
        point
            .newest
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| CheckpointError::Incompatible {
                location: checkpointer.location(),
                name: "the newest manifest".into(),
                reason: "its epoch number is the largest there is".into(),
            })?;
    let (state, positions, cursor, staged, resumed_from) = match restored {
        Some(r) => {
            source.set_cursor(r.manifest.cursor);
            (
                StateRef::of(&r.manifest),
                r.manifest.positions.clone(),
                r.manifest.cursor,
                r.manifest.staged.clone(),
                // Resuming from a start checkpoint is resuming from where it resumed:
                // what it undid stays undone until an ordinary checkpoint commits.
                r.manifest
                    .start
                    .map_or(r.manifest.epoch, |s| s.resumed_from),
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
            floors: BTreeMap::new(),
            active: BTreeMap::new(),
            ended: Vec::new(),
        },
    )?;
    failpoint("start-committed");
    sink.publish(&staged).map_err(RuntimeError::Sink)?;
    let cleaned = sink
        .clean_staging(Stale::OlderThanMine)
        .map_err(RuntimeError::Sink)?;
    if cleaned > 0 {
        tracing::info!(
            files = cleaned,
            "deleted files staged by earlier processes for epochs that never committed"
        );
    }
    // One range covers it all: resuming from a start checkpoint inherits its origin.
    let undone = (resumed_from + 1 < start_epoch).then_some((resumed_from, start_epoch));
    if let Some((after, before)) = undone {
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
    /// For a member of a consumer group: its membership, through which partitions
    /// assigned and revoked while the run goes are taken over and handed over.
    pub group: Option<Arc<Member>>,
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
        decoded: DecodedBatch,
        at: SourceView,
    },
    /// Nothing new for now.
    Pending(SourceView),
    /// A bounded source has ended.
    Ended(SourceView),
    /// Partitions assigned to this process, with where to start each if no
    /// checkpoint holds it; the reply is where to read each one from.
    Assign {
        defaults: Positions,
        reply: SyncSender<Result<Positions, SourceError>>,
    },
    /// Partitions that continue others read to their end (a Kinesis reshard), with
    /// where to start each; the reply is where to read each one from.
    Continue {
        parents: Vec<u32>,
        children: Positions,
        reply: SyncSender<Result<Positions, SourceError>>,
    },
    /// Partitions about to be revoked; replied to once they are checkpointed and
    /// released.
    Revoke {
        parts: Vec<u32>,
        reply: SyncSender<Result<(), SourceError>>,
    },
    /// Partitions a bounded run has read to their end (`ends`: every partition's);
    /// replied to once they are checkpointed and handed over (`true`), or with
    /// `false` while their rider windows still wait for credits from elsewhere.
    Finished {
        parts: Vec<u32>,
        ends: Positions,
        reply: SyncSender<Result<bool, SourceError>>,
    },
}

/// The [`PartitionHandler`] a source with changing partitions calls from the reader
/// thread: it queues the change behind the batches read before and waits for the
/// pipeline's answer.
struct Handover {
    to_pipeline: SyncSender<Result<Read, SourceError>>,
    committed: Arc<std::sync::Mutex<Option<Positions>>>,
    member: Option<Arc<Member>>,
}

fn handover_stopped() -> SourceError {
    SourceError::Handover("the pipeline has stopped".into())
}

impl Handover {
    /// Queues the change `make` builds (behind the batches read before) and waits
    /// for the pipeline's answer.
    fn ask<T>(
        &self,
        make: impl FnOnce(SyncSender<Result<T, SourceError>>) -> Read,
    ) -> Result<T, SourceError> {
        let (reply, answer) = sync_channel(1);
        self.to_pipeline
            .send(Ok(make(reply)))
            .map_err(|_| handover_stopped())?;
        answer.recv().map_err(|_| handover_stopped())?
    }
}

impl PartitionHandler for Handover {
    fn assigned(&self, defaults: &Positions) -> Result<Positions, SourceError> {
        self.ask(|reply| Read::Assign {
            defaults: defaults.clone(),
            reply,
        })
    }

    fn continued(&self, parents: &[u32], children: &Positions) -> Result<Positions, SourceError> {
        self.ask(|reply| Read::Continue {
            parents: parents.to_vec(),
            children: children.clone(),
            reply,
        })
    }

    fn revoked(&self, parts: &[u32]) -> Result<(), SourceError> {
        self.ask(|reply| Read::Revoke {
            parts: parts.to_vec(),
            reply,
        })
    }

    fn finished(&self, parts: &[u32], ends: &Positions) -> Result<bool, SourceError> {
        self.ask(|reply| Read::Finished {
            parts: parts.to_vec(),
            ends: ends.clone(),
            reply,
        })
    }

    fn committed(&self) -> Option<Positions> {
        self.committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn done_elsewhere(&self, ends: &Positions) -> bool {
        self.member
            .as_ref()
            .is_some_and(|m| m.all_handed_over_at(ends).unwrap_or(false))
    }
}

/// The lake repairs of a takeover, done by the sink thread.
struct SinkRepair<'a>(&'a mut SinkThread);

impl LakeRepair for SinkRepair<'_> {
    fn publish(&mut self, files: &[StagedFile]) -> Result<(), BoxError> {
        let files = files.to_vec();
        self.0
            .ask(|reply| SinkMsg::Publish(files, reply))
            .map_err(|e| Box::new(e) as BoxError)
    }

    fn clean_staging_of(&mut self, generation: u64) -> Result<u64, BoxError> {
        self.0
            .ask(|reply| SinkMsg::Clean(Stale::Generation(generation), reply))
            .map_err(|e| Box::new(e) as BoxError)
    }
}

/// A source's statuses and positions after a poll.
struct SourceView {
    statuses: BTreeMap<u32, PartitionStatus>,
    positions: Positions,
    cursor: u32,
    behind_ms: Option<i64>,
}

impl SourceView {
    fn of(source: &dyn Source) -> SourceView {
        SourceView {
            statuses: source.statuses(),
            positions: source.positions(),
            cursor: source.cursor(),
            behind_ms: source.behind_ms(),
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
    mut decoder: Decoder,
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
                match decoder.decode(&batch, now_ms()) {
                    Ok(decoded) => Ok(Read::Records {
                        batch,
                        decoded,
                        at: SourceView::of(source),
                    }),
                    // Only a bug can get here: the raw schemas are fixed.
                    Err(e) => Err(SourceError::Decode(e.to_string())),
                }
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
    let all_partitions = source.all_partitions();
    let (to_pipeline, from_reader) = sync_channel(READ_AHEAD);
    let (recycle, recycled) = sync_channel(READ_AHEAD);
    let committed = Arc::new(std::sync::Mutex::new(None));
    source.attach(Arc::new(Handover {
        to_pipeline: to_pipeline.clone(),
        committed: committed.clone(),
        member: start.group.clone(),
    }));
    let (stop, poll_backoff) = (opts.stop.clone(), opts.poll_backoff);
    let decoder = pipeline.decoder();
    let handle = std::thread::Builder::new()
        .name("rushhour-read".into())
        .spawn(move || {
            read_ahead(
                source.as_mut(),
                decoder,
                to_pipeline,
                recycled,
                &stop,
                poll_backoff,
            )
        })
        .map_err(|e| RuntimeError::Reader(format!("cannot start the reader thread: {e}")))?;
    let reader = Reader {
        from: from_reader,
        recycle,
        committed: Some(committed),
    };
    let result = drive(
        &reader,
        &mut at,
        pipeline,
        (sink, all_partitions),
        opts,
        start,
        progress,
    );
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
    /// Where the positions of each commit go, for the source to report.
    committed: Option<Arc<std::sync::Mutex<Option<Positions>>>>,
}

/// The pipeline's side of [`run`]. A failure while this process no longer holds its
/// lease (or its claims) is reported as that: it is why, not a stray I/O error.
fn drive(
    reader: &Reader,
    at: &mut SourceView,
    pipeline: &mut Pipeline,
    (sink, all_partitions): (Box<dyn LakeSink>, Vec<u32>),
    opts: &RunOptions,
    start: Start<'_>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<RunReport, RuntimeError> {
    let checkpointer = start.checkpointer;
    let mut driver = Driver::new(sink, start);
    driver.all_partitions = all_partitions;
    let result = driver.run(reader, at, pipeline, opts, progress);
    match (result, checkpointer) {
        (Err(e), Some(cp)) if !matches!(e, RuntimeError::Checkpoint(_)) => match cp.fence().check()
        {
            Err(lost) => Err(lost.into()),
            Ok(()) => Err(e),
        },
        (result, _) => result,
    }
}

/// The state of the pipeline thread through a run.
struct Driver<'a> {
    sink: SinkThread,
    start: Start<'a>,
    started: Instant,
    epoch: u64,
    files: u64,
    checkpoint: CheckpointStats,
    last_commit: Instant,
    /// Counts of partitions read to their end and handed over during the run.
    finished: Counters,
    /// Every partition of the source, whoever reads it (rider credits' bound).
    all_partitions: Vec<u32>,
    /// In a bounded group run, every partition's end, once everything held is read.
    ends: Option<Positions>,
    /// Everything held is read and committed at its end, waiting for rider credits.
    at_end_committed: bool,
}

impl<'a> Driver<'a> {
    fn new(mut sink: Box<dyn LakeSink>, start: Start<'a>) -> Driver<'a> {
        sink.begin_epoch(start.epoch);
        Driver {
            sink: SinkThread::start(sink),
            epoch: start.epoch,
            start,
            started: Instant::now(),
            files: 0,
            checkpoint: CheckpointStats::default(),
            last_commit: Instant::now(),
            finished: Counters::default(),
            all_partitions: Vec::new(),
            ends: None,
            at_end_committed: false,
        }
    }

    fn progress(&self, pipeline: &Pipeline, epochs: u64, at: &SourceView) -> Progress {
        let mut counters = pipeline.counters();
        counters += self.finished;
        Progress {
            counters,
            watermark: pipeline.watermark(),
            state_entries: pipeline.state_entries(),
            epochs,
            elapsed: self.started.elapsed(),
            behind_ms: at.behind_ms,
        }
    }

    fn run(
        mut self,
        reader: &Reader,
        at: &mut SourceView,
        pipeline: &mut Pipeline,
        opts: &RunOptions,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<RunReport, RuntimeError> {
        let first_epoch = self.start.epoch;
        let mut last_progress = Instant::now();
        let mut ended = false;
        while !opts.stop.load(Ordering::Relaxed) {
            // Wake up now and then to see the stop flag and the epoch clock.
            let read = match reader.from.recv_timeout(opts.poll_backoff) {
                Ok(read) => Some(read?),
                Err(RecvTimeoutError::Timeout) => None,
                // The reader hangs up after `Ended` (handled below), after a stop, or
                // because it failed: then nothing past `at` can be trusted to come.
                Err(RecvTimeoutError::Disconnected) if opts.stop.load(Ordering::Relaxed) => {
                    break;
                }
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
                    pipeline.process_decoded(&batch, decoded)?;
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
                Some(Read::Assign { defaults, reply }) => {
                    let taken = self.assign(&defaults, at, pipeline);
                    let answer = match &taken {
                        Ok(positions) => Ok(positions.clone()),
                        Err(e) => Err(SourceError::Handover(e.to_string())),
                    };
                    let _ = reply.send(answer);
                    taken?;
                }
                Some(Read::Continue {
                    parents,
                    children,
                    reply,
                }) => {
                    let answer = if self.start.group.is_some() {
                        Err(SourceError::Handover(
                            "a source with partitions that continue others (Kinesis shards) \
                             cannot be read by a group"
                                .into(),
                        ))
                    } else {
                        pipeline.taking_over(|p| {
                            for &child in children.keys() {
                                if !p.holds(child) {
                                    p.hold_continuing(child, &parents);
                                }
                            }
                        });
                        tracing::info!(?parents, children = ?children.keys().collect::<Vec<_>>(), "partitions continued by new ones");
                        at.positions
                            .extend(children.iter().map(|(p, pos)| (*p, *pos)));
                        Ok(children)
                    };
                    let _ = reply.send(answer);
                }
                Some(Read::Finished { parts, ends, reply }) => {
                    // Everything held is read to its end: its windows are final here,
                    // as at the end of a file (the state handed over has none open) —
                    // once no rider credit can still come from another member.
                    let flushed = pipeline.held().iter().all(|p| parts.contains(p));
                    let waiting = if flushed {
                        self.ends = Some(ends);
                        self.credits_outstanding(at, pipeline, &reader.committed)
                    } else {
                        Ok(false)
                    };
                    let given = match waiting {
                        Ok(true) => Ok(false),
                        Ok(false) => {
                            if flushed {
                                pipeline.flush_all();
                            }
                            let counters = pipeline.counters_of(&parts);
                            let given =
                                self.revoke(&parts, at, pipeline, &reader.committed, flushed);
                            if given.is_ok() {
                                self.finished += counters;
                            }
                            given.map(|()| true)
                        }
                        Err(e) => Err(e),
                    };
                    let answer = match &given {
                        Ok(done) => Ok(*done),
                        Err(e) => Err(SourceError::Handover(e.to_string())),
                    };
                    let _ = reply.send(answer);
                    given?;
                }
                Some(Read::Revoke { parts, reply }) => {
                    let given = self.revoke(&parts, at, pipeline, &reader.committed, false);
                    let answer = match &given {
                        Ok(()) => Ok(()),
                        Err(e) => Err(SourceError::Handover(e.to_string())),
                    };
                    let _ = reply.send(answer);
                    given?;
                }
                None => {}
            }
            self.sink.send(pipeline.take_output()?)?;
            if let Some(cp) = self.start.checkpointer
                && cp.fence().is_lost()
            {
                // The renewal found the lease gone: stop now rather than at the commit.
                cp.fence().check()?;
            }
            if self.last_commit.elapsed() >= opts.commit_interval {
                self.close_epoch(at, pipeline, &reader.committed)?;
            }
            if last_progress.elapsed() >= Duration::from_millis(200) {
                progress(&self.progress(pipeline, self.epoch - first_epoch, at));
                last_progress = Instant::now();
            }
        }
        self.close_epoch(at, pipeline, &reader.committed)?;
        let mut counters = pipeline.counters();
        counters += self.finished;
        // A member that stops cleanly hands its partitions over, so that whoever takes
        // them next need not fence it.
        if let Some(member) = &self.start.group {
            let held = pipeline.held();
            // Complete only at the end of a bounded run, where every window was flushed.
            member.give_up(&held, pipeline, &at.positions, ended)?;
        }
        let epochs = self.epoch - first_epoch;
        progress(&self.progress(pipeline, epochs, at));
        self.sink.close()?;
        Ok(RunReport {
            counters,
            epochs,
            last_epoch: self.epoch - 1,
            files: self.files,
            ended,
            checkpoint: self.checkpoint,
            elapsed: self.started.elapsed(),
        })
    }

    /// With rider routing, everything held read to its end: whether rider credits may
    /// still come from partitions held elsewhere. The first time, commits (so that
    /// the others see this member at its end); then takes the credits committed since.
    fn credits_outstanding(
        &mut self,
        at: &SourceView,
        pipeline: &mut Pipeline,
        committed: &Option<Arc<std::sync::Mutex<Option<Positions>>>>,
    ) -> Result<bool, RuntimeError> {
        let Some(member) = self.start.group.clone() else {
            return Ok(false);
        };
        if !pipeline.routes_riders() {
            return Ok(false);
        }
        if self.at_end_committed {
            self.exchange_credits(&member, pipeline)?;
        } else {
            self.close_epoch(at, pipeline, committed)?;
            self.at_end_committed = true;
        }
        Ok(pipeline.rider_bound() != i64::MAX)
    }

    /// Takes the rider credits other members committed for the partitions held, and
    /// lets rider windows close as far as no more can come.
    fn exchange_credits(
        &self,
        member: &Member,
        pipeline: &mut Pipeline,
    ) -> Result<(), RuntimeError> {
        // The bound first: every credit committed with the states it was read from is
        // then in the store for `read_credits`.
        let group = member.group_view(&self.all_partitions, &pipeline.held())?;
        let taken = member.read_credits(pipeline)?;
        // Idle partitions here are judged by the watermark of those active anywhere
        // (raised before this epoch's commit publishes their floors).
        let active = pipeline
            .active_watermarks()
            .into_values()
            .chain(group.active)
            .min();
        if let Some(watermark) = active {
            pipeline.raise_idle_floors(watermark);
        }
        let bound = group.bound;
        pipeline.set_rider_bound(bound);
        pipeline.advance();
        tracing::debug!(bound, taken, "rider credits exchanged");
        Ok(())
    }

    /// Takes over assigned partitions (a consumer group's member).
    fn assign(
        &mut self,
        defaults: &Positions,
        at: &mut SourceView,
        pipeline: &mut Pipeline,
    ) -> Result<Positions, RuntimeError> {
        let Some(member) = self.start.group.as_deref() else {
            return Err(RuntimeError::Reader(
                "a source assigned partitions to a process that is not a group member".into(),
            ));
        };
        let positions = member.take(defaults, pipeline, &mut SinkRepair(&mut self.sink))?;
        self.at_end_committed = false;
        if pipeline.routes_riders() {
            // The credits committed for them since their state was saved.
            self.exchange_credits(member, pipeline)?;
        }
        tracing::info!(partitions = ?positions.keys().collect::<Vec<_>>(), held = ?pipeline.held(), "partitions assigned and taken over");
        // Until the source reports them, the next checkpoint has them from here.
        at.positions
            .extend(positions.iter().map(|(p, pos)| (*p, *pos)));
        Ok(positions)
    }

    /// Checkpoints, then releases, partitions about to be revoked.
    fn revoke(
        &mut self,
        parts: &[u32],
        at: &mut SourceView,
        pipeline: &mut Pipeline,
        committed: &Option<Arc<std::sync::Mutex<Option<Positions>>>>,
        complete: bool,
    ) -> Result<(), RuntimeError> {
        let Some(member) = self.start.group.clone() else {
            return Ok(());
        };
        self.close_epoch(at, pipeline, committed)?;
        member.give_up(parts, pipeline, &at.positions, complete)?;
        self.at_end_committed = false;
        tracing::info!(partitions = ?parts, held = ?pipeline.held(), "partitions revoked and handed over");
        at.positions.retain(|p, _| !parts.contains(p));
        at.statuses.retain(|p, _| !parts.contains(p));
        Ok(())
    }

    /// Ends the current epoch: stage its files, commit a checkpoint naming them, then
    /// publish them. `committed`, when given, receives the positions committed.
    fn close_epoch(
        &mut self,
        at: &SourceView,
        pipeline: &mut Pipeline,
        committed: &Option<Arc<std::sync::Mutex<Option<Positions>>>>,
    ) -> Result<(), RuntimeError> {
        let epoch = self.epoch;
        if let Some(member) = self.start.group.clone()
            && pipeline.routes_riders()
        {
            self.exchange_credits(&member, pipeline)?;
        }
        // After the exchange: credits never go out while being taken in.
        let credits = pipeline.take_credits();
        self.sink.send(pipeline.take_output()?)?;
        let staged = self.sink.ask(|reply| SinkMsg::Prepare(epoch, reply))?;
        failpoint("epoch-staged");
        let staged = if let Some(cp) = self.start.checkpointer {
            let t = Instant::now();
            let state = pipeline.snapshot()?;
            let state_encode_ms = t.elapsed().as_secs_f64() * 1e3;
            let state_ref = cp.write_state(epoch, &state)?;
            if let Some(member) = &self.start.group {
                member.write_credits(epoch, &credits)?;
            }
            failpoint("checkpoint-state-written");
            cp.fence().check()?;
            // The last moment before the commit: every file it names is there.
            let staged = self.sink.ask(|reply| SinkMsg::Verify(staged, reply))?;
            // Positions of the partitions whose state this checkpoint holds, only.
            let mut positions = at.positions.clone();
            positions.retain(|p, _| pipeline.holds(*p));
            cp.commit(
                &state_ref,
                EpochEnd {
                    epoch,
                    positions: positions.clone(),
                    cursor: at.cursor,
                    counters: pipeline.counters(),
                    staged: staged.clone(),
                    start: None,
                    created_at_ms: now_ms(),
                    state_encode_ms,
                    floors: if self.start.group.is_some() {
                        pipeline.floors()
                    } else {
                        BTreeMap::new()
                    },
                    active: if self.start.group.is_some() {
                        pipeline.active_watermarks()
                    } else {
                        BTreeMap::new()
                    },
                    ended: match &self.ends {
                        Some(ends) => positions
                            .iter()
                            .filter(|(p, at)| ends.get(p).is_some_and(|end| at.is_at_or_past(end)))
                            .map(|(&p, _)| p)
                            .collect(),
                        None => Vec::new(),
                    },
                },
            )?;
            self.checkpoint = CheckpointStats {
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
            if let Some(member) = &self.start.group {
                member.committed(pipeline);
            }
            if let Some(slot) = committed {
                *slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(positions);
            }
            staged
        } else {
            staged
        };
        self.files += staged.len() as u64;
        self.sink.ask(|reply| SinkMsg::Publish(staged, reply))?;
        failpoint("epoch-published");
        // The lake side of `benches/latency.sh`: every window that ends at or before
        // this watermark is now readable (take_output ran at this watermark).
        tracing::debug!(
            target: "rushhour::trace",
            epoch = self.epoch,
            watermark_ms = pipeline.watermark(),
            "published"
        );
        if let Some(cp) = self.start.checkpointer {
            cp.prune()?;
        }
        self.epoch += 1;
        self.last_commit = Instant::now();
        Ok(())
    }
}

/// Size and duration of a checkpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckpointStats {
    /// Bytes of the (compressed) state.
    pub bytes: u64,
    /// Time to encode and commit it.
    pub duration: Duration,
}
