//! State kept apart by the source partition it came from.
//!
//! Kafka consumer groups (and Kinesis resharding) move source partitions between
//! processes. A partition can only move if the state its records built moves with it —
//! no more and no less — so every entry of operator state (a window's aggregate, an
//! order's join state) is held as *partials*: one per source partition that
//! contributed to it. Within one process the partials of a key are merged whenever the
//! key is read (a window is final when every partial is, its row sums them), so the
//! answer never depends on how records were spread over partitions. Moving a partition
//! takes exactly its partials out of one process and into another: every contribution
//! is in exactly one place. Answers stay exact across processes for keys whose records
//! share a partition, which the contract's producer keys give; rider windows, whose
//! deliveries come from their stores' partitions, are made exact by routing
//! ([`crate::rider`]).
//!
//! Nearly every key has one partial (the producer keys records so that a store's
//! events share a partition), so the partials of a key live inline, without a heap
//! allocation, until a second partition contributes.

use smallvec::SmallVec;

/// A source partition's number.
pub type PartitionId = u32;

/// The partials of one key, by source partition.
#[derive(Debug, Clone)]
pub struct Partials<T>(SmallVec<[(PartitionId, T); 1]>);

impl<T> Default for Partials<T> {
    fn default() -> Self {
        Partials(SmallVec::new())
    }
}

impl<T> Partials<T> {
    /// The partial of `part`, created empty if it has none yet.
    pub fn of(&mut self, part: PartitionId) -> &mut T
    where
        T: Default,
    {
        let k = match self.0.iter().position(|(p, _)| *p == part) {
            Some(k) => k,
            None => {
                self.0.push((part, T::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[k].1
    }

    /// The partial of `part`, if it has one.
    pub fn get_mut(&mut self, part: PartitionId) -> Option<&mut T> {
        self.0.iter_mut().find(|(p, _)| *p == part).map(|(_, v)| v)
    }

    /// Adds `part`'s partial, restored from a checkpoint. False (and nothing changed)
    /// if `part` already has one: a partition is restored into a process once.
    pub fn insert(&mut self, part: PartitionId, value: T) -> bool {
        if self.0.iter().any(|(p, _)| *p == part) {
            return false;
        }
        self.0.push((part, value));
        true
    }

    /// Drops `part`'s partial; true if the key has none left.
    pub fn release(&mut self, part: PartitionId) -> bool {
        self.0.retain(|(p, _)| *p != part);
        self.0.is_empty()
    }

    /// Every partial with its partition.
    pub fn iter(&self) -> impl Iterator<Item = (PartitionId, &T)> {
        self.0.iter().map(|(p, v)| (*p, v))
    }

    /// Every partial with its partition, mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (PartitionId, &mut T)> {
        self.0.iter_mut().map(|(p, v)| (*p, v))
    }

    /// Every partial.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(_, v)| v)
    }

    /// Every partial, mutable.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.0.iter_mut().map(|(_, v)| v)
    }

    /// Every partial, taken.
    pub fn into_values(self) -> impl Iterator<Item = T> {
        self.0.into_iter().map(|(_, v)| v)
    }

    /// Whether no partition has contributed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Groups the partials of many keys by partition, for a per-partition snapshot:
/// `(key, partials)` pairs in, `partition → [(key, partial)]` out.
pub fn by_partition<'a, K, T: 'a>(
    entries: impl Iterator<Item = (K, &'a Partials<T>)>,
) -> std::collections::BTreeMap<PartitionId, Vec<(K, &'a T)>>
where
    K: Clone,
{
    let mut out: std::collections::BTreeMap<PartitionId, Vec<(K, &'a T)>> =
        std::collections::BTreeMap::new();
    for (key, partials) in entries {
        for (part, value) in partials.iter() {
            out.entry(part).or_default().push((key.clone(), value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_partial_per_partition() {
        let mut p: Partials<i64> = Partials::default();
        *p.of(3) += 1;
        *p.of(3) += 1;
        *p.of(1) += 5;
        assert_eq!(p.iter().collect::<Vec<_>>(), vec![(3, &2), (1, &5)]);
        assert!(!p.insert(1, 9), "partition 1 is already here");
        assert!(!p.release(3));
        assert!(p.insert(3, 7));
        assert!(!p.release(1));
        assert!(p.release(3));
        assert!(p.is_empty());
    }

    #[test]
    fn groups_keys_by_partition() {
        let mut a: Partials<&str> = Partials::default();
        a.insert(0, "a0");
        a.insert(2, "a2");
        let mut b: Partials<&str> = Partials::default();
        b.insert(2, "b2");
        let grouped = by_partition([("a", &a), ("b", &b)].into_iter());
        assert_eq!(grouped[&0], vec![("a", &"a0")]);
        assert_eq!(grouped[&2], vec![("a", &"a2"), ("b", &"b2")]);
    }
}
