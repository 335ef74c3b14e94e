//! Checkpoints on an object store (a local directory or S3): the [`CheckpointStore`]
//! the processor commits through.
//!
//! The commit point is `put_if_absent`, a create-only put (`PutMode::Create`): atomic on
//! a local file system (no-clobber link) and on S3 (conditional `If-None-Match: *`), so
//! no rename is needed anywhere. On S3 a create whose answer was lost is retried and
//! then meets its own object: `AlreadyExists` is therefore checked against the bytes
//! stored, and an object equal to ours is ours (every name this store is given for a
//! create — manifests, claims, fences, credits — holds the writer's identity, so two
//! writers never create equal bytes).

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use rushhour_cloud::{Io, retrying};
use rushhour_processor::BoxError;
use rushhour_processor::checkpoint::CheckpointStore;

use crate::lake::{Lake, LakeError};

/// The directory of a lake that holds its pipelines' checkpoints.
pub const CHECKPOINTS_DIR: &str = "_checkpoints";

/// Checkpoints under a prefix of an object store.
pub struct ObjectCheckpointStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    location: String,
    io: Io,
}

impl ObjectCheckpointStore {
    /// Opens (creating a local directory) the checkpoint directory `url`: a local path,
    /// `file:` URL or `s3://BUCKET/PREFIX`.
    pub fn open(url: &str, io: &Io) -> Result<ObjectCheckpointStore, LakeError> {
        // A checkpoint directory is opened like a lake root.
        Ok(Self::from_lake(&Lake::open(url, io)?))
    }

    /// Checkpoints at the root of `lake`'s store.
    pub fn from_lake(lake: &Lake) -> ObjectCheckpointStore {
        ObjectCheckpointStore {
            store: lake.store(),
            root: lake.path(""),
            location: lake.url().to_owned(),
            io: lake.io().clone(),
        }
    }

    /// The checkpoints of pipeline `name` in `lake`: `LAKE/_checkpoints/<name>`.
    pub fn in_lake(lake: &Lake, name: &str) -> ObjectCheckpointStore {
        Self::from_lake(&lake.child(&format!("{CHECKPOINTS_DIR}/{name}")))
    }

    /// Names of the pipelines with a checkpoint directory in `lake`.
    pub fn pipelines(lake: &Lake) -> Result<Vec<String>, BoxError> {
        let prefix = lake.path(CHECKPOINTS_DIR);
        let store = lake.store();
        let listed = lake.io().block_on(retrying("listing checkpoints", || {
            store.list_with_delimiter(Some(&prefix))
        }));
        let listed = match listed {
            Ok(listed) => listed,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(Box::new(e)),
        };
        // Only directories named like pipelines: not one moved aside by hand.
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|n| {
                n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// A store over a local directory that already exists (tests).
    pub fn local(dir: &std::path::Path, io: &Io) -> Result<ObjectCheckpointStore, LakeError> {
        let store = LocalFileSystem::new_with_prefix(dir).map_err(|e| {
            LakeError::Store(rushhour_cloud::StoreError::Local {
                path: dir.display().to_string(),
                reason: e.to_string(),
            })
        })?;
        let lake = Lake::from_store(
            Arc::new(store),
            Path::default(),
            &dir.display().to_string(),
            io,
        );
        Ok(Self::from_lake(&lake))
    }

    fn path(&self, name: &str) -> Path {
        let name = object_store::path::PathPart::from(name);
        Path::from_iter(self.root.parts().chain(std::iter::once(name)))
    }
}

impl CheckpointStore for ObjectCheckpointStore {
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, BoxError> {
        let path = self.path(name);
        let result = self
            .io
            .block_on(retrying("reading a checkpoint object", || async {
                self.store.get(&path).await?.bytes().await
            }));
        match result {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Box::new(e)),
        }
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), BoxError> {
        let path = self.path(name);
        let payload = PutPayload::from(bytes.to_vec());
        self.io
            .block_on(retrying("writing a checkpoint object", || {
                self.store.put(&path, payload.clone())
            }))?;
        Ok(())
    }

    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<bool, BoxError> {
        let path = self.path(name);
        let payload = PutPayload::from(bytes.to_vec());
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let put = self
            .io
            .block_on(retrying("committing a checkpoint object", || {
                self.store.put_opts(&path, payload.clone(), opts.clone())
            }));
        match put {
            Ok(_) => Ok(true),
            // Ours, if a retried create met the object its first attempt made.
            Err(object_store::Error::AlreadyExists { .. }) => {
                Ok(self.get(name)?.is_some_and(|stored| stored == bytes))
            }
            Err(e) => Err(Box::new(e)),
        }
    }

    fn list(&self) -> Result<Vec<String>, BoxError> {
        let listed: Vec<object_store::ObjectMeta> =
            self.io.block_on(retrying("listing checkpoints", || {
                self.store.list(Some(&self.root)).try_collect()
            }))?;
        Ok(listed
            .into_iter()
            .filter_map(|m| {
                m.location
                    .prefix_match(&self.root)
                    .and_then(|mut p| p.next())
                    .map(|p| p.as_ref().to_owned())
            })
            // The local store writes `name#N` temporaries while putting.
            .filter(|n| !n.contains('#'))
            .collect())
    }

    fn delete(&self, name: &str) -> Result<(), BoxError> {
        let path = self.path(name);
        match self
            .io
            .block_on(retrying("deleting a checkpoint object", || {
                self.store.delete(&path)
            })) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Box::new(e)),
        }
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_only_put_is_the_commit_point() {
        let dir = tempfile::tempdir().unwrap();
        let io = Io::new(1).unwrap();
        let store = ObjectCheckpointStore::open(dir.path().to_str().unwrap(), &io).unwrap();
        assert_eq!(store.get("a").unwrap(), None);
        assert!(store.put_if_absent("a", b"1").unwrap());
        assert!(!store.put_if_absent("a", b"2").unwrap());
        assert_eq!(store.get("a").unwrap().as_deref(), Some(b"1".as_slice()));
        store.put("b", b"x").unwrap();
        let mut names = store.list().unwrap();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        store.delete("a").unwrap();
        store.delete("a").unwrap();
        assert_eq!(store.list().unwrap(), ["b"]);
    }
}
