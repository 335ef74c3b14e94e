//! Checkpoints: what a restarted process needs to continue exactly where a committed
//! epoch ended, and the commit protocol that makes an epoch's lake files visible only
//! after its checkpoint exists.
//!
//! A checkpoint is two objects in a [`CheckpointStore`]:
//!
//! - `state-<epoch>.bin`: the pipeline's state (zstd-compressed postcard): watermarks,
//!   the de-duplication set, counters, every window and open order;
//! - `manifest-<epoch>.json`: the pipeline and source it belongs to, the source
//!   positions of every partition, the state's size and CRC-32, and the staged lake
//!   files of the epoch.
//!
//! The manifest is written last with a create-only put: that one atomic step commits
//! the checkpoint, on a local disk and on S3 alike (no rename needed). Only then are
//! the epoch's files published; publishing is idempotent, so a restart re-publishes the
//! newest committed checkpoint's files and finishes a half-done publish. Anything
//! staged for an epoch without a manifest is deleted at start-up, and its records are
//! read again from the checkpointed positions.
//!
//! A newest checkpoint that is corrupt or truncated (unreadable manifest, missing
//! state, wrong size or checksum) is skipped with a warning in favour of the previous
//! good one; one from another format version, pipeline or source is refused.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::pipeline::Counters;
use crate::sink::{BoxError, StagedFile};

/// Format name in every manifest.
pub const FORMAT: &str = "rushhour-checkpoint";
/// Version of the manifest and state layout this build writes and reads: the state's
/// (a change to either bumps [`STATE_VERSION`](crate::pipeline::STATE_VERSION)).
pub const VERSION: u32 = crate::pipeline::STATE_VERSION;

/// Where checkpoints live. Names are flat (`manifest-0000000042.json`).
///
/// Invariants an implementation must keep:
/// - `put` replaces an object whole: a reader sees the old or the new bytes, never a mix;
/// - `put_if_absent` is atomic: of two concurrent callers at most one creates the object,
///   and a created object is complete when it becomes visible;
/// - `list` returns every object whose `put` or `put_if_absent` returned.
pub trait CheckpointStore: Send {
    /// The object's bytes, or `None` if it does not exist.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, BoxError>;
    /// Writes an object (replacing it).
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), BoxError>;
    /// Creates an object; `false` (and no change) if it already exists.
    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<bool, BoxError>;
    /// Names of all objects.
    fn list(&self) -> Result<Vec<String>, BoxError>;
    /// Deletes an object (absent is fine).
    fn delete(&self, name: &str) -> Result<(), BoxError>;
    /// Where the store is, for messages.
    fn location(&self) -> String;
}

/// A checkpoint store in memory, for tests.
#[derive(Debug, Default)]
pub struct MemoryCheckpointStore {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryCheckpointStore {
    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A poisoned lock only means another test thread panicked; the map is intact.
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl CheckpointStore for MemoryCheckpointStore {
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, BoxError> {
        Ok(self.objects().get(name).cloned())
    }
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), BoxError> {
        self.objects().insert(name.to_owned(), bytes.to_vec());
        Ok(())
    }
    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<bool, BoxError> {
        let mut objects = self.objects();
        if objects.contains_key(name) {
            return Ok(false);
        }
        objects.insert(name.to_owned(), bytes.to_vec());
        Ok(true)
    }
    fn list(&self) -> Result<Vec<String>, BoxError> {
        Ok(self.objects().keys().cloned().collect())
    }
    fn delete(&self, name: &str) -> Result<(), BoxError> {
        self.objects().remove(name);
        Ok(())
    }
    fn location(&self) -> String {
        "memory".into()
    }
}

/// The commit record of one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] of the writer.
    pub version: u32,
    /// The pipeline's name (`--name`).
    pub pipeline: String,
    /// The source URL.
    pub source: String,
    /// The epoch this checkpoint closes.
    pub epoch: u64,
    /// Name of the state object.
    pub state: String,
    /// Its size in bytes.
    pub state_bytes: u64,
    /// Its CRC-32.
    pub state_crc32: u32,
    /// Source positions, by partition.
    pub positions: Vec<String>,
    /// The source's turn cursor (which partition it reads next).
    pub cursor: u32,
    /// Counters at the checkpoint (also inside the state; here for people).
    pub counters: Counters,
    /// Lake files of the epoch, staged; published after this manifest commits.
    pub staged: Vec<StagedFile>,
    /// Wall-clock time of the commit, epoch ms.
    pub created_at_ms: i64,
    /// Time it took to encode the state, ms.
    #[serde(default)]
    pub state_encode_ms: f64,
}

/// A checkpoint read back: its manifest and its state bytes.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The manifest.
    pub manifest: Manifest,
    /// The pipeline state (for [`Pipeline::restore`](crate::Pipeline::restore)).
    pub state: Vec<u8>,
}

/// Errors of checkpointing.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The store failed.
    #[error("checkpoint store {location}: {source}")]
    Store {
        /// Where.
        location: String,
        /// What.
        source: BoxError,
    },
    /// A checkpoint of another version, pipeline or source.
    #[error("checkpoint {name} in {location} cannot be used: {reason}")]
    Incompatible {
        /// Where.
        location: String,
        /// Which manifest.
        name: String,
        /// Why.
        reason: String,
    },
    /// The manifest of this epoch exists already: another process is writing here.
    #[error(
        "checkpoint {name} already exists in {location}: is another process running this pipeline?"
    )]
    Conflict {
        /// Where.
        location: String,
        /// Which manifest.
        name: String,
    },
}

/// Where an epoch ended: what its checkpoint records besides the state.
#[derive(Debug, Clone)]
pub struct EpochEnd {
    /// The epoch.
    pub epoch: u64,
    /// Source positions, by partition.
    pub positions: Vec<String>,
    /// The source's turn cursor.
    pub cursor: u32,
    /// Counters so far.
    pub counters: Counters,
    /// The epoch's staged lake files.
    pub staged: Vec<StagedFile>,
    /// Wall-clock time, epoch ms.
    pub created_at_ms: i64,
    /// Time it took to encode the state, ms.
    pub state_encode_ms: f64,
}

/// Writes, finds and prunes the checkpoints of one pipeline.
pub struct Checkpointer {
    store: Box<dyn CheckpointStore>,
    pipeline: String,
    source: String,
    retain: usize,
}

fn manifest_name(epoch: u64) -> String {
    format!("manifest-{epoch:010}.json")
}

fn state_name(epoch: u64) -> String {
    format!("state-{epoch:010}.bin")
}

fn epoch_of(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

impl Checkpointer {
    /// Checkpoints of `pipeline` reading `source`, keeping the newest `retain` (≥ 1).
    pub fn new(
        store: Box<dyn CheckpointStore>,
        pipeline: &str,
        source: &str,
        retain: usize,
    ) -> Self {
        Checkpointer {
            store,
            pipeline: pipeline.to_owned(),
            source: source.to_owned(),
            retain: retain.max(1),
        }
    }

    fn store_err(&self) -> impl Fn(BoxError) -> CheckpointError + '_ {
        |source| CheckpointError::Store {
            location: self.store.location(),
            source,
        }
    }

    /// Epochs with a manifest, newest first.
    fn epochs(&self) -> Result<Vec<u64>, CheckpointError> {
        let mut epochs: Vec<u64> = self
            .store
            .list()
            .map_err(self.store_err())?
            .iter()
            .filter_map(|n| epoch_of(n, "manifest-", ".json"))
            .collect();
        epochs.sort_unstable_by(|a, b| b.cmp(a));
        Ok(epochs)
    }

    /// The newest good checkpoint, if any. Corrupt ones are skipped with a warning;
    /// incompatible ones stop with an error.
    pub fn latest(&self) -> Result<Option<Restored>, CheckpointError> {
        for epoch in self.epochs()? {
            let name = manifest_name(epoch);
            let incompatible = |reason: String| CheckpointError::Incompatible {
                location: self.store.location(),
                name: name.clone(),
                reason,
            };
            let Some(bytes) = self.store.get(&name).map_err(self.store_err())? else {
                continue;
            };
            let manifest: Manifest = match serde_json::from_slice(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(checkpoint = %name, error = %e, "skipping a corrupt checkpoint manifest; falling back to an older one");
                    continue;
                }
            };
            if manifest.format != FORMAT || manifest.version != VERSION {
                return Err(incompatible(format!(
                    "written by format {} version {}; this build reads {FORMAT} version {VERSION}",
                    manifest.format, manifest.version
                )));
            }
            if manifest.pipeline != self.pipeline {
                return Err(incompatible(format!(
                    "it belongs to pipeline `{}`, not `{}`",
                    manifest.pipeline, self.pipeline
                )));
            }
            if manifest.source != self.source {
                return Err(incompatible(format!(
                    "it was taken reading {}, not {} (use another --checkpoint or --name)",
                    manifest.source, self.source
                )));
            }
            let state = self.store.get(&manifest.state).map_err(self.store_err())?;
            match state {
                Some(state)
                    if state.len() as u64 == manifest.state_bytes
                        && crc32fast::hash(&state) == manifest.state_crc32 =>
                {
                    return Ok(Some(Restored { manifest, state }));
                }
                _ => {
                    tracing::warn!(checkpoint = %name, "skipping a checkpoint whose state is missing or damaged; falling back to an older one");
                }
            }
        }
        Ok(None)
    }

    /// The newest epoch with a manifest, readable or not.
    pub fn newest_epoch(&self) -> Result<Option<u64>, CheckpointError> {
        Ok(self.epochs()?.first().copied())
    }

    /// Deletes the manifests and states of epochs after `epoch` (damaged ones that
    /// recovery skipped), so the epochs can be committed afresh.
    pub fn discard_after(&self, epoch: u64) -> Result<(), CheckpointError> {
        for name in self.store.list().map_err(self.store_err())? {
            let e =
                epoch_of(&name, "manifest-", ".json").or_else(|| epoch_of(&name, "state-", ".bin"));
            if e.is_some_and(|e| e > epoch) {
                self.store.delete(&name).map_err(self.store_err())?;
            }
        }
        Ok(())
    }

    /// Commits the checkpoint of `at.epoch`: writes the state, then creates the
    /// manifest (the atomic step). Returns the manifest.
    pub fn commit(&self, state: &[u8], at: EpochEnd) -> Result<Manifest, CheckpointError> {
        let EpochEnd {
            epoch,
            positions,
            cursor,
            counters,
            staged,
            created_at_ms,
            state_encode_ms,
        } = at;
        let state_object = state_name(epoch);
        self.store
            .put(&state_object, state)
            .map_err(self.store_err())?;
        crate::runtime::failpoint("checkpoint-state-written");
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            pipeline: self.pipeline.clone(),
            source: self.source.clone(),
            epoch,
            state: state_object,
            state_bytes: state.len() as u64,
            state_crc32: crc32fast::hash(state),
            positions,
            cursor,
            counters,
            staged,
            created_at_ms,
            state_encode_ms,
        };
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| CheckpointError::Store {
            location: self.store.location(),
            source: Box::new(e),
        })?;
        let name = manifest_name(epoch);
        if !self
            .store
            .put_if_absent(&name, &bytes)
            .map_err(self.store_err())?
        {
            return Err(CheckpointError::Conflict {
                location: self.store.location(),
                name,
            });
        }
        Ok(manifest)
    }

    /// Deletes all but the newest `retain` checkpoints, and state objects left without
    /// a manifest by a crash.
    pub fn prune(&self) -> Result<(), CheckpointError> {
        let epochs = self.epochs()?;
        let Some(&newest) = epochs.first() else {
            return Ok(());
        };
        let keep: Vec<u64> = epochs.iter().copied().take(self.retain).collect();
        for name in self.store.list().map_err(self.store_err())? {
            let epoch =
                epoch_of(&name, "manifest-", ".json").or_else(|| epoch_of(&name, "state-", ".bin"));
            let Some(epoch) = epoch else { continue };
            // A state newer than the newest manifest may be one being committed now.
            if !keep.contains(&epoch) && epoch <= newest {
                self.store.delete(&name).map_err(self.store_err())?;
            }
        }
        Ok(())
    }

    /// Where the checkpoints are.
    pub fn location(&self) -> String {
        self.store.location()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(epoch: u64) -> EpochEnd {
        EpochEnd {
            epoch,
            positions: vec![format!("{epoch}@0")],
            cursor: 0,
            counters: Counters::default(),
            staged: vec![],
            created_at_ms: 0,
            state_encode_ms: 0.0,
        }
    }

    fn cp(store: MemoryCheckpointStore) -> Checkpointer {
        Checkpointer::new(Box::new(store), "p", "file:in", 2)
    }

    fn commit(c: &Checkpointer, epoch: u64) {
        c.commit(format!("state{epoch}").as_bytes(), end(epoch))
            .unwrap();
    }

    #[test]
    fn newest_good_checkpoint_wins_and_corrupt_ones_fall_back() {
        let c = cp(MemoryCheckpointStore::default());
        assert!(c.latest().unwrap().is_none());
        for e in 1..=3 {
            commit(&c, e);
        }
        assert_eq!(c.latest().unwrap().unwrap().manifest.epoch, 3);
        // Truncated state of the newest: fall back to 2.
        c.store.put("state-0000000003.bin", b"sta").unwrap();
        let r = c.latest().unwrap().unwrap();
        assert_eq!(
            (r.manifest.epoch, r.state.as_slice()),
            (2, b"state2".as_slice())
        );
        // A garbled manifest: skipped too.
        c.store
            .put("manifest-0000000002.json", b"{not json")
            .unwrap();
        assert_eq!(c.latest().unwrap().unwrap().manifest.epoch, 1);
    }

    #[test]
    fn committing_an_epoch_twice_is_a_conflict() {
        let c = cp(MemoryCheckpointStore::default());
        commit(&c, 1);
        let again = c.commit(b"x", end(1));
        assert!(matches!(again, Err(CheckpointError::Conflict { .. })));
    }

    #[test]
    fn other_pipelines_and_versions_are_refused() {
        let store = MemoryCheckpointStore::default();
        let other = Checkpointer::new(Box::new(store), "p", "file:other", 2);
        commit(&other, 1);
        let objects = other.store.list().unwrap();
        let store = MemoryCheckpointStore::default();
        for name in objects {
            store
                .put(&name, &other.store.get(&name).unwrap().unwrap())
                .unwrap();
        }
        let c = cp(store);
        assert!(matches!(
            c.latest(),
            Err(CheckpointError::Incompatible { .. })
        ));
        let mut m: serde_json::Value =
            serde_json::from_slice(&c.store.get("manifest-0000000001.json").unwrap().unwrap())
                .unwrap();
        m["source"] = "file:in".into();
        m["version"] = 99.into();
        c.store
            .put("manifest-0000000001.json", m.to_string().as_bytes())
            .unwrap();
        let err = c.latest().unwrap_err().to_string();
        assert!(err.contains("version 99"), "{err}");
    }

    #[test]
    fn pruning_keeps_the_newest() {
        let c = cp(MemoryCheckpointStore::default());
        for e in 1..=5 {
            commit(&c, e);
        }
        c.store.put("state-0000000006.bin", b"in flight").unwrap();
        c.prune().unwrap();
        let mut names = c.store.list().unwrap();
        names.sort();
        assert_eq!(
            names,
            [
                "manifest-0000000004.json",
                "manifest-0000000005.json",
                "state-0000000004.bin",
                "state-0000000005.bin",
                "state-0000000006.bin"
            ]
        );
    }
}
