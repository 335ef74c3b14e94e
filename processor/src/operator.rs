//! The operator seam.
//!
//! An operator sees each accepted event once ([`Operator::process`]); when the
//! effective watermark moves, what has become final is made ready
//! ([`Operator::on_watermark`]), and handed over as Arrow record batches of its own
//! tables through a [`Collector`] ([`Operator::emit`]). Each operator keeps its row
//! types and their Arrow conversion beside its logic, so a new curated table is one
//! new operator (its file) handed to
//! [`Pipeline::with_operators`](crate::pipeline::Pipeline::with_operators), plus its
//! schema in `schemas/`.
//! Operators do no I/O and never see late, duplicate or invalid records, so they are
//! tested with plain values.

use std::collections::BTreeMap;

use arrow::error::ArrowError;
use rushhour_schemas::Event;

use crate::output::Collector;
use crate::partials::PartitionId;

/// A streaming operator over accepted events.
///
/// Its state is kept apart by the source partition each event came from (see
/// [`partials`](crate::partials)), so one partition's part can be taken out and
/// restored elsewhere; within one operator the parts are merged, so its rows never
/// depend on how events were spread over partitions.
pub trait Operator: Send {
    /// Takes one accepted event, read from source partition `part`.
    fn process(&mut self, part: PartitionId, ev: &Event<'_>);

    /// The effective watermark is now `watermark`: no accepted event will ever have an
    /// earlier event time. Every row that can no longer change becomes ready.
    fn on_watermark(&mut self, watermark: i64);

    /// End of a bounded input: everything still held becomes ready.
    fn flush(&mut self) {
        self.on_watermark(i64::MAX);
    }

    /// Hands every ready row to `out`, as record batches of the operator's tables
    /// (each sorted by its key), and holds none after.
    fn emit(&mut self, out: &mut Collector<'_>) -> Result<(), ArrowError>;

    /// Whether rows are ready and not yet emitted (a snapshot is taken only when no
    /// operator holds any).
    fn holds_rows(&self) -> bool;

    /// The operator's state, one encoded part per source partition that holds any.
    fn snapshot(&self) -> Result<BTreeMap<PartitionId, Vec<u8>>, StateError>;

    /// Adds one partition's part, as taken by [`snapshot`](Operator::snapshot), to the
    /// state. A partition's part is restored at most once (else [`StateError::Mismatch`]).
    fn restore(&mut self, part: PartitionId, bytes: &[u8]) -> Result<(), StateError>;

    /// Forgets everything partition `part` contributed (it has moved elsewhere).
    fn release(&mut self, part: PartitionId);

    /// Entries of state held (windows, orders, …), for progress and memory reports.
    fn state_entries(&self) -> usize;
}

/// Encoding or decoding operator state failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The bytes are not a state of this version.
    #[error("state encoding: {0}")]
    Encoding(#[from] postcard::Error),
    /// Compression failed or the bytes are not zstd.
    #[error("state compression: {0}")]
    Compression(#[from] std::io::Error),
    /// The state does not fit this pipeline.
    #[error("state does not fit: {0}")]
    Mismatch(String),
}

impl StateError {
    /// A partition's part restored into state that already holds one.
    pub fn twice(part: PartitionId) -> StateError {
        StateError::Mismatch(format!("partition {part} is restored twice"))
    }
}

/// Linear-interpolation percentile (SQL `PERCENTILE_CONT`) of sorted values.
pub fn percentile_cont(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = q * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        assert_eq!(percentile_cont(&[], 0.5), None);
        assert_eq!(percentile_cont(&[7.0], 0.95), Some(7.0));
        assert_eq!(percentile_cont(&[100.0, 200.0], 0.5), Some(150.0));
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert!((percentile_cont(&v, 0.95).unwrap() - 9.55).abs() < 1e-12);
    }
}
