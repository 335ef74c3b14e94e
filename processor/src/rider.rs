//! `rider_minute`: per rider, tumbling one minute — pings, distance, speed, deliveries.
//!
//! Distance is the haversine length of the path through the window's pings ordered by
//! (`event_time`, `event_id`), so pings are kept until the window is final and sorted
//! then: arrival order never changes the answer.
//!
//! A rider's pings share a partition (they are keyed by `rider_id`), but the
//! deliveries counted here come from `order_delivered` events, keyed by their store:
//! so a rider's window usually has partials from several partitions, merged when the
//! window is written.
//!
//! In a consumer group those partitions may sit in different processes, and each would
//! write a partial row. There the pipeline *routes* every rider-side contribution (a
//! ping or a delivery, a [`Credit`]) to the partition its rider's pings are keyed to
//! ([`Pipeline::route_riders`](crate::pipeline::Pipeline::route_riders)): counted
//! there directly when this process holds it, else sent through the checkpoint store
//! to whoever does ([`crate::group`]). A window then closes only once no credit for it
//! can still come from elsewhere: the operator's *bound* ([`RiderOperator::set_bound`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Float64Builder, Int64Builder, StringBuilder};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use hashbrown::HashMap;
use rushhour_schemas::Table;
use rushhour_schemas::time::{MINUTE_MS, window_start};
use rushhour_schemas::{Event, EventType};
use serde::{Deserialize, Serialize};

use crate::operator::{Operator, StateError};
use crate::output::{Collector, ts_builder as ts};
use crate::partials::{Partials, PartitionId, by_partition};

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

/// One rider-side contribution to a rider's minute, as routed to the partition of its
/// rider: what a ping or a delivery adds, no more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credit {
    /// The rider.
    pub rider_id: String,
    /// The event's time.
    pub event_time: i64,
    /// What it adds.
    pub kind: CreditKind,
}

/// What a [`Credit`] adds to its window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CreditKind {
    /// An accepted `order_delivered` by the rider.
    Delivery,
    /// An accepted `rider_location` (its id orders pings of equal time).
    Ping {
        /// The event id.
        event_id: String,
        /// Latitude.
        lat: f64,
        /// Longitude.
        lon: f64,
        /// Speed, if the ping had one.
        speed: Option<f64>,
    },
}

impl Credit {
    /// What an accepted event adds to `rider_minute`, if anything.
    pub fn of(ev: &Event<'_>) -> Option<Credit> {
        let rider_id = ev.rider_id.as_deref()?;
        let kind = match ev.event_type {
            EventType::RiderLocation => CreditKind::Ping {
                event_id: ev.event_id.to_string(),
                lat: ev.lat?,
                lon: ev.lon?,
                speed: ev.speed_mps,
            },
            EventType::OrderDelivered => CreditKind::Delivery,
            _ => return None,
        };
        Some(Credit {
            rider_id: rider_id.to_owned(),
            event_time: ev.event_time,
            kind,
        })
    }

    /// Whether an accepted event contributes to `rider_minute` (without building the
    /// credit).
    pub fn applies_to<'e>(ev: &'e Event<'_>) -> Option<&'e str> {
        let rider = ev.rider_id.as_deref()?;
        match ev.event_type {
            EventType::RiderLocation if ev.lat.is_some() && ev.lon.is_some() => Some(rider),
            EventType::OrderDelivered => Some(rider),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping {
    time: i64,
    /// The event id's bytes in [`RiderAgg::ids`] (ids only break ties of time, but
    /// they must be kept: one allocation per window instead of one per ping).
    id: (usize, usize),
    lat: f64,
    lon: f64,
    speed: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RiderAgg {
    pings: Vec<Ping>,
    /// The pings' event ids, one after the other.
    ids: String,
    deliveries: i64,
}

impl RiderAgg {
    fn push(&mut self, time: i64, event_id: &str, lat: f64, lon: f64, speed: Option<f64>) {
        let start = self.ids.len();
        self.ids.push_str(event_id);
        self.pings.push(Ping {
            time,
            id: (start, self.ids.len()),
            lat,
            lon,
            speed,
        });
    }

    fn id(&self, p: &Ping) -> &str {
        self.ids.get(p.id.0..p.id.1).unwrap_or_default()
    }

    /// Takes `other`'s pings and deliveries.
    fn merge(&mut self, other: RiderAgg) {
        if self.pings.is_empty() {
            // The usual case, one partial: taken whole, nothing copied.
            let deliveries = self.deliveries;
            *self = other;
            self.deliveries += deliveries;
            return;
        }
        let base = self.ids.len();
        self.ids.push_str(&other.ids);
        self.pings.extend(other.pings.into_iter().map(|mut p| {
            p.id = (p.id.0 + base, p.id.1 + base);
            p
        }));
        self.deliveries += other.deliveries;
    }
}

/// The rider-side operator.
#[derive(Debug, Clone)]
pub struct RiderOperator {
    /// Keyed by `String` so that one lookup finds or opens a rider's window (`entry_ref`).
    minutes: BTreeMap<i64, HashMap<String, Partials<RiderAgg>>>,
    /// No window ending after this closes, whatever the watermark: credits for it may
    /// still come from other processes. `i64::MAX` when every credit is local.
    bound: i64,
    /// Rows of closed windows, until [`Operator::emit`].
    ready: Vec<RiderMinuteRow>,
}

impl Default for RiderOperator {
    fn default() -> Self {
        RiderOperator {
            minutes: BTreeMap::new(),
            bound: i64::MAX,
            ready: Vec::new(),
        }
    }
}

/// One partition's part of the state: `((window start, rider), partial)`.
type RiderPart<R, A> = Vec<((i64, R), A)>;

/// The contract's earth radius (the IUGG mean radius), metres.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Haversine distance in metres on the contract's sphere.
///
/// Written out rather than taken from `geo` (which the generator uses) because the
/// haversine term must be clamped to [0, 1]: rounding can push it just past 1 for
/// near-antipodal points, and `asin` then gives NaN where the answer is πR.
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.clamp(0.0, 1.0).sqrt().asin()
}

impl RiderOperator {
    /// The partial of `part` in `rider`'s window at `t`, opened if need be (the key is
    /// allocated only then).
    fn agg(&mut self, part: PartitionId, t: i64, rider: &str) -> &mut RiderAgg {
        self.minutes
            .entry(window_start(t, MINUTE_MS))
            .or_default()
            .entry_ref(rider)
            .or_default()
            .of(part)
    }

    /// Adds a credit routed to partition `part` (which this process holds).
    pub fn credit(&mut self, part: PartitionId, credit: &Credit) {
        let agg = self.agg(part, credit.event_time, &credit.rider_id);
        match &credit.kind {
            CreditKind::Delivery => agg.deliveries += 1,
            CreditKind::Ping {
                event_id,
                lat,
                lon,
                speed,
            } => agg.push(credit.event_time, event_id, *lat, *lon, *speed),
        }
    }

    /// Sets how far windows may close, whatever the watermark: every credit for a
    /// window ending at or before `bound` is here.
    pub fn set_bound(&mut self, bound: i64) {
        self.bound = bound;
    }

    /// The bound set by [`set_bound`](Self::set_bound).
    pub fn bound(&self) -> i64 {
        self.bound
    }

    /// Writes every window ending at or before `through`.
    fn close_through(&mut self, through: i64) {
        while let Some(entry) = self.minutes.first_entry() {
            let start = *entry.key();
            if start > through.saturating_sub(MINUTE_MS) {
                break;
            }
            for (rider_id, partials) in entry.remove() {
                self.ready.push(row(start, rider_id, partials));
            }
        }
    }
}

/// The row of a rider's window, from its partials.
fn row(window_start: i64, rider_id: String, partials: Partials<RiderAgg>) -> RiderMinuteRow {
    let mut agg = RiderAgg::default();
    for partial in partials.into_values() {
        agg.merge(partial);
    }
    let mut pings = std::mem::take(&mut agg.pings);
    pings.sort_by(|a, b| (a.time, agg.id(a)).cmp(&(b.time, agg.id(b))));
    agg.pings = pings;
    let distance_m = agg
        .pings
        .windows(2)
        .map(|w| haversine_m(w[0].lat, w[0].lon, w[1].lat, w[1].lon))
        // Not `sum()`: an empty f64 sum is -0.0, which prints as "-0.0".
        .fold(0.0, |total, d| total + d);
    let speeds: Vec<f64> = agg.pings.iter().filter_map(|p| p.speed).collect();
    let avg_speed_mps =
        (!speeds.is_empty()).then(|| speeds.iter().sum::<f64>() / speeds.len() as f64);
    RiderMinuteRow {
        window_start,
        rider_id: rider_id.into_boxed_str(),
        pings: agg.pings.len() as i64,
        distance_m,
        avg_speed_mps,
        deliveries: agg.deliveries,
    }
}

impl Operator for RiderOperator {
    fn process(&mut self, part: PartitionId, ev: &Event<'_>) {
        let Some(rider) = ev.rider_id.as_deref() else {
            return;
        };
        match ev.event_type {
            EventType::RiderLocation => {
                let (Some(lat), Some(lon)) = (ev.lat, ev.lon) else {
                    return;
                };
                self.agg(part, ev.event_time, rider).push(
                    ev.event_time,
                    &ev.event_id,
                    lat,
                    lon,
                    ev.speed_mps,
                );
            }
            EventType::OrderDelivered => self.agg(part, ev.event_time, rider).deliveries += 1,
            _ => {}
        }
    }

    fn on_watermark(&mut self, watermark: i64) {
        self.close_through(watermark.min(self.bound));
    }

    fn flush(&mut self) {
        // The end of every input: nothing is left to come from anywhere.
        self.close_through(i64::MAX);
    }

    fn emit(&mut self, out: &mut Collector<'_>) -> Result<(), ArrowError> {
        let mut rows = std::mem::take(&mut self.ready);
        if !rows.is_empty() {
            rows.sort_by(|a, b| (a.window_start, &a.rider_id).cmp(&(b.window_start, &b.rider_id)));
            out.emit(Table::RiderMinute, rider_minute_batch(&rows)?);
        }
        Ok(())
    }

    fn holds_rows(&self) -> bool {
        !self.ready.is_empty()
    }

    fn snapshot(&self) -> Result<BTreeMap<PartitionId, Vec<u8>>, StateError> {
        let entries = self.minutes.iter().flat_map(|(&start, riders)| {
            riders
                .iter()
                .map(move |(rider, partials)| ((start, &**rider), partials))
        });
        by_partition(entries)
            .into_iter()
            .map(|(part, rows): (_, RiderPart<&str, &RiderAgg>)| {
                Ok((part, postcard::to_stdvec(&rows)?))
            })
            .collect()
    }

    fn restore(&mut self, part: PartitionId, bytes: &[u8]) -> Result<(), StateError> {
        let rows: RiderPart<String, RiderAgg> = postcard::from_bytes(bytes)?;
        for ((start, rider), agg) in rows {
            let partials = self
                .minutes
                .entry(start)
                .or_default()
                .entry(rider)
                .or_default();
            if !partials.insert(part, agg) {
                return Err(StateError::twice(part));
            }
        }
        Ok(())
    }

    fn release(&mut self, part: PartitionId) {
        self.minutes.retain(|_, riders| {
            riders.retain(|_, partials| !partials.release(part));
            !riders.is_empty()
        });
    }

    fn state_entries(&self) -> usize {
        self.minutes.values().map(HashMap::len).sum()
    }
}

/// `rider_minute` rows as a record batch (CONTRACT §4).
fn rider_minute_batch(rows: &[RiderMinuteRow]) -> Result<RecordBatch, ArrowError> {
    let (mut start, mut end, mut rider) = (ts(), ts(), StringBuilder::new());
    let (mut pings, mut dist, mut speed, mut deliveries) = (
        Int64Builder::new(),
        Float64Builder::new(),
        Float64Builder::new(),
        Int64Builder::new(),
    );
    for r in rows {
        start.append_value(r.window_start);
        end.append_value(r.window_start + MINUTE_MS);
        rider.append_value(&r.rider_id);
        pings.append_value(r.pings);
        dist.append_value(r.distance_m);
        speed.append_option(r.avg_speed_mps);
        deliveries.append_value(r.deliveries);
    }
    RecordBatch::try_new(
        Table::RiderMinute.schema(),
        vec![
            Arc::new(start.finish()),
            Arc::new(end.finish()),
            Arc::new(rider.finish()),
            Arc::new(pings.finish()),
            Arc::new(dist.finish()),
            Arc::new(speed.finish()),
            Arc::new(deliveries.finish()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_is_finite_for_antipodal_points() {
        for lat in [87.5, 45.25, 0.0, -12.75] {
            let d = haversine_m(lat, 0.0, -lat, 180.0);
            assert!(
                (d - std::f64::consts::PI * EARTH_RADIUS_M).abs() < 1e-3,
                "{lat}: {d}"
            );
        }
    }

    #[test]
    fn a_window_with_one_ping_has_a_distance_of_plus_zero() {
        let mut op = RiderOperator::default();
        let ping = Credit {
            rider_id: "r".into(),
            event_time: 0,
            kind: CreditKind::Ping {
                event_id: "p".into(),
                lat: 1.0,
                lon: 2.0,
                speed: None,
            },
        };
        op.credit(0, &ping);
        op.flush();
        let d = op.ready[0].distance_m;
        assert!(d == 0.0 && d.is_sign_positive(), "{d:?}");
    }

    #[test]
    fn haversine_uses_the_contract_radius() {
        // One degree of latitude on a sphere of radius 6 371 008.8 m.
        let d = haversine_m(0.0, 0.0, 1.0, 0.0);
        assert!(
            (d - 6_371_008.8 * std::f64::consts::PI / 180.0).abs() < 1e-6,
            "{d}"
        );
    }
}
