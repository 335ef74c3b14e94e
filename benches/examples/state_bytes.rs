//! Bytes of memory per open order and per de-duplication id, measured rather than
//! estimated: the process's resident set before and after holding N of them.
//!
//! `cargo run --release -p rushhour-benches --example state_bytes [N] [orders|ids]`
//! (default 1,000,000, both). Each measurement wants a process of its own (memory freed
//! by one is reused by the next without the resident set growing): run the two kinds
//! separately for clean figures.
//! Realistic ids (the generator's shapes: `o-…`, `s-…`, uuid-like event ids); each order
//! is placed and picked up but not delivered, so it stays open with its join state and
//! its expiry timer. The figure includes the hash tables' slack at whatever load factor
//! N leaves them, so it is given for two sizes.

use std::borrow::Cow;

use rushhour_processor::dedup::Dedup;
use rushhour_processor::operator::Operator;
use rushhour_processor::store::StoreOperator;
use rushhour_schemas::{Channel, DeliveryType, Event, EventType, Item};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn event_id(i: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        i.wrapping_mul(0x9e37_79b9),
        i & 0xffff,
        i & 0xfff,
        (i >> 12) & 0xfff,
        i.wrapping_mul(0x2545_f491_4f6c_dd1d) & 0xffff_ffff_ffff
    )
}

fn open_orders(n: u64) -> (u64, usize) {
    let mut op = StoreOperator::new(6 * 3_600_000);
    let before = rss_bytes();
    let t0 = 1_700_000_000_000i64;
    for i in 0..n {
        let order = format!("o-{i:010}");
        let store = format!("s-{:04}", i % 400);
        let t = t0 + (i as i64) * 10;
        let mut placed = Event::new(event_id(2 * i), EventType::OrderPlaced, t);
        placed.order_id = Some(Cow::Borrowed(order.as_str()));
        placed.store_id = Some(Cow::Borrowed(store.as_str()));
        placed.customer_id = Some(Cow::Owned(format!("c-{:07}", i % 250_000)));
        placed.channel = Some(Channel::Online);
        placed.delivery_type = Some(DeliveryType::Delivery);
        placed.total_cents = Some(2_450);
        placed.items = Some(vec![Item {
            product_id: Cow::Borrowed("p-margherita"),
            qty: 2,
            unit_price_cents: 1_225,
        }]);
        op.process(0, &placed);
        let mut picked = Event::new(event_id(2 * i + 1), EventType::OrderPickedUp, t + 600_000);
        picked.order_id = Some(Cow::Borrowed(order.as_str()));
        picked.store_id = Some(Cow::Borrowed(store.as_str()));
        picked.rider_id = Some(Cow::Owned(format!("r-{:05}", i % 3_000)));
        op.process(0, &picked);
    }
    let held = op.open_orders();
    (rss_bytes().saturating_sub(before), held)
}

fn ids(n: u64) -> (u64, usize) {
    let mut dedup = Dedup::default();
    let before = rss_bytes();
    let t0 = 1_700_000_000_000i64;
    // 24 hours of event time, as the default horizon holds.
    let step = (24 * 3_600_000 / n.max(1)) as i64;
    for i in 0..n {
        dedup.insert(0, &event_id(i), t0 + i as i64 * step);
    }
    let held = dedup.len();
    (rss_bytes().saturating_sub(before), held)
}

#[allow(clippy::print_stdout)]
fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let what = std::env::args().nth(2).unwrap_or_default();
    println!("| held | what | resident bytes | bytes each |");
    println!("|---|---|---|---|");
    for size in [n / 2, n] {
        if what == "ids" {
            break;
        }
        let (bytes, held) = open_orders(size);
        println!(
            "| {held} | open orders (placed + picked up) | {bytes} | {:.0} |",
            bytes as f64 / held.max(1) as f64
        );
    }
    for size in [n / 2, n] {
        if what == "orders" {
            break;
        }
        let (bytes, held) = ids(size);
        println!(
            "| {held} | de-duplication ids | {bytes} | {:.0} |",
            bytes as f64 / held.max(1) as f64
        );
    }
}
