//! Several processes on one pipeline, each with a share of the source's partitions: a
//! Kafka consumer group's members. Kafka decides who reads which partition; this module
//! makes the lake exact whatever it decides — state that follows its partition, and a
//! member that lost a partition (paused past its session, a "zombie") that can never
//! publish again.
//!
//! All of it lives in the shared checkpoint store, with create-only puts only:
//!
//! - `member-<id>.json`: each process joins as a new **member** with a number of its
//!   own (created create-only, one past the highest). Its checkpoints form a chain of
//!   their own (`m<id>-manifest-<epoch>.json`, `m<id>-state-…`): one commit covers
//!   all the partitions it holds, atomically with the epoch's lake files, which mix
//!   them. Its number is the generation on its files and staging directory.
//! - `lease-p<partition>-<generation>.json`: a **claim** per partition, a lease whose
//!   generations are taken in turn (create-only) by the members that hold it, naming
//!   the member. Before every commit a member checks that none of its claims has a
//!   newer generation.
//! - `handoff-p<partition>-<generation>.bin`: when a member gives a partition up (a
//!   revoke), it commits a checkpoint holding it, writes the partition's state and
//!   position as a **handoff**, and marks its claim released.
//!
//! Taking over a partition: claim its next generation, then look for its newest state,
//! walking back through the claims: the handoff of a released claim, or else the newest
//! checkpoint holding it in the chain of the member that claimed it. A member that did
//! not release its claim crashed or was dropped from the group: before its chain is
//! read it is **fenced** — its next manifest name is created as a fence marker, so it
//! can never commit again (create-only: of it and the fence, one wins, and if it won,
//! its commit is simply the newest state). Then its newest commit's files are
//! published (a crash may have cut that short) and its staging is deleted.
//!
//! Damaged checkpoints in a group stop the taker with an error: falling back would
//! undo epochs whose files hold other partitions' rows too.
//!
//! Rider windows gather contributions from partitions other members read: those travel
//! as credits through the same store ([`credits`]).

mod credits;

pub use credits::GroupView;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    CheckpointError, CheckpointStore, Checkpointer, FORMAT, Fence, Manifest, VERSION,
};
use crate::lease::{
    Holder, LEASE_FORMAT, LeaseRecord, Released, generation_of, lease_name, newest,
};
use crate::pipeline::Pipeline;
use crate::sink::{BoxError, StagedFile};
use crate::source::{Position, Positions};

/// What taking over from a member that stopped without handing over needs of the lake.
pub trait LakeRepair {
    /// Publishes (idempotently) the files of the member's newest commit.
    fn publish(&mut self, files: &[StagedFile]) -> Result<(), BoxError>;
    /// Deletes what member `generation` staged.
    fn clean_staging_of(&mut self, generation: u64) -> Result<u64, BoxError>;
}

/// The claim scope of a partition: `p00003`.
pub fn claim_scope(partition: u32) -> String {
    format!("p{partition:05}")
}

fn handoff_name(partition: u32, generation: u64) -> String {
    format!("handoff-{}-{generation:020}.bin", claim_scope(partition))
}

fn member_name(id: u64) -> String {
    format!("member-{id:020}.json")
}

/// The prefix of member `id`'s checkpoint chain.
pub fn chain_prefix(id: u64) -> String {
    format!("m{id:020}-")
}

/// A member's registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registration {
    format: String,
    pipeline: String,
    member: u64,
    holder: Holder,
    joined_at_ms: i64,
}

/// The marker a taker creates as a member's next manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FenceMarker {
    format: String,
    version: u32,
    fenced_by: u64,
    at_ms: i64,
}

/// A partition's state and position, handed over.
#[derive(Debug, Serialize, Deserialize)]
struct Handoff {
    position: Position,
    state: Vec<u8>,
    crc32: u32,
    /// Read to its end and its windows flushed (`--until-end`): nothing is left to do.
    complete: bool,
}

/// One process's membership in a pipeline run by several.
pub struct Member {
    store: Arc<dyn CheckpointStore>,
    id: u64,
    pipeline: String,
    source: String,
    holder: Holder,
    /// The claim generation held, by partition.
    claims: Mutex<BTreeMap<u32, u64>>,
    /// Partitions taken since the last commit: their older handoffs and claims can go
    /// once a commit holds them.
    fresh: Mutex<BTreeSet<u32>>,
    /// Why this member may no longer commit, once known.
    lost: Mutex<Option<String>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("id", &self.id).finish()
    }
}

impl Member {
    /// Joins the pipeline as a new member.
    pub fn join(
        store: Arc<dyn CheckpointStore>,
        pipeline: &str,
        source: &str,
        holder: Holder,
    ) -> Result<Member, CheckpointError> {
        let store_err = |source: BoxError| CheckpointError::Store {
            location: store.location(),
            source,
        };
        loop {
            let highest = store
                .list()
                .map_err(store_err)?
                .iter()
                .filter_map(|n| {
                    n.strip_prefix("member-")?
                        .strip_suffix(".json")?
                        .parse::<u64>()
                        .ok()
                })
                .max()
                .unwrap_or(0);
            let id = highest + 1;
            let registration = Registration {
                format: "rushhour-member".into(),
                pipeline: pipeline.to_owned(),
                member: id,
                holder: holder.clone(),
                joined_at_ms: crate::runtime::now_ms(),
            };
            let bytes =
                serde_json::to_vec_pretty(&registration).map_err(|e| store_err(Box::new(e)))?;
            if store
                .put_if_absent(&member_name(id), &bytes)
                .map_err(store_err)?
            {
                return Ok(Member {
                    store,
                    id,
                    pipeline: pipeline.to_owned(),
                    source: source.to_owned(),
                    holder,
                    claims: Mutex::default(),
                    fresh: Mutex::default(),
                    lost: Mutex::default(),
                });
            }
        }
    }

    /// This member's number: the generation on its files.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The partitions held.
    pub fn held(&self) -> Vec<u32> {
        locked(&self.claims).keys().copied().collect()
    }

    /// This member's checkpoint chain.
    pub fn checkpointer(self: &Arc<Self>, retain: usize) -> Checkpointer {
        Checkpointer::new(
            self.store.clone(),
            self.clone(),
            &self.pipeline,
            &self.source,
            retain,
        )
        .with_prefix(&chain_prefix(self.id))
    }

    fn store_err(&self) -> impl Fn(BoxError) -> CheckpointError + '_ {
        |source| CheckpointError::Store {
            location: self.store.location(),
            source,
        }
    }

    fn damaged(&self, name: &str, reason: String) -> CheckpointError {
        CheckpointError::Incompatible {
            location: self.store.location(),
            name: name.to_owned(),
            reason: format!(
                "{reason}; a consumer group does not fall back past a damaged checkpoint (its epochs hold other partitions' rows too)"
            ),
        }
    }

    /// Takes over the partitions in `defaults` (each with where to start it if no
    /// checkpoint holds it): claims each, restores its newest state into `pipeline`
    /// (fencing a member that held it without handing it over, and repairing the lake
    /// behind it), and returns where to read each one from.
    pub fn take(
        &self,
        defaults: &Positions,
        pipeline: &mut Pipeline,
        lake: &mut dyn LakeRepair,
    ) -> Result<Positions, CheckpointError> {
        pipeline.taking_over(|pipeline| {
            let mut out = Positions::new();
            for (&part, &default) in defaults {
                let position = self.take_one(part, default, pipeline, lake)?;
                out.insert(part, position);
            }
            Ok(out)
        })
    }

    fn claim(&self, part: u32) -> Result<u64, CheckpointError> {
        let scope = claim_scope(part);
        loop {
            let next = match newest(self.store.as_ref(), &scope).map_err(self.store_err())? {
                None => 1,
                Some((g, _)) => g.checked_add(1).ok_or_else(|| {
                    self.damaged(&lease_name(&scope, g), "no generation after it".into())
                })?,
            };
            let now = crate::runtime::now_ms();
            let record = LeaseRecord {
                format: LEASE_FORMAT.into(),
                scope: scope.clone(),
                generation: next,
                holder: self.holder.clone(),
                acquired_at_ms: now,
                renewed_at_ms: now,
                expires_at_ms: i64::MAX,
                released_at_ms: None,
                owner: Some(self.id),
                released: None,
            };
            let bytes =
                serde_json::to_vec_pretty(&record).map_err(|e| self.store_err()(Box::new(e)))?;
            if self
                .store
                .put_if_absent(&lease_name(&scope, next), &bytes)
                .map_err(self.store_err())?
            {
                return Ok(next);
            }
        }
    }

    fn claim_record(
        &self,
        part: u32,
        generation: u64,
    ) -> Result<Option<LeaseRecord>, CheckpointError> {
        let bytes = self
            .store
            .get(&lease_name(&claim_scope(part), generation))
            .map_err(self.store_err())?;
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    fn take_one(
        &self,
        part: u32,
        default: Position,
        pipeline: &mut Pipeline,
        lake: &mut dyn LakeRepair,
    ) -> Result<Position, CheckpointError> {
        let generation = self.claim(part)?;
        locked(&self.claims).insert(part, generation);
        locked(&self.fresh).insert(part);
        // Walk back through the partition's claims to the newest state of it: a
        // handoff, or the checkpoint its owner committed under that claim. Every owner
        // met that did not release its claim (killed, or a zombie) is fenced and its
        // last commit finished in the lake first — also when an earlier taker died
        // before doing so.
        let mut g = generation - 1;
        while g >= 1 {
            let Some(record) = self.claim_record(part, g)? else {
                // Claims are pruned only once a later owner committed the partition,
                // so the walk must have found its state before reaching one.
                return Err(self.damaged(
                    &lease_name(&claim_scope(part), g),
                    format!("claim missing before any state of partition {part} was found"),
                ));
            };
            if let Some((state, position, _)) = self.read_handoff(part, g)? {
                pipeline
                    .restore_partition(&state, part)
                    .map_err(|e| self.damaged(&handoff_name(part, g), e.to_string()))?;
                return Ok(position);
            }
            if let Some(owner) = record.owner {
                if record.released_at_ms.is_none() && owner != self.id {
                    self.fence_member(owner, lake)?;
                }
                if let Some((manifest, state)) = self.newest_holding(owner, part, g)? {
                    pipeline
                        .restore_partition(&state, part)
                        .map_err(|e| self.damaged(&manifest.state, e.to_string()))?;
                    if let Some(position) = manifest.positions.get(&part) {
                        return Ok(*position);
                    }
                }
            }
            g -= 1;
        }
        pipeline.hold(part);
        Ok(default)
    }

    fn read_handoff(
        &self,
        part: u32,
        generation: u64,
    ) -> Result<Option<(Vec<u8>, Position, bool)>, CheckpointError> {
        let name = handoff_name(part, generation);
        let Some(bytes) = self.store.get(&name).map_err(self.store_err())? else {
            return Ok(None);
        };
        let handoff: Handoff = postcard::from_bytes(&bytes)
            .map_err(|e| self.damaged(&name, format!("unreadable handoff: {e}")))?;
        if crc32fast::hash(&handoff.state) != handoff.crc32 {
            return Err(self.damaged(&name, "the handoff fails its checksum".into()));
        }
        Ok(Some((handoff.state, handoff.position, handoff.complete)))
    }

    /// Member `owner`'s chain, for reading and fencing.
    fn chain_of(&self, owner: u64) -> Checkpointer {
        Checkpointer::new(
            self.store.clone(),
            Arc::new(ReadOnly),
            &self.pipeline,
            &self.source,
            1,
        )
        .with_prefix(&chain_prefix(owner))
    }

    /// The newest checkpoint of member `owner` that holds `part` under claim
    /// `generation`, with its state.
    fn newest_holding(
        &self,
        owner: u64,
        part: u32,
        generation: u64,
    ) -> Result<Option<(Manifest, Vec<u8>)>, CheckpointError> {
        let chain = self.chain_of(owner);
        for (_, name) in chain.manifests()? {
            let Some(bytes) = self.store.get(&name).map_err(self.store_err())? else {
                continue;
            };
            let manifest: Manifest = match serde_json::from_slice(&bytes) {
                Ok(m) => m,
                Err(_) if serde_json::from_slice::<FenceMarker>(&bytes).is_ok() => continue,
                Err(e) => return Err(self.damaged(&name, format!("manifest unreadable: {e}"))),
            };
            manifest.check_version(self.store.location(), &name)?;
            if !manifest.positions.contains_key(&part)
                || manifest.claims.get(&part) != Some(&generation)
            {
                continue;
            }
            let state = self.store.get(&manifest.state).map_err(self.store_err())?;
            return match state {
                Some(s)
                    if s.len() as u64 == manifest.state_bytes
                        && crc32fast::hash(&s) == manifest.state_crc32 =>
                {
                    Ok(Some((manifest, s)))
                }
                _ => Err(self.damaged(
                    &name,
                    format!("state {} missing or damaged", manifest.state),
                )),
            };
        }
        Ok(None)
    }

    /// Makes member `owner` unable to commit ever again, then finishes what its newest
    /// commit left undone in the lake and deletes what it staged.
    fn fence_member(&self, owner: u64, lake: &mut dyn LakeRepair) -> Result<(), CheckpointError> {
        let chain = self.chain_of(owner);
        let manifests = chain.manifests()?;
        let mut epoch = manifests.first().map_or(1, |(e, _)| e + 1);
        if let Some((e, name)) = manifests.first()
            && let Some(bytes) = self.store.get(name).map_err(self.store_err())?
            && serde_json::from_slice::<FenceMarker>(&bytes).is_ok()
        {
            // Fenced already; whoever did it may have died before the repair, which
            // is idempotent: do it again.
            return self.repair(owner, *e, lake);
        }
        let marker = FenceMarker {
            format: FORMAT.into(),
            version: VERSION,
            fenced_by: self.id,
            at_ms: crate::runtime::now_ms(),
        };
        let bytes =
            serde_json::to_vec_pretty(&marker).map_err(|e| self.store_err()(Box::new(e)))?;
        while !self
            .store
            .put_if_absent(&chain.manifest_name(epoch), &bytes)
            .map_err(self.store_err())?
        {
            let taken = self
                .store
                .get(&chain.manifest_name(epoch))
                .map_err(self.store_err())?;
            if taken.is_some_and(|b| serde_json::from_slice::<FenceMarker>(&b).is_ok()) {
                // Another taker fenced it at the same moment: fenced once is enough.
                return self.repair(owner, epoch, lake);
            }
            epoch += 1; // it committed that epoch meanwhile: fence the next
        }
        tracing::warn!(
            member = owner,
            fenced_at_epoch = epoch,
            "took over from a member that did not hand its partitions over; it can no longer commit"
        );
        self.repair(owner, epoch, lake)
    }

    /// Publishes the files of fenced member `owner`'s newest commit before `fence` (its
    /// records are past the positions a taker resumes from), then deletes what it
    /// staged. Idempotent.
    fn repair(
        &self,
        owner: u64,
        fence: u64,
        lake: &mut dyn LakeRepair,
    ) -> Result<(), CheckpointError> {
        let chain = self.chain_of(owner);
        for (e, name) in chain.manifests()? {
            if e >= fence {
                continue;
            }
            let Some(bytes) = self.store.get(&name).map_err(self.store_err())? else {
                continue;
            };
            if let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) {
                lake.publish(&m.staged).map_err(|e| self.store_err()(e))?;
                break;
            }
        }
        lake.clean_staging_of(owner).map_err(self.store_err())?;
        Ok(())
    }

    /// Hands partitions over after a commit that held them: a handoff each (their
    /// state in `pipeline`, their position in `positions`), claims marked released,
    /// and the pipeline releases them. `complete`: read to their end and flushed
    /// (`--until-end`), so a bounded run counts them as done.
    pub fn give_up(
        &self,
        parts: &[u32],
        pipeline: &mut Pipeline,
        positions: &Positions,
        complete: bool,
    ) -> Result<(), CheckpointError> {
        // Every handoff is taken before any partition is released: the states share
        // one watermark, which releasing moves (`Pipeline::release_partitions`).
        for &part in parts {
            let Some(generation) = locked(&self.claims).get(&part).copied() else {
                continue;
            };
            let Some(&position) = positions.get(&part) else {
                return Err(self.damaged(
                    &handoff_name(part, generation),
                    format!("no position of partition {part} to hand over"),
                ));
            };
            let state = pipeline
                .snapshot_of(&[part])
                .map_err(|e| self.damaged(&handoff_name(part, generation), e.to_string()))?;
            let floor = pipeline.floors().get(&part).copied().unwrap_or(i64::MIN);
            let handoff = Handoff {
                complete,
                position,
                crc32: crc32fast::hash(&state),
                state,
            };
            let bytes = postcard::to_stdvec(&handoff).map_err(|e| self.store_err()(Box::new(e)))?;
            self.store
                .put(&handoff_name(part, generation), &bytes)
                .map_err(self.store_err())?;
            if let Some(mut record) = self.claim_record(part, generation)? {
                record.released_at_ms = Some(crate::runtime::now_ms());
                record.released = Some(Released {
                    floor,
                    position,
                    complete,
                });
                let bytes = serde_json::to_vec_pretty(&record)
                    .map_err(|e| self.store_err()(Box::new(e)))?;
                self.store
                    .put(&lease_name(&claim_scope(part), generation), &bytes)
                    .map_err(self.store_err())?;
            }
            locked(&self.claims).remove(&part);
            locked(&self.fresh).remove(&part);
        }
        pipeline.release_partitions(parts);
        Ok(())
    }

    /// Whether every partition in `ends` was last handed over (its newest claim
    /// released) at or past its end position, complete (flushed).
    pub fn all_handed_over_at(&self, ends: &Positions) -> Result<bool, CheckpointError> {
        let names = self.store.list().map_err(self.store_err())?;
        for (&part, end) in ends {
            let scope = claim_scope(part);
            let Some(newest) = names.iter().filter_map(|n| generation_of(n, &scope)).max() else {
                return Ok(false);
            };
            let released = self
                .claim_record(part, newest)?
                .is_some_and(|r| r.released_at_ms.is_some());
            if !released {
                return Ok(false);
            }
            // At its end and flushed: a partition handed over at its end by a revoke
            // or a stop still has windows open, and waits for a member to finish it.
            let at_end = match (self.read_handoff(part, newest)?, end) {
                (
                    Some((_, Position::Kafka { offset }, complete)),
                    Position::Kafka { offset: end },
                ) => complete && offset >= *end,
                _ => false,
            };
            if !at_end {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// After a commit of `pipeline`'s state: the partitions taken since the one before
    /// are now in this member's chain, so their older handoffs and claims are no longer
    /// needed, nor the credits the state has taken.
    pub fn committed(&self, pipeline: &Pipeline) {
        let fresh: Vec<u32> = std::mem::take(&mut *locked(&self.fresh))
            .into_iter()
            .collect();
        let claims = locked(&self.claims).clone();
        let Ok(names) = self.store.list() else { return };
        if pipeline.routes_riders() {
            self.purge_credits(&names, pipeline);
        }
        for part in fresh {
            let Some(&own) = claims.get(&part) else {
                continue;
            };
            let scope = claim_scope(part);
            for name in &names {
                let older_claim = generation_of(name, &scope).is_some_and(|g| g + 1 < own);
                let older_handoff = name
                    .strip_prefix(&format!("handoff-{scope}-"))
                    .and_then(|rest| rest.strip_suffix(".bin"))
                    .and_then(|g| g.parse::<u64>().ok())
                    .is_some_and(|g| g < own);
                if older_claim || older_handoff {
                    let _ = self.store.delete(name);
                }
            }
        }
    }
}

impl Fence for Member {
    fn generation(&self) -> u64 {
        self.id
    }

    fn check(&self) -> Result<(), CheckpointError> {
        if let Some(reason) = locked(&self.lost).clone() {
            return Err(self.lost_error(reason));
        }
        let claims = locked(&self.claims).clone();
        if claims.is_empty() {
            return Ok(());
        }
        // One listing for every claim; newer generations may have been pruned but the
        // newest is always there.
        let names = self.store.list().map_err(self.store_err())?;
        for (part, generation) in claims {
            let scope = claim_scope(part);
            let newest = names
                .iter()
                .filter_map(|n| generation_of(n, &scope))
                .max()
                .unwrap_or(0);
            if newest > generation {
                // Whoever it is (an unreadable record too): this claim is superseded.
                let by = match self.claim_record(part, newest)? {
                    Some(next) => format!(
                        "{} ({})",
                        next.owner
                            .map_or_else(|| "another member".to_owned(), |m| format!("member {m}")),
                        next.holder
                    ),
                    None => format!("claim generation {newest}"),
                };
                let reason = format!("partition {part} was taken over by {by}");
                *locked(&self.lost) = Some(reason.clone());
                return Err(self.lost_error(reason));
            }
        }
        Ok(())
    }

    fn is_lost(&self) -> bool {
        locked(&self.lost).is_some()
    }

    fn claims(&self) -> BTreeMap<u32, u64> {
        locked(&self.claims).clone()
    }
}

impl Member {
    fn lost_error(&self, reason: String) -> CheckpointError {
        CheckpointError::Lease(crate::lease::LeaseError::Lost {
            location: self.store.location(),
            scope: format!("member {}", self.id),
            generation: self.id,
            reason,
        })
    }
}

/// Who holds what in a consumer group's checkpoint store, for `rushhour checkpoints`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupStatus {
    /// Every partition ever claimed, by number.
    pub partitions: Vec<PartitionStatusRow>,
    /// Every member that joined, with its newest manifest's epoch (0: none).
    pub members: Vec<(u64, u64)>,
    /// Rider credits written and not yet taken and deleted by their partition's holder.
    pub pending_credits: usize,
}

/// A partition's newest claim.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatusRow {
    /// The partition.
    pub partition: u32,
    /// Its newest claim's generation.
    pub generation: u64,
    /// The member that made it.
    pub owner: Option<u64>,
    /// Where it stood when it was handed over (`None`: still held, or its holder died).
    pub released: Option<Released>,
}

/// What a consumer group's checkpoint store holds (empty for a pipeline of one process).
pub fn group_status(store: &dyn CheckpointStore) -> Result<GroupStatus, BoxError> {
    let names = store.list()?;
    let mut status = GroupStatus::default();
    let mut newest_claims: BTreeMap<u32, u64> = BTreeMap::new();
    for name in &names {
        if name.starts_with("credits-") {
            status.pending_credits += 1;
        }
        if let Some(id) = name
            .strip_prefix("member-")
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            let prefix = chain_prefix(id);
            let newest = names
                .iter()
                .filter_map(|n| crate::checkpoint::manifest_epoch(n.strip_prefix(&prefix)?))
                .max()
                .unwrap_or(0);
            status.members.push((id, newest));
        }
        let Some(part) = name
            .strip_prefix("lease-p")
            .and_then(|n| n.split_once('-'))
            .and_then(|(p, _)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(g) = generation_of(name, &claim_scope(part)) {
            let newest = newest_claims.entry(part).or_insert(g);
            *newest = (*newest).max(g);
        }
    }
    for (part, generation) in newest_claims {
        let record: Option<LeaseRecord> = store
            .get(&lease_name(&claim_scope(part), generation))?
            .and_then(|b| serde_json::from_slice(&b).ok());
        status.partitions.push(PartitionStatusRow {
            partition: part,
            generation,
            owner: record.as_ref().and_then(|r| r.owner),
            released: record.and_then(|r| r.released),
        });
    }
    status.members.sort_unstable();
    Ok(status)
}

/// The fence of a chain read, never written.
struct ReadOnly;

impl Fence for ReadOnly {
    fn generation(&self) -> u64 {
        0
    }
    fn check(&self) -> Result<(), CheckpointError> {
        Err(CheckpointError::Incompatible {
            location: String::new(),
            name: String::new(),
            reason: "a chain opened for reading is never written".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{EpochEnd, MemoryCheckpointStore};
    use crate::pipeline::{Counters, PipelineConfig};
    use crate::source::PositionStyle;
    use rushhour_schemas::NO_WATERMARK;

    /// A lake that only records what it is asked to publish.
    #[derive(Default)]
    struct Repairs(Vec<StagedFile>);

    impl LakeRepair for Repairs {
        fn publish(&mut self, files: &[StagedFile]) -> Result<(), BoxError> {
            self.0.extend_from_slice(files);
            Ok(())
        }
        fn clean_staging_of(&mut self, _generation: u64) -> Result<u64, BoxError> {
            Ok(0)
        }
    }

    /// A new member of the test pipeline, in `store`.
    fn member_of(store: &Arc<dyn CheckpointStore>) -> Arc<Member> {
        let joined = Member::join(store.clone(), "pipe", "kafka://b/t", Holder::this_process());
        Arc::new(joined.unwrap())
    }

    fn pipeline() -> Pipeline {
        Pipeline::new(
            PipelineConfig::default(),
            "kafka://b/t",
            PositionStyle::TopicPartitionOffset("t".into()),
        )
    }

    fn at(offset: i64) -> Position {
        Position::Kafka { offset }
    }

    fn commit(member: &Arc<Member>, epoch: u64, pipeline: &mut Pipeline, part: u32, offset: i64) {
        commit_staging(member, epoch, pipeline, part, offset, Vec::new());
    }

    fn commit_staging(
        member: &Arc<Member>,
        epoch: u64,
        pipeline: &mut Pipeline,
        part: u32,
        offset: i64,
        staged: Vec<StagedFile>,
    ) {
        let cp = member.checkpointer(3);
        pipeline.take_output().unwrap();
        member
            .write_credits(epoch, &pipeline.take_credits())
            .unwrap();
        let state = cp
            .write_state(epoch, &pipeline.snapshot().unwrap())
            .unwrap();
        cp.commit(
            &state,
            EpochEnd {
                epoch,
                positions: Positions::from([(part, at(offset))]),
                cursor: 0,
                counters: Counters::default(),
                staged,
                start: None,
                created_at_ms: 0,
                state_encode_ms: 0.0,
                floors: pipeline.floors(),
                active: pipeline.active_watermarks(),
                ended: Vec::new(),
            },
        )
        .unwrap();
        member.committed(pipeline);
    }

    /// Runs `records` (JSON lines) of partition `part` through `pipeline`.
    fn feed(pipeline: &mut Pipeline, part: u32, records: &[String]) {
        let mut batch = crate::source::SourceBatch {
            partition: part,
            ..Default::default()
        };
        for (k, r) in records.iter().enumerate() {
            let start = batch.data.len();
            batch.data.extend_from_slice(r.as_bytes());
            batch.records.push((start..batch.data.len(), k as u64));
        }
        pipeline.process_batch(&batch, 0).unwrap();
    }

    /// An `order_delivered` by rider `r` at `12:00:SS`.
    fn delivered(id: &str, second: u32) -> String {
        format!(
            r#"{{"event_id":"{id}","event_type":"order_delivered","event_time":"2026-11-21T12:00:{second:02}Z","order_id":"o-{id}","store_id":"s","rider_id":"r"}}"#
        )
    }

    fn credits_objects(store: &Arc<dyn CheckpointStore>) -> Vec<String> {
        let names = store.list().unwrap();
        names
            .into_iter()
            .filter(|n| n.starts_with("credits-"))
            .collect()
    }

    /// A member and its pipeline.
    type RoutedMember = (Arc<Member>, Pipeline);

    /// A new member routing riders over two partitions, holding `part`.
    fn routed_member_taking(
        store: &Arc<dyn CheckpointStore>,
        part: u32,
    ) -> (Arc<Member>, Pipeline) {
        let member = member_of(store);
        let mut p = pipeline();
        p.route_riders(2);
        member
            .take(
                &Positions::from([(part, at(0))]),
                &mut p,
                &mut Repairs::default(),
            )
            .unwrap();
        (member, p)
    }

    /// Two members over two partitions, routing riders: A holds the partition rider
    /// r's pings are keyed to, B the other.
    fn two_members(store: &Arc<dyn CheckpointStore>) -> (RoutedMember, RoutedMember, u32, u32) {
        let home = rushhour_streamlog::partition_for_key(b"r", 2);
        let away = 1 - home;
        (
            routed_member_taking(store, home),
            routed_member_taking(store, away),
            home,
            away,
        )
    }

    #[test]
    fn credits_count_once_their_epoch_commits_and_only_once() {
        let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::default());
        let ((a, mut pa), (b, mut pb), home, away) = two_members(&store);
        feed(&mut pb, away, &[delivered("d1", 10)]);
        // B writes its epoch's credits, and has not committed yet.
        b.write_credits(1, &pb.take_credits()).unwrap();
        assert_eq!(credits_objects(&store).len(), 1);
        assert_eq!(a.read_credits(&mut pa).unwrap(), 0, "read uncommitted");
        commit(&b, 1, &mut pb, away, 1);
        assert_eq!(a.read_credits(&mut pa).unwrap(), 1);
        assert_eq!(a.read_credits(&mut pa).unwrap(), 0, "read twice");
        assert_eq!(pa.credits_read(home), Some(&BTreeMap::from([(b.id, 1)])));
        // Once A's commit holds them, they go.
        commit(&a, 1, &mut pa, home, 1);
        assert_eq!(credits_objects(&store), Vec::<String>::new());
        // And with nothing left of B, the state forgets it.
        a.read_credits(&mut pa).unwrap();
        assert_eq!(pa.credits_read(home), Some(&BTreeMap::new()));
    }

    /// B (holding `away`) commits epoch 1 with a credit, then stages epoch 2's credits
    /// and dies before its commit.
    fn commit_one_epoch_then_stage_another(b: &Arc<Member>, pb: &mut Pipeline, away: u32) {
        feed(pb, away, &[delivered("d1", 10)]);
        commit(b, 1, pb, away, 1);
        feed(pb, away, &[delivered("d2", 20)]);
        b.write_credits(2, &pb.take_credits()).unwrap();
    }

    #[test]
    fn a_fenced_members_unfinished_epoch_credits_nothing() {
        let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::default());
        let ((a, mut pa), (b, mut pb), _, away) = two_members(&store);
        commit_one_epoch_then_stage_another(&b, &mut pb, away);
        // C takes the partition over, fencing B.
        let _taker = routed_member_taking(&store, away);
        assert_eq!(a.read_credits(&mut pa).unwrap(), 1, "epoch 1 only");
        assert_eq!(
            credits_objects(&store).len(),
            1,
            "epoch 2's credits are dropped, epoch 1's kept until A commits"
        );
    }

    #[test]
    fn the_rider_bound_is_the_lowest_committed_floor_elsewhere() {
        let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::default());
        let ((a, pa), (b, mut pb), home, away) = two_members(&store);
        let all = [home, away];
        let view = || a.group_view(&all, &pa.held()).unwrap();
        assert_eq!(view().bound, NO_WATERMARK, "B has committed nothing yet");
        feed(&mut pb, away, &[delivered("d1", 30)]);
        commit(&b, 1, &mut pb, away, 1);
        let floor = pb.floors()[&away];
        assert!(floor > NO_WATERMARK);
        assert_eq!(view().bound, floor);
        assert_eq!(view().active, Some(pb.active_watermarks()[&away]));
        // Idle, it says no watermark; its floor still bounds.
        pb.set_statuses(&BTreeMap::from([(
            away,
            crate::source::PartitionStatus::Idle,
        )]));
        commit(&b, 2, &mut pb, away, 1);
        assert_eq!((view().bound, view().active), (floor, None));
        // Raised by the watermark active elsewhere, the floor lets windows close.
        pb.raise_idle_floors(floor + 60_000);
        commit(&b, 3, &mut pb, away, 1);
        assert_eq!(view().bound, floor + 60_000);
        // Handed over: its release says where it stood; read to its end and flushed,
        // it bounds nothing.
        b.give_up(&[away], &mut pb, &Positions::from([(away, at(1))]), false)
            .unwrap();
        assert_eq!(view().bound, floor + 60_000);
        let (c, mut pc) = routed_member_taking(&store, away);
        c.give_up(&[away], &mut pc, &Positions::from([(away, at(1))]), true)
            .unwrap();
        assert_eq!(view().bound, i64::MAX);
        assert_eq!(
            a.group_view(&all, &[home, away]).unwrap(),
            GroupView {
                bound: i64::MAX,
                active: None
            }
        );
    }

    /// Two takers fencing one dead member at once write two fence markers: its credits
    /// staged for the epoch the first marker took never count.
    #[test]
    fn credits_behind_two_fence_markers_never_count() {
        let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::default());
        let ((a, mut pa), (b, mut pb), _, away) = two_members(&store);
        commit_one_epoch_then_stage_another(&b, &mut pb, away);
        // Markers at epochs 2 and 3, as two racing takers would leave them.
        let chain = a.chain_of(b.id);
        for epoch in [2, 3] {
            let marker = FenceMarker {
                format: FORMAT.into(),
                version: VERSION,
                fenced_by: 9,
                at_ms: 0,
            };
            let bytes = serde_json::to_vec(&marker).unwrap();
            assert!(
                store
                    .put_if_absent(&chain.manifest_name(epoch), &bytes)
                    .unwrap()
            );
        }
        assert_eq!(a.read_credits(&mut pa).unwrap(), 1, "epoch 1 only");
        // A taker meeting a marker where it fences stops there.
        let mut lake = Repairs::default();
        a.fence_member(b.id, &mut lake).unwrap();
        assert_eq!(chain.manifests().unwrap().len(), 3);
    }

    /// Member A holds p, hands it over; D holds it and hands it over further on; A
    /// takes it back and dies before committing. C must resume from D's handoff —
    /// not from A's checkpoint of its first tenure, which would read D's records
    /// again.
    #[test]
    fn a_takeover_never_resumes_from_an_earlier_tenure() {
        let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::default());
        let join = || member_of(&store);
        let (a, d, c) = (join(), join(), join());
        let defaults = Positions::from([(0, at(0))]);
        let mut lake = Repairs::default();

        let mut pa = pipeline();
        assert_eq!(a.take(&defaults, &mut pa, &mut lake).unwrap()[&0], at(0));
        commit(&a, 1, &mut pa, 0, 100);
        a.give_up(&[0], &mut pa, &Positions::from([(0, at(100))]), false)
            .unwrap();

        let mut pd = pipeline();
        assert_eq!(d.take(&defaults, &mut pd, &mut lake).unwrap()[&0], at(100));
        commit(&d, 1, &mut pd, 0, 250);
        d.give_up(&[0], &mut pd, &Positions::from([(0, at(250))]), false)
            .unwrap();

        // A takes it back (restored from D's handoff) and is killed before a commit.
        assert_eq!(a.take(&defaults, &mut pa, &mut lake).unwrap()[&0], at(250));

        let mut pc = pipeline();
        assert_eq!(
            c.take(&defaults, &mut pc, &mut lake).unwrap()[&0],
            at(250),
            "resumed from A's first tenure"
        );
        // A was fenced: it can never commit again.
        assert!(a.check().is_err());
    }

    /// A commits an epoch and is killed before publishing it; B claims the partition
    /// and is killed before fencing A. C must still fence A and publish A's last
    /// epoch, whose records lie before the position C resumes from.
    #[test]
    fn a_dead_owners_last_commit_is_published_even_if_the_first_taker_died() {
        let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::default());
        let join = || member_of(&store);
        let (a, b, c) = (join(), join(), join());
        let defaults = Positions::from([(0, at(0))]);
        let mut lake = Repairs::default();
        let mut pa = pipeline();
        a.take(&defaults, &mut pa, &mut lake).unwrap();
        let file = StagedFile {
            table: rushhour_schemas::Table::RawEvents,
            staged: "_staging/x/g1/raw/part-1".into(),
            target: "raw/part-1".into(),
            rows: 1,
            bytes: 1,
        };
        commit_staging(&a, 1, &mut pa, 0, 100, vec![file.clone()]);
        // B claims partition 0 and dies before anything else.
        b.claim(0).unwrap();
        let mut pc = pipeline();
        assert_eq!(c.take(&defaults, &mut pc, &mut lake).unwrap()[&0], at(100));
        assert_eq!(lake.0, vec![file], "A's last epoch was not published");
        // A's chain is fenced: its next manifest name is taken by a marker.
        let chain = c.chain_of(a.id);
        let (_, newest) = chain.manifests().unwrap().into_iter().next().unwrap();
        let bytes = store.get(&newest).unwrap().unwrap();
        assert!(
            serde_json::from_slice::<FenceMarker>(&bytes).is_ok(),
            "A was not fenced"
        );
    }

    /// A bounded run is done with a partition only when it was handed over at its end
    /// *complete* (flushed): one revoked or stopped at its end still has open windows.
    #[test]
    fn only_a_complete_handoff_at_the_end_counts_as_done() {
        let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::default());
        let join = || member_of(&store);
        let (a, b) = (join(), join());
        let defaults = Positions::from([(0, at(0))]);
        let ends = Positions::from([(0, at(100))]);
        let mut lake = Repairs::default();
        let mut pa = pipeline();
        a.take(&defaults, &mut pa, &mut lake).unwrap();
        commit(&a, 1, &mut pa, 0, 100);
        // Revoked at its end, windows still open.
        a.give_up(&[0], &mut pa, &Positions::from([(0, at(100))]), false)
            .unwrap();
        assert!(!a.all_handed_over_at(&ends).unwrap());
        // Someone takes it over, finds it at its end, flushes and hands it over.
        let mut pb = pipeline();
        assert_eq!(b.take(&defaults, &mut pb, &mut lake).unwrap()[&0], at(100));
        commit(&b, 1, &mut pb, 0, 100);
        b.give_up(&[0], &mut pb, &Positions::from([(0, at(100))]), true)
            .unwrap();
        assert!(a.all_handed_over_at(&ends).unwrap());
        assert!(b.all_handed_over_at(&ends).unwrap());
    }
}
