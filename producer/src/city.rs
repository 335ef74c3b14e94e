//! The static side of the simulated city: where the stores are, what they sell, how
//! demand is spread over stores and over the day.
//!
//! Everything here is drawn once from the seed when a simulation starts; the moving
//! parts (orders, riders) live in [`crate::sim`].

use geo::{Destination, Haversine, Point};
use rand::Rng;
use rand::seq::SliceRandom;

/// Latitude of the city centre (Berlin Mitte).
pub const CENTRE_LAT: f64 = 52.52;
/// Longitude of the city centre.
pub const CENTRE_LON: f64 = 13.405;
/// Stores lie within this many metres of the centre.
pub const CITY_RADIUS_M: f64 = 6_000.0;

/// Share of the stores that are "popular" …
const TOP_STORE_SHARE: f64 = 0.2;
/// … and the share of orders they receive between them (the 80/20 skew of real
/// marketplaces, which makes a few partitions hot).
const TOP_ORDER_SHARE: f64 = 0.8;

/// One thing on a menu.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Product {
    pub id: &'static str,
    pub price_cents: i64,
}

/// Everything a pizza chain sells, with base prices in cents; each store lists a subset
/// at its own prices.
const CATALOG: &[(&str, i64)] = &[
    ("margherita", 850),
    ("pepperoni", 1050),
    ("quattro_formaggi", 1150),
    ("diavola", 1100),
    ("hawaiian", 1000),
    ("funghi", 950),
    ("capricciosa", 1150),
    ("marinara", 750),
    ("calzone", 1200),
    ("veggie", 1000),
    ("bbq_chicken", 1250),
    ("prosciutto", 1150),
    ("tonno", 1050),
    ("garlic_bread", 450),
    ("bruschetta", 550),
    ("caesar_salad", 750),
    ("caprese", 700),
    ("chicken_wings", 800),
    ("tiramisu", 550),
    ("panna_cotta", 500),
    ("gelato", 450),
    ("cola", 300),
    ("lemonade", 350),
    ("water", 200),
    ("beer", 400),
];

/// A store: its id (the partition key of its order events), location, menu and fee.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    pub id: String,
    pub loc: Point,
    pub menu: Vec<Product>,
    pub delivery_fee_cents: i64,
}

/// The stores and how orders are spread over them.
#[derive(Debug, Clone)]
pub(crate) struct City {
    pub stores: Vec<Store>,
    /// Cumulative order weights of the stores (the last is 1).
    cumulative: Vec<f64>,
}

impl City {
    /// Draws `n` stores (at least one).
    pub fn generate<R: Rng>(rng: &mut R, n: u32) -> City {
        let n = n.max(1) as usize;
        let mut stores = Vec::with_capacity(n);
        for i in 0..n {
            let loc = random_point_around(rng, centre(), 300.0, CITY_RADIUS_M);
            let mut catalog: Vec<(&'static str, i64)> = CATALOG.to_vec();
            catalog.shuffle(rng);
            let len = rng.random_range(6..=14);
            let mut menu: Vec<Product> = catalog[..len]
                .iter()
                .map(|&(id, base)| {
                    // Each store prices a little differently, in 10-cent steps.
                    let factor: f64 = rng.random_range(0.9..1.2);
                    Product {
                        id,
                        price_cents: ((base as f64 * factor) / 10.0).round() as i64 * 10,
                    }
                })
                .collect();
            // Menus read in catalogue order, which keeps the output tidy to look at.
            menu.sort_by_key(|p| CATALOG.iter().position(|c| c.0 == p.id));
            stores.push(Store {
                id: format!("store-{:03}", i + 1),
                loc,
                menu,
                delivery_fee_cents: rng.random_range(15..=35) * 10 - 1,
            });
        }

        // Which stores are popular is drawn too, so it is not always the first ids.
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        let top = ((n as f64 * TOP_STORE_SHARE).round() as usize).clamp(1, n);
        let mut weights = vec![0.0; n];
        let (top_share, rest_share) = if top == n {
            (1.0, 0.0)
        } else {
            (TOP_ORDER_SHARE, 1.0 - TOP_ORDER_SHARE)
        };
        for (rank, &store) in order.iter().enumerate() {
            // Within each group the weights vary a little around the group's mean.
            let jitter: f64 = rng.random_range(0.7..1.3);
            weights[store] = if rank < top {
                top_share / top as f64 * jitter
            } else {
                rest_share / (n - top) as f64 * jitter
            };
        }
        // Normalise per group so the 80/20 split holds exactly in expectation.
        let mut top_sum = 0.0;
        let mut rest_sum = 0.0;
        for (rank, &store) in order.iter().enumerate() {
            if rank < top {
                top_sum += weights[store];
            } else {
                rest_sum += weights[store];
            }
        }
        for (rank, &store) in order.iter().enumerate() {
            let (sum, share) = if rank < top {
                (top_sum, top_share)
            } else {
                (rest_sum, rest_share)
            };
            weights[store] = if sum > 0.0 {
                weights[store] / sum * share
            } else {
                0.0
            };
        }
        let mut cumulative = Vec::with_capacity(n);
        let mut acc = 0.0;
        for w in weights {
            acc += w;
            cumulative.push(acc);
        }
        City { stores, cumulative }
    }

    /// Draws the store of a new order, by popularity.
    pub fn pick_store<R: Rng>(&self, rng: &mut R) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let u = rng.random::<f64>() * total;
        self.cumulative
            .partition_point(|&c| c <= u)
            .min(self.stores.len() - 1)
    }
}

/// The city centre.
pub(crate) fn centre() -> Point {
    Point::new(CENTRE_LON, CENTRE_LAT)
}

/// A point between `min_m` and `max_m` metres from `origin`, uniform over that ring's area.
pub(crate) fn random_point_around<R: Rng>(
    rng: &mut R,
    origin: Point,
    min_m: f64,
    max_m: f64,
) -> Point {
    let bearing: f64 = rng.random_range(0.0..360.0);
    let (a, b) = (min_m * min_m, max_m * max_m);
    let dist = (a + rng.random::<f64>() * (b - a)).sqrt();
    Haversine.destination(origin, bearing, dist)
}

/// Relative order demand at an hour of the day (UTC, fractional), before scaling: a
/// low base all day, a lunch peak around 12:30 and a larger dinner peak around 19:30.
pub(crate) fn raw_demand(hour: f64) -> f64 {
    0.06 + 0.75 * bump(hour, 12.5, 0.9) + 1.0 * bump(hour, 19.5, 1.2)
}

fn bump(hour: f64, centre: f64, width: f64) -> f64 {
    let d = (hour - centre).abs();
    let d = d.min(24.0 - d);
    (-0.5 * (d / width) * (d / width)).exp()
}

/// Demand curves scaled so their maximum over the day is 1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Demand {
    max: f64,
}

impl Demand {
    pub fn new() -> Demand {
        let max = (0..24 * 60)
            .map(|m| raw_demand(m as f64 / 60.0))
            .fold(0.0, f64::max);
        Demand { max }
    }

    /// Demand at `hour` as a fraction of the day's peak, in (0, 1].
    pub fn at(&self, hour: f64) -> f64 {
        (raw_demand(hour) / self.max).min(1.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use geo::Distance;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn demand_has_two_meal_peaks() {
        let d = Demand::new();
        assert!(d.at(19.5) > 0.95);
        assert!(d.at(12.5) > 0.6 && d.at(12.5) < d.at(19.5));
        assert!(d.at(4.0) < 0.1);
        assert!(d.at(16.0) < d.at(12.5) && d.at(16.0) < d.at(19.5));
    }

    #[test]
    fn stores_are_in_the_city_with_menus() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let city = City::generate(&mut rng, 40);
        assert_eq!(city.stores.len(), 40);
        assert_eq!(city.stores[6].id, "store-007");
        for s in &city.stores {
            assert!(Haversine.distance(s.loc, centre()) <= CITY_RADIUS_M + 1.0);
            assert!((6..=14).contains(&s.menu.len()));
            assert!(s.menu.iter().all(|p| p.price_cents > 0));
        }
        assert!((city.cumulative.last().unwrap() - 1.0).abs() < 1e-9);
        let single = City::generate(&mut rng, 1);
        assert_eq!(single.pick_store(&mut rng), 0);
    }
}

/// A store as a seed draws it: where it is and what it sells at what price. The ordering
/// services (`services/orders`) sell from these, so that `serve` and `generate` with the
/// same seed and store count describe the same city.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreListing {
    /// `store-001`, … (the partition key of its order events).
    pub id: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Added once to every delivered order's total.
    pub delivery_fee_cents: i64,
    /// Product ids with this store's prices, in catalogue order.
    pub menu: Vec<(&'static str, i64)>,
}

/// The stores of the city that `SimConfig { seed, stores, .. }` simulates.
pub fn stores(seed: u64, n: u32) -> Vec<StoreListing> {
    use rand::SeedableRng;
    // The simulation draws its city first from the same generator (sim::Core::new).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    City::generate(&mut rng, n)
        .stores
        .into_iter()
        .map(|s| StoreListing {
            id: s.id,
            lat: s.loc.y(),
            lon: s.loc.x(),
            delivery_fee_cents: s.delivery_fee_cents,
            menu: s.menu.iter().map(|p| (p.id, p.price_cents)).collect(),
        })
        .collect()
}
