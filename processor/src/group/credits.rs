//! Rider credits between the members of a group: Kafka Streams' repartition step,
//! through the checkpoint store instead of an internal topic.
//!
//! A rider's pings are keyed by rider, its deliveries by store: in a group the two
//! halves of a rider's minute can be read by two members. Each member routes every
//! rider-side contribution to the partition of its rider
//! ([`Pipeline::route_riders`]); those for a partition it does not hold are written
//! with its epoch's commit as `credits-p<partition>-m<member>-<epoch>.bin`, before the
//! manifest. Whoever holds the partition takes them:
//!
//! - **Read-committed.** A member's credits of epoch *e* count once its chain has a
//!   manifest at or past *e* (its epochs commit in order, each once); a member fenced
//!   at *f* never commits *f*, whose credits are dropped. No transactions needed: the
//!   manifest is the commit, as for the lake's files.
//! - **Exactly once.** Each partition's state records, by member, the newest epoch
//!   whose credits it took ([`Pipeline::credits_read`]); it moves with the partition
//!   through handoffs and takeovers, and a member's credits are taken in epoch order.
//!   Once a commit holds what was taken, the files are deleted (Kafka Streams purges
//!   its repartition topics the same way).
//! - **Complete.** A rider window may close once no credit for it can still come
//!   ([`Member::group_view`]): every partition held elsewhere has a committed state
//!   whose floor (the watermark its records are judged by from there on) is past the
//!   window — or, in a bounded run, a committed position at its end. The bound is read
//!   before the credits, so every credit committed with those states is taken.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{FenceMarker, Member, chain_prefix, claim_scope};
use crate::checkpoint::{CheckpointError, Manifest, manifest_epoch};
use crate::lease::generation_of;
use crate::pipeline::Pipeline;
use crate::rider::Credit;
use rushhour_schemas::NO_WATERMARK;

/// Version of the credits object's encoding.
const CREDITS_VERSION: u32 = 1;

fn credits_name(part: u32, member: u64, epoch: u64) -> String {
    format!(
        "credits-{}-m{member:020}-{epoch:020}.bin",
        claim_scope(part)
    )
}

/// `(partition, member, epoch)` of a credits object's name.
fn parse_credits_name(name: &str) -> Option<(u32, u64, u64)> {
    let rest = name.strip_prefix("credits-p")?.strip_suffix(".bin")?;
    let (part, rest) = rest.split_once("-m")?;
    let (member, epoch) = rest.split_once('-')?;
    Some((
        part.parse().ok()?,
        member.parse().ok()?,
        epoch.parse().ok()?,
    ))
}

/// What the partitions held elsewhere say ([`Member::group_view`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupView {
    /// Rider windows may close up to here: every partition held elsewhere judges its
    /// records by at least this (`i64::MAX` if none, or all at their end in a bounded
    /// run; `NO_WATERMARK` while one has no committed state).
    pub bound: i64,
    /// The lowest watermark of the partitions active elsewhere (`None`: none is).
    pub active: Option<i64>,
}

/// A partition's newest committed state, as the others see it.
struct Standing {
    floor: i64,
    /// Its own watermark, if it was active.
    active: Option<i64>,
    /// Read to its end in a bounded run (as its holder saw the end).
    ended: bool,
}

/// One member's credits of one epoch for one partition.
#[derive(Debug, Serialize, Deserialize)]
struct CreditsObject {
    version: u32,
    crc32: u32,
    /// postcard of `Vec<Credit>`.
    credits: Vec<u8>,
}

impl Member {
    /// Writes this epoch's credits, by the partition they are for, before the epoch
    /// commits: they count only once it has.
    pub fn write_credits(
        &self,
        epoch: u64,
        credits: &BTreeMap<u32, Vec<Credit>>,
    ) -> Result<(), CheckpointError> {
        for (&part, credits) in credits {
            if credits.is_empty() {
                continue;
            }
            let payload =
                postcard::to_stdvec(credits).map_err(|e| self.store_err()(Box::new(e)))?;
            let object = CreditsObject {
                version: CREDITS_VERSION,
                crc32: crc32fast::hash(&payload),
                credits: payload,
            };
            let bytes = postcard::to_stdvec(&object).map_err(|e| self.store_err()(Box::new(e)))?;
            self.store
                .put(&credits_name(part, self.id, epoch), &bytes)
                .map_err(self.store_err())?;
        }
        Ok(())
    }

    /// How far member `member`'s chain has committed, from a listing: its newest
    /// manifest's epoch (0 if none), and whether fence markers stand after it.
    fn committed_through(
        &self,
        member: u64,
        names: &[String],
    ) -> Result<(u64, bool), CheckpointError> {
        let (newest, fenced) = self.newest_commit(member, names)?;
        Ok((newest.map_or(0, |m| m.epoch), fenced))
    }

    /// Takes every committed credit for the partitions `pipeline` holds that they have
    /// not taken yet, each member's in epoch order. Returns the objects taken.
    pub fn read_credits(&self, pipeline: &mut Pipeline) -> Result<usize, CheckpointError> {
        let names = self.store.list().map_err(self.store_err())?;
        let mut pending: BTreeMap<u64, Vec<(u64, u32, &String)>> = BTreeMap::new();
        let mut present = std::collections::BTreeSet::new();
        for name in &names {
            let Some((part, member, epoch)) = parse_credits_name(name) else {
                continue;
            };
            let Some(read) = pipeline.credits_read(part) else {
                continue; // not held here
            };
            present.insert((part, member));
            if epoch > read.get(&member).copied().unwrap_or(0) {
                pending.entry(member).or_default().push((epoch, part, name));
            }
        }
        // A member with no credits left for a partition needs no entry: its next ones
        // are of later epochs than any it had (this keeps the state from growing with
        // every member that ever ran).
        pipeline.forget_credits_read(|part, member| !present.contains(&(part, member)));
        let mut taken = 0;
        for (member, mut objects) in pending {
            let (through, fenced) = self.committed_through(member, &names)?;
            objects.sort_unstable();
            for (epoch, part, name) in objects {
                if epoch > through {
                    if fenced {
                        // Staged for an epoch the fence stopped: it never commits.
                        let _ = self.store.delete(name);
                    }
                    continue;
                }
                let credits = self.read_credits_object(name)?;
                if pipeline.apply_credits(part, member, epoch, &credits) {
                    taken += 1;
                }
            }
        }
        Ok(taken)
    }

    fn read_credits_object(&self, name: &str) -> Result<Vec<Credit>, CheckpointError> {
        let Some(bytes) = self.store.get(name).map_err(self.store_err())? else {
            return Err(self.damaged(
                name,
                "credits of a committed epoch, not yet taken, are missing".into(),
            ));
        };
        let object: CreditsObject = postcard::from_bytes(&bytes)
            .map_err(|e| self.damaged(name, format!("unreadable credits: {e}")))?;
        if object.version != CREDITS_VERSION {
            return Err(self.damaged(
                name,
                format!(
                    "credits version {} (this build reads {CREDITS_VERSION})",
                    object.version
                ),
            ));
        }
        if crc32fast::hash(&object.credits) != object.crc32 {
            return Err(self.damaged(name, "the credits fail their checksum".into()));
        }
        postcard::from_bytes(&object.credits)
            .map_err(|e| self.damaged(name, format!("unreadable credits: {e}")))
    }

    /// What the partitions in `all` that are not in `held` say, in their newest
    /// committed states: how far rider windows may close here (no credit for an earlier
    /// time can come from them; none from one read to its end in a bounded run, as its
    /// holder saw the end), and the lowest watermark of those active.
    pub fn group_view(&self, all: &[u32], held: &[u32]) -> Result<GroupView, CheckpointError> {
        let names = self.store.list().map_err(self.store_err())?;
        let mut newest_manifests = BTreeMap::new();
        let mut view = GroupView {
            bound: i64::MAX,
            active: None,
        };
        for &part in all.iter().filter(|p| !held.contains(p)) {
            let Some(stood) = self.committed_standing(part, &names, &mut newest_manifests)? else {
                view.bound = NO_WATERMARK;
                continue;
            };
            if !stood.ended {
                view.bound = view.bound.min(stood.floor);
            }
            if let Some(watermark) = stood.active {
                view.active = Some(view.active.map_or(watermark, |a: i64| a.min(watermark)));
            }
        }
        Ok(view)
    }

    /// Partition `part`'s newest committed state: a released claim's, or the newest
    /// manifest of its owner under that claim, walking back through the claims.
    /// `manifests` caches each member's newest.
    fn committed_standing(
        &self,
        part: u32,
        names: &[String],
        manifests: &mut BTreeMap<u64, Option<Manifest>>,
    ) -> Result<Option<Standing>, CheckpointError> {
        let scope = claim_scope(part);
        let Some(newest) = names.iter().filter_map(|n| generation_of(n, &scope)).max() else {
            return Ok(None);
        };
        for generation in (1..=newest).rev() {
            let Some(record) = self.claim_record(part, generation)? else {
                return Ok(None);
            };
            if let Some(released) = record.released {
                return Ok(Some(Standing {
                    floor: released.floor,
                    active: None,
                    ended: released.complete,
                }));
            }
            let Some(owner) = record.owner else {
                continue;
            };
            let newest = match manifests.entry(owner) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(self.newest_commit(owner, names)?.0)
                }
            };
            // An owner commits every partition it holds in every epoch: if its newest
            // commit does not hold this one under this claim, none does.
            if let Some(m) = newest
                && m.claims.get(&part) == Some(&generation)
                && let Some(&floor) = m.floors.get(&part)
            {
                return Ok(Some(Standing {
                    floor,
                    active: m.active.get(&part).copied(),
                    ended: m.ended.contains(&part),
                }));
            }
        }
        Ok(None)
    }

    /// Member `owner`'s newest committed manifest, from a listing, and whether fence
    /// markers stand after it (there may be several: two takers fencing it at once
    /// each take a name).
    fn newest_commit(
        &self,
        owner: u64,
        names: &[String],
    ) -> Result<(Option<Manifest>, bool), CheckpointError> {
        let prefix = chain_prefix(owner);
        let mut epochs: Vec<(u64, &String)> = names
            .iter()
            .filter_map(|n| Some((manifest_epoch(n.strip_prefix(&prefix)?)?, n)))
            .collect();
        epochs.sort_unstable_by(|a, b| b.cmp(a));
        let mut fenced = false;
        for (_, name) in epochs {
            let Some(bytes) = self.store.get(name).map_err(self.store_err())? else {
                continue; // pruned meanwhile: an older one is no newer
            };
            if serde_json::from_slice::<FenceMarker>(&bytes).is_ok() {
                fenced = true;
                continue;
            }
            let manifest: Manifest = serde_json::from_slice(&bytes)
                .map_err(|e| self.damaged(name, format!("manifest unreadable: {e}")))?;
            manifest.check_version(self.store.location(), name)?;
            return Ok((Some(manifest), fenced));
        }
        Ok((None, fenced))
    }

    /// After a commit: deletes the credits objects its state has taken.
    pub(super) fn purge_credits(&self, names: &[String], pipeline: &Pipeline) {
        for name in names {
            let Some((part, member, epoch)) = parse_credits_name(name) else {
                continue;
            };
            if pipeline
                .credits_read(part)
                .and_then(|read| read.get(&member))
                .is_some_and(|&read| epoch <= read)
            {
                let _ = self.store.delete(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_names_round_trip() {
        let name = credits_name(3, 12, 345);
        assert_eq!(
            name,
            "credits-p00003-m00000000000000000012-00000000000000000345.bin"
        );
        assert_eq!(parse_credits_name(&name), Some((3, 12, 345)));
        assert_eq!(parse_credits_name("handoff-p00003-1.bin"), None);
    }
}
