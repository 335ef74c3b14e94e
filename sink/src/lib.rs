//! The rushhour lake: Parquet files on a local directory or an object store, staged
//! and then published, so that readers never see a partial or uncommitted file.
//!
//! Everything goes through `object_store`, with no local-only shortcut: a file is
//! encoded into a spool and, once complete, uploaded to
//! `_staging/<pipeline>/g<generation>/…` (one `PUT`, or multipart when large; retried
//! as a whole, see [`upload`]) and, once committed, moved to its place under `raw/` or
//! `curated/` with one `rename` — an atomic rename on a local disk, a server-side copy
//! then delete on S3, where an object appears whole or not at all. Publishing tolerates being repeated, which is what lets a restarted
//! process finish a half-done publish.
//!
//! File names are `part-<pipeline>.<epoch>-g<generation>-<seq>.parquet`: the epoch has
//! a fixed width of 20 digits behind a `.`, which a pipeline name cannot contain, so a
//! file's pipeline and epoch are read back exactly — what retracting an undone epoch
//! relies on. The generation (the writer's lease generation) keeps two processes'
//! files apart; staging is kept apart by generation too, so a process deletes only
//! what fenced, older generations staged.

mod checkpoints;
mod lake;
mod upload;

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use rushhour_cloud::retrying;
use rushhour_processor::sink::Stale;
use rushhour_processor::{BoxError, LakeSink, StagedFile, TableBatch};
use rushhour_schemas::Table;
use tempfile::SpooledTempFile;
use upload::{Spooled, upload};

pub use checkpoints::{CHECKPOINTS_DIR, ObjectCheckpointStore};
pub use lake::{Lake, LakeError};

/// Errors of the Parquet sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Encoding Parquet failed.
    #[error("writing Parquet file {path}: {source}")]
    Parquet {
        /// The staged file.
        path: String,
        /// The underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A file could not be spooled (memory, or a temporary file past 32 MiB).
    #[error("spooling {path}: {source}")]
    Spool {
        /// The staged file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The object store failed.
    #[error("lake {op} {path}: {source}")]
    Store {
        /// What was being done.
        op: &'static str,
        /// The object.
        path: String,
        /// The underlying error.
        #[source]
        source: object_store::Error,
    },
    /// A staged file to publish is gone and its target is not there either.
    #[error("cannot publish {staged}: neither it nor {target} exists")]
    LostFile {
        /// The staged path.
        staged: String,
        /// The target path.
        target: String,
    },
    /// A file a checkpoint is about to name is not staged, or not complete.
    #[error("staged file {staged} is {problem}: the epoch cannot be committed")]
    NotStaged {
        /// The staged path.
        staged: String,
        /// What is wrong.
        problem: String,
    },
    /// A pipeline name that cannot go into file names.
    #[error("pipeline name `{0}` cannot be used: use letters, digits, - and _")]
    BadName(String),
    /// Rows written before an epoch began, or an epoch committed out of turn (a bug).
    #[error("sink used out of order: {0}")]
    OutOfOrder(String),
}

/// Tuning of the Parquet files.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Rows per row group (readers like 100k–1M).
    pub row_group_rows: usize,
    /// A file is closed and a new one started past about this many bytes.
    pub target_file_bytes: usize,
    /// zstd level.
    pub zstd_level: i32,
    /// Bytes of a file kept in memory until it is uploaded; a larger file spills to a
    /// temporary file (see [`upload`]).
    pub spool_in_memory: usize,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            row_group_rows: 512 * 1024,
            target_file_bytes: 256 << 20,
            zstd_level: 1,
            spool_in_memory: upload::SPOOL_IN_MEMORY,
        }
    }
}

struct OpenFile {
    writer: ArrowWriter<SpooledTempFile>,
    staged: Path,
    target: Path,
    table: Table,
    rows: u64,
}

/// Writes table batches as Parquet into a [`Lake`]; see the crate docs.
pub struct ParquetSink {
    lake: Lake,
    generation: u64,
    pipeline: String,
    epoch: Option<u64>,
    seq: u32,
    props: WriterProperties,
    opts: SinkOptions,
    open: BTreeMap<(Table, String), OpenFile>,
    closed: Vec<StagedFile>,
}

impl ParquetSink {
    /// A sink into `lake` for the pipeline named `pipeline`, written by the holder of
    /// lease generation `generation` (it goes into file names and the staging
    /// directory, `_staging/<pipeline>/g<generation>/`).
    pub fn new(
        lake: Lake,
        pipeline: &str,
        generation: u64,
        opts: SinkOptions,
    ) -> Result<ParquetSink, SinkError> {
        let name_ok = !pipeline.is_empty()
            && pipeline
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(SinkError::BadName(pipeline.to_owned()));
        }
        let level = ZstdLevel::try_new(opts.zstd_level).unwrap_or_default();
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(opts.row_group_rows));
        // Columns with a new value on (nearly) every row: a dictionary would only be
        // built to be thrown away when it outgrows its page.
        for unique in ["event_id", "position", "raw", "raw_bytes"] {
            props = props.set_column_dictionary_enabled(ColumnPath::from(unique), false);
        }
        let props = props.build();
        Ok(ParquetSink {
            lake,
            generation,
            pipeline: pipeline.to_owned(),
            epoch: None,
            seq: 0,
            props,
            opts,
            open: BTreeMap::new(),
            closed: Vec::new(),
        })
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        self.lake.store()
    }

    /// Completes files in staging: their last row groups are encoded, then they are
    /// uploaded in parallel on the I/O runtime ([`PARALLEL_REQUESTS`] at a time).
    fn close_files(&mut self, files: Vec<OpenFile>) -> Result<(), SinkError> {
        let mut done = Vec::with_capacity(files.len());
        for file in files {
            let path = || file.staged.to_string();
            let spool = file
                .writer
                .into_inner()
                .map_err(|source| SinkError::Parquet {
                    path: path(),
                    source,
                })?;
            let data = Spooled::new(spool.into_inner()).map_err(|source| SinkError::Spool {
                path: path(),
                source,
            })?;
            done.push((
                StagedFile {
                    table: file.table,
                    staged: self.lake.relative(&file.staged),
                    target: self.lake.relative(&file.target),
                    rows: file.rows,
                    bytes: data.len(),
                },
                file.staged,
                data,
            ));
        }
        use futures::{StreamExt, TryStreamExt};
        let store = self.store();
        let uploads = done.iter().map(|(_, path, data)| async {
            upload(store.as_ref(), path, data)
                .await
                .map_err(|source| SinkError::Store {
                    op: "upload",
                    path: path.to_string(),
                    source,
                })
        });
        self.lake.io().block_on(
            futures::stream::iter(uploads)
                .buffer_unordered(PARALLEL_REQUESTS)
                .try_collect::<()>(),
        )?;
        self.closed
            .extend(done.into_iter().map(|(file, _, _)| file));
        Ok(())
    }

    fn write_batch(&mut self, batch: TableBatch) -> Result<(), SinkError> {
        let key = (batch.table, batch.partition.clone());
        if !self.open.contains_key(&key) {
            let Some(epoch) = self.epoch else {
                return Err(SinkError::OutOfOrder(
                    "rows written before an epoch began".into(),
                ));
            };
            self.seq += 1;
            let name = file_name(&self.pipeline, epoch, self.generation, self.seq);
            let mut dir = batch.table.dir().to_owned();
            if !batch.partition.is_empty() {
                dir.push('/');
                dir.push_str(&batch.partition);
            }
            let staged = self
                .lake
                .path(&format!("{}/{dir}/{name}", self.staging_dir()));
            let target = self.lake.path(&format!("{dir}/{name}"));
            let writer = ArrowWriter::try_new(
                upload::spool(self.opts.spool_in_memory),
                batch.table.schema(),
                Some(self.props.clone()),
            )
            .map_err(|source| SinkError::Parquet {
                path: staged.to_string(),
                source,
            })?;
            self.open.insert(
                key.clone(),
                OpenFile {
                    writer,
                    staged,
                    target,
                    table: batch.table,
                    rows: 0,
                },
            );
        }
        let Some(file) = self.open.get_mut(&key) else {
            return Ok(());
        };
        let rows = batch.batch.num_rows() as u64;
        file.writer
            .write(&batch.batch)
            .map_err(|source| SinkError::Parquet {
                path: file.staged.to_string(),
                source,
            })?;
        file.rows += rows;
        if file.writer.bytes_written() + file.writer.in_progress_size()
            >= self.opts.target_file_bytes
            && let Some(file) = self.open.remove(&key)
        {
            self.close_files(vec![file])?;
        }
        Ok(())
    }

    /// Every object under `relative` (a lake-relative prefix).
    fn list_under(&self, relative: &str) -> Result<Vec<object_store::ObjectMeta>, SinkError> {
        use futures::TryStreamExt;
        let prefix = self.lake.path(relative);
        let store = self.store();
        self.lake
            .io()
            .block_on(retrying("listing the lake", || {
                store.list(Some(&prefix)).try_collect()
            }))
            .map_err(|source| SinkError::Store {
                op: "list",
                path: prefix.to_string(),
                source,
            })
    }

    /// This process's staging directory, lake-relative.
    fn staging_dir(&self) -> String {
        format!(
            "_staging/{}/{}",
            self.pipeline,
            generation_dir(self.generation)
        )
    }

    fn delete(&self, path: &Path) -> Result<bool, SinkError> {
        let store = self.store();
        match self
            .lake
            .io()
            .block_on(retrying("deleting from the lake", || store.delete(path)))
        {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(SinkError::Store {
                op: "delete",
                path: path.to_string(),
                source,
            }),
        }
    }

    /// Deletes this pipeline's published files of the epochs in `(after, before)`:
    /// those named with such an epoch, and the `listed` ones.
    fn retract_epochs(
        &mut self,
        after: u64,
        before: u64,
        listed: &[String],
    ) -> Result<u64, SinkError> {
        let mut deleted = 0;
        for target in listed {
            let in_lake = target.starts_with("raw/") || target.starts_with("curated/");
            if in_lake && self.delete(&self.lake.path(target))? {
                deleted += 1;
            }
        }
        for table in Table::ALL {
            for meta in self.list_under(table.dir())? {
                let undone = meta
                    .location
                    .filename()
                    .and_then(|name| file_epoch(name, &self.pipeline))
                    .is_some_and(|e| e > after && e < before);
                if undone && self.delete(&meta.location)? {
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes what other generations of this pipeline staged: `which` says whose.
    fn delete_staged(&mut self, which: Stale) -> Result<u64, SinkError> {
        let root = self.lake.path(&format!("_staging/{}", self.pipeline));
        let listed = self.list_under(&format!("_staging/{}", self.pipeline))?;
        let mut deleted = 0;
        for meta in &listed {
            let stale = meta
                .location
                .prefix_match(&root)
                .and_then(|mut parts| parts.next())
                .and_then(|dir| parse_generation_dir(dir.as_ref()))
                .is_some_and(|g| {
                    g != self.generation
                        && match which {
                            Stale::OlderThanMine => g < self.generation,
                            Stale::Generation(one) => g == one,
                        }
                });
            if stale && self.delete(&meta.location)? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    fn verify(&mut self, files: &[StagedFile]) -> Result<(), SinkError> {
        for f in files {
            let staged = self.lake.path(&f.staged);
            match self.head(&staged) {
                Ok(meta) if meta.size == f.bytes => {}
                Ok(meta) => {
                    return Err(SinkError::NotStaged {
                        staged: f.staged.clone(),
                        problem: format!("{} bytes, not {}", meta.size, f.bytes),
                    });
                }
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(SinkError::NotStaged {
                        staged: f.staged.clone(),
                        problem: "gone".into(),
                    });
                }
                Err(source) => {
                    return Err(SinkError::Store {
                        op: "stat",
                        path: f.staged.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    fn publishable(&mut self, files: &[StagedFile]) -> Result<(), SinkError> {
        for f in files {
            let Err(staged) = self.verify(std::slice::from_ref(f)) else {
                continue;
            };
            let target = self.lake.path(&f.target);
            match self.head(&target) {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => return Err(staged),
                Err(source) => {
                    return Err(SinkError::Store {
                        op: "stat",
                        path: f.target.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    fn head(&self, path: &Path) -> object_store::Result<object_store::ObjectMeta> {
        let store = self.store();
        self.lake
            .io()
            .block_on(retrying("reading the lake", || store.head(path)))
    }

    /// Moves staged files to their places, many at a time. Repeating a publish is
    /// harmless: a file already moved is found at its target.
    fn publish_files(&mut self, files: &[StagedFile]) -> Result<(), SinkError> {
        use futures::{StreamExt, TryStreamExt};
        let moves: Vec<(Path, Path, &StagedFile)> = files
            .iter()
            .map(|f| (self.lake.path(&f.staged), self.lake.path(&f.target), f))
            .collect();
        let (first, rest) = moves.split_at(moves.len().min(1));
        let store = self.store();
        let io = self.lake.io().clone();
        for m in first {
            io.block_on(publish_one(&store, m))?;
        }
        if !rest.is_empty() {
            rushhour_processor::failpoint("mid-publish");
        }
        io.block_on(
            futures::stream::iter(rest)
                .map(|m| publish_one(&store, m))
                .buffer_unordered(PARALLEL_REQUESTS)
                .try_collect::<()>(),
        )
    }
}

/// Files a sink uploads, or publishes, at once.
const PARALLEL_REQUESTS: usize = 16;

/// Moves one staged file to its target (a rename on a local disk, copy then delete on
/// S3). A staged file that is gone was moved by an earlier attempt if its target is
/// there.
async fn publish_one(
    store: &Arc<dyn ObjectStore>,
    (staged, target, f): &(Path, Path, &StagedFile),
) -> Result<(), SinkError> {
    match retrying("publishing", || store.rename(staged, target)).await {
        Ok(()) => Ok(()),
        Err(object_store::Error::NotFound { .. }) => {
            match retrying("reading the lake", || store.head(target)).await {
                Ok(_) => Ok(()),
                Err(object_store::Error::NotFound { .. }) => Err(SinkError::LostFile {
                    staged: f.staged.clone(),
                    target: f.target.clone(),
                }),
                Err(source) => Err(SinkError::Store {
                    op: "stat",
                    path: f.target.clone(),
                    source,
                }),
            }
        }
        Err(source) => Err(SinkError::Store {
            op: "publish",
            path: f.target.clone(),
            source,
        }),
    }
}

impl LakeSink for ParquetSink {
    fn begin_epoch(&mut self, epoch: u64) {
        self.epoch = Some(epoch);
    }

    fn write(&mut self, batch: TableBatch) -> Result<(), BoxError> {
        Ok(self.write_batch(batch)?)
    }

    fn prepare_commit(&mut self, epoch: u64) -> Result<Vec<StagedFile>, BoxError> {
        if self.epoch != Some(epoch) {
            return Err(Box::new(SinkError::OutOfOrder(format!(
                "epoch {epoch} committed while epoch {:?} is open",
                self.epoch
            ))));
        }
        let open = std::mem::take(&mut self.open);
        self.close_files(open.into_values().collect())?;
        self.epoch = Some(epoch + 1);
        Ok(std::mem::take(&mut self.closed))
    }

    fn verify_staged(&mut self, files: &[StagedFile]) -> Result<(), BoxError> {
        Ok(self.verify(files)?)
    }

    fn verify_publishable(&mut self, files: &[StagedFile]) -> Result<(), BoxError> {
        Ok(self.publishable(files)?)
    }

    fn publish(&mut self, files: &[StagedFile]) -> Result<(), BoxError> {
        Ok(self.publish_files(files)?)
    }

    fn clean_staging(&mut self, which: Stale) -> Result<u64, BoxError> {
        Ok(self.delete_staged(which)?)
    }

    fn retract(&mut self, after: u64, before: u64, listed: &[String]) -> Result<u64, BoxError> {
        Ok(self.retract_epochs(after, before, listed)?)
    }
}

/// The name of a lake file: `part-<pipeline>.<epoch:020>-g<generation>-<seq:04>.parquet`.
pub fn file_name(pipeline: &str, epoch: u64, generation: u64, seq: u32) -> String {
    format!("part-{pipeline}.{epoch:020}-g{generation}-{seq:04}.parquet")
}

/// The epoch of a lake file of `pipeline` (see [`file_name`]); `None` for files of
/// other pipelines or of other layouts.
pub fn file_epoch(name: &str, pipeline: &str) -> Option<u64> {
    let (owner, rest) = name.strip_prefix("part-")?.split_once('.')?;
    if owner != pipeline {
        return None;
    }
    let digits = rest.get(..20)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !rest[20..].starts_with("-g") {
        return None;
    }
    digits.parse().ok()
}

fn generation_dir(generation: u64) -> String {
    format!("g{generation:020}")
}

fn parse_generation_dir(dir: &str) -> Option<u64> {
    let digits = dir.strip_prefix('g')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests;
