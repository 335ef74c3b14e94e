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
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use rushhour_schemas::time::{MINUTE_MS, window_start};
use rushhour_schemas::{Channel, Event, EventType};
use serde::{Deserialize, Serialize};

use crate::operator::{
    Curated, DeliveryRow, Operator, StateError, StoreDeliveryRow, StoreMinuteRow,
};

/// Width of a `store_delivery_5m` window.
pub const SLIDE_SIZE_MS: i64 = 5 * MINUTE_MS;
/// Step of a `store_delivery_5m` window.
pub const SLIDE_STEP_MS: i64 = MINUTE_MS;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    delivered_at: i64,
    store: Arc<str>,
    rider: Box<str>,
    /// Whether its duration has gone into its windows (once the placement was final).
    counted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderState {
    placed: Option<i64>,
    picked_up: Option<i64>,
    last_seen: i64,
    pending: Vec<Pending>,
    /// Due time of the earliest timer queued for this order.
    timer: i64,
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

/// The store-side operator. See the module docs.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

    /// When something about the order can next become final: a pending delivery's
    /// window contribution (needs the placement), its `deliveries` row (placement and
    /// pickup), or the expiry of the whole order.
    fn due(ttl_ms: i64, o: &OrderState) -> i64 {
        let expiry = o.last_seen.saturating_add(ttl_ms).saturating_add(1);
        let Some(placed) = o.placed else {
            return expiry;
        };
        if o.pending.is_empty() {
            return expiry;
        }
        let mut due = expiry;
        if o.pending.iter().any(|d| !d.counted) {
            due = due.min(placed);
        }
        if let Some(picked_up) = o.picked_up {
            due = due.min(placed.max(picked_up));
        }
        due
    }

    fn slide_starts(t: i64) -> impl Iterator<Item = i64> {
        let last = window_start(t, SLIDE_STEP_MS);
        (0..SLIDE_SIZE_MS / SLIDE_STEP_MS).map(move |k| last - k * SLIDE_STEP_MS)
    }

    /// Adds a delivery's duration (if its placement is known) to its windows and
    /// releases their hold on it.
    fn count_in_windows(
        minutes: &mut BTreeMap<i64, HashMap<Arc<str>, MinuteAgg>>,
        slides: &mut BTreeMap<i64, HashMap<Arc<str>, SlideAgg>>,
        d: &Pending,
        placed: Option<i64>,
    ) {
        let total = placed.map(|pl| d.delivered_at - pl);
        let minute = window_start(d.delivered_at, MINUTE_MS);
        if let Some(agg) = minutes.get_mut(&minute).and_then(|m| m.get_mut(&d.store)) {
            agg.pending -= 1;
            if let Some(ms) = total {
                agg.delivery_ms.push(ms);
            }
        }
        for s in Self::slide_starts(d.delivered_at) {
            if let Some(agg) = slides.get_mut(&s).and_then(|m| m.get_mut(&d.store)) {
                agg.pending -= 1;
                if let Some(ms) = total {
                    agg.total_ms_sum += ms;
                    agg.total_count += 1;
                }
            }
        }
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
            // No accepted event can be earlier than the watermark: a known minimum at
            // or behind it is final.
            let placed_final = order.placed.is_some_and(|p| p <= wm);
            let row_final = placed_final && order.picked_up.is_some_and(|u| u <= wm);
            let (placed, picked_up) = (order.placed, order.picked_up);
            if expired || placed_final {
                for d in order.pending.iter_mut().filter(|d| !d.counted) {
                    Self::count_in_windows(&mut self.minutes, &mut self.slides, d, placed);
                    d.counted = true;
                }
            }
            if expired || row_final {
                for d in std::mem::take(&mut order.pending) {
                    out.deliveries.push(DeliveryRow {
                        order_id: id.clone(),
                        store_id: d.store,
                        rider_id: d.rider,
                        placed_at: placed,
                        picked_up_at: picked_up,
                        delivered_at: d.delivered_at,
                    });
                }
            }
            if expired {
                self.orders.remove(&id);
            } else {
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
                counted: false,
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

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        Ok(postcard::to_stdvec(self)?)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        *self = postcard::from_bytes(bytes)?;
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.orders.len()
            + self.minutes.values().map(HashMap::len).sum::<usize>()
            + self.slides.values().map(HashMap::len).sum::<usize>()
    }
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
        let mut out = Curated::default();
        op.process(&ev(EventType::OrderPlaced, "o", 0));
        op.process(&ev(EventType::OrderDelivered, "o", 600));
        op.on_watermark(T0 + 700_000, &mut out);
        // The minute 12:10 is final without a pickup; the deliveries row is not.
        let minute = out
            .store_minute
            .iter()
            .find(|r| r.window_start == T0 + 600_000)
            .unwrap();
        assert_eq!(minute.delivery_ms, vec![600_000]);
        assert!(out.deliveries.is_empty());
        // A pickup that arrives later still counts in the row.
        op.process(&ev(EventType::OrderPickedUp, "o", 800));
        op.on_watermark(T0 + 900_000, &mut out);
        assert_eq!(out.deliveries.len(), 1);
        assert_eq!(out.deliveries[0].picked_up_at, Some(T0 + 800_000));
    }

    #[test]
    fn a_window_waits_for_a_placement_that_arrives_after_the_delivery() {
        let mut op = StoreOperator::new(6 * 3_600_000);
        let mut out = Curated::default();
        op.process(&ev(EventType::OrderDelivered, "o", 60));
        op.on_watermark(T0 + 300_000, &mut out);
        assert!(
            out.store_minute
                .iter()
                .all(|r| r.window_start != T0 + 60_000),
            "held for the join"
        );
        op.process(&ev(EventType::OrderPlaced, "o", 400)); // after the delivery: odd but accepted
        op.on_watermark(T0 + 500_000, &mut out);
        let minute = out
            .store_minute
            .iter()
            .find(|r| r.window_start == T0 + 60_000)
            .unwrap();
        assert_eq!(minute.delivery_ms, vec![-340_000]);
    }

    #[test]
    fn order_state_expires_after_its_ttl() {
        let mut op = StoreOperator::new(60_000);
        let mut out = Curated::default();
        op.process(&ev(EventType::OrderPlaced, "o", 0));
        op.process(&ev(EventType::OrderDelivered, "p", 0));
        assert_eq!(op.open_orders(), 2);
        op.on_watermark(T0 + 61_000, &mut out);
        assert_eq!(op.open_orders(), 0);
        assert_eq!(
            out.deliveries.len(),
            1,
            "the orphan delivery is written at expiry"
        );
        assert_eq!(out.deliveries[0].placed_at, None);
    }
}
