//! Uploading a finished lake file, retried as a whole.
//!
//! A file is encoded into a spool — memory, spilling to a temporary file past
//! [`SPOOL_IN_MEMORY`] by default — and uploaded to its staged path only once it is
//! complete.
//! Why not stream it to the store while it is encoded: `object_store` retries a
//! request that never reached the server, or that the server answered with a 5xx or a
//! throttle, but not one the server dropped half-way (a connection accepted and then
//! closed). A streaming upload that meets such a fault has already let go of the bytes
//! it sent, so it cannot be repeated and the whole epoch fails. Holding the bytes until
//! the upload is done makes the upload one idempotent operation — the staged path is
//! simply written again — that [`retrying`] repeats after a backoff.
//!
//! Files up to [`PART_BYTES`] go in one `PUT`; larger ones as a multipart upload of
//! `PART_BYTES` parts, [`PARALLEL_PARTS`] in flight. A failed multipart attempt is
//! aborted (best effort; an S3 lifecycle rule for incomplete uploads catches the
//! rest) and started over.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use rushhour_cloud::retrying;
use tempfile::{SpooledData, SpooledTempFile};

/// Bytes of a file kept in memory while it is encoded, by default; a larger file
/// spills to a temporary file.
pub(crate) const SPOOL_IN_MEMORY: usize = 32 << 20;
/// Largest file sent in one `PUT`, and the size of a multipart upload's parts.
pub(crate) const PART_BYTES: usize = 10 << 20;
/// Parts of one file in flight at once.
const PARALLEL_PARTS: usize = 8;

/// A new, empty spool for a file, kept in memory up to `in_memory` bytes.
pub(crate) fn spool(in_memory: usize) -> SpooledTempFile {
    SpooledTempFile::new(in_memory)
}

/// A complete file, ready to upload.
pub(crate) enum Spooled {
    /// Kept in memory.
    Memory(Bytes),
    /// Spilled to an (unlinked) temporary file of `len` bytes.
    Disk {
        /// The file.
        file: File,
        /// Its length.
        len: u64,
    },
}

impl Spooled {
    /// The spool `data`, complete.
    pub(crate) fn new(data: SpooledData) -> io::Result<Spooled> {
        Ok(match data {
            SpooledData::InMemory(cursor) => Spooled::Memory(Bytes::from(cursor.into_inner())),
            SpooledData::OnDisk(file) => {
                let len = file.metadata()?.len();
                Spooled::Disk { file, len }
            }
        })
    }

    /// Its size in bytes.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Spooled::Memory(bytes) => bytes.len() as u64,
            Spooled::Disk { len, .. } => *len,
        }
    }

    /// `len` bytes from `offset` (fewer at the end).
    fn chunk(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let end = self.len().min(offset + len as u64);
        match self {
            Spooled::Memory(bytes) => Ok(bytes.slice(offset as usize..end as usize)),
            Spooled::Disk { file, .. } => {
                let mut buf = vec![0; (end - offset) as usize];
                file.read_exact_at(&mut buf, offset)?;
                Ok(Bytes::from(buf))
            }
        }
    }
}

/// Writes `data` to `path`, retrying the whole upload on transient failures.
pub(crate) async fn upload(
    store: &dyn ObjectStore,
    path: &Path,
    data: &Spooled,
) -> object_store::Result<()> {
    retrying("uploading to the lake", || async {
        if data.len() <= PART_BYTES as u64 {
            let bytes = data.chunk(0, PART_BYTES).map_err(spool_error)?;
            store.put(path, bytes.into()).await.map(drop)
        } else {
            upload_parts(store, path, data).await
        }
    })
    .await
}

/// One multipart upload of `data` to `path`, aborted if it fails.
async fn upload_parts(
    store: &dyn ObjectStore,
    path: &Path,
    data: &Spooled,
) -> object_store::Result<()> {
    let mut upload =
        WriteMultipart::new_with_chunk_size(store.put_multipart(path).await?, PART_BYTES);
    let mut sent = async {
        let mut offset = 0;
        while offset < data.len() {
            upload.wait_for_capacity(PARALLEL_PARTS).await?;
            upload.put(data.chunk(offset, PART_BYTES).map_err(spool_error)?);
            offset += PART_BYTES as u64;
        }
        Ok(())
    }
    .await;
    if sent.is_ok() {
        sent = upload.finish().await.map(drop);
    } else if let Err(e) = upload.abort().await {
        tracing::debug!(error = %e, %path, "aborting a failed multipart upload");
    }
    sent
}

fn spool_error(e: io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "spool",
        source: Box::new(e),
    }
}
