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
pub const STATE_VERSION: u32 = 5;

/// The header of a snapshot, and its sections still compressed.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct PipelineState<'a> {
    /// [`STATE_VERSION`]; first, so that it can be read whatever follows.
    version: u32,
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
        if version != STATE_VERSION {
            return Err(StateError::Mismatch(format!(
                "state version {version} (this build reads {STATE_VERSION})"
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

impl<H: serde::Serialize, O: serde::Serialize> Section<H, O> {
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
    /// Reads a section taken by [`Section::encode`].
    pub fn decode(bytes: &[u8]) -> Result<SectionIn, StateError> {
        let encoded = zstd::stream::decode_all(bytes)?;
        Ok(postcard::from_bytes(&encoded)?)
    }
}
