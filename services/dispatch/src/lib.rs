//! Dispatch: which rider takes which order.
//!
//! Riders report where they are and whether they are free; a geo index of the free
//! ones (an R-tree, `rstar`) answers "the nearest free rider to this store". An order
//! ready for pickup is *offered* to that rider; a rider who declines (or does not answer
//! in time) is skipped, and the order goes to the next nearest, never back to one who
//! declined it. Nobody free within the maximum distance → the delivery is declined.
//!
//! **Why 3-D points.** Riders are indexed by their position on the unit sphere (x, y, z),
//! not by latitude and longitude: the straight-line (chord) distance between two points
//! on a sphere grows strictly with the great-circle distance, so the R-tree's nearest
//! neighbour by chord *is* the nearest by haversine — exactly, anywhere on Earth, with
//! no projection error near the poles or the date line. Distances reported are
//! haversine metres (`geo`).
//!
//! This crate is the decision logic, with no I/O: the HTTP endpoints and events that
//! drive it are the service's (issue 11).

use std::collections::{HashMap, HashSet};

use geo::{Distance, Haversine, Point};
use rstar::RTree;
use rstar::primitives::GeomWithData;

/// Mean Earth radius used for chord ↔ metres, as `geo`'s haversine uses.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A position, degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatLon {
    /// −90..=90
    pub lat: f64,
    /// −180..=180
    pub lon: f64,
}

impl LatLon {
    /// The position, if the numbers are a place on Earth.
    pub fn new(lat: f64, lon: f64) -> Option<LatLon> {
        ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon))
            .then_some(LatLon { lat, lon })
    }

    fn unit_vector(self) -> [f64; 3] {
        let (lat, lon) = (self.lat.to_radians(), self.lon.to_radians());
        [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
    }

    /// Great-circle distance in metres.
    pub fn distance_m(self, other: LatLon) -> f64 {
        Haversine.distance(
            Point::new(self.lon, self.lat),
            Point::new(other.lon, other.lat),
        )
    }
}

/// Errors of dispatch calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// The rider has never reported.
    #[error("unknown rider {0}")]
    UnknownRider(String),
    /// The order has no open offer.
    #[error("order {0} has no open offer")]
    NoOffer(String),
    /// The call does not fit the rider's or order's state.
    #[error("{0}")]
    Conflict(String),
}

/// What a rider is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RiderState {
    /// Not working.
    Off,
    /// Waiting for an order (in the index).
    Free,
    /// Offered this order, not yet answered.
    Offered(String),
    /// Carrying this order.
    Busy(String),
}

#[derive(Debug, Clone)]
struct Rider {
    id: String,
    at: LatLon,
    state: RiderState,
}

type Entry = GeomWithData<[f64; 3], u32>;

/// An offer made.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// The order.
    pub order_id: String,
    /// The rider offered it.
    pub rider_id: String,
    /// From the rider to the store, metres.
    pub distance_m: f64,
}

/// What [`Dispatcher::offer`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The order is offered to this rider.
    Offered(Offer),
    /// No free rider (other than those who declined) within the maximum distance: the
    /// delivery is declined.
    Declined,
}

#[derive(Debug, Clone)]
struct OpenOrder {
    store: LatLon,
    /// Riders who declined or let it time out.
    skipped: HashSet<u32>,
    /// The rider currently offered it, and when (ms, the caller's clock).
    offered: Option<(u32, i64)>,
}

/// Riders, the index of the free ones, and the orders being offered.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    max_distance_m: f64,
    riders: Vec<Rider>,
    by_id: HashMap<String, u32>,
    free: RTree<Entry>,
    orders: HashMap<String, OpenOrder>,
}

impl Dispatcher {
    /// A dispatcher that offers orders only to riders within `max_distance_m` of the store.
    pub fn new(max_distance_m: f64) -> Dispatcher {
        Dispatcher {
            max_distance_m,
            riders: Vec::new(),
            by_id: HashMap::new(),
            free: RTree::new(),
            orders: HashMap::new(),
        }
    }

    fn entry(&self, i: u32) -> Entry {
        GeomWithData::new(self.riders[i as usize].at.unit_vector(), i)
    }

    fn index(&self, rider: &str) -> Result<u32, DispatchError> {
        self.by_id
            .get(rider)
            .copied()
            .ok_or_else(|| DispatchError::UnknownRider(rider.to_owned()))
    }

    /// A rider's position report; a rider reporting for the first time starts free.
    pub fn location(&mut self, rider: &str, at: LatLon) {
        match self.by_id.get(rider).copied() {
            Some(i) => {
                let free = self.riders[i as usize].state == RiderState::Free;
                if free {
                    self.free.remove(&self.entry(i));
                }
                self.riders[i as usize].at = at;
                if free {
                    self.free.insert(self.entry(i));
                }
            }
            None => {
                let i = u32::try_from(self.riders.len()).unwrap_or(u32::MAX);
                self.riders.push(Rider {
                    id: rider.to_owned(),
                    at,
                    state: RiderState::Free,
                });
                self.by_id.insert(rider.to_owned(), i);
                self.free.insert(self.entry(i));
            }
        }
    }

    /// A rider going off duty (`false`) or back to waiting (`true`). A rider with an
    /// order must finish it first.
    pub fn set_available(&mut self, rider: &str, available: bool) -> Result<(), DispatchError> {
        let i = self.index(rider)?;
        let state = self.riders[i as usize].state.clone();
        match (state, available) {
            (RiderState::Free, true) | (RiderState::Off, false) => Ok(()),
            (RiderState::Off, true) => {
                self.riders[i as usize].state = RiderState::Free;
                self.free.insert(self.entry(i));
                Ok(())
            }
            (RiderState::Free, false) => {
                self.free.remove(&self.entry(i));
                self.riders[i as usize].state = RiderState::Off;
                Ok(())
            }
            (RiderState::Offered(o) | RiderState::Busy(o), _) => Err(DispatchError::Conflict(
                format!("rider {rider} has order {o}; answer or deliver it first"),
            )),
        }
    }

    /// The state of `rider`.
    pub fn rider(&self, rider: &str) -> Option<(&RiderState, LatLon)> {
        let i = *self.by_id.get(rider)?;
        let r = &self.riders[i as usize];
        Some((&r.state, r.at))
    }

    /// Free riders in the index.
    pub fn free_riders(&self) -> usize {
        self.free.size()
    }

    /// The nearest free rider to `at` not in `skip`, within the maximum distance.
    fn nearest(&self, at: LatLon, skip: &HashSet<u32>) -> Option<(u32, f64)> {
        let target = at.unit_vector();
        // Chord length of the maximum distance: beyond it, stop looking.
        let angle = (self.max_distance_m / EARTH_RADIUS_M).clamp(0.0, std::f64::consts::PI);
        let max_chord = 2.0 * (angle / 2.0).sin();
        for (e, d2) in self.free.nearest_neighbor_iter_with_distance_2(&target) {
            // A little slack on the chord: the exact test is on metres below.
            if d2.sqrt() > max_chord * (1.0 + 1e-9) + 1e-12 {
                return None;
            }
            if skip.contains(&e.data) {
                continue;
            }
            let metres = at.distance_m(self.riders[e.data as usize].at);
            return (metres <= self.max_distance_m).then_some((e.data, metres));
        }
        None
    }

    /// Offers `order` (ready at the store at `store`) to the nearest free rider who has
    /// not declined it; declines the delivery when there is none within reach. `now_ms`
    /// stamps the offer for [`timed_out`](Self::timed_out).
    pub fn offer(
        &mut self,
        order: &str,
        store: LatLon,
        now_ms: i64,
    ) -> Result<Decision, DispatchError> {
        let open = self
            .orders
            .entry(order.to_owned())
            .or_insert_with(|| OpenOrder {
                store,
                skipped: HashSet::new(),
                offered: None,
            });
        if let Some((i, _)) = open.offered {
            return Err(DispatchError::Conflict(format!(
                "order {order} is offered to {} already",
                self.riders[i as usize].id
            )));
        }
        let skipped = open.skipped.clone();
        let Some((i, distance_m)) = self.nearest(store, &skipped) else {
            self.orders.remove(order);
            return Ok(Decision::Declined);
        };
        self.free.remove(&self.entry(i));
        self.riders[i as usize].state = RiderState::Offered(order.to_owned());
        if let Some(open) = self.orders.get_mut(order) {
            open.offered = Some((i, now_ms));
        }
        Ok(Decision::Offered(Offer {
            order_id: order.to_owned(),
            rider_id: self.riders[i as usize].id.clone(),
            distance_m,
        }))
    }

    /// The offered rider takes the order: busy until [`delivered`](Self::delivered).
    pub fn accept(&mut self, order: &str, rider: &str) -> Result<(), DispatchError> {
        let i = self.offered_to(order, rider)?;
        self.orders.remove(order);
        self.riders[i as usize].state = RiderState::Busy(order.to_owned());
        Ok(())
    }

    /// The offered rider declines, or the offer timed out: the rider is free again and
    /// the order goes to the next nearest (never back to this rider).
    pub fn decline(
        &mut self,
        order: &str,
        rider: &str,
        now_ms: i64,
    ) -> Result<Decision, DispatchError> {
        let i = self.offered_to(order, rider)?;
        self.riders[i as usize].state = RiderState::Free;
        self.free.insert(self.entry(i));
        let store = {
            let open = self
                .orders
                .get_mut(order)
                .ok_or_else(|| DispatchError::NoOffer(order.to_owned()))?;
            open.skipped.insert(i);
            open.offered = None;
            open.store
        };
        self.offer(order, store, now_ms)
    }

    /// Offers made before `now_ms - timeout_ms` and not answered: (order, rider) pairs,
    /// to be [declined](Self::decline) on the rider's behalf.
    pub fn timed_out(&self, now_ms: i64, timeout_ms: i64) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .orders
            .iter()
            .filter_map(|(order, open)| {
                let (i, at) = open.offered?;
                (now_ms - at >= timeout_ms)
                    .then(|| (order.clone(), self.riders[i as usize].id.clone()))
            })
            .collect();
        out.sort();
        out
    }

    /// Forgets `order` (cancelled): a rider offered it or carrying it is free again.
    /// Returns that rider.
    pub fn release(&mut self, order: &str) -> Option<String> {
        let holder = match self.orders.remove(order).and_then(|o| o.offered) {
            Some((i, _)) => Some(i),
            None => self
                .riders
                .iter()
                .position(|r| r.state == RiderState::Busy(order.to_owned()))
                .and_then(|i| u32::try_from(i).ok()),
        }?;
        self.riders[holder as usize].state = RiderState::Free;
        self.free.insert(self.entry(holder));
        Some(self.riders[holder as usize].id.clone())
    }

    /// The rider offered or carrying `order`, if any.
    pub fn rider_of(&self, order: &str) -> Option<&str> {
        if let Some((i, _)) = self.orders.get(order).and_then(|o| o.offered) {
            return Some(&self.riders[i as usize].id);
        }
        self.riders
            .iter()
            .find(|r| r.state == RiderState::Busy(order.to_owned()))
            .map(|r| r.id.as_str())
    }

    /// The rider delivered its order: free again, where it is.
    pub fn delivered(&mut self, rider: &str) -> Result<String, DispatchError> {
        let i = self.index(rider)?;
        let RiderState::Busy(order) = self.riders[i as usize].state.clone() else {
            return Err(DispatchError::Conflict(format!(
                "rider {rider} carries no order"
            )));
        };
        self.riders[i as usize].state = RiderState::Free;
        self.free.insert(self.entry(i));
        Ok(order)
    }

    fn offered_to(&self, order: &str, rider: &str) -> Result<u32, DispatchError> {
        let i = self.index(rider)?;
        match self.orders.get(order).and_then(|o| o.offered) {
            Some((j, _)) if j == i => Ok(i),
            Some(_) => Err(DispatchError::Conflict(format!(
                "order {order} is not offered to {rider}"
            ))),
            None => Err(DispatchError::NoOffer(order.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn berlin(dlat: f64, dlon: f64) -> LatLon {
        LatLon::new(52.52 + dlat, 13.405 + dlon).unwrap_or(LatLon {
            lat: 52.52,
            lon: 13.405,
        })
    }

    #[test]
    fn offers_go_nearest_first_then_to_the_next_and_decline_beyond_reach() {
        let mut d = Dispatcher::new(3_000.0);
        let store = berlin(0.0, 0.0);
        d.location("near", berlin(0.001, 0.0)); // ~110 m
        d.location("mid", berlin(0.01, 0.0)); // ~1.1 km
        d.location("far", berlin(0.05, 0.0)); // ~5.6 km: out of reach
        let Decision::Offered(o) = d.offer("o1", store, 0).unwrap() else {
            panic!()
        };
        assert_eq!(o.rider_id, "near");
        assert!((o.distance_m - 111.2).abs() < 1.0, "{}", o.distance_m);
        // Declined: the next nearest, never back to "near".
        let Decision::Offered(o) = d.decline("o1", "near", 0).unwrap() else {
            panic!()
        };
        assert_eq!(o.rider_id, "mid");
        assert_eq!(d.decline("o1", "mid", 0).unwrap(), Decision::Declined);
        // Both are free again for the next order.
        assert_eq!(d.free_riders(), 3);
        let Decision::Offered(o) = d.offer("o2", store, 0).unwrap() else {
            panic!()
        };
        assert_eq!(o.rider_id, "near");
        d.accept("o2", "near").unwrap();
        assert_eq!(d.rider("near").unwrap().0, &RiderState::Busy("o2".into()));
        assert_eq!(d.delivered("near").unwrap(), "o2");
        assert_eq!(d.free_riders(), 3);
    }

    #[test]
    fn riders_off_duty_or_busy_are_not_offered() {
        let mut d = Dispatcher::new(10_000.0);
        d.location("a", berlin(0.001, 0.0));
        d.location("b", berlin(0.002, 0.0));
        d.set_available("a", false).unwrap();
        let Decision::Offered(o) = d.offer("o1", berlin(0.0, 0.0), 0).unwrap() else {
            panic!()
        };
        assert_eq!(o.rider_id, "b");
        assert_eq!(
            d.offer("o2", berlin(0.0, 0.0), 0).unwrap(),
            Decision::Declined
        );
        assert!(d.set_available("b", false).is_err());
        assert_eq!(
            d.accept("o1", "a"),
            Err(DispatchError::Conflict(
                "order o1 is not offered to a".into()
            ))
        );
    }

    #[test]
    fn unanswered_offers_time_out_and_cancelled_orders_free_their_rider() {
        let mut d = Dispatcher::new(10_000.0);
        d.location("a", berlin(0.001, 0.0));
        d.location("b", berlin(0.002, 0.0));
        let _ = d.offer("o1", berlin(0.0, 0.0), 1_000).unwrap();
        assert!(d.timed_out(30_999, 30_000).is_empty());
        assert_eq!(
            d.timed_out(31_000, 30_000),
            vec![("o1".to_owned(), "a".to_owned())]
        );
        let Decision::Offered(o) = d.decline("o1", "a", 31_000).unwrap() else {
            panic!()
        };
        assert_eq!((o.rider_id.as_str(), d.rider_of("o1")), ("b", Some("b")));
        d.accept("o1", "b").unwrap();
        assert_eq!(d.release("o1").as_deref(), Some("b"));
        assert_eq!(d.free_riders(), 2);
        assert_eq!(d.rider_of("o1"), None);
    }

    #[test]
    fn a_moving_free_rider_is_found_where_it_is_now() {
        let mut d = Dispatcher::new(10_000.0);
        d.location("a", berlin(0.03, 0.0));
        d.location("b", berlin(0.02, 0.0));
        d.location("a", berlin(0.001, 0.0));
        let Decision::Offered(o) = d.offer("o1", berlin(0.0, 0.0), 0).unwrap() else {
            panic!()
        };
        assert_eq!(o.rider_id, "a");
    }

    proptest! {
        /// The rider offered is the nearest by haversine over all free riders not
        /// skipped, within the maximum distance — as a brute-force scan finds it —
        /// and declines follow the brute-force order too.
        #[test]
        fn nearest_rider_equals_brute_force(
            riders in prop::collection::vec((-0.2f64..0.2, -0.3f64..0.3), 1..60),
            store in (-0.2f64..0.2, -0.3f64..0.3),
            max_km in 1.0f64..40.0,
            declines in 0usize..5,
        ) {
            let max_m = max_km * 1_000.0;
            let mut d = Dispatcher::new(max_m);
            let positions: Vec<LatLon> = riders.iter().map(|&(a, b)| berlin(a, b)).collect();
            for (i, p) in positions.iter().enumerate() {
                d.location(&format!("r{i}"), *p);
            }
            let store = berlin(store.0, store.1);
            let mut by_distance: Vec<(f64, usize)> = positions
                .iter()
                .enumerate()
                .map(|(i, p)| (store.distance_m(*p), i))
                .filter(|(m, _)| *m <= max_m)
                .collect();
            by_distance.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut decision = d.offer("o", store, 0).unwrap();
            for k in 0..=declines {
                match (&decision, by_distance.get(k)) {
                    (Decision::Declined, None) => break,
                    (Decision::Offered(o), Some(&(metres, _))) => {
                        // Ties may pick either rider: compare distances, not ids.
                        prop_assert!((o.distance_m - metres).abs() < 1e-6, "{} vs {}", o.distance_m, metres);
                        if k < declines {
                            decision = d.decline("o", &o.rider_id.clone(), 0).unwrap();
                        }
                    }
                    (got, want) => prop_assert!(false, "step {}: got {:?}, brute force {:?}", k, got, want),
                }
            }
        }
    }
}
