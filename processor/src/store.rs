//! Per-store windows and the delivery-time join: `store_minute`, `store_delivery_5m`
//! and `deliveries`.
//!
//! The three tables share one difficulty: a delivery's duration needs the order's
//! earliest accepted placement (and, for `deliveries`, its earliest pickup), which may
//! arrive *after* the delivery. A delivery is therefore *pending* until its inputs are
//! final — both known and at or behind the watermark, so no accepted event can still
//! lower them — or until the order's state expires (its TTL of event time, default
//! 6 h) or the input ends. A window whose pending deliveries are unresolved waits for
//! them even when the watermark has passed its end: the promise is that every row
//! equals the batch answer, so a row is written once, when it can no longer change.
//! In ordinary streams (placed → picked up → delivered) nothing waits beyond the
//! watermark.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use rushhour_schemas::time::{MINUTE_MS, window_start};
use rushhour_schemas::{Channel, Event, EventType};

use crate::operator::{Curated, DeliveryRow, Operator, StoreDeliveryRow, StoreMinuteRow};

/// Width of a `store_delivery_5m` window.
pub const SLIDE_SIZE_MS: i64 = 5 * MINUTE_MS;
/// Step of a `store_delivery_5m` window.
pub const SLIDE_STEP_MS: i64 = MINUTE_MS;

#[derive(Debug, Clone)]
struct Pending {
    delivered_at: i64,
    store: Arc<str>,
    rider: Box<str>,
}

#[derive(Debug, Clone)]
struct OrderState {
    placed: Option<i64>,
    picked_up: Option<i64>,
    last_seen: i64,
    pending: Vec<Pending>,
    /// Due time of the earliest timer queued for this order.
    timer: i64,
}

#[derive(Debug, Clone, Default)]
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

#[derive(Debug, Clone, Default)]
struct SlideAgg {
    deliveries: i64,
    total_ms_sum: i64,
    total_count: i64,
    pending: u32,
}

/// The store-side operator. See the module docs.
#[derive(Debug, Clone)]
pub struct StoreOperator {
    ttl_ms: i64,
    stores: HashSet<Arc<str>>,
    orders: HashMap<Box<str>, OrderState>,
    timers: BinaryHeap<Reverse<(i64, Box<str>)>>,
    minutes: BTreeMap<i64, HashMap<Arc<str>, MinuteAgg>>,
    slides: BTreeMap<i64, HashMap<Arc<str>, SlideAgg>>,
}

impl StoreOperator {
    /// An operator that forgets an order `ttl_ms` of event time after its last event.
    pub fn new(ttl_ms: i64) -> Self {
        StoreOperator {
            ttl_ms: ttl_ms.max(0),
            stores: HashSet::new(),
            orders: HashMap::new(),
            timers: BinaryHeap::new(),
            minutes: BTreeMap::new(),
            slides: BTreeMap::new(),
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

    /// When the order's pending deliveries can be resolved, or its state expires.
    fn due(ttl_ms: i64, o: &OrderState) -> i64 {
        let expiry = o.last_seen.saturating_add(ttl_ms).saturating_add(1);
        match (o.pending.is_empty(), o.placed, o.picked_up) {
            (false, Some(p), Some(u)) => p.max(u).min(expiry),
            _ => expiry,
        }
    }

    fn slide_starts(t: i64) -> impl Iterator<Item = i64> {
        let last = window_start(t, SLIDE_STEP_MS);
        (0..SLIDE_SIZE_MS / SLIDE_STEP_MS).map(move |k| last - k * SLIDE_STEP_MS)
    }

    fn resolve(
        &mut self,
        order_id: &str,
        placed: Option<i64>,
        picked_up: Option<i64>,
        p: Pending,
        out: &mut Curated,
    ) {
        let total = placed.map(|pl| p.delivered_at - pl);
        let minute = window_start(p.delivered_at, MINUTE_MS);
        if let Some(agg) = self
            .minutes
            .get_mut(&minute)
            .and_then(|m| m.get_mut(&p.store))
        {
            agg.pending -= 1;
            if let Some(ms) = total {
                agg.delivery_ms.push(ms);
            }
        }
        for s in Self::slide_starts(p.delivered_at) {
            if let Some(agg) = self.slides.get_mut(&s).and_then(|m| m.get_mut(&p.store)) {
                agg.pending -= 1;
                if let Some(ms) = total {
                    agg.total_ms_sum += ms;
                    agg.total_count += 1;
                }
            }
        }
        out.deliveries.push(DeliveryRow {
            order_id: order_id.into(),
            store_id: p.store,
            rider_id: p.rider,
            placed_at: placed,
            picked_up_at: picked_up,
            delivered_at: p.delivered_at,
        });
    }

    fn fire_timers(&mut self, wm: i64, out: &mut Curated) {
        while let Some(Reverse((due, _))) = self.timers.peek() {
            if *due > wm {
                break;
            }
            let Some(Reverse((due, id))) = self.timers.pop() else {
                break;
            };
            let Some(order) = self.orders.get_mut(&id) else {
                continue;
            };
            if order.timer != due {
                continue; // superseded by an earlier timer
            }
            let expired = wm > order.last_seen.saturating_add(self.ttl_ms);
            let resolvable =
                order.placed.is_some_and(|p| p <= wm) && order.picked_up.is_some_and(|u| u <= wm);
            let (placed, picked_up) = (order.placed, order.picked_up);
            let pending = if expired || resolvable {
                std::mem::take(&mut order.pending)
            } else {
                Vec::new()
            };
            if expired {
                self.orders.remove(&id);
            }
            for p in pending {
                self.resolve(&id, placed, picked_up, p, out);
            }
            if !expired && let Some(order) = self.orders.get_mut(&id) {
                let next = Self::due(self.ttl_ms, order);
                order.timer = next;
                self.timers.push(Reverse((next, id)));
            }
        }
    }

    fn emit_windows(&mut self, wm: i64, out: &mut Curated) {
        let mut done = Vec::new();
        for (&start, stores) in self.minutes.range_mut(..=wm.saturating_sub(MINUTE_MS)) {
            stores.retain(|store, agg| {
                if agg.pending > 0 {
                    return true;
                }
                let mut delivery_ms = std::mem::take(&mut agg.delivery_ms);
                delivery_ms.sort_unstable();
                out.store_minute.push(StoreMinuteRow {
                    window_start: start,
                    store_id: store.clone(),
                    orders_placed: agg.orders_placed,
                    online_orders: agg.online_orders,
                    items_sold: agg.items_sold,
                    revenue_cents: agg.revenue_cents,
                    orders_picked_up: agg.orders_picked_up,
                    orders_delivered: agg.orders_delivered,
                    orders_cancelled: agg.orders_cancelled,
                    delivery_ms,
                });
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
            stores.retain(|store, agg| {
                if agg.pending > 0 {
                    return true;
                }
                out.store_delivery_5m.push(StoreDeliveryRow {
                    window_start: start,
                    store_id: store.clone(),
                    deliveries: agg.deliveries,
                    total_ms_sum: agg.total_ms_sum,
                    total_count: agg.total_count,
                });
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
}

impl Operator for StoreOperator {
    fn process(&mut self, ev: &Event<'_>) {
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
            .or_default();
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
                        .or_default();
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
        let order = self.orders.entry(order_id.into()).or_insert(OrderState {
            placed: None,
            picked_up: None,
            last_seen: t,
            pending: Vec::new(),
            timer: i64::MAX,
        });
        order.last_seen = order.last_seen.max(t);
        match ev.event_type {
            EventType::OrderPlaced => order.placed = Some(order.placed.map_or(t, |p| p.min(t))),
            EventType::OrderPickedUp => {
                order.picked_up = Some(order.picked_up.map_or(t, |p| p.min(t)))
            }
            EventType::OrderDelivered => order.pending.push(Pending {
                delivered_at: t,
                store,
                rider: ev.rider_id.as_deref().unwrap_or_default().into(),
            }),
            _ => {}
        }
        let due = Self::due(self.ttl_ms, order);
        if due < order.timer {
            order.timer = due;
            self.timers.push(Reverse((due, order_id.into())));
        }
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Curated) {
        self.fire_timers(watermark, out);
        self.emit_windows(watermark, out);
    }

    fn state_entries(&self) -> usize {
        self.orders.len()
            + self.minutes.values().map(HashMap::len).sum::<usize>()
            + self.slides.values().map(HashMap::len).sum::<usize>()
    }
}
