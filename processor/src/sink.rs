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

/// Where the processor's output goes.
pub trait LakeSink: Send {
    /// Takes rows for the current epoch. They may be encoded and uploaded right away,
    /// but into staging only.
    fn write(&mut self, batch: TableBatch) -> Result<(), BoxError>;

    /// Completes every file of the epoch in staging and lists them.
    fn prepare_commit(&mut self, epoch: u64) -> Result<Vec<StagedFile>, BoxError>;

    /// Makes staged files visible at their targets, each atomically. Idempotent: a file
    /// already published (its staged copy gone and its target present) is skipped.
    fn publish(&mut self, files: &[StagedFile]) -> Result<(), BoxError>;

    /// Deletes everything this pipeline has staged: files of epochs whose checkpoint
    /// never committed. Called at start-up, after re-publishing the last checkpoint.
    fn clean_staging(&mut self) -> Result<u64, BoxError>;

    /// Deletes this pipeline's published files of epochs after `epoch`. Used only when
    /// a newer checkpoint turned out damaged and recovery fell back to `epoch`: its
    /// records are read again, so the files they made must go.
    fn retract_after(&mut self, epoch: u64) -> Result<u64, BoxError>;
}
