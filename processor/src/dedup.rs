//! De-duplication by `event_id` over a horizon of event time.
//!
//! Ids are kept as 128-bit xxh3 hashes: 16 bytes per id whatever its length, and the
//! chance that two of a billion distinct ids collide is about 10⁻²¹. Ids are grouped
//! by the hour of their event's time so that whole hours expire at once when the
//! watermark leaves the horizon behind.

use std::collections::{BTreeMap, HashSet};

use rushhour_schemas::time::HOUR_MS;
use xxhash_rust::xxh3::xxh3_128;

use crate::operator::StateError;
use crate::partials::PartitionId;

/// Ids of one partition, by the hour of their event time.
pub type Hours = BTreeMap<i64, Vec<u128>>;

/// A set of recently seen event ids.
///
/// Ids are global, so a record is a duplicate if its id was seen on any partition
/// this process holds; but each id is filed under the partition it was first seen on,
/// so that partition's ids move with it (see [`crate::partials`]). Only the hour
/// buckets are serialised: the lookup set is rebuilt from them on restore, which
/// halves the checkpoint.
#[derive(Debug, Clone)]
pub struct Dedup {
    /// The lookup set, in [`SHARDS`] tables by the id's top bits.
    seen: Box<[HashSet<u128, BuildIdentity>]>,
    parts: BTreeMap<PartitionId, Hours>,
}

/// Tables of the lookup set. A hash table grows by moving into one twice its size, so
/// for that moment a single table of millions of ids needs three times its memory at
/// once; in 64 tables growth comes one small table at a time (measured: the set's
/// share of the peak heap fell from 1.5× its size to about 1×).
const SHARDS: usize = 64;

/// The table of the lookup set that holds `h`: its top bits pick it (the hasher folds
/// all bits, so slots within a table stay spread).
fn shard(h: u128) -> usize {
    (h >> (128 - SHARDS.trailing_zeros())) as usize
}

impl Default for Dedup {
    fn default() -> Self {
        Dedup {
            seen: (0..SHARDS).map(|_| HashSet::default()).collect(),
            parts: BTreeMap::new(),
        }
    }
}

impl Dedup {
    /// Records `event_id` (of an event at `event_time`, read from partition `part`);
    /// false if it was already there.
    pub fn insert(&mut self, part: PartitionId, event_id: &str, event_time: i64) -> bool {
        let h = xxh3_128(event_id.as_bytes());
        if !self.seen[shard(h)].insert(h) {
            return false;
        }
        self.parts
            .entry(part)
            .or_default()
            .entry(event_time.div_euclid(HOUR_MS))
            .or_default()
            .push(h);
        true
    }

    /// Forgets ids of events older than `before` (whole hours only, so an id is kept
    /// at least until `before` passes the end of its hour).
    pub fn expire(&mut self, before: i64) {
        let keep_from = before.div_euclid(HOUR_MS);
        for hours in self.parts.values_mut() {
            while let Some(entry) = hours.first_entry() {
                if *entry.key() >= keep_from {
                    break;
                }
                for h in entry.remove() {
                    self.seen[shard(h)].remove(&h);
                }
            }
        }
    }

    /// The ids filed under partition `part`, for its snapshot.
    pub fn partition(&self, part: PartitionId) -> Option<&Hours> {
        self.parts.get(&part)
    }

    /// Adds partition `part`'s ids, from its snapshot. A partition is restored once.
    pub fn restore(&mut self, part: PartitionId, hours: Hours) -> Result<(), StateError> {
        if self.parts.contains_key(&part) {
            return Err(StateError::twice(part));
        }
        for &h in hours.values().flatten() {
            self.seen[shard(h)].insert(h);
        }
        self.parts.insert(part, hours);
        Ok(())
    }

    /// Forgets partition `part`'s ids.
    pub fn release(&mut self, part: PartitionId) {
        let Some(hours) = self.parts.remove(&part) else {
            return;
        };
        for h in hours.values().flatten() {
            self.seen[shard(*h)].remove(h);
        }
        // An id may also be filed under another partition (restored into a process
        // that had seen it there): those stay.
        for h in self.parts.values().flat_map(BTreeMap::values).flatten() {
            self.seen[shard(*h)].insert(*h);
        }
    }

    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.seen.iter().map(HashSet::len).sum()
    }

    /// Whether no ids are held.
    pub fn is_empty(&self) -> bool {
        self.seen.iter().all(HashSet::is_empty)
    }
}

/// The keys are already uniformly distributed hashes: use their low bits as is.
#[derive(Debug, Default, Clone, Copy)]
pub struct BuildIdentity;

impl std::hash::BuildHasher for BuildIdentity {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

/// See [`BuildIdentity`].
#[derive(Debug, Default, Clone, Copy)]
pub struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64 ^ (v >> 64) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partitions_ids_move_with_it() {
        let mut d = Dedup::default();
        for k in 0..100 {
            d.insert(k % 2, &format!("id{k}"), k as i64 * 60_000);
        }
        let odd = postcard::to_stdvec(d.partition(1).unwrap()).unwrap();
        d.release(1);
        assert_eq!(d.len(), 50);
        assert!(d.insert(0, "id7", 0), "released with partition 1");
        assert!(
            !d.insert(1, "id8", 0),
            "an id is global: seen on partition 0"
        );
        let mut other = Dedup::default();
        other
            .restore(1, postcard::from_bytes(&odd).unwrap())
            .unwrap();
        assert_eq!(other.len(), 50);
        assert!(!other.insert(0, "id7", 0));
        assert!(other.restore(1, Hours::new()).is_err(), "restored twice");
        // Filed under two partitions, an id stays while either holds it.
        let mut twice = Dedup::default();
        twice.insert(0, "id1", 0);
        twice
            .restore(1, postcard::from_bytes(&odd).unwrap())
            .unwrap();
        twice.release(1);
        assert!(!twice.insert(2, "id1", 0));
        assert!(twice.insert(2, "id3", 0));
    }

    #[test]
    fn remembers_and_expires_by_hour() {
        let mut d = Dedup::default();
        assert!(d.insert(0, "a", 0));
        assert!(!d.insert(1, "a", 5 * HOUR_MS));
        assert!(d.insert(1, "b", 2 * HOUR_MS));
        d.expire(HOUR_MS - 1);
        assert!(!d.insert(0, "a", 0));
        d.expire(HOUR_MS);
        assert_eq!(d.len(), 1);
        assert!(d.insert(0, "a", 0));
    }
}
