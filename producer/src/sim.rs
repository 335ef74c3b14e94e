//! The discrete-event simulation of a delivery city.
//!
//! A priority queue of future actions, ordered by simulated time, is the clock:
//! popping the earliest action advances time to it, and handling it may emit one event
//! and schedule further actions. Events therefore come out in event-time order; the
//! [knobs](crate::knobs) then add controlled disorder on top.
//!
//! Everything random is drawn from one `ChaCha8Rng` seeded by [`SimConfig::seed`], and
//! nothing depends on hash-map order or wall-clock time, so a seed names one stream,
//! byte for byte.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;

use geo::{Bearing, Destination, Distance, Haversine, Point};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Exp1, StandardNormal};
use rushhour_schemas::time::{MINUTE_MS, hour_of_day};
use rushhour_schemas::{Channel, DeliveryType, Event, EventType, Item, encode};

use crate::ProducerError;
use crate::city::{CITY_RADIUS_M, City, Demand, centre, random_point_around};
use crate::knobs::{KnobStage, Knobs};

/// `2026-11-20T11:30:00Z`: a Friday, half an hour before the lunch rush.
pub const DEFAULT_START_MS: i64 = 1_795_174_200_000;

/// `0001-01-01T00:00:00Z`: RFC 3339 has four-digit years.
const MIN_START_MS: i64 = -62_135_596_800_000;
/// About the year 8000, leaving millennia of simulated time before year 9999.
const MAX_START_MS: i64 = 190_000_000_000_000;

/// Share of orders cancelled (a few minutes after placement, before any pickup).
const CANCEL_SHARE: f64 = 0.04;
/// Share of orders placed online; the rest are placed in the store.
const ONLINE_SHARE: f64 = 0.85;
/// Share of all orders that are delivered; the rest are collected by the customer.
const DELIVERY_SHARE: f64 = 0.85;
/// Share of in-store orders that are nevertheless delivered. Online orders are
/// delivered often enough that [`DELIVERY_SHARE`] of all orders are deliveries.
const IN_STORE_DELIVERY_SHARE: f64 = 0.3;
/// Median preparation time off-peak; peaks stretch it by up to [`PREP_PEAK_STRETCH`].
const PREP_MEDIAN_MS: f64 = 11.0 * MINUTE_MS as f64;
const PREP_PEAK_STRETCH: f64 = 0.35;
const PREP_SIGMA: f64 = 0.25;
/// A rider is sent this long before the food is expected to be ready.
const DISPATCH_LEAD_MS: i64 = 7 * MINUTE_MS;
/// How many free riders the dispatcher looks at to pick the nearest one. Real
/// dispatchers do not find the global optimum either, and this keeps dispatch O(1).
const DISPATCH_CANDIDATES: usize = 16;
/// Rider pings every 15 s ± 2 s.
const PING_INTERVAL_MS: i64 = 15_000;
const PING_JITTER_MS: i64 = 2_000;
/// GPS noise of a ping, metres (each axis, uniform).
const GPS_NOISE_M: f64 = 4.0;
const METRES_PER_DEGREE: f64 = 111_320.0;
/// Distinct customers.
const CUSTOMERS: u32 = 250_000;
const CANCEL_REASONS: &[(&str, f64)] = &[
    ("customer_request", 0.5),
    ("out_of_stock", 0.2),
    ("store_too_busy", 0.15),
    ("payment_failed", 0.15),
];

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seed of every random draw: the same seed gives the same bytes.
    pub seed: u64,
    /// Simulated time of the start, epoch milliseconds UTC
    /// (default `2026-11-20T11:30:00Z`).
    pub start_ms: i64,
    /// Number of stores (default 40).
    pub stores: u32,
    /// Number of riders (default 7 000). A delivery keeps a rider busy for about
    /// 25 minutes (the ride to the store, the wait for the food, the ride to the
    /// customer), so the fleet needs about 22 riders per order per minute of peak
    /// demand; with fewer, orders queue for the next free rider and delivery times
    /// grow through the peak.
    pub riders: u32,
    /// Orders per minute at the busiest moment of the day, the dinner peak
    /// (default 300).
    pub peak_orders_per_min: f64,
    /// Imperfections added to the stream (default none).
    pub knobs: Knobs,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            start_ms: DEFAULT_START_MS,
            stores: 40,
            riders: 7_000,
            peak_orders_per_min: 300.0,
            knobs: Knobs::default(),
        }
    }
}

impl SimConfig {
    /// Checks that the settings describe a city that can run.
    pub fn validate(&self) -> Result<(), ProducerError> {
        let bad = |msg: String| Err(ProducerError::Config(msg));
        if !(MIN_START_MS..=MAX_START_MS).contains(&self.start_ms) {
            return bad(format!(
                "start_ms {} is outside the years 1 to 8000 that event times can express",
                self.start_ms
            ));
        }
        if self.stores == 0 {
            return bad("the simulation needs at least one store".into());
        }
        if self.riders == 0 {
            return bad("the simulation needs at least one rider".into());
        }
        if !(self.peak_orders_per_min.is_finite() && self.peak_orders_per_min > 0.0) {
            return bad(format!(
                "peak_orders_per_min must be a positive number, got {}",
                self.peak_orders_per_min
            ));
        }
        self.knobs.validate().map_err(ProducerError::Config)
    }
}

/// One record ready to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Produced {
    /// The partition key: `store_id` for order events, `rider_id` for `rider_location`
    /// (as `Event::partition_key`).
    pub key: String,
    /// One JSON record, without a newline.
    pub payload: String,
    /// The event time, epoch milliseconds (of the original, for a malformed record).
    pub event_time: i64,
    /// Whether this is the `order_placed` of a new order (not a knob's duplicate).
    pub order_started: bool,
}

/// The simulation: an iterator over the records it produces, in emission order.
///
/// Without knobs that is event-time order; with them, see [`Knobs`]. With
/// `max_orders` the iterator ends once that many orders have been placed and every
/// one of them has run its course; without, it never ends.
pub struct Simulation {
    core: Core,
    knobs: Option<KnobStage>,
    scratch: Produced,
    core_done: bool,
}

impl Simulation {
    /// A simulation of `config` that starts at most `max_orders` orders (unbounded
    /// with `None`).
    pub fn new(config: &SimConfig, max_orders: Option<u64>) -> Result<Simulation, ProducerError> {
        config.validate()?;
        let knobs = (!config.knobs.is_off()).then(|| KnobStage::new(config.knobs, config.seed));
        Ok(Simulation {
            core: Core::new(config, max_orders),
            knobs,
            scratch: Produced::default(),
            core_done: false,
        })
    }

    /// Writes the next record into `out`, reusing its buffers; `false` at the end.
    ///
    /// This is the allocation-free form of [`Iterator::next`] for hot loops.
    pub fn next_into(&mut self, out: &mut Produced) -> bool {
        let Some(stage) = &mut self.knobs else {
            return self.core.step(out);
        };
        loop {
            let clock = if self.core_done {
                i64::MAX
            } else {
                self.core.clock
            };
            if stage.pop_ready(clock, out) {
                return true;
            }
            if self.core_done {
                return false;
            }
            if self.core.step(&mut self.scratch) {
                stage.push(std::mem::take(&mut self.scratch));
            } else {
                self.core_done = true;
            }
        }
    }

    /// The simulation clock: the time of the latest simulated happening, epoch ms.
    pub fn clock_ms(&self) -> i64 {
        self.core.clock
    }

    /// Orders placed so far.
    pub fn orders_placed(&self) -> u64 {
        self.core.placed
    }
}

impl Iterator for Simulation {
    type Item = Produced;

    fn next(&mut self) -> Option<Produced> {
        let mut out = Produced::default();
        self.next_into(&mut out).then_some(out)
    }
}

/// Something that will happen.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// A candidate order arrival (thinning of the non-homogeneous Poisson process).
    Arrival,
    /// The customer or store calls an order off.
    Cancel(u32),
    /// Send a rider to the store of an order.
    Dispatch(u32),
    /// The kitchen finishes an order.
    FoodReady(u32),
    /// A rider on the move reports where they are.
    Ping(u32),
    /// A rider reaches the store of their order.
    ArriveStore(u32),
    /// A rider reaches the customer.
    ArriveCustomer(u32),
}

#[derive(Debug)]
struct Scheduled {
    at: i64,
    seq: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RiderState {
    Free,
    ToStore,
    AtStore,
    ToCustomer,
}

/// A straight (great-circle) trip.
#[derive(Debug, Clone, Copy)]
struct Leg {
    from: Point,
    bearing: f64,
    dist_m: f64,
    start: i64,
    end: i64,
    speed_mps: f64,
}

#[derive(Debug, Clone)]
struct Rider {
    id: String,
    loc: Point,
    state: RiderState,
    order: u32,
    leg: Leg,
}

/// An order in flight (delivery orders and orders that will be cancelled).
#[derive(Debug, Clone)]
struct Order {
    id: String,
    store: u32,
    dest: Point,
    ready: bool,
    rider: Option<u32>,
}

/// Per-seed unique event ids shaped like UUIDs: the low 64 bits are a bijection of a
/// counter (so ids never repeat within a seed), the high bits mix in the seed.
struct IdGen {
    seed_key: u64,
    counter_key: u64,
    counter: u64,
    buf: String,
}

fn mix64(mut z: u64) -> u64 {
    // splitmix64's finaliser, a bijection on u64.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl IdGen {
    fn new(seed: u64) -> IdGen {
        IdGen {
            seed_key: mix64(seed ^ 0x7275_7368_686f_7572),
            counter_key: mix64(seed.wrapping_add(0x9e37_79b9_7f4a_7c15)),
            counter: 0,
            buf: String::with_capacity(36),
        }
    }

    fn next(&mut self) -> &str {
        self.counter += 1;
        let lo = mix64(self.counter ^ self.counter_key);
        let hi = mix64(self.seed_key ^ lo);
        // Version nibble 4 in the third group, as in a random UUID.
        let hi = (hi & !0xf000) | 0x4000;
        self.buf.clear();
        push_hex(&mut self.buf, hi >> 32, 8);
        self.buf.push('-');
        push_hex(&mut self.buf, (hi >> 16) & 0xffff, 4);
        self.buf.push('-');
        push_hex(&mut self.buf, hi & 0xffff, 4);
        self.buf.push('-');
        push_hex(&mut self.buf, lo >> 48, 4);
        self.buf.push('-');
        push_hex(&mut self.buf, lo & 0xffff_ffff_ffff, 12);
        &self.buf
    }
}

fn push_hex(out: &mut String, v: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (4 * i)) & 0xf) as usize] as char);
    }
}

/// The moving parts.
struct Core {
    rng: ChaCha8Rng,
    seed: u64,
    city: City,
    demand: Demand,
    /// Candidate arrivals per millisecond (the peak rate).
    peak_per_ms: f64,
    riders: Vec<Rider>,
    /// Riders without an order.
    free: Vec<u32>,
    /// Orders whose dispatch found no free rider, first come first served.
    waiting: VecDeque<u32>,
    orders: Vec<Order>,
    free_slots: Vec<u32>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    /// Time of the next candidate arrival, fractional milliseconds.
    arrival_clock: f64,
    placed: u64,
    max_orders: Option<u64>,
    ids: IdGen,
    customer: String,
    order_buf: String,
    clock: i64,
}

impl Core {
    fn new(config: &SimConfig, max_orders: Option<u64>) -> Core {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let city = City::generate(&mut rng, config.stores);
        let riders: Vec<Rider> = (0..config.riders)
            .map(|i| {
                let loc = random_point_around(&mut rng, centre(), 0.0, CITY_RADIUS_M);
                Rider {
                    id: format!("rider-{:04}", i + 1),
                    loc,
                    state: RiderState::Free,
                    order: 0,
                    leg: Leg {
                        from: loc,
                        bearing: 0.0,
                        dist_m: 0.0,
                        start: 0,
                        end: 0,
                        speed_mps: 0.0,
                    },
                }
            })
            .collect();
        let mut core = Core {
            rng,
            seed: config.seed,
            city,
            demand: Demand::new(),
            peak_per_ms: config.peak_orders_per_min / MINUTE_MS as f64,
            free: (0..config.riders).rev().collect(),
            riders,
            waiting: VecDeque::new(),
            orders: Vec::new(),
            free_slots: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            arrival_clock: config.start_ms as f64,
            placed: 0,
            max_orders,
            ids: IdGen::new(config.seed),
            customer: String::with_capacity(16),
            order_buf: String::with_capacity(32),
            clock: config.start_ms,
        };
        if core.wants_more_orders() {
            core.schedule_next_arrival();
        }
        core
    }

    fn wants_more_orders(&self) -> bool {
        self.max_orders.is_none_or(|max| self.placed < max)
    }

    fn schedule(&mut self, at: i64, action: Action) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            action,
        }));
    }

    fn schedule_next_arrival(&mut self) {
        let gap: f64 = self.rng.sample(Exp1);
        self.arrival_clock += gap / self.peak_per_ms;
        self.schedule(self.arrival_clock as i64, Action::Arrival);
    }

    /// Runs the clock until an event is emitted into `out`; `false` when nothing is
    /// left to happen.
    fn step(&mut self, out: &mut Produced) -> bool {
        while let Some(Reverse(next)) = self.queue.pop() {
            self.clock = next.at;
            let emitted = match next.action {
                Action::Arrival => self.arrival(out),
                Action::Cancel(slot) => self.cancel(slot, out),
                Action::Dispatch(slot) => {
                    self.dispatch(slot);
                    false
                }
                Action::FoodReady(slot) => self.food_ready(slot, out),
                Action::Ping(rider) => self.ping(rider, out),
                Action::ArriveStore(rider) => self.arrive_store(rider, out),
                Action::ArriveCustomer(rider) => self.arrive_customer(rider, out),
            };
            if emitted {
                return true;
            }
        }
        false
    }

    fn alloc_slot(&mut self, store: u32, dest: Point) -> u32 {
        let n = self.placed;
        let seed = self.seed;
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.orders.push(Order {
                    id: String::new(),
                    store,
                    dest,
                    ready: false,
                    rider: None,
                });
                (self.orders.len() - 1) as u32
            }
        };
        let order = &mut self.orders[slot as usize];
        order.id.clear();
        let _ = write!(order.id, "o-{seed:x}-{n}");
        order.store = store;
        order.dest = dest;
        order.ready = false;
        order.rider = None;
        slot
    }

    /// A candidate arrival: accepted with probability demand(now)/peak, which turns
    /// the constant-rate candidates into the day's varying rate (Lewis–Shedler
    /// thinning).
    fn arrival(&mut self, out: &mut Produced) -> bool {
        let now = self.clock;
        let accept = self.rng.random::<f64>() < self.demand.at(hour_of_day(now));
        if accept {
            self.place_order(now, out);
        }
        if self.wants_more_orders() {
            self.schedule_next_arrival();
        }
        accept
    }

    fn place_order(&mut self, now: i64, out: &mut Produced) {
        self.placed += 1;
        let rng = &mut self.rng;
        let store_idx = self.city.pick_store(rng);
        let store = &self.city.stores[store_idx];
        let online = rng.random_bool(ONLINE_SHARE);
        let delivery_share = if online {
            (DELIVERY_SHARE - (1.0 - ONLINE_SHARE) * IN_STORE_DELIVERY_SHARE) / ONLINE_SHARE
        } else {
            IN_STORE_DELIVERY_SHARE
        };
        let delivery = rng.random_bool(delivery_share.clamp(0.0, 1.0));
        let n_items = rng.random_range(1..=5usize).min(store.menu.len());
        let mut items = Vec::with_capacity(n_items);
        let mut total = 0i64;
        // Distinct products: a partial Fisher–Yates over the menu's indices.
        let mut picks = [0usize; 14];
        let menu_len = store.menu.len().min(picks.len());
        for (i, p) in picks.iter_mut().enumerate().take(menu_len) {
            *p = i;
        }
        for i in 0..n_items {
            let j = rng.random_range(i..menu_len);
            picks.swap(i, j);
            let product = store.menu[picks[i]];
            // Mostly one of a thing, sometimes two or three.
            let qty = match rng.random_range(0..10) {
                0..=6 => 1,
                7..=8 => 2,
                _ => 3,
            };
            total += qty * product.price_cents;
            items.push(Item {
                product_id: product.id.into(),
                qty,
                unit_price_cents: product.price_cents,
            });
        }
        if delivery {
            total += store.delivery_fee_cents;
        }
        let customer = rng.random_range(1..=CUSTOMERS);
        let cancelled = rng.random_bool(CANCEL_SHARE);

        let mut slot = None;
        if cancelled {
            let s = self.alloc_slot(store_idx as u32, centre());
            let after = self.rng.random_range(MINUTE_MS..=6 * MINUTE_MS);
            self.schedule(now + after, Action::Cancel(s));
            slot = Some(s);
        } else if delivery {
            let store_loc = self.city.stores[store_idx].loc;
            let dest = random_point_around(&mut self.rng, store_loc, 500.0, 5_000.0);
            let s = self.alloc_slot(store_idx as u32, dest);
            let busy = self.demand.at(hour_of_day(now));
            let z: f64 = self.rng.sample(StandardNormal);
            let prep = (PREP_MEDIAN_MS * (1.0 + PREP_PEAK_STRETCH * busy) * (PREP_SIGMA * z).exp())
                .clamp(4.0 * MINUTE_MS as f64, 60.0 * MINUTE_MS as f64)
                as i64;
            self.schedule(now + prep, Action::FoodReady(s));
            self.schedule(now + (prep - DISPATCH_LEAD_MS).max(0), Action::Dispatch(s));
            slot = Some(s);
        }

        self.customer.clear();
        let _ = write!(self.customer, "c-{customer:06}");
        let order_id: &str = match slot {
            Some(s) => &self.orders[s as usize].id,
            None => {
                // A pickup order needs no state after this event.
                self.order_buf.clear();
                let _ = write!(self.order_buf, "o-{:x}-{}", self.seed, self.placed);
                &self.order_buf
            }
        };
        let customer_id = self.customer.as_str();
        let mut ev = Event::new(self.ids.next(), EventType::OrderPlaced, now);
        ev.order_id = Some(order_id.into());
        ev.store_id = Some(self.city.stores[store_idx].id.as_str().into());
        ev.customer_id = Some(customer_id.into());
        ev.channel = Some(if online {
            Channel::Online
        } else {
            Channel::InStore
        });
        ev.delivery_type = Some(if delivery {
            DeliveryType::Delivery
        } else {
            DeliveryType::Pickup
        });
        ev.items = Some(items);
        ev.total_cents = Some(total);
        write_event(out, &ev, true);
    }

    fn cancel(&mut self, slot: u32, out: &mut Produced) -> bool {
        let u: f64 = self.rng.random();
        let mut acc = 0.0;
        let mut reason = CANCEL_REASONS[0].0;
        for &(r, p) in CANCEL_REASONS {
            acc += p;
            reason = r;
            if u < acc {
                break;
            }
        }
        let order = &self.orders[slot as usize];
        let mut ev = Event::new(self.ids.next(), EventType::OrderCancelled, self.clock);
        ev.order_id = Some(order.id.as_str().into());
        ev.store_id = Some(self.city.stores[order.store as usize].id.as_str().into());
        ev.reason = Some(reason.into());
        write_event(out, &ev, false);
        self.free_slots.push(slot);
        true
    }

    /// Sends the nearest of a few free riders to the order's store, or queues the order.
    fn dispatch(&mut self, slot: u32) {
        if self.free.is_empty() {
            self.waiting.push_back(slot);
            return;
        }
        let store_loc = self.city.stores[self.orders[slot as usize].store as usize].loc;
        let mut best = 0usize;
        let mut best_d = f64::INFINITY;
        let tries = DISPATCH_CANDIDATES.min(self.free.len());
        for _ in 0..tries {
            let i = self.rng.random_range(0..self.free.len());
            let d = approx_dist2(self.riders[self.free[i] as usize].loc, store_loc);
            if d < best_d {
                best_d = d;
                best = i;
            }
        }
        let rider = self.free.swap_remove(best);
        self.assign(rider, slot);
    }

    fn assign(&mut self, rider: u32, slot: u32) {
        let store_loc = self.city.stores[self.orders[slot as usize].store as usize].loc;
        self.orders[slot as usize].rider = Some(rider);
        let r = &mut self.riders[rider as usize];
        r.state = RiderState::ToStore;
        r.order = slot;
        self.start_leg(rider, store_loc, Action::ArriveStore(rider));
    }

    fn start_leg(&mut self, rider: u32, to: Point, arrival: Action) {
        let now = self.clock;
        let speed: f64 = self.rng.random_range(4.0..8.0);
        let r = &mut self.riders[rider as usize];
        let dist_m = Haversine.distance(r.loc, to);
        let bearing = if dist_m > 0.0 {
            Haversine.bearing(r.loc, to)
        } else {
            0.0
        };
        let end = now + ((dist_m / speed * 1000.0).round() as i64).max(1);
        r.leg = Leg {
            from: r.loc,
            bearing,
            dist_m,
            start: now,
            end,
            speed_mps: speed,
        };
        self.schedule(end, arrival);
        self.schedule_ping(rider, now, end);
    }

    fn schedule_ping(&mut self, rider: u32, after: i64, leg_end: i64) {
        let at = after + PING_INTERVAL_MS + self.rng.random_range(-PING_JITTER_MS..=PING_JITTER_MS);
        if at < leg_end {
            self.schedule(at, Action::Ping(rider));
        }
    }

    fn ping(&mut self, rider: u32, out: &mut Produced) -> bool {
        let now = self.clock;
        let leg = self.riders[rider as usize].leg;
        let ratio = (now - leg.start) as f64 / (leg.end - leg.start).max(1) as f64;
        let pos = Haversine.destination(leg.from, leg.bearing, leg.dist_m * ratio.clamp(0.0, 1.0));
        let dy: f64 = self.rng.random_range(-GPS_NOISE_M..GPS_NOISE_M);
        let dx: f64 = self.rng.random_range(-GPS_NOISE_M..GPS_NOISE_M);
        let lat = pos.y() + dy / METRES_PER_DEGREE;
        let lon = pos.x() + dx / (METRES_PER_DEGREE * pos.y().to_radians().cos());
        let speed = leg.speed_mps + self.rng.random_range(-0.4..0.4);
        self.riders[rider as usize].loc = pos;
        self.schedule_ping(rider, now, leg.end);

        let r = &self.riders[rider as usize];
        let mut ev = Event::new(self.ids.next(), EventType::RiderLocation, now);
        ev.rider_id = Some(r.id.as_str().into());
        ev.lat = Some(round_to(lat, 1e6));
        ev.lon = Some(round_to(lon, 1e6));
        ev.speed_mps = Some(round_to(speed, 100.0));
        if r.state == RiderState::ToCustomer {
            ev.order_id = Some(self.orders[r.order as usize].id.as_str().into());
        }
        write_event(out, &ev, false);
        true
    }

    fn arrive_store(&mut self, rider: u32, out: &mut Produced) -> bool {
        let r = &mut self.riders[rider as usize];
        let slot = r.order;
        r.state = RiderState::AtStore;
        r.loc = self.city.stores[self.orders[slot as usize].store as usize].loc;
        if self.orders[slot as usize].ready {
            self.pickup(rider, out);
            true
        } else {
            false
        }
    }

    fn food_ready(&mut self, slot: u32, out: &mut Produced) -> bool {
        let order = &mut self.orders[slot as usize];
        order.ready = true;
        match order.rider {
            Some(rider) if self.riders[rider as usize].state == RiderState::AtStore => {
                self.pickup(rider, out);
                true
            }
            _ => false,
        }
    }

    fn pickup(&mut self, rider: u32, out: &mut Produced) {
        let slot = self.riders[rider as usize].order;
        let dest = self.orders[slot as usize].dest;
        self.riders[rider as usize].state = RiderState::ToCustomer;
        self.start_leg(rider, dest, Action::ArriveCustomer(rider));
        self.write_order_event(EventType::OrderPickedUp, rider, slot, out);
    }

    fn arrive_customer(&mut self, rider: u32, out: &mut Produced) -> bool {
        let slot = self.riders[rider as usize].order;
        self.write_order_event(EventType::OrderDelivered, rider, slot, out);
        let r = &mut self.riders[rider as usize];
        r.loc = self.orders[slot as usize].dest;
        r.state = RiderState::Free;
        self.free_slots.push(slot);
        match self.waiting.pop_front() {
            Some(next) => self.assign(rider, next),
            None => self.free.push(rider),
        }
        true
    }

    fn write_order_event(
        &mut self,
        event_type: EventType,
        rider: u32,
        slot: u32,
        out: &mut Produced,
    ) {
        let order = &self.orders[slot as usize];
        let mut ev = Event::new(self.ids.next(), event_type, self.clock);
        ev.order_id = Some(order.id.as_str().into());
        ev.store_id = Some(self.city.stores[order.store as usize].id.as_str().into());
        ev.rider_id = Some(self.riders[rider as usize].id.as_str().into());
        write_event(out, &ev, false);
    }
}

fn write_event(out: &mut Produced, ev: &Event<'_>, order_started: bool) {
    out.payload.clear();
    encode(ev, &mut out.payload);
    out.key.clear();
    out.key.push_str(ev.partition_key());
    out.event_time = ev.event_time;
    out.order_started = order_started;
}

fn round_to(v: f64, scale: f64) -> f64 {
    (v * scale).round() / scale
}

/// Squared equirectangular distance in degrees²: only for comparing nearby points.
fn approx_dist2(a: Point, b: Point) -> f64 {
    let dx = (a.x() - b.x()) * a.y().to_radians().cos();
    let dy = a.y() - b.y();
    dx * dx + dy * dy
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::sync::OnceLock;

    use rushhour_schemas::decode;

    use super::*;

    fn config(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            ..SimConfig::default()
        }
    }

    fn run(config: &SimConfig, orders: u64) -> Vec<Produced> {
        Simulation::new(config, Some(orders)).unwrap().collect()
    }

    /// A few thousand orders, shared by the statistical tests.
    fn big_run() -> &'static [Produced] {
        static RUN: OnceLock<Vec<Produced>> = OnceLock::new();
        RUN.get_or_init(|| run(&config(42), 3_000))
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let a = run(&config(7), 50);
        let b = run(&config(7), 50);
        let c = run(&config(8), 50);
        assert!(!a.is_empty());
        assert_eq!(a, b);
        assert_ne!(
            a.iter().map(|p| &p.payload).collect::<Vec<_>>(),
            c.iter().map(|p| &p.payload).collect::<Vec<_>>()
        );
        // Iterator and next_into agree.
        let mut sim = Simulation::new(&config(7), Some(50)).unwrap();
        let mut out = Produced::default();
        let mut n = 0;
        while sim.next_into(&mut out) {
            assert_eq!(out, a[n]);
            n += 1;
        }
        assert_eq!(n, a.len());
    }

    #[test]
    fn every_record_decodes_in_event_time_order_with_unique_ids() {
        let mut ids = HashSet::new();
        let mut last = i64::MIN;
        for p in big_run() {
            let ev = decode(p.payload.as_bytes()).unwrap_or_else(|e| panic!("{e}: {}", p.payload));
            assert_eq!(ev.event_time, p.event_time);
            assert_eq!(ev.partition_key(), p.key);
            assert_eq!(p.order_started, ev.event_type == EventType::OrderPlaced);
            assert!(p.event_time >= last, "out of order: {}", p.payload);
            last = p.event_time;
            assert!(
                ids.insert(ev.event_id.into_owned()),
                "repeated id: {}",
                p.payload
            );
            if ev.event_type == EventType::OrderPlaced {
                let items = ev.items.as_ref().unwrap();
                assert!((1..=5).contains(&items.len()));
                assert!(items.iter().all(|i| (1..=3).contains(&i.qty)));
                let sum: i64 = items.iter().map(|i| i.qty * i.unit_price_cents).sum();
                let total = ev.total_cents.unwrap();
                match ev.delivery_type.unwrap() {
                    DeliveryType::Pickup => assert_eq!(total, sum),
                    DeliveryType::Delivery => assert!(total > sum && total < sum + 400),
                }
            }
            if ev.event_type == EventType::RiderLocation {
                let (lat, lon) = (ev.lat.unwrap(), ev.lon.unwrap());
                assert!(
                    (lat - CENTRE_LAT_FOR_TESTS).abs() < 0.15 && (lon - 13.405).abs() < 0.2,
                    "{}",
                    p.payload
                );
                assert!((3.5..8.5).contains(&ev.speed_mps.unwrap()));
            }
        }
    }

    const CENTRE_LAT_FOR_TESTS: f64 = crate::city::CENTRE_LAT;

    #[derive(Default)]
    struct Life {
        placed: Option<i64>,
        delivery: bool,
        picked: Option<(i64, String)>,
        delivered: Option<(i64, String)>,
        cancelled: Option<i64>,
        pings: Vec<(i64, String)>,
    }

    fn lives(records: &[Produced]) -> HashMap<String, Life> {
        let mut lives: HashMap<String, Life> = HashMap::new();
        for p in records {
            let ev = decode(p.payload.as_bytes()).unwrap();
            let Some(order) = ev.order_id.as_deref() else {
                continue;
            };
            let life = lives.entry(order.to_owned()).or_default();
            let t = ev.event_time;
            let rider = ev.rider_id.as_deref().unwrap_or("").to_owned();
            match ev.event_type {
                EventType::OrderPlaced => {
                    assert!(life.placed.is_none(), "placed twice: {order}");
                    life.placed = Some(t);
                    life.delivery = ev.delivery_type == Some(DeliveryType::Delivery);
                }
                EventType::OrderPickedUp => life.picked = Some((t, rider)),
                EventType::OrderDelivered => life.delivered = Some((t, rider)),
                EventType::OrderCancelled => life.cancelled = Some(t),
                EventType::RiderLocation => life.pings.push((t, rider)),
            }
        }
        lives
    }

    #[test]
    fn lifecycles_run_in_order() {
        let lives = lives(big_run());
        assert_eq!(lives.len(), 3_000);
        let mut delivered = 0;
        let mut total_s = 0.0;
        for (order, life) in &lives {
            let placed = life
                .placed
                .unwrap_or_else(|| panic!("{order} never placed"));
            if let Some(c) = life.cancelled {
                assert!(c > placed);
                assert!(
                    life.picked.is_none() && life.delivered.is_none() && life.pings.is_empty(),
                    "{order}"
                );
                continue;
            }
            if !life.delivery {
                assert!(
                    life.picked.is_none() && life.delivered.is_none() && life.pings.is_empty(),
                    "{order}"
                );
                continue;
            }
            let (picked, rider) = life
                .picked
                .clone()
                .unwrap_or_else(|| panic!("{order} never picked up"));
            let (done, rider2) = life
                .delivered
                .clone()
                .unwrap_or_else(|| panic!("{order} never delivered"));
            assert!(
                placed < picked && picked < done,
                "{order}: {placed} {picked} {done}"
            );
            assert_eq!(rider, rider2);
            for (t, r) in &life.pings {
                assert!(picked < *t && *t < done, "{order}: ping at {t}");
                assert_eq!(*r, rider);
            }
            // About every 15 s on the way.
            let expected = (done - picked) / PING_INTERVAL_MS;
            assert!(
                (life.pings.len() as i64 - expected).abs() <= expected / 5 + 2,
                "{order}"
            );
            delivered += 1;
            total_s += (done - placed) as f64 / 1000.0;
        }
        let avg_min = total_s / delivered as f64 / 60.0;
        assert!(
            (15.0..60.0).contains(&avg_min),
            "average delivery {avg_min:.1} min"
        );
    }

    #[test]
    fn mix_of_orders_is_as_documented() {
        let records = big_run();
        let mut placed = 0.0;
        let mut cancelled = 0.0;
        let mut online = 0.0;
        let mut delivery = 0.0;
        let mut per_store: HashMap<String, f64> = HashMap::new();
        for p in records {
            let ev = decode(p.payload.as_bytes()).unwrap();
            match ev.event_type {
                EventType::OrderPlaced => {
                    placed += 1.0;
                    online += f64::from(u8::from(ev.channel == Some(Channel::Online)));
                    delivery +=
                        f64::from(u8::from(ev.delivery_type == Some(DeliveryType::Delivery)));
                    *per_store.entry(p.key.clone()).or_default() += 1.0;
                }
                EventType::OrderCancelled => cancelled += 1.0,
                _ => {}
            }
        }
        assert_eq!(placed, 3_000.0);
        let share = cancelled / placed;
        assert!((0.025..0.06).contains(&share), "cancelled {share}");
        assert!(
            (0.8..0.9).contains(&(online / placed)),
            "online {}",
            online / placed
        );
        assert!(
            (0.8..0.9).contains(&(delivery / placed)),
            "delivery {}",
            delivery / placed
        );
        // 80/20: the busiest fifth of the stores takes about 80 % of the orders.
        let mut counts: Vec<f64> = per_store.into_values().collect();
        counts.sort_by(|a, b| b.total_cmp(a));
        let top: f64 = counts.iter().take(8).sum();
        assert!(
            (0.7..0.9).contains(&(top / placed)),
            "top share {}",
            top / placed
        );
    }

    #[test]
    fn orders_limit_is_exact_and_zero_is_empty() {
        for n in [1, 17, 200] {
            let placed = run(&config(n), n)
                .iter()
                .filter(|p| p.payload.contains("\"event_type\":\"order_placed\""))
                .count();
            assert_eq!(placed as u64, n);
        }
        assert!(run(&config(1), 0).is_empty());
    }

    #[test]
    fn unbounded_runs_keep_going() {
        let sim = Simulation::new(&config(3), None).unwrap();
        let n = sim.take(20_000).count();
        assert_eq!(n, 20_000);
    }

    #[test]
    fn demand_follows_the_day() {
        // Arrivals per simulated minute around 04:00 are a small fraction of those at
        // the dinner peak.
        let count = |start_ms: i64| {
            let cfg = SimConfig {
                start_ms,
                ..config(5)
            };
            let mut sim = Simulation::new(&cfg, None).unwrap();
            let mut orders = 0;
            let mut out = Produced::default();
            while sim.next_into(&mut out) && out.event_time < start_ms + 10 * MINUTE_MS {
                orders += u32::from(out.order_started);
            }
            orders
        };
        let day = DEFAULT_START_MS - 11 * 3_600_000 - 30 * MINUTE_MS;
        let night = count(day + 4 * 3_600_000);
        let dinner = count(day + 19 * 3_600_000 + 20 * MINUTE_MS);
        assert!((2_400..3_600).contains(&dinner), "dinner {dinner}");
        assert!(night * 8 < dinner, "night {night} dinner {dinner}");
    }

    #[test]
    fn config_is_validated() {
        assert!(
            Simulation::new(
                &SimConfig {
                    stores: 0,
                    ..config(1)
                },
                None
            )
            .is_err()
        );
        assert!(
            Simulation::new(
                &SimConfig {
                    riders: 0,
                    ..config(1)
                },
                None
            )
            .is_err()
        );
        assert!(
            Simulation::new(
                &SimConfig {
                    peak_orders_per_min: 0.0,
                    ..config(1)
                },
                None
            )
            .is_err()
        );
        assert_eq!(
            rushhour_schemas::time::parse_rfc3339_millis("2026-11-20T11:30:00Z"),
            Some(DEFAULT_START_MS)
        );
    }

    #[test]
    fn few_riders_make_orders_wait_but_all_get_delivered() {
        let cfg = SimConfig {
            riders: 3,
            ..config(11)
        };
        let records = run(&cfg, 40);
        let lives = lives(&records);
        for life in lives.values() {
            if life.delivery && life.cancelled.is_none() {
                assert!(life.delivered.is_some());
            }
        }
    }

    fn knob_run(knobs: Knobs, orders: u64) -> (Vec<Produced>, Vec<Produced>) {
        let clean = run(&config(21), orders);
        let noisy = run(
            &SimConfig {
                knobs,
                ..config(21)
            },
            orders,
        );
        (clean, noisy)
    }

    #[test]
    fn disorder_is_bounded() {
        let knobs = Knobs {
            disorder_ms: 5_000,
            ..Knobs::default()
        };
        let (clean, noisy) = knob_run(knobs, 300);
        assert_eq!(clean.len(), noisy.len());
        let mut max_seen = i64::MIN;
        let mut behind = 0;
        for p in &noisy {
            assert!(
                p.event_time >= max_seen.saturating_sub(5_000),
                "{} behind",
                max_seen.saturating_sub(p.event_time)
            );
            behind += u32::from(p.event_time < max_seen);
            max_seen = max_seen.max(p.event_time);
        }
        assert!(behind > 100, "hardly any disorder: {behind}");
        // The same records, only in another order.
        let mut a: Vec<&str> = clean.iter().map(|p| p.payload.as_str()).collect();
        let mut b: Vec<&str> = noisy.iter().map(|p| p.payload.as_str()).collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
    }

    #[test]
    fn late_and_duplicate_records() {
        let knobs = Knobs {
            disorder_ms: 1_000,
            late_fraction: 0.02,
            late_by_ms: 60_000,
            duplicate_fraction: 0.03,
            ..Knobs::default()
        };
        let (clean, noisy) = knob_run(knobs, 300);
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut max_seen = i64::MIN;
        let mut late = 0;
        let mut far_behind = 0;
        for p in &noisy {
            *seen.entry(p.payload.as_str()).or_default() += 1;
            if p.event_time < max_seen.saturating_sub(1_000) {
                far_behind += 1;
                if p.event_time <= max_seen.saturating_sub(30_000) {
                    late += 1;
                }
            }
            max_seen = max_seen.max(p.event_time);
        }
        let dups = noisy.len() - clean.len();
        let share = dups as f64 / clean.len() as f64;
        assert!((0.015..0.05).contains(&share), "duplicates {share}");
        assert_eq!(seen.values().filter(|&&n| n == 2).count(), dups);
        assert!(seen.values().all(|&n| n <= 2));
        assert!(clean.iter().all(|p| seen.contains_key(p.payload.as_str())));
        let late_share = late as f64 / clean.len() as f64;
        assert!((0.01..0.04).contains(&late_share), "late {late_share}");
        // Only late records and duplicates break the disorder bound.
        assert!(far_behind <= late + dups, "{far_behind} > {late} + {dups}");
        // Duplicates never start an order.
        let started = noisy.iter().filter(|p| p.order_started).count();
        assert_eq!(started, 300);
    }

    #[test]
    fn malformed_records_all_fail_to_decode() {
        let knobs = Knobs {
            malformed_fraction: 0.05,
            ..Knobs::default()
        };
        let (clean, noisy) = knob_run(knobs, 300);
        assert_eq!(clean.len(), noisy.len());
        let mut bad = 0;
        for (c, n) in clean.iter().zip(&noisy) {
            if c.payload == n.payload {
                assert!(decode(n.payload.as_bytes()).is_ok());
            } else {
                bad += 1;
                assert!(decode(n.payload.as_bytes()).is_err(), "{}", n.payload);
                // A malformed record has no key (CONTRACT §1).
                assert!(!c.key.is_empty() && n.key.is_empty());
            }
        }
        let share = bad as f64 / clean.len() as f64;
        assert!((0.03..0.07).contains(&share), "malformed {share}");
        let again = run(
            &SimConfig {
                knobs,
                ..config(21)
            },
            300,
        );
        assert_eq!(again, noisy);
    }
}
