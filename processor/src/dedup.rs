//! De-duplication by `event_id` over a horizon of event time.
//!
//! Ids are kept as 128-bit xxh3 hashes: 16 bytes per id whatever its length, and the
//! chance that two of a billion distinct ids collide is about 10⁻²¹. Ids are grouped
//! by the hour of their event's time so that whole hours expire at once when the
//! watermark leaves the horizon behind.

use std::collections::{BTreeMap, HashSet};

use rushhour_schemas::time::HOUR_MS;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

/// A set of recently seen event ids.
///
/// Only the hour buckets are serialised: the lookup set is rebuilt from them on
/// restore, which halves the checkpoint.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(from = "BTreeMap<i64, Vec<u128>>")]
pub struct Dedup {
    seen: HashSet<u128, BuildIdentity>,
    by_hour: BTreeMap<i64, Vec<u128>>,
}

impl From<BTreeMap<i64, Vec<u128>>> for Dedup {
    fn from(by_hour: BTreeMap<i64, Vec<u128>>) -> Dedup {
        let mut seen =
            HashSet::with_capacity_and_hasher(by_hour.values().map(Vec::len).sum(), BuildIdentity);
        seen.extend(by_hour.values().flatten().copied());
        Dedup { seen, by_hour }
    }
}

impl Serialize for Dedup {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.by_hour.serialize(serializer)
    }
}

impl Dedup {
    /// Records `event_id` (of an event at `event_time`); false if it was already there.
    pub fn insert(&mut self, event_id: &str, event_time: i64) -> bool {
        let h = xxh3_128(event_id.as_bytes());
        if !self.seen.insert(h) {
            return false;
        }
        self.by_hour
            .entry(event_time.div_euclid(HOUR_MS))
            .or_default()
            .push(h);
        true
    }

    /// Forgets ids of events older than `before` (whole hours only, so an id is kept
    /// at least until `before` passes the end of its hour).
    pub fn expire(&mut self, before: i64) {
        let keep_from = before.div_euclid(HOUR_MS);
        while let Some(entry) = self.by_hour.first_entry() {
            if *entry.key() >= keep_from {
                break;
            }
            for h in entry.remove() {
                self.seen.remove(&h);
            }
        }
    }

    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no ids are held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
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
    fn survives_a_round_trip_through_its_encoding() {
        let mut d = Dedup::default();
        for k in 0..100 {
            d.insert(&format!("id{k}"), k * 60_000);
        }
        let bytes = postcard::to_stdvec(&d).unwrap();
        let mut back: Dedup = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.len(), 100);
        assert!(!back.insert("id7", 0));
        assert!(back.insert("id100", 0));
    }

    #[test]
    fn remembers_and_expires_by_hour() {
        let mut d = Dedup::default();
        assert!(d.insert("a", 0));
        assert!(!d.insert("a", 5 * HOUR_MS));
        assert!(d.insert("b", 2 * HOUR_MS));
        d.expire(HOUR_MS - 1);
        assert!(!d.insert("a", 0));
        d.expire(HOUR_MS);
        assert_eq!(d.len(), 1);
        assert!(d.insert("a", 0));
    }
}
