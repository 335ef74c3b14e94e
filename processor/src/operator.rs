//! The operator seam and the rows operators emit.
//!
//! An operator sees each accepted event once ([`Operator::process`]) and, when the
//! effective watermark moves, emits what has become final ([`Operator::on_watermark`]).
//! Operators do no I/O and never see late, duplicate or invalid records, so they are
//! tested with plain values.

use std::collections::BTreeMap;
use std::sync::Arc;

use rushhour_schemas::Event;

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
    /// earlier event time. Emits every row that can no longer change.
    fn on_watermark(&mut self, watermark: i64, out: &mut Curated);

    /// End of a bounded input: emits everything still held.
    fn flush(&mut self, out: &mut Curated) {
        self.on_watermark(i64::MAX, out);
    }

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

/// A `store_minute` row (CONTRACT §4). Delivery durations are kept in integer
/// milliseconds so sums are exact; they become seconds on output.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreMinuteRow {
    /// Window start, epoch ms.
    pub window_start: i64,
    /// The store.
    pub store_id: Arc<str>,
    /// Accepted `order_placed`.
    pub orders_placed: i64,
    /// Of which `channel = online`.
    pub online_orders: i64,
    /// Sum of `qty`.
    pub items_sold: i64,
    /// Sum of `total_cents`.
    pub revenue_cents: i64,
    /// Accepted `order_picked_up`.
    pub orders_picked_up: i64,
    /// Accepted `order_delivered`.
    pub orders_delivered: i64,
    /// Accepted `order_cancelled`.
    pub orders_cancelled: i64,
    /// Delivery times (ms) of this window's deliveries whose placement is known, sorted.
    pub delivery_ms: Vec<i64>,
}

/// A `deliveries` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    /// The order.
    pub order_id: Box<str>,
    /// The store of the `order_delivered` event.
    pub store_id: Arc<str>,
    /// The rider of the `order_delivered` event.
    pub rider_id: Box<str>,
    /// Earliest accepted placement, if any.
    pub placed_at: Option<i64>,
    /// Earliest accepted pickup, if any.
    pub picked_up_at: Option<i64>,
    /// The delivery's own event time.
    pub delivered_at: i64,
}

/// A `store_delivery_5m` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDeliveryRow {
    /// Window start, epoch ms.
    pub window_start: i64,
    /// The store.
    pub store_id: Arc<str>,
    /// Accepted deliveries in the window.
    pub deliveries: i64,
    /// Sum of known total delivery times, ms.
    pub total_ms_sum: i64,
    /// How many deliveries have a known total.
    pub total_count: i64,
}

/// A `rider_minute` row.
#[derive(Debug, Clone, PartialEq)]
pub struct RiderMinuteRow {
    /// Window start, epoch ms.
    pub window_start: i64,
    /// The rider.
    pub rider_id: Box<str>,
    /// Accepted pings.
    pub pings: i64,
    /// Haversine distance over consecutive pings, metres.
    pub distance_m: f64,
    /// Mean of present `speed_mps`.
    pub avg_speed_mps: Option<f64>,
    /// Accepted deliveries by the rider.
    pub deliveries: i64,
}

/// A `late_events` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateRow {
    /// The event's id.
    pub event_id: String,
    /// Its type.
    pub event_type: &'static str,
    /// Its event time.
    pub event_time: i64,
    /// The effective watermark it arrived behind.
    pub watermark: i64,
    /// The record as received.
    pub raw: String,
}

/// Rows of the curated tables waiting to be written.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Curated {
    /// `store_minute`
    pub store_minute: Vec<StoreMinuteRow>,
    /// `deliveries`
    pub deliveries: Vec<DeliveryRow>,
    /// `store_delivery_5m`
    pub store_delivery_5m: Vec<StoreDeliveryRow>,
    /// `rider_minute`
    pub rider_minute: Vec<RiderMinuteRow>,
    /// `late_events`
    pub late_events: Vec<LateRow>,
}

impl Curated {
    /// Total rows held.
    pub fn len(&self) -> usize {
        self.store_minute.len()
            + self.deliveries.len()
            + self.store_delivery_5m.len()
            + self.rider_minute.len()
            + self.late_events.len()
    }

    /// Whether no rows are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves `other`'s rows to the end of this one's.
    pub fn append(&mut self, other: &mut Curated) {
        self.store_minute.append(&mut other.store_minute);
        self.deliveries.append(&mut other.deliveries);
        self.store_delivery_5m.append(&mut other.store_delivery_5m);
        self.rider_minute.append(&mut other.rider_minute);
        self.late_events.append(&mut other.late_events);
    }

    /// Sorts every table by its key, for stable output and comparisons.
    pub fn sort(&mut self) {
        self.store_minute
            .sort_by(|a, b| (a.window_start, &a.store_id).cmp(&(b.window_start, &b.store_id)));
        self.deliveries.sort_by(|a, b| {
            (a.delivered_at, &a.order_id, &a.rider_id).cmp(&(
                b.delivered_at,
                &b.order_id,
                &b.rider_id,
            ))
        });
        self.store_delivery_5m
            .sort_by(|a, b| (a.window_start, &a.store_id).cmp(&(b.window_start, &b.store_id)));
        self.rider_minute
            .sort_by(|a, b| (a.window_start, &a.rider_id).cmp(&(b.window_start, &b.rider_id)));
        self.late_events
            .sort_by(|a, b| (a.event_time, &a.event_id).cmp(&(b.event_time, &b.event_id)));
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
