//! Per-store windows and the delivery-time join: `store_minute`, `store_delivery_5m`
//! and `deliveries`.
//!
//! The three tables share one difficulty: a delivery's duration needs the order's
//! earliest accepted placement (and, for `deliveries`, its earliest pickup), which may
//! arrive *after* the delivery. A known minimum is final once it is at or behind the
//! watermark, since no accepted event can be earlier than the watermark. So a delivery
//! counts in its `store_minute` and `store_delivery_5m` windows once its placement is
//! final, and its `deliveries` row is written once placement and pickup are final —
//! or, failing that, when the order's state expires (its TTL of event time, default
//! 6 h, the join's horizon) or the input ends. A window holding an uncounted delivery
//! waits for it even when the watermark has passed its end: every row is written once,
//! when it can no longer change, so the stream answer equals the batch answer. In
//! ordinary streams (placed → picked up → delivered) nothing waits beyond the
//! watermark.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Builder, Int64Builder, StringBuilder};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use hashbrown::{HashMap, HashSet};
use rushhour_schemas::Table;
use rushhour_schemas::time::{MINUTE_MS, window_start};
use rushhour_schemas::{Channel, Event, EventType};
use serde::{Deserialize, Serialize};

use crate::operator::{Operator, StateError, percentile_cont};
use crate::output::{Collector, secs, ts_builder as ts};
use crate::partials::{Partials, PartitionId, by_partition};

/// Width of a `store_delivery_5m` window.
pub const SLIDE_SIZE_MS: i64 = 5 * MINUTE_MS;
/// Step of a `store_delivery_5m` window.
pub const SLIDE_STEP_MS: i64 = MINUTE_MS;

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

/// Rows made final and not yet emitted, by table.
#[derive(Debug, Default, Clone, PartialEq)]
struct Ready {
    store_minute: Vec<StoreMinuteRow>,
    deliveries: Vec<DeliveryRow>,
    store_delivery_5m: Vec<StoreDeliveryRow>,
}

impl Ready {
    fn is_empty(&self) -> bool {
        self.store_minute.is_empty()
            && self.deliveries.is_empty()
            && self.store_delivery_5m.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    delivered_at: i64,
    store: Arc<str>,
    rider: Box<str>,
    /// Whether its duration has gone into its windows (once the placement was final).
    counted: bool,
}

/// What one source partition knows of an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPart {
    placed: Option<i64>,
    picked_up: Option<i64>,
    last_seen: i64,
    /// Deliveries read from this partition, not yet written as `deliveries` rows.
    pending: Vec<Pending>,
}

impl Default for OrderPart {
    fn default() -> Self {
        OrderPart {
            placed: None,
            picked_up: None,
            last_seen: i64::MIN,
            pending: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct Order {
    parts: Partials<OrderPart>,
    /// Due time of the earliest timer queued for this order.
    timer: i64,
}

/// An order's join state, its partitions' parts merged.
#[derive(Debug, Clone, Copy)]
struct Joined {
    placed: Option<i64>,
    picked_up: Option<i64>,
    last_seen: i64,
    pending: bool,
    uncounted: bool,
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Order {
    fn joined(&self) -> Joined {
        let mut j = Joined {
            placed: None,
            picked_up: None,
            last_seen: i64::MIN,
            pending: false,
            uncounted: false,
        };
        for p in self.parts.values() {
            j.placed = min_opt(j.placed, p.placed);
            j.picked_up = min_opt(j.picked_up, p.picked_up);
            j.last_seen = j.last_seen.max(p.last_seen);
            j.pending |= !p.pending.is_empty();
            j.uncounted |= p.pending.iter().any(|d| !d.counted);
        }
        j
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct MinuteAgg {
    orders_placed: i64,
    online_orders: i64,
    items_sold: i64,
    revenue_cents: i64,
    orders_picked_up: i64,
    orders_delivered: i64,
    orders_cancelled: i64,
    delivery_ms: Vec<i64>,
    pending: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SlideAgg {
    deliveries: i64,
    total_ms_sum: i64,
    total_count: i64,
    pending: u32,
}

/// Window aggregates by window start, then store.
type Windows<A> = BTreeMap<i64, HashMap<Arc<str>, Partials<A>>>;

/// One partition's part of the state, as encoded in a snapshot.
#[derive(Serialize, Deserialize)]
struct StorePart<S, O, M, D> {
    orders: Vec<(S, O)>,
    minutes: Vec<((i64, S), M)>,
    slides: Vec<((i64, S), D)>,
}

type StorePartOut<'a> = StorePart<&'a str, &'a OrderPart, &'a MinuteAgg, &'a SlideAgg>;
type StorePartIn = StorePart<String, OrderPart, MinuteAgg, SlideAgg>;

/// The store-side operator. See the module docs.
#[derive(Debug, Clone)]
pub struct StoreOperator {
    ttl_ms: i64,
    /// Interned store ids, so that windows and deliveries share one allocation each.
    stores: HashSet<Arc<str>>,
    /// Size of `stores` at which ids no window or order uses any more are dropped.
    prune_stores_at: usize,
    /// Rows made final, until [`Operator::emit`].
    ready: Ready,
    /// Keyed by `String` so that one lookup finds or opens an order (`entry_ref`).
    orders: HashMap<String, Order>,
    timers: BinaryHeap<Reverse<(i64, Box<str>)>>,
    minutes: Windows<MinuteAgg>,
    slides: Windows<SlideAgg>,
}

impl StoreOperator {
    /// An operator that forgets an order `ttl_ms` of event time after its last event.
    pub fn new(ttl_ms: i64) -> Self {
        StoreOperator {
            ttl_ms: ttl_ms.max(0),
            stores: HashSet::new(),
            prune_stores_at: 1024,
            orders: HashMap::new(),
            timers: BinaryHeap::new(),
            minutes: BTreeMap::new(),
            slides: BTreeMap::new(),
            ready: Ready::default(),
        }
    }

    /// Open orders held.
    pub fn open_orders(&self) -> usize {
        self.orders.len()
    }

    fn intern(&mut self, store: &str) -> Arc<str> {
        if let Some(s) = self.stores.get(store) {
            return s.clone();
        }
        let s: Arc<str> = Arc::from(store);
        self.stores.insert(s.clone());
        s
    }

    /// When something about the order can next become final: a pending delivery's
    /// window contribution (needs the placement), its `deliveries` row (placement and
    /// pickup), or the expiry of the whole order.
    fn due(ttl_ms: i64, o: &Joined) -> i64 {
        let expiry = o.last_seen.saturating_add(ttl_ms).saturating_add(1);
        let Some(placed) = o.placed else {
            return expiry;
        };
        if !o.pending {
            return expiry;
        }
        let mut due = expiry;
        if o.uncounted {
            due = due.min(placed);
        }
        if let Some(picked_up) = o.picked_up {
            due = due.min(placed.max(picked_up));
        }
        due
    }

    /// Queues a timer for `id` if its state is now due earlier than its timer says
    /// (or, with `exact`, whenever the due time differs, after state was removed).
    fn schedule(&mut self, id: &str, exact: bool) {
        let Some(order) = self.orders.get_mut(id) else {
            return;
        };
        let due = Self::due(self.ttl_ms, &order.joined());
        if due < order.timer || (exact && due != order.timer) {
            order.timer = due;
            self.timers.push(Reverse((due, id.into())));
        }
    }

    fn slide_starts(t: i64) -> impl Iterator<Item = i64> {
        let last = window_start(t, SLIDE_STEP_MS);
        (0..SLIDE_SIZE_MS / SLIDE_STEP_MS).map(move |k| last - k * SLIDE_STEP_MS)
    }

    /// Adds a delivery's duration (if its placement is known) to its windows'
    /// partials of partition `part` and releases their hold on it.
    fn count_in_windows(
        minutes: &mut Windows<MinuteAgg>,
        slides: &mut Windows<SlideAgg>,
        part: PartitionId,
        d: &Pending,
        placed: Option<i64>,
    ) {
        let total = placed.map(|pl| d.delivered_at - pl);
        let minute = window_start(d.delivered_at, MINUTE_MS);
        if let Some(agg) = minutes
            .get_mut(&minute)
            .and_then(|m| m.get_mut(&d.store))
            .and_then(|p| p.get_mut(part))
        {
            agg.pending -= 1;
            if let Some(ms) = total {
                agg.delivery_ms.push(ms);
            }
        }
        for s in Self::slide_starts(d.delivered_at) {
            if let Some(agg) = slides
                .get_mut(&s)
                .and_then(|m| m.get_mut(&d.store))
                .and_then(|p| p.get_mut(part))
            {
                agg.pending -= 1;
                if let Some(ms) = total {
                    agg.total_ms_sum += ms;
                    agg.total_count += 1;
                }
            }
        }
    }

    fn fire_timers(&mut self, wm: i64, out: &mut Ready) {
        while let Some(Reverse((due, _))) = self.timers.peek() {
            if *due > wm {
                break;
            }
            let Some(Reverse((due, id))) = self.timers.pop() else {
                break;
            };
            let Some(order) = self.orders.get_mut(&*id) else {
                continue;
            };
            if order.timer != due {
                continue; // superseded by an earlier timer
            }
            let j = order.joined();
            let expired = wm > j.last_seen.saturating_add(self.ttl_ms);
            // No accepted event can be earlier than the watermark: a known minimum at
            // or behind it is final.
            let placed_final = j.placed.is_some_and(|p| p <= wm);
            let row_final = placed_final && j.picked_up.is_some_and(|u| u <= wm);
            if expired || placed_final {
                for (part, op) in order.parts.iter_mut() {
                    for d in op.pending.iter_mut().filter(|d| !d.counted) {
                        Self::count_in_windows(
                            &mut self.minutes,
                            &mut self.slides,
                            part,
                            d,
                            j.placed,
                        );
                        d.counted = true;
                    }
                }
            }
            if expired || row_final {
                for op in order.parts.values_mut() {
                    for d in std::mem::take(&mut op.pending) {
                        out.deliveries.push(DeliveryRow {
                            order_id: id.clone(),
                            store_id: d.store,
                            rider_id: d.rider,
                            placed_at: j.placed,
                            picked_up_at: j.picked_up,
                            delivered_at: d.delivered_at,
                        });
                    }
                }
            }
            if expired {
                self.orders.remove(&*id);
            } else {
                let next = Self::due(self.ttl_ms, &order.joined());
                order.timer = next;
                self.timers.push(Reverse((next, id)));
            }
        }
    }

    fn emit_windows(&mut self, wm: i64, out: &mut Ready) {
        let mut done = Vec::new();
        for (&start, stores) in self.minutes.range_mut(..=wm.saturating_sub(MINUTE_MS)) {
            stores.retain(|store, partials| {
                if partials.values().any(|a| a.pending > 0) {
                    return true;
                }
                let mut row = StoreMinuteRow {
                    window_start: start,
                    store_id: store.clone(),
                    orders_placed: 0,
                    online_orders: 0,
                    items_sold: 0,
                    revenue_cents: 0,
                    orders_picked_up: 0,
                    orders_delivered: 0,
                    orders_cancelled: 0,
                    delivery_ms: Vec::new(),
                };
                for agg in partials.values_mut() {
                    row.orders_placed += agg.orders_placed;
                    row.online_orders += agg.online_orders;
                    row.items_sold = row.items_sold.saturating_add(agg.items_sold);
                    row.revenue_cents = row.revenue_cents.saturating_add(agg.revenue_cents);
                    row.orders_picked_up += agg.orders_picked_up;
                    row.orders_delivered += agg.orders_delivered;
                    row.orders_cancelled += agg.orders_cancelled;
                    row.delivery_ms.append(&mut agg.delivery_ms);
                }
                row.delivery_ms.sort_unstable();
                out.store_minute.push(row);
                false
            });
            if stores.is_empty() {
                done.push(start);
            }
        }
        for start in done.drain(..) {
            self.minutes.remove(&start);
        }
        for (&start, stores) in self.slides.range_mut(..=wm.saturating_sub(SLIDE_SIZE_MS)) {
            stores.retain(|store, partials| {
                if partials.values().any(|a| a.pending > 0) {
                    return true;
                }
                let mut row = StoreDeliveryRow {
                    window_start: start,
                    store_id: store.clone(),
                    deliveries: 0,
                    total_ms_sum: 0,
                    total_count: 0,
                };
                for agg in partials.values() {
                    row.deliveries += agg.deliveries;
                    row.total_ms_sum += agg.total_ms_sum;
                    row.total_count += agg.total_count;
                }
                out.store_delivery_5m.push(row);
                false
            });
            if stores.is_empty() {
                done.push(start);
            }
        }
        for start in done {
            self.slides.remove(&start);
        }
    }

    /// Restores one partition's window partials into `windows`.
    fn restore_windows<A>(
        &mut self,
        part: PartitionId,
        rows: Vec<((i64, String), A)>,
        windows: fn(&mut Self) -> &mut Windows<A>,
    ) -> Result<(), StateError> {
        for ((start, store), agg) in rows {
            let store = self.intern(&store);
            let partials = windows(self)
                .entry(start)
                .or_default()
                .entry(store)
                .or_default();
            if !partials.insert(part, agg) {
                return Err(StateError::twice(part));
            }
        }
        Ok(())
    }
}

/// Drops partition `part`'s partials from `windows`, and windows left empty.
fn release_windows<A>(windows: &mut Windows<A>, part: PartitionId) {
    windows.retain(|_, stores| {
        stores.retain(|_, partials| !partials.release(part));
        !stores.is_empty()
    });
}

impl Operator for StoreOperator {
    fn process(&mut self, part: PartitionId, ev: &Event<'_>) {
        if ev.event_type == EventType::RiderLocation {
            return;
        }
        let (Some(store_id), Some(order_id)) = (ev.store_id.as_deref(), ev.order_id.as_deref())
        else {
            return;
        };
        let t = ev.event_time;
        let store = self.intern(store_id);
        let agg = self
            .minutes
            .entry(window_start(t, MINUTE_MS))
            .or_default()
            .entry(store.clone())
            .or_default()
            .of(part);
        match ev.event_type {
            EventType::OrderPlaced => {
                agg.orders_placed += 1;
                if ev.channel == Some(Channel::Online) {
                    agg.online_orders += 1;
                }
                // Saturating: hostile input must not crash the pipeline.
                agg.items_sold = agg.items_sold.saturating_add(ev.items_sold());
                agg.revenue_cents = agg
                    .revenue_cents
                    .saturating_add(ev.total_cents.unwrap_or(0));
            }
            EventType::OrderPickedUp => agg.orders_picked_up += 1,
            EventType::OrderDelivered => {
                agg.orders_delivered += 1;
                agg.pending += 1;
                for s in Self::slide_starts(t) {
                    let slide = self
                        .slides
                        .entry(s)
                        .or_default()
                        .entry(store.clone())
                        .or_default()
                        .of(part);
                    slide.deliveries += 1;
                    slide.pending += 1;
                }
            }
            EventType::OrderCancelled => {
                agg.orders_cancelled += 1;
                return; // a cancellation plays no part in the join
            }
            EventType::RiderLocation => return,
        }
        // The key is allocated only for a new order.
        let order = self.orders.entry_ref(order_id).or_insert_with(|| Order {
            parts: Partials::default(),
            timer: i64::MAX,
        });
        let known = order.parts.of(part);
        known.last_seen = known.last_seen.max(t);
        match ev.event_type {
            EventType::OrderPlaced => known.placed = min_opt(known.placed, Some(t)),
            EventType::OrderPickedUp => known.picked_up = min_opt(known.picked_up, Some(t)),
            EventType::OrderDelivered => known.pending.push(Pending {
                delivered_at: t,
                store,
                rider: ev.rider_id.as_deref().unwrap_or_default().into(),
                counted: false,
            }),
            _ => {}
        }
        let due = Self::due(self.ttl_ms, &order.joined());
        if due < order.timer {
            order.timer = due;
            self.timers.push(Reverse((due, order_id.into())));
        }
    }

    fn on_watermark(&mut self, watermark: i64) {
        let mut ready = std::mem::take(&mut self.ready);
        self.fire_timers(watermark, &mut ready);
        self.emit_windows(watermark, &mut ready);
        self.ready = ready;
        // Bounded on an endless stream with ever new stores: an id held only here is
        // no longer used. Pruning when the set has doubled keeps the cost amortised.
        if self.stores.len() >= self.prune_stores_at {
            self.stores.retain(|s| Arc::strong_count(s) > 1);
            self.prune_stores_at = (2 * self.stores.len()).max(1024);
        }
    }

    fn emit(&mut self, out: &mut Collector<'_>) -> Result<(), ArrowError> {
        let Ready {
            mut store_minute,
            mut deliveries,
            mut store_delivery_5m,
        } = std::mem::take(&mut self.ready);
        store_minute
            .sort_by(|a, b| (a.window_start, &a.store_id).cmp(&(b.window_start, &b.store_id)));
        deliveries.sort_by(|a, b| {
            (a.delivered_at, &a.order_id, &a.rider_id).cmp(&(
                b.delivered_at,
                &b.order_id,
                &b.rider_id,
            ))
        });
        store_delivery_5m
            .sort_by(|a, b| (a.window_start, &a.store_id).cmp(&(b.window_start, &b.store_id)));
        if !store_minute.is_empty() {
            out.emit(Table::StoreMinute, store_minute_batch(&store_minute)?);
        }
        if !deliveries.is_empty() {
            out.emit(Table::Deliveries, deliveries_batch(&deliveries)?);
        }
        if !store_delivery_5m.is_empty() {
            out.emit(
                Table::StoreDelivery5m,
                store_delivery_5m_batch(&store_delivery_5m)?,
            );
        }
        Ok(())
    }

    fn holds_rows(&self) -> bool {
        !self.ready.is_empty()
    }

    fn snapshot(&self) -> Result<BTreeMap<PartitionId, Vec<u8>>, StateError> {
        fn windows<A>(w: &Windows<A>) -> impl Iterator<Item = ((i64, &str), &Partials<A>)> {
            w.iter().flat_map(|(&start, stores)| {
                stores
                    .iter()
                    .map(move |(store, partials)| ((start, &**store), partials))
            })
        }
        let mut parts: BTreeMap<PartitionId, StorePartOut<'_>> = BTreeMap::new();
        fn part<'a, 'b>(
            parts: &'b mut BTreeMap<PartitionId, StorePartOut<'a>>,
            p: PartitionId,
        ) -> &'b mut StorePartOut<'a> {
            parts.entry(p).or_insert_with(|| StorePart {
                orders: Vec::new(),
                minutes: Vec::new(),
                slides: Vec::new(),
            })
        }
        for (p, rows) in by_partition(self.orders.iter().map(|(id, o)| (&**id, &o.parts))) {
            part(&mut parts, p).orders = rows;
        }
        for (p, rows) in by_partition(windows(&self.minutes)) {
            part(&mut parts, p).minutes = rows;
        }
        for (p, rows) in by_partition(windows(&self.slides)) {
            part(&mut parts, p).slides = rows;
        }
        parts
            .into_iter()
            .map(|(p, state)| Ok((p, postcard::to_stdvec(&state)?)))
            .collect()
    }

    fn restore(&mut self, part: PartitionId, bytes: &[u8]) -> Result<(), StateError> {
        let state: StorePartIn = postcard::from_bytes(bytes)?;
        for (id, mut known) in state.orders {
            for d in &mut known.pending {
                d.store = self.intern(&d.store);
            }
            let order = self.orders.entry(id.clone()).or_insert(Order {
                parts: Partials::default(),
                timer: i64::MAX,
            });
            if !order.parts.insert(part, known) {
                return Err(StateError::twice(part));
            }
            self.schedule(&id, false);
        }
        self.restore_windows(part, state.minutes, |op| &mut op.minutes)?;
        self.restore_windows(part, state.slides, |op| &mut op.slides)?;
        Ok(())
    }

    fn release(&mut self, part: PartitionId) {
        // What is left of an order the partition shared may be due at another time
        // now (its latest event may have been the released partition's).
        let mut shared = Vec::new();
        self.orders.retain(|id, o| {
            if o.parts.iter().all(|(p, _)| p != part) {
                return true;
            }
            let gone = o.parts.release(part);
            if !gone {
                shared.push(id.clone());
            }
            !gone
        });
        for id in shared {
            self.schedule(&id, true);
        }
        release_windows(&mut self.minutes, part);
        release_windows(&mut self.slides, part);
    }

    fn state_entries(&self) -> usize {
        self.orders.len()
            + self.minutes.values().map(HashMap::len).sum::<usize>()
            + self.slides.values().map(HashMap::len).sum::<usize>()
    }
}

// Arrow conversions of the rows, by the contract's schemas (CONTRACT §4).

fn store_minute_batch(rows: &[StoreMinuteRow]) -> Result<RecordBatch, ArrowError> {
    let (mut start, mut end, mut store) = (ts(), ts(), StringBuilder::new());
    let mut ints: Vec<Int64Builder> = (0..7).map(|_| Int64Builder::new()).collect();
    let (mut sum, mut count, mut p50, mut p95) = (
        Float64Builder::new(),
        Int64Builder::new(),
        Float64Builder::new(),
        Float64Builder::new(),
    );
    for r in rows {
        start.append_value(r.window_start);
        end.append_value(r.window_start + MINUTE_MS);
        store.append_value(&r.store_id);
        for (b, v) in ints.iter_mut().zip([
            r.orders_placed,
            r.online_orders,
            r.items_sold,
            r.revenue_cents,
            r.orders_picked_up,
            r.orders_delivered,
            r.orders_cancelled,
        ]) {
            b.append_value(v);
        }
        sum.append_value(secs(r.delivery_ms.iter().sum()));
        count.append_value(r.delivery_ms.len() as i64);
        let seconds: Vec<f64> = r.delivery_ms.iter().map(|&ms| secs(ms)).collect();
        p50.append_option(percentile_cont(&seconds, 0.5));
        p95.append_option(percentile_cont(&seconds, 0.95));
    }
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(store.finish()),
    ];
    cols.extend(ints.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    cols.extend([
        Arc::new(sum.finish()) as ArrayRef,
        Arc::new(count.finish()),
        Arc::new(p50.finish()),
        Arc::new(p95.finish()),
    ]);
    RecordBatch::try_new(Table::StoreMinute.schema(), cols)
}

fn deliveries_batch(rows: &[DeliveryRow]) -> Result<RecordBatch, ArrowError> {
    let (mut order, mut store, mut rider) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let (mut placed, mut picked, mut delivered) = (ts(), ts(), ts());
    let (mut prep, mut transit, mut total) = (
        Float64Builder::new(),
        Float64Builder::new(),
        Float64Builder::new(),
    );
    for r in rows {
        order.append_value(&r.order_id);
        store.append_value(&r.store_id);
        rider.append_value(&r.rider_id);
        placed.append_option(r.placed_at);
        picked.append_option(r.picked_up_at);
        delivered.append_value(r.delivered_at);
        prep.append_option(r.placed_at.zip(r.picked_up_at).map(|(p, u)| secs(u - p)));
        transit.append_option(r.picked_up_at.map(|u| secs(r.delivered_at - u)));
        total.append_option(r.placed_at.map(|p| secs(r.delivered_at - p)));
    }
    RecordBatch::try_new(
        Table::Deliveries.schema(),
        vec![
            Arc::new(order.finish()),
            Arc::new(store.finish()),
            Arc::new(rider.finish()),
            Arc::new(placed.finish()),
            Arc::new(picked.finish()),
            Arc::new(delivered.finish()),
            Arc::new(prep.finish()),
            Arc::new(transit.finish()),
            Arc::new(total.finish()),
        ],
    )
}

fn store_delivery_5m_batch(rows: &[StoreDeliveryRow]) -> Result<RecordBatch, ArrowError> {
    let (mut start, mut end, mut store) = (ts(), ts(), StringBuilder::new());
    let (mut n, mut avg) = (Int64Builder::new(), Float64Builder::new());
    for r in rows {
        start.append_value(r.window_start);
        end.append_value(r.window_start + SLIDE_SIZE_MS);
        store.append_value(&r.store_id);
        n.append_value(r.deliveries);
        avg.append_option((r.total_count > 0).then(|| secs(r.total_ms_sum) / r.total_count as f64));
    }
    RecordBatch::try_new(
        Table::StoreDelivery5m.schema(),
        vec![
            Arc::new(start.finish()),
            Arc::new(end.finish()),
            Arc::new(store.finish()),
            Arc::new(n.finish()),
            Arc::new(avg.finish()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_262_400_000; // 12:00

    fn ev(kind: EventType, order: &str, secs: i64) -> Event<'static> {
        let mut e = Event::new(format!("{order}-{secs}"), kind, T0 + secs * 1000);
        e.order_id = Some(order.to_owned().into());
        e.store_id = Some("s".into());
        e.rider_id = Some("r".into());
        e.total_cents = Some(100);
        e.items = Some(vec![]);
        e
    }

    #[test]
    fn windows_need_only_the_placement_rows_need_the_pickup_too() {
        let mut op = StoreOperator::new(6 * 3_600_000);
        op.process(0, &ev(EventType::OrderPlaced, "o", 0));
        op.process(0, &ev(EventType::OrderDelivered, "o", 600));
        op.on_watermark(T0 + 700_000);
        // The minute 12:10 is final without a pickup; the deliveries row is not.
        let minute = op
            .ready
            .store_minute
            .iter()
            .find(|r| r.window_start == T0 + 600_000)
            .unwrap();
        assert_eq!(minute.delivery_ms, vec![600_000]);
        assert!(op.ready.deliveries.is_empty());
        // A pickup that arrives later still counts in the row.
        op.process(0, &ev(EventType::OrderPickedUp, "o", 800));
        op.on_watermark(T0 + 900_000);
        assert_eq!(op.ready.deliveries.len(), 1);
        assert_eq!(op.ready.deliveries[0].picked_up_at, Some(T0 + 800_000));
    }

    #[test]
    fn a_window_waits_for_a_placement_that_arrives_after_the_delivery() {
        let mut op = StoreOperator::new(6 * 3_600_000);
        op.process(0, &ev(EventType::OrderDelivered, "o", 60));
        op.on_watermark(T0 + 300_000);
        assert!(
            op.ready
                .store_minute
                .iter()
                .all(|r| r.window_start != T0 + 60_000),
            "held for the join"
        );
        op.process(0, &ev(EventType::OrderPlaced, "o", 400)); // after the delivery: odd but accepted
        op.on_watermark(T0 + 500_000);
        let minute = op
            .ready
            .store_minute
            .iter()
            .find(|r| r.window_start == T0 + 60_000)
            .unwrap();
        assert_eq!(minute.delivery_ms, vec![-340_000]);
    }

    #[test]
    fn store_ids_no_longer_used_are_forgotten() {
        let mut op = StoreOperator::new(60_000);
        let mut rows = 0;
        for k in 0..5000 {
            let mut e = ev(EventType::OrderPlaced, &format!("o{k}"), k);
            e.store_id = Some(format!("s{k}").into());
            op.process(0, &e);
            // Rows go to the sink at once, as in the pipeline.
            op.on_watermark(T0 + (k - 10) * 1000);
            rows += std::mem::take(&mut op.ready.store_minute).len();
        }
        assert!(op.stores.len() < 2048, "{} ids held", op.stores.len());
        let open: usize = op.minutes.values().map(HashMap::len).sum();
        assert_eq!(rows + open, 5000);
    }

    #[test]
    fn order_state_expires_after_its_ttl() {
        let mut op = StoreOperator::new(60_000);
        op.process(0, &ev(EventType::OrderPlaced, "o", 0));
        op.process(0, &ev(EventType::OrderDelivered, "p", 0));
        assert_eq!(op.open_orders(), 2);
        op.on_watermark(T0 + 61_000);
        assert_eq!(op.open_orders(), 0);
        assert_eq!(
            op.ready.deliveries.len(),
            1,
            "the orphan delivery is written at expiry"
        );
        assert_eq!(op.ready.deliveries[0].placed_at, None);
    }
}
