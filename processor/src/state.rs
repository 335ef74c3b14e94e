//! The state format: how a [`Pipeline`](crate::pipeline::Pipeline)'s snapshot is laid
//! out in bytes.
//!
//! A snapshot is a header (version, effective watermark) and one section per source
//! partition held, each postcard-encoded and then zstd-compressed on its own, so that a
//! process taking over some partitions (a consumer-group rebalance) decodes just
//! theirs. A section holds the partition's watermark, status, counters, the ids it
//! brought and each operator's part, in the order of the pipeline's operators.

use std::collections::BTreeMap;

use crate::dedup::Hours;
use crate::operator::StateError;
use crate::partials::PartitionId;
use crate::pipeline::Counters;
use crate::source::PartitionStatus;

/// Version of the snapshot encoding; bump on any change to the state's shape.
/// 2: state kept apart by source partition, one compressed section each.
/// 3: a rider window's ping ids in one string.
/// 4: no partition count (partitions are held by number, and come and go).
/// 5: the credits each partition has read, by member (rider routing).
/// 6: an hour's event ids as one run of 16-byte values, not one varint each.
pub const STATE_VERSION: u32 = 6;

/// The oldest version this build still reads (5 differs only in how ids are spelled).
const OLDEST_READ: u32 = 5;

/// The header of a snapshot, and its sections still compressed.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct PipelineState<'a> {
    /// [`STATE_VERSION`]; first, so that it can be read whatever follows.
    pub version: u32,
    pub effective: i64,
    /// `(partition, zstd(postcard(Section)))`, one per partition held.
    #[serde(borrow)]
    pub sections: Vec<(PartitionId, &'a [u8])>,
}

impl<'a> PipelineState<'a> {
    /// A state of this version.
    pub fn new(effective: i64, sections: Vec<(PartitionId, &'a [u8])>) -> Self {
        PipelineState {
            version: STATE_VERSION,
            effective,
            sections,
        }
    }

    /// The snapshot's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, StateError> {
        // Sized exactly, so that the copy of every section is made once, not grown.
        let size = postcard::experimental::serialized_size(self)?;
        Ok(postcard::to_extend(self, Vec::with_capacity(size))?)
    }

    /// Reads a snapshot's header; its sections stay compressed.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, StateError> {
        // The version leads, so any other layout is named as such, not misread.
        let (version, _) = postcard::take_from_bytes::<u32>(bytes)?;
        if !(OLDEST_READ..=STATE_VERSION).contains(&version) {
            return Err(StateError::Mismatch(format!(
                "state version {version} (this build reads {OLDEST_READ} to {STATE_VERSION})"
            )));
        }
        Ok(postcard::from_bytes(bytes)?)
    }
}

/// One partition's state in a snapshot; `H` is its ids, `O` an operator's part.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Section<H, O> {
    pub watermark: i64,
    pub floor: i64,
    pub status: PartitionStatus,
    pub counters: Counters,
    pub credits_read: BTreeMap<u64, u64>,
    pub dedup: Option<H>,
    pub operators: Vec<Option<O>>,
}

/// A section as read back.
pub(crate) type SectionIn = Section<Hours, Vec<u8>>;

/// A section as written: its ids in runs ([`IdRuns`]).
pub(crate) type SectionOut<'a> = Section<IdRuns<'a>, Vec<u8>>;

impl SectionOut<'_> {
    /// The section compressed, as it goes into a snapshot.
    pub fn encode(&self) -> Result<Vec<u8>, StateError> {
        // Encoded straight into the compressor: the uncompressed section (most of it
        // event ids) is never held whole.
        let mut z = zstd::stream::Encoder::new(Vec::new(), 3)?;
        postcard::to_io(self, &mut z)?;
        Ok(z.finish()?)
    }
}

impl SectionIn {
    /// Reads a section taken by [`Section::encode`] into a snapshot of `version`.
    pub fn decode(bytes: &[u8], version: u32) -> Result<SectionIn, StateError> {
        let encoded = zstd::stream::decode_all(bytes)?;
        if version < 6 {
            // Ids one varint each.
            return Ok(postcard::from_bytes(&encoded)?);
        }
        let s: Section<RunsIn, Vec<u8>> = postcard::from_bytes(&encoded)?;
        Ok(Section {
            watermark: s.watermark,
            floor: s.floor,
            status: s.status,
            counters: s.counters,
            credits_read: s.credits_read,
            dedup: s.dedup.map(|r| r.0),
            operators: s.operators,
        })
    }
}

/// A partition's ids for a snapshot: each hour's ids as one byte string of 16-byte
/// little-endian values. Ids are uniform hashes, so a varint per id only costs time
/// (it spends 19 bytes on most) and compression finds nothing in them; a fixed width
/// is copied (measured on 10.9M events, three checkpoints of ~6M ids: 0.33 / 0.55 /
/// 0.80 s to encode against 0.66 / 1.64 / 1.11 s with varints, and 103 MB against
/// 109 MB).
pub(crate) struct IdRuns<'a>(pub &'a Hours);

impl serde::Serialize for IdRuns<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(hour, ids)| (hour, Run(ids))))
    }
}

struct Run<'a>(&'a [u128]);

impl serde::Serialize for Run<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.0.len() * 16);
        for id in self.0 {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        s.serialize_bytes(&bytes)
    }
}

/// [`IdRuns`] read back.
struct RunsIn(Hours);

impl<'de> serde::Deserialize<'de> for RunsIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let runs: BTreeMap<i64, RunIn> = serde::Deserialize::deserialize(d)?;
        Ok(RunsIn(runs.into_iter().map(|(h, r)| (h, r.0)).collect()))
    }
}

struct RunIn(Vec<u128>);

impl<'de> serde::Deserialize<'de> for RunIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = RunIn;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string of 16-byte ids")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<RunIn, E> {
                if !v.len().is_multiple_of(16) {
                    return Err(E::invalid_length(v.len(), &self));
                }
                let ids = v.chunks_exact(16).map(|c| {
                    let mut id = [0u8; 16];
                    id.copy_from_slice(c);
                    u128::from_le_bytes(id)
                });
                Ok(RunIn(ids.collect()))
            }
        }
        d.deserialize_bytes(Visit)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn section<H>(dedup: H) -> Section<H, Vec<u8>> {
        Section {
            watermark: 7,
            floor: 3,
            status: PartitionStatus::Active,
            counters: Counters::default(),
            credits_read: BTreeMap::new(),
            dedup: Some(dedup),
            operators: vec![Some(vec![1, 2]), None],
        }
    }

    fn hours() -> Hours {
        let mut h = Hours::new();
        h.insert(-2, vec![0, u128::MAX, 1 << 100]);
        h.insert(490_000, vec![42]);
        h.insert(490_001, Vec::new());
        h
    }

    #[test]
    fn ids_go_out_in_runs_and_come_back_whole() {
        let h = hours();
        let bytes = section(IdRuns(&h)).encode().unwrap();
        let back = SectionIn::decode(&bytes, STATE_VERSION).unwrap();
        assert_eq!(back.dedup, Some(h));
        assert_eq!((back.watermark, back.floor), (7, 3));
        assert_eq!(back.operators, vec![Some(vec![1, 2]), None]);
    }

    #[test]
    fn a_version_5_section_with_varint_ids_is_still_read() {
        let h = hours();
        let v5 = zstd::bulk::compress(&postcard::to_stdvec(&section(&h)).unwrap(), 3).unwrap();
        assert_eq!(SectionIn::decode(&v5, 5).unwrap().dedup, Some(h));
        let state = PipelineState {
            version: 5,
            effective: 0,
            sections: vec![(0, &v5)],
        };
        let bytes = postcard::to_stdvec(&state).unwrap();
        assert_eq!(PipelineState::decode(&bytes).unwrap().version, 5);
        let old = PipelineState {
            version: 4,
            ..state
        };
        let err = PipelineState::decode(&postcard::to_stdvec(&old).unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("state version 4 (this build reads 5 to 6)"),
            "{err}"
        );
    }

    #[test]
    fn a_run_cut_short_is_an_error() {
        let mut broken = postcard::to_stdvec(&section(IdRuns(&hours()))).unwrap();
        // The first run's length prefix (3 ids: 48 bytes) claims one byte less.
        let at = broken.iter().position(|&b| b == 48).unwrap();
        broken[at] = 47;
        let z = zstd::bulk::compress(&broken, 3).unwrap();
        assert!(SectionIn::decode(&z, STATE_VERSION).is_err());
    }
}
