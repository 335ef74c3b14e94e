//! `rider_minute`: per rider, tumbling one minute — pings, distance, speed, deliveries.
//!
//! Distance is the haversine length of the path through the window's pings ordered by
//! (`event_time`, `event_id`), so pings are kept until the window is final and sorted
//! then: arrival order never changes the answer.

use std::collections::{BTreeMap, HashMap};

use rushhour_schemas::time::{MINUTE_MS, window_start};
use rushhour_schemas::{Event, EventType};
use serde::{Deserialize, Serialize};

use crate::operator::{Curated, Operator, RiderMinuteRow, StateError};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping {
    time: i64,
    event_id: Box<str>,
    lat: f64,
    lon: f64,
    speed: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RiderAgg {
    pings: Vec<Ping>,
    deliveries: i64,
}

/// The rider-side operator.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RiderOperator {
    minutes: BTreeMap<i64, HashMap<Box<str>, RiderAgg>>,
}

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
    fn agg(&mut self, t: i64, rider: &str) -> &mut RiderAgg {
        self.minutes
            .entry(window_start(t, MINUTE_MS))
            .or_default()
            .entry(rider.into())
            .or_default()
    }
}

impl Operator for RiderOperator {
    fn process(&mut self, ev: &Event<'_>) {
        let Some(rider) = ev.rider_id.as_deref() else {
            return;
        };
        match ev.event_type {
            EventType::RiderLocation => {
                let (Some(lat), Some(lon)) = (ev.lat, ev.lon) else {
                    return;
                };
                let ping = Ping {
                    time: ev.event_time,
                    event_id: ev.event_id.as_ref().into(),
                    lat,
                    lon,
                    speed: ev.speed_mps,
                };
                self.agg(ev.event_time, rider).pings.push(ping);
            }
            EventType::OrderDelivered => self.agg(ev.event_time, rider).deliveries += 1,
            _ => {}
        }
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Curated) {
        while let Some(entry) = self.minutes.first_entry() {
            let start = *entry.key();
            if start > watermark.saturating_sub(MINUTE_MS) {
                break;
            }
            for (rider_id, mut agg) in entry.remove() {
                agg.pings
                    .sort_by(|a, b| (a.time, &a.event_id).cmp(&(b.time, &b.event_id)));
                let distance_m = agg
                    .pings
                    .windows(2)
                    .map(|w| haversine_m(w[0].lat, w[0].lon, w[1].lat, w[1].lon))
                    .sum();
                let speeds: Vec<f64> = agg.pings.iter().filter_map(|p| p.speed).collect();
                let avg_speed_mps =
                    (!speeds.is_empty()).then(|| speeds.iter().sum::<f64>() / speeds.len() as f64);
                out.rider_minute.push(RiderMinuteRow {
                    window_start: start,
                    rider_id,
                    pings: agg.pings.len() as i64,
                    distance_m,
                    avg_speed_mps,
                    deliveries: agg.deliveries,
                });
            }
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        Ok(postcard::to_stdvec(self)?)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        *self = postcard::from_bytes(bytes)?;
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.minutes.values().map(HashMap::len).sum()
    }
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
    fn haversine_uses_the_contract_radius() {
        // One degree of latitude on a sphere of radius 6 371 008.8 m.
        let d = haversine_m(0.0, 0.0, 1.0, 0.0);
        assert!(
            (d - 6_371_008.8 * std::f64::consts::PI / 180.0).abs() < 1e-6,
            "{d}"
        );
    }
}
