//! The rushhour lake: Parquet files on a local directory or an object store, staged
//! and then published, so that readers never see a partial or uncommitted file.
//!
//! Everything goes through `object_store`, with no local-only shortcut: a file is
//! streamed (multipart) to `_staging/<pipeline>/<run>/…` and, once complete and committed, moved
//! to its place under `raw/` or `curated/` with one `rename` — an atomic rename on a
//! local disk, a server-side copy then delete on S3, where an object appears whole or
//! not at all. Publishing tolerates being repeated, which is what lets a restarted
//! process finish a half-done publish.
//!
//! File names carry the run, the epoch and a sequence number, so two runs never
//! overwrite each other's files and one epoch's files are easy to find.

mod checkpoints;
mod lake;

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use rushhour_processor::{BoxError, LakeSink, StagedFile, TableBatch};
use rushhour_schemas::Table;

pub use checkpoints::ObjectCheckpointStore;
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
    /// The async runtime could not start.
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(#[source] std::io::Error),
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
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            row_group_rows: 512 * 1024,
            target_file_bytes: 256 << 20,
            zstd_level: 1,
        }
    }
}

struct OpenFile {
    writer: AsyncArrowWriter<BufWriter>,
    staged: Path,
    target: Path,
    table: Table,
    rows: u64,
}

/// Writes table batches as Parquet into a [`Lake`]; see the crate docs.
pub struct ParquetSink {
    lake: Lake,
    rt: tokio::runtime::Runtime,
    run_id: String,
    pipeline: String,
    epoch: u64,
    seq: u32,
    props: WriterProperties,
    opts: SinkOptions,
    open: BTreeMap<(Table, String), OpenFile>,
    closed: Vec<StagedFile>,
}

impl ParquetSink {
    /// A sink into `lake` for the pipeline named `pipeline`; `run_id` goes into file
    /// names and the staging directory (`_staging/<pipeline>/<run_id>/`).
    pub fn new(
        lake: Lake,
        pipeline: &str,
        run_id: &str,
        opts: SinkOptions,
    ) -> Result<ParquetSink, SinkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SinkError::Runtime)?;
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
            rt,
            run_id: run_id.to_owned(),
            pipeline: pipeline.to_owned(),
            epoch: 1,
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

    fn close_file(&mut self, file: OpenFile) -> Result<(), SinkError> {
        let OpenFile {
            writer,
            staged,
            target,
            table,
            rows,
        } = file;
        self.rt
            .block_on(writer.close())
            .map_err(|source| SinkError::Parquet {
                path: staged.to_string(),
                source,
            })?;
        let bytes = self
            .rt
            .block_on(self.lake.store().head(&staged))
            .map_err(|source| SinkError::Store {
                op: "stat",
                path: staged.to_string(),
                source,
            })?
            .size;
        self.closed.push(StagedFile {
            table,
            staged: self.lake.relative(&staged),
            target: self.lake.relative(&target),
            rows,
            bytes,
        });
        Ok(())
    }

    fn write_batch(&mut self, batch: TableBatch) -> Result<(), SinkError> {
        let key = (batch.table, batch.partition.clone());
        if !self.open.contains_key(&key) {
            self.seq += 1;
            let name = format!(
                "part-{}-{:06}-{}-{:04}.parquet",
                self.pipeline, self.epoch, self.run_id, self.seq
            );
            let mut dir = batch.table.dir().to_owned();
            if !batch.partition.is_empty() {
                dir.push('/');
                dir.push_str(&batch.partition);
            }
            let staged = self.lake.path(&format!(
                "_staging/{}/{}/{dir}/{name}",
                self.pipeline, self.run_id
            ));
            let target = self.lake.path(&format!("{dir}/{name}"));
            let out = BufWriter::new(self.store(), staged.clone());
            let writer =
                AsyncArrowWriter::try_new(out, batch.table.schema(), Some(self.props.clone()))
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
        self.rt
            .block_on(file.writer.write(&batch.batch))
            .map_err(|source| SinkError::Parquet {
                path: file.staged.to_string(),
                source,
            })?;
        file.rows += rows;
        if file.writer.bytes_written() + file.writer.in_progress_size()
            >= self.opts.target_file_bytes
            && let Some(file) = self.open.remove(&key)
        {
            self.close_file(file)?;
        }
        Ok(())
    }

    /// Every object under `relative` (a lake-relative prefix).
    fn list_under(&self, relative: &str) -> Result<Vec<object_store::ObjectMeta>, SinkError> {
        use futures::TryStreamExt;
        let prefix = self.lake.path(relative);
        self.rt
            .block_on(self.store().list(Some(&prefix)).try_collect())
            .map_err(|source| SinkError::Store {
                op: "list",
                path: prefix.to_string(),
                source,
            })
    }

    /// Deletes this pipeline's published files of epochs after `epoch` (their names
    /// carry the pipeline and the epoch).
    fn delete_published_after(&mut self, epoch: u64) -> Result<u64, SinkError> {
        let store = self.store();
        let own = format!("part-{}-", self.pipeline);
        let mut deleted = 0;
        for table in Table::ALL {
            for meta in self.list_under(table.dir())? {
                let Some(name) = meta.location.filename() else {
                    continue;
                };
                let later = name
                    .strip_prefix(&own)
                    .and_then(|rest| rest.get(..6))
                    .and_then(|e| e.parse::<u64>().ok())
                    .is_some_and(|e| e > epoch);
                if later {
                    self.rt
                        .block_on(store.delete(&meta.location))
                        .map_err(|source| SinkError::Store {
                            op: "delete",
                            path: meta.location.to_string(),
                            source,
                        })?;
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes everything under this pipeline's staging directory.
    fn delete_staged(&mut self) -> Result<u64, SinkError> {
        let store = self.store();
        let listed = self.list_under(&format!("_staging/{}", self.pipeline))?;
        for meta in &listed {
            match self.rt.block_on(store.delete(&meta.location)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => {
                    return Err(SinkError::Store {
                        op: "delete",
                        path: meta.location.to_string(),
                        source,
                    });
                }
            }
        }
        Ok(listed.len() as u64)
    }

    fn publish_files(&mut self, files: &[StagedFile]) -> Result<(), SinkError> {
        let store = self.store();
        for (k, f) in files.iter().enumerate() {
            if k == 1 {
                rushhour_processor::failpoint("mid-publish");
            }
            let staged = self.lake.path(&f.staged);
            let target = self.lake.path(&f.target);
            match self.rt.block_on(store.rename(&staged, &target)) {
                Ok(()) => {}
                Err(object_store::Error::NotFound { .. }) => {
                    // Published by an earlier attempt?
                    match self.rt.block_on(store.head(&target)) {
                        Ok(_) => {}
                        Err(object_store::Error::NotFound { .. }) => {
                            return Err(SinkError::LostFile {
                                staged: f.staged.clone(),
                                target: f.target.clone(),
                            });
                        }
                        Err(source) => {
                            return Err(SinkError::Store {
                                op: "stat",
                                path: f.target.clone(),
                                source,
                            });
                        }
                    }
                }
                Err(source) => {
                    return Err(SinkError::Store {
                        op: "publish",
                        path: f.target.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

impl LakeSink for ParquetSink {
    fn write(&mut self, batch: TableBatch) -> Result<(), BoxError> {
        Ok(self.write_batch(batch)?)
    }

    fn prepare_commit(&mut self, epoch: u64) -> Result<Vec<StagedFile>, BoxError> {
        for (_, file) in std::mem::take(&mut self.open) {
            self.close_file(file)?;
        }
        self.epoch = epoch + 1;
        Ok(std::mem::take(&mut self.closed))
    }

    fn publish(&mut self, files: &[StagedFile]) -> Result<(), BoxError> {
        Ok(self.publish_files(files)?)
    }

    fn clean_staging(&mut self) -> Result<u64, BoxError> {
        Ok(self.delete_staged()?)
    }

    fn retract_after(&mut self, epoch: u64) -> Result<u64, BoxError> {
        Ok(self.delete_published_after(epoch)?)
    }
}

#[cfg(test)]
mod tests;
