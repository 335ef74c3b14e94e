//! Checkpoints: what a restarted process needs to continue exactly where a committed
//! epoch ended, and the commit protocol that makes an epoch's lake files visible only
//! after its checkpoint exists.
//!
//! A checkpoint is two objects in a [`CheckpointStore`]:
//!
//! - `state-<epoch>-<generation>.bin`: the pipeline's state (zstd-compressed
//!   postcard): watermarks, the de-duplication set, counters, every window and open
//!   order; written create-only, and named by the writer's lease generation so that
//!   two writers never touch one object;
//! - `manifest-<epoch>.json`: the pipeline and source it belongs to, the writer's
//!   lease generation, the source positions of every partition, which state object
//!   holds the state (with its size and CRC-32), and the staged lake files of the epoch.
//!
//! The manifest is written last with a create-only put: that one atomic step commits
//! the checkpoint, on a local disk and on S3 alike (no rename needed). Only then are
//! the epoch's files published; publishing is idempotent, so a restart re-publishes the
//! newest committed checkpoint's files and finishes a half-done publish.
//!
//! **Epoch numbers are never used twice.** Every process commits a checkpoint of its
//! own as it starts (a *start checkpoint*, numbered one past the newest manifest of any
//! kind), before it touches anything an earlier process left: from then on no earlier
//! process can commit (its next manifest name exists), so what it staged can be
//! deleted. This is the fence that makes a paused "zombie" harmless whatever the
//! clocks say; the [lease](crate::lease) keeps two live processes apart in the first
//! place. When recovery falls back past damaged checkpoints, the epochs between the one
//! it resumes from and its start checkpoint are *undone*: the start checkpoint records
//! which, and their published files are retracted (again after a crash, until a later
//! checkpoint commits).
//!
//! A newest checkpoint that is corrupt or truncated (unreadable manifest, missing
//! state, wrong size or checksum) is skipped with a warning in favour of the previous
//! good one; one from another format version, pipeline or source is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::lease::{Lease, LeaseError};
use crate::pipeline::Counters;
use crate::sink::{BoxError, StagedFile};
use crate::source::Positions;

/// Format name in every manifest.
pub const FORMAT: &str = "rushhour-checkpoint";
/// Version of the manifest layout this build writes and reads. 3: one state section
/// per partition; 4: lease generations, start checkpoints, epochs never reused.
pub const VERSION: u32 = 4;

/// Where checkpoints live. Names are flat (`manifest-00000000000000000042.json`).
///
/// Invariants an implementation must keep:
/// - `put` replaces an object whole: a reader sees the old or the new bytes, never a mix;
/// - `put_if_absent` is atomic: of two concurrent callers at most one creates the object,
///   and a created object is complete when it becomes visible;
/// - `list` returns every object whose `put` or `put_if_absent` returned.
///
/// Shared between threads (the lease is renewed on a thread of its own).
pub trait CheckpointStore: Send + Sync {
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

/// What a start checkpoint records: where its process resumed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRecord {
    /// The epoch of the checkpoint it resumed from (0: a fresh start). Epochs after it
    /// and before the start checkpoint's own are undone.
    pub resumed_from: u64,
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
    /// The lease generation of the process that wrote it.
    pub generation: u64,
    /// Set on the checkpoint a process commits as it starts.
    #[serde(default)]
    pub start: Option<StartRecord>,
    /// Name of the state object.
    pub state: String,
    /// Its size in bytes.
    pub state_bytes: u64,
    /// Its CRC-32.
    pub state_crc32: u32,
    /// Source positions, by partition.
    pub positions: Positions,
    /// The source's turn cursor (which partition it reads next).
    pub cursor: u32,
    /// Counters at the checkpoint (also inside the state; here for people).
    pub counters: Counters,
    /// Lake files to publish once this manifest is committed: the epoch's own, or, on
    /// a start checkpoint, those of the checkpoint it resumed from.
    pub staged: Vec<StagedFile>,
    /// Wall-clock time of the commit, epoch ms.
    pub created_at_ms: i64,
    /// Time it took to encode the state, ms.
    #[serde(default)]
    pub state_encode_ms: f64,
    /// In a consumer group, the claim generation under which the writer held each
    /// partition: a takeover restores a partition only from a checkpoint of the claim
    /// it succeeds, never from an earlier time the same member held it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<u32, u64>,
    /// In a consumer group, by partition held: the watermark its records are judged by
    /// from this checkpoint on ([`Pipeline::floors`](crate::Pipeline::floors)) — how
    /// the others know which rider windows can no longer get credits from it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub floors: BTreeMap<u32, i64>,
    /// In a consumer group, by active partition held (not idle), its own watermark
    /// ([`Pipeline::active_watermarks`](crate::Pipeline::active_watermarks)): how the
    /// others judge their idle partitions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub active: BTreeMap<u32, i64>,
    /// In a bounded group run, the partitions held that are read to their end (as the
    /// writer saw the end when it started): no credit can come from them any more.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ended: Vec<u32>,
}

impl Manifest {
    /// The epochs a start checkpoint undoes: `(after, before)`, both exclusive; `None`
    /// for an ordinary checkpoint or a start that resumed from the epoch just before.
    pub fn undone(&self) -> Option<(u64, u64)> {
        let start = self.start?;
        (start.resumed_from + 1 < self.epoch).then_some((start.resumed_from, self.epoch))
    }

    /// Refuses a manifest of another format or version (`name`, in `location`).
    pub(crate) fn check_version(
        &self,
        location: String,
        name: &str,
    ) -> Result<(), CheckpointError> {
        if self.format == FORMAT && self.version == VERSION {
            return Ok(());
        }
        Err(CheckpointError::Version {
            location,
            name: name.to_owned(),
            format: self.format.clone(),
            version: self.version.into(),
        })
    }
}

/// A checkpoint read back: its manifest and its state bytes.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The manifest.
    pub manifest: Manifest,
    /// The pipeline state (for [`Pipeline::restore`](crate::Pipeline::restore)).
    pub state: Vec<u8>,
}

/// Where recovery stands: the checkpoint to resume from and what is newer.
#[derive(Debug, Clone, Default)]
pub struct RecoveryPoint {
    /// The newest usable checkpoint, if any.
    pub restored: Option<Restored>,
    /// The newest epoch with a manifest of any kind (readable or not).
    pub newest: Option<u64>,
    /// Newer checkpoints that were skipped, and why.
    pub skipped: Vec<(u64, String)>,
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
    /// A checkpoint written by another version of the format.
    #[error(
        "checkpoint {name} in {location} was written by format {format} version {version}; this build reads {FORMAT} version {VERSION}"
    )]
    Version {
        /// Where.
        location: String,
        /// Which manifest.
        name: String,
        /// The format it names.
        format: String,
        /// Its version.
        version: u64,
    },
    /// The manifest of this epoch exists already: another process committed it, and
    /// this one must not publish anything more.
    #[error(
        "checkpoint {name} in {location} was committed by another process (lease generation {generation} tried to): this process no longer owns the pipeline"
    )]
    Fenced {
        /// Where.
        location: String,
        /// Which manifest.
        name: String,
        /// The generation of this process.
        generation: u64,
    },
    /// The lease is held elsewhere or was lost.
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// A state object written for a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRef {
    /// Its name in the store.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// Its CRC-32.
    pub crc32: u32,
}

impl StateRef {
    /// The state a manifest names.
    pub fn of(manifest: &Manifest) -> StateRef {
        StateRef {
            name: manifest.state.clone(),
            bytes: manifest.state_bytes,
            crc32: manifest.state_crc32,
        }
    }
}

/// Where an epoch ended: what its checkpoint records besides the state.
#[derive(Debug, Clone)]
pub struct EpochEnd {
    /// The epoch.
    pub epoch: u64,
    /// Source positions, by partition.
    pub positions: Positions,
    /// The source's turn cursor.
    pub cursor: u32,
    /// Counters so far.
    pub counters: Counters,
    /// The lake files to publish after the commit.
    pub staged: Vec<StagedFile>,
    /// Set on a start checkpoint.
    pub start: Option<StartRecord>,
    /// Wall-clock time, epoch ms.
    pub created_at_ms: i64,
    /// Time it took to encode the state, ms.
    pub state_encode_ms: f64,
    /// By partition, the watermark its records are judged by (groups only; else empty).
    pub floors: BTreeMap<u32, i64>,
    /// By active partition, its watermark (groups only; else empty).
    pub active: BTreeMap<u32, i64>,
    /// Partitions read to their end in a bounded group run (else empty).
    pub ended: Vec<u32>,
}

/// The name of the manifest of `epoch`.
pub fn manifest_name(epoch: u64) -> String {
    format!("manifest-{epoch:020}.json")
}

fn state_name(epoch: u64, generation: u64) -> String {
    format!("state-{epoch:020}-{generation:020}.bin")
}

fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The epoch of a manifest's name (any width, so older layouts are recognised).
pub fn manifest_epoch(name: &str) -> Option<u64> {
    digits(name.strip_prefix("manifest-")?.strip_suffix(".json")?)
}

/// The epoch of a state object's name (`state-<epoch>-<generation>.bin`, or an older
/// `state-<epoch>.bin`).
fn state_epoch(name: &str) -> Option<u64> {
    let stem = name.strip_prefix("state-")?.strip_suffix(".bin")?;
    digits(stem.split_once('-').map_or(stem, |(epoch, _)| epoch))
}

/// Why a manifest's bytes cannot be read.
enum Unreadable {
    /// Another version of the format wrote it.
    Version(u64),
    /// Damaged.
    Corrupt(String),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Version(v) => write!(
                f,
                "written by format {FORMAT} version {v}; this build reads version {VERSION}"
            ),
            Unreadable::Corrupt(e) => write!(f, "manifest unreadable: {e}"),
        }
    }
}

fn read_manifest(bytes: &[u8]) -> Result<Manifest, Unreadable> {
    serde_json::from_slice(bytes).map_err(|e| {
        // An older layout lacks fields: name its version rather than a missing field.
        let version = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("version").and_then(serde_json::Value::as_u64));
        match version {
            Some(v) if v != u64::from(VERSION) => Unreadable::Version(v),
            _ => Unreadable::Corrupt(e.to_string()),
        }
    })
}

/// One checkpoint as `rushhour checkpoints` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointInfo {
    /// The epoch.
    pub epoch: u64,
    /// The manifest, when it can be read.
    pub manifest: Option<Manifest>,
    /// Why it cannot be used, or `None` when its manifest and state check out.
    pub problem: Option<String>,
}

/// Reads every checkpoint in `store`, newest first, checking each manifest and the
/// size and CRC-32 of its state, and handing the state bytes to `check_state` (which
/// may decode them; `|_| Ok(())` skips that).
pub fn inspect(
    store: &dyn CheckpointStore,
    check_state: &dyn Fn(&[u8]) -> Result<(), String>,
) -> Result<Vec<CheckpointInfo>, BoxError> {
    let mut manifests: Vec<(u64, String)> = store
        .list()?
        .into_iter()
        .filter_map(|n| manifest_epoch(&n).map(|e| (e, n)))
        .collect();
    manifests.sort_unstable_by(|a, b| b.cmp(a));
    let mut out = Vec::with_capacity(manifests.len());
    for (epoch, name) in manifests {
        let Some(bytes) = store.get(&name)? else {
            continue;
        };
        let (manifest, problem) = match read_manifest(&bytes) {
            Err(problem) => (None, Some(problem.to_string())),
            Ok(m) => {
                let problem = match store.get(&m.state)? {
                    None => Some(format!("state {} is missing", m.state)),
                    Some(s) if s.len() as u64 != m.state_bytes => Some(format!(
                        "state {} has {} bytes, the manifest says {}",
                        m.state,
                        s.len(),
                        m.state_bytes
                    )),
                    Some(s) if crc32fast::hash(&s) != m.state_crc32 => {
                        Some(format!("state {} fails its checksum", m.state))
                    }
                    Some(s) => check_state(&s)
                        .err()
                        .map(|e| format!("state {}: {e}", m.state)),
                };
                (Some(m), problem)
            }
        };
        out.push(CheckpointInfo {
            epoch,
            manifest,
            problem,
        });
    }
    Ok(out)
}

/// What entitles a process to commit: the pipeline's [`Lease`], or, for a member of a
/// consumer group, its claims on the partitions it holds
/// ([`Member`](crate::group::Member)).
pub trait Fence: Send + Sync {
    /// The fencing token stamped on this writer's state objects and files.
    fn generation(&self) -> u64;
    /// Errors unless this process may still commit.
    fn check(&self) -> Result<(), CheckpointError>;
    /// Whether it is already known (without asking the store) that it may not.
    fn is_lost(&self) -> bool {
        false
    }
    /// The claims (partition → claim generation) the writer holds, recorded in each
    /// manifest: a consumer-group member's; none for a pipeline's single writer.
    fn claims(&self) -> BTreeMap<u32, u64> {
        BTreeMap::new()
    }
}

impl Fence for Lease {
    fn generation(&self) -> u64 {
        Lease::generation(self)
    }
    fn check(&self) -> Result<(), CheckpointError> {
        Ok(Lease::check(self)?)
    }
    fn is_lost(&self) -> bool {
        Lease::is_lost(self)
    }
}

/// Writes, finds and prunes the checkpoints of one chain: a pipeline's, written by
/// the holder of its lease, or one consumer-group member's (names behind a prefix).
pub struct Checkpointer {
    store: Arc<dyn CheckpointStore>,
    fence: Arc<dyn Fence>,
    prefix: String,
    pipeline: String,
    source: String,
    retain: usize,
}

impl Checkpointer {
    /// Checkpoints of `pipeline` reading `source` in `store`, written under `fence`,
    /// keeping the newest `retain` (≥ 1).
    pub fn new(
        store: Arc<dyn CheckpointStore>,
        fence: Arc<dyn Fence>,
        pipeline: &str,
        source: &str,
        retain: usize,
    ) -> Self {
        Checkpointer {
            store,
            fence,
            prefix: String::new(),
            pipeline: pipeline.to_owned(),
            source: source.to_owned(),
            retain: retain.max(1),
        }
    }

    /// The same, for a chain whose object names start with `prefix`.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// The name of this chain's manifest of `epoch`.
    pub fn manifest_name(&self, epoch: u64) -> String {
        format!("{}{}", self.prefix, manifest_name(epoch))
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn CheckpointStore> {
        &self.store
    }

    fn store_err(&self) -> impl Fn(BoxError) -> CheckpointError + '_ {
        |source| CheckpointError::Store {
            location: self.store.location(),
            source,
        }
    }

    /// What this checkpointer writes under.
    pub fn fence(&self) -> &Arc<dyn Fence> {
        &self.fence
    }

    /// Epochs with a manifest in this chain, newest first, with the object names.
    pub fn manifests(&self) -> Result<Vec<(u64, String)>, CheckpointError> {
        let mut found: Vec<(u64, String)> = self
            .store
            .list()
            .map_err(self.store_err())?
            .into_iter()
            .filter_map(|n| {
                let epoch = manifest_epoch(n.strip_prefix(&self.prefix)?)?;
                Some((epoch, n))
            })
            .collect();
        found.sort_unstable_by(|a, b| b.cmp(a));
        Ok(found)
    }

    /// The newest usable checkpoint and what is newer. A checkpoint is usable when its
    /// manifest reads, its state has the size and CRC-32 the manifest says, and
    /// `accept` takes it (the caller restores the state there: a state that does not
    /// decode is skipped like a damaged one). Damaged ones are skipped with a warning;
    /// one of another version, pipeline or source stops with an error. An object that
    /// vanishes while it is read (another process pruning) makes the scan start over.
    pub fn recovery_point(
        &self,
        accept: &mut dyn FnMut(&Restored) -> Result<(), String>,
    ) -> Result<RecoveryPoint, CheckpointError> {
        let mut attempt = 0;
        loop {
            let (point, vanished) = self.scan(accept)?;
            attempt += 1;
            if !vanished || attempt >= 3 {
                return Ok(point);
            }
            tracing::info!("checkpoints changed while they were read; reading them again");
        }
    }

    fn scan(
        &self,
        accept: &mut dyn FnMut(&Restored) -> Result<(), String>,
    ) -> Result<(RecoveryPoint, bool), CheckpointError> {
        let manifests = self.manifests()?;
        let mut vanished = false;
        let mut point = RecoveryPoint {
            newest: manifests.first().map(|(e, _)| *e),
            ..RecoveryPoint::default()
        };
        for (epoch, name) in manifests {
            let incompatible = |reason: String| CheckpointError::Incompatible {
                location: self.store.location(),
                name: name.clone(),
                reason,
            };
            let Some(bytes) = self.store.get(&name).map_err(self.store_err())? else {
                vanished = true;
                continue;
            };
            let manifest = match read_manifest(&bytes) {
                Ok(m) => m,
                Err(Unreadable::Version(version)) => {
                    return Err(CheckpointError::Version {
                        location: self.store.location(),
                        name,
                        format: FORMAT.into(),
                        version,
                    });
                }
                Err(problem) => {
                    let problem = problem.to_string();
                    tracing::warn!(checkpoint = %name, %problem, "skipping a corrupt checkpoint manifest; falling back to an older one");
                    point.skipped.push((epoch, problem));
                    continue;
                }
            };
            manifest.check_version(self.store.location(), &name)?;
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
            let problem = match state {
                Some(state)
                    if state.len() as u64 == manifest.state_bytes
                        && crc32fast::hash(&state) == manifest.state_crc32 =>
                {
                    let restored = Restored { manifest, state };
                    match accept(&restored) {
                        Ok(()) => {
                            point.restored = Some(restored);
                            return Ok((point, vanished));
                        }
                        Err(e) => {
                            format!("it cannot be resumed from: {e}")
                        }
                    }
                }
                Some(_) => format!("state {} is damaged (size or checksum)", manifest.state),
                None => {
                    vanished = true;
                    format!("state {} is missing", manifest.state)
                }
            };
            tracing::warn!(checkpoint = %name, %problem, "skipping a checkpoint; falling back to an older one");
            point.skipped.push((epoch, problem));
        }
        Ok((point, vanished))
    }

    /// The newest usable checkpoint, if any (see [`recovery_point`](Self::recovery_point)).
    pub fn latest(&self) -> Result<Option<Restored>, CheckpointError> {
        Ok(self.recovery_point(&mut |_| Ok(()))?.restored)
    }

    /// Writes the state for `epoch`'s checkpoint, create-only, under a name of this
    /// process's generation.
    pub fn write_state(&self, epoch: u64, state: &[u8]) -> Result<StateRef, CheckpointError> {
        let name = format!(
            "{}{}",
            self.prefix,
            state_name(epoch, self.fence.generation())
        );
        if !self
            .store
            .put_if_absent(&name, state)
            .map_err(self.store_err())?
        {
            return Err(CheckpointError::Fenced {
                location: self.store.location(),
                name,
                generation: self.fence.generation(),
            });
        }
        Ok(StateRef {
            name,
            bytes: state.len() as u64,
            crc32: crc32fast::hash(state),
        })
    }

    /// Commits the checkpoint of `at.epoch` with the state `state` (already written):
    /// checks the lease, then creates the manifest (the atomic step). Returns it.
    pub fn commit(&self, state: &StateRef, at: EpochEnd) -> Result<Manifest, CheckpointError> {
        let EpochEnd {
            epoch,
            positions,
            cursor,
            counters,
            staged,
            start,
            created_at_ms,
            state_encode_ms,
            floors,
            active,
            ended,
        } = at;
        self.fence.check()?;
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            pipeline: self.pipeline.clone(),
            source: self.source.clone(),
            epoch,
            generation: self.fence.generation(),
            start,
            state: state.name.clone(),
            state_bytes: state.bytes,
            state_crc32: state.crc32,
            positions,
            cursor,
            counters,
            staged,
            created_at_ms,
            state_encode_ms,
            claims: self.fence.claims(),
            floors,
            active,
            ended,
        };
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| CheckpointError::Store {
            location: self.store.location(),
            source: Box::new(e),
        })?;
        let name = self.manifest_name(epoch);
        if !self
            .store
            .put_if_absent(&name, &bytes)
            .map_err(self.store_err())?
        {
            return Err(CheckpointError::Fenced {
                location: self.store.location(),
                name,
                generation: self.fence.generation(),
            });
        }
        Ok(manifest)
    }

    /// The lake files that readable manifests of the epochs in `(after, before)` list:
    /// what undoing those epochs must retract (besides what their names give away).
    pub fn files_of(&self, after: u64, before: u64) -> Result<Vec<String>, CheckpointError> {
        let mut out = Vec::new();
        for (epoch, name) in self.manifests()? {
            if epoch <= after || epoch >= before {
                continue;
            }
            let bytes = self.store.get(&name).map_err(self.store_err())?;
            // A start checkpoint's files are those of the epoch it resumed from, which
            // is not undone.
            if let Some(m) = bytes.and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
                && m.start.is_none()
            {
                out.extend(m.staged.into_iter().map(|f| f.target));
            }
        }
        Ok(out)
    }

    /// Deletes all checkpoints older than the newest ones that name `retain` distinct
    /// states (start checkpoints share the state they resumed from, so a crash loop
    /// cannot crowd out every real fallback), and state objects no kept manifest names.
    /// States newer than the newest manifest are left: one may be being committed.
    pub fn prune(&self) -> Result<(), CheckpointError> {
        let manifests = self.manifests()?;
        let Some(&(newest, _)) = manifests.first() else {
            return Ok(());
        };
        let mut kept_states = BTreeSet::new();
        let mut readable = 0;
        let mut oldest_kept = newest;
        for (epoch, name) in &manifests {
            if readable >= self.retain {
                break;
            }
            oldest_kept = *epoch;
            let bytes = self.store.get(name).map_err(self.store_err())?;
            if let Some(m) = bytes.and_then(|b| serde_json::from_slice::<Manifest>(&b).ok()) {
                kept_states.insert(m.state);
                readable = kept_states.len();
            }
        }
        for (epoch, name) in &manifests {
            if *epoch < oldest_kept {
                self.store.delete(name).map_err(self.store_err())?;
            }
        }
        for name in self.store.list().map_err(self.store_err())? {
            let Some(own) = name.strip_prefix(&self.prefix) else {
                continue;
            };
            if state_epoch(own).is_some_and(|e| e <= newest) && !kept_states.contains(&name) {
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
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::lease::{Holder, LeaseOptions, PIPELINE_SCOPE};
    use crate::source::Position;

    fn end(epoch: u64) -> EpochEnd {
        EpochEnd {
            epoch,
            positions: Positions::from([(
                0,
                Position::Kafka {
                    offset: epoch as i64,
                },
            )]),
            cursor: 0,
            counters: Counters::default(),
            staged: vec![],
            start: None,
            created_at_ms: 0,
            state_encode_ms: 0.0,
            floors: BTreeMap::new(),
            active: BTreeMap::new(),
            ended: Vec::new(),
        }
    }

    /// A checkpointer holding the lease (the store's previous holder must have
    /// released it), and that lease.
    fn cp_lease(store: Arc<dyn CheckpointStore>, source: &str) -> (Checkpointer, Arc<Lease>) {
        let lease = Lease::acquire(
            store.clone(),
            PIPELINE_SCOPE,
            Holder::this_process(),
            &LeaseOptions::default(),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap();
        let lease = Arc::new(lease);
        (
            Checkpointer::new(store, lease.clone(), "p", source, 2),
            lease,
        )
    }

    fn cp_on(store: Arc<dyn CheckpointStore>, source: &str) -> Checkpointer {
        cp_lease(store, source).0
    }

    fn cp() -> Checkpointer {
        cp_on(Arc::new(MemoryCheckpointStore::default()), "file:in")
    }

    fn commit(c: &Checkpointer, epoch: u64) {
        let state = c
            .write_state(epoch, format!("state{epoch}").as_bytes())
            .unwrap();
        c.commit(&state, end(epoch)).unwrap();
    }

    fn state_of(c: &Checkpointer, epoch: u64) -> String {
        state_name(epoch, c.fence.generation())
    }

    #[test]
    fn newest_good_checkpoint_wins_and_corrupt_ones_fall_back() {
        let c = cp();
        assert!(c.latest().unwrap().is_none());
        for e in 1..=3 {
            commit(&c, e);
        }
        assert_eq!(c.latest().unwrap().unwrap().manifest.epoch, 3);
        // Truncated state of the newest: fall back to 2.
        c.store.put(&state_of(&c, 3), b"sta").unwrap();
        let point = c.recovery_point(&mut |_| Ok(())).unwrap();
        let r = point.restored.unwrap();
        assert_eq!(
            (r.manifest.epoch, r.state.as_slice(), point.newest),
            (2, b"state2".as_slice(), Some(3))
        );
        assert_eq!(point.skipped.len(), 1);
        // A garbled manifest: skipped too.
        c.store.put(&manifest_name(2), b"{not json").unwrap();
        assert_eq!(c.latest().unwrap().unwrap().manifest.epoch, 1);
    }

    #[test]
    fn an_epoch_is_committed_once_and_states_are_create_only() {
        let c = cp();
        commit(&c, 1);
        let state = c.write_state(2, b"x").unwrap();
        assert!(matches!(
            c.write_state(2, b"y"),
            Err(CheckpointError::Fenced { .. })
        ));
        c.commit(&state, end(2)).unwrap();
        let again = c.commit(&state, end(2));
        assert!(matches!(again, Err(CheckpointError::Fenced { .. })));
    }

    #[test]
    fn a_process_that_lost_its_lease_cannot_commit() {
        let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::default());
        let (old, old_lease) = cp_lease(store.clone(), "file:in");
        commit(&old, 1);
        // The lease expires (here: released), and another process takes over.
        old_lease.release().unwrap();
        let new = cp_on(store, "file:in");
        let state = old.write_state(2, b"zombie").unwrap();
        let err = old.commit(&state, end(2)).unwrap_err();
        assert!(err.to_string().contains("lost the lease"), "{err}");
        commit(&new, 2);
    }

    #[test]
    fn other_pipelines_and_versions_are_refused() {
        let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::default());
        let (other, other_lease) = cp_lease(store.clone(), "file:other");
        commit(&other, 1);
        other_lease.release().unwrap();
        let c = cp_on(store, "file:in");
        assert!(matches!(
            c.latest(),
            Err(CheckpointError::Incompatible { .. })
        ));
        let mut m: serde_json::Value =
            serde_json::from_slice(&c.store.get(&manifest_name(1)).unwrap().unwrap()).unwrap();
        m["source"] = "file:in".into();
        m["version"] = 99.into();
        c.store
            .put(&manifest_name(1), m.to_string().as_bytes())
            .unwrap();
        let err = c.latest().unwrap_err().to_string();
        assert!(err.contains("version 99"), "{err}");
    }

    #[test]
    fn pruning_keeps_the_newest_readable_and_the_states_they_name() {
        let c = cp();
        for e in 1..=5 {
            commit(&c, e);
        }
        // A start checkpoint that names an older state; a damaged one after it; a state
        // being written for the next epoch.
        let state5 = StateRef::of(&c.latest().unwrap().unwrap().manifest);
        let mut at = end(6);
        at.start = Some(StartRecord { resumed_from: 5 });
        c.commit(&state5, at).unwrap();
        c.store.put(&manifest_name(7), b"{damaged").unwrap();
        c.store.put(&state_of(&c, 8), b"in flight").unwrap();
        c.prune().unwrap();
        let mut names = c.store.list().unwrap();
        names.sort();
        names.retain(|n| !n.starts_with("lease-"));
        // Kept: back to the second distinct state (4): 6 and 5 share state 5.
        assert_eq!(
            names,
            [
                manifest_name(4),
                manifest_name(5),
                manifest_name(6),
                manifest_name(7),
                state_of(&c, 4),
                state_of(&c, 5),
                state_of(&c, 8),
            ]
        );
    }

    #[test]
    fn names_parse_at_any_width() {
        assert_eq!(manifest_epoch("manifest-0000000042.json"), Some(42));
        assert_eq!(manifest_epoch(&manifest_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(manifest_epoch("manifest-.json"), None);
        assert_eq!(manifest_epoch("manifest-+1.json"), None);
        assert_eq!(state_epoch(&state_name(7, 3)), Some(7));
        assert_eq!(state_epoch("state-0000000007.bin"), Some(7));
        let undone = Manifest {
            start: Some(StartRecord { resumed_from: 3 }),
            epoch: 6,
            ..serde_json::from_value::<Manifest>(serde_json::json!({
                "format": FORMAT, "version": VERSION, "pipeline": "p", "source": "s",
                "epoch": 6, "generation": 1, "state": "x", "state_bytes": 0,
                "state_crc32": 0, "positions": {}, "cursor": 0,
                "counters": Counters::default(), "staged": [], "created_at_ms": 0
            }))
            .unwrap()
        };
        assert_eq!(undone.undone(), Some((3, 6)));
    }
}
