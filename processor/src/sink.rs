//! The sink side the runtime drives: stage, then publish.
//!
//! Writing and making visible are separate steps so that a checkpoint can sit between
//! them: files of an epoch are staged where readers never look, the epoch's
//! checkpoint records them, and only then are they published. Publishing must be
//! idempotent — a restarted process re-publishes the files of the last committed
//! checkpoint, some of which may already be in place.

use crate::output::TableBatch;
use rushhour_schemas::Table;

/// Any error a sink reports.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A complete file written for an epoch, not yet visible to readers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StagedFile {
    /// The table it belongs to.
    pub table: Table,
    /// Where it is staged, relative to the lake root.
    pub staged: String,
    /// Where it will be published, relative to the lake root.
    pub target: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// Whose staged files [`LakeSink::clean_staging`] deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// Every generation older than this process's.
    OlderThanMine,
    /// One generation (a fenced consumer-group member).
    Generation(u64),
}

/// Where the processor's output goes.
///
/// Life cycle, per epoch: [`begin_epoch`](LakeSink::begin_epoch), any number of
/// [`write`](LakeSink::write)s, [`prepare_commit`](LakeSink::prepare_commit); the
/// runtime then commits a checkpoint naming the staged files and calls
/// [`publish`](LakeSink::publish). At start-up, recovery calls `publish` for the
/// checkpoint it resumed from, then [`clean_staging`](LakeSink::clean_staging) and
/// [`retract`](LakeSink::retract) — only after its own start checkpoint has fenced
/// every earlier process.
pub trait LakeSink: Send {
    /// Starts epoch `epoch`: every file written from now on belongs to it and carries
    /// its number. Called before the first write of each epoch.
    fn begin_epoch(&mut self, epoch: u64);

    /// Takes rows for the current epoch. They may be encoded and uploaded right away,
    /// but into staging only.
    fn write(&mut self, batch: TableBatch) -> Result<(), BoxError>;

    /// Completes every file of the epoch `epoch` (the current one) in staging and
    /// lists them; the next epoch begins.
    fn prepare_commit(&mut self, epoch: u64) -> Result<Vec<StagedFile>, BoxError>;

    /// Errors unless every file is staged and complete (present, with its size): a
    /// checkpoint never names a file that is not there.
    fn verify_staged(&mut self, files: &[StagedFile]) -> Result<(), BoxError>;

    /// Errors unless every file can still be published: staged and complete, or
    /// already at its target. Recovery asks it of a checkpoint before resuming from
    /// it, and falls back past one whose files are lost (deleted from staging by hand
    /// or by a storage lifecycle rule) instead of failing after its start checkpoint.
    fn verify_publishable(&mut self, files: &[StagedFile]) -> Result<(), BoxError>;

    /// Makes staged files visible at their targets, each atomically. Idempotent: a file
    /// already published (its staged copy gone and its target present) is skipped.
    fn publish(&mut self, files: &[StagedFile]) -> Result<(), BoxError>;

    /// Deletes what other processes of this pipeline staged — `which` says whose —
    /// files of epochs that never committed, whose records are read again. Called only
    /// once those processes can never commit: at start-up after the start checkpoint
    /// fenced every earlier one ([`Stale::OlderThanMine`]), or in a consumer group
    /// after one member fenced another ([`Stale::Generation`]). Never touches this
    /// process's own staging.
    fn clean_staging(&mut self, which: Stale) -> Result<u64, BoxError>;

    /// Deletes this pipeline's published files of the epochs in `(after, before)` (both
    /// exclusive): those whose names carry such an epoch, and the `listed` ones (lake
    /// paths, taken from those epochs' manifests). Used when recovery fell back past
    /// damaged checkpoints: their records are read again, so the files they made must
    /// go. Idempotent.
    fn retract(&mut self, after: u64, before: u64, listed: &[String]) -> Result<u64, BoxError>;
}
