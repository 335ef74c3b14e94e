#![allow(missing_docs, clippy::print_stdout, clippy::unwrap_used)]
use std::collections::HashMap;
use rushhour_producer::*;
use rushhour_schemas::{decode, EventType};
fn main() {
    let riders: u32 = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(4000);
    let hours: i64 = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(24);
    let cfg = SimConfig { riders, ..SimConfig::default() };
    let mut sim = Simulation::new(&cfg, None).unwrap();
    let mut out = Produced::default();
    let end = cfg.start_ms + hours * 3_600_000;
    let mut placed: HashMap<String, i64> = HashMap::new();
    let mut per_hour: Vec<(u64, u64, f64, u64, u64)> = vec![(0, 0, 0.0, 0, 0); hours as usize + 1];
    let t0 = std::time::Instant::now();
    let mut n = 0u64;
    let mut bytes = 0;
    while sim.next_into(&mut out) && out.event_time < end {
        n += 1;
        bytes += out.payload.len();
        let h = ((out.event_time - cfg.start_ms) / 3_600_000) as usize;
        per_hour[h].0 += 1;
        let ev = decode(out.payload.as_bytes()).unwrap();
        match ev.event_type {
            EventType::OrderPlaced => { per_hour[h].1 += 1; placed.insert(ev.order_id.unwrap().into_owned(), ev.event_time); }
            EventType::OrderDelivered => { let p = placed.remove(ev.order_id.as_deref().unwrap()).unwrap(); per_hour[h].2 += (ev.event_time - p) as f64 / 60000.0; per_hour[h].3 += 1; }
            EventType::RiderLocation => per_hour[h].4 += 1,
            _ => {}
        }
    }
    println!("{n} events, {bytes} bytes, avg {} B, {:?} (debug-ish incl decode)", bytes as u64 / n.max(1), t0.elapsed());
    for (h, (ev, o, d, dn, pings)) in per_hour.iter().enumerate() {
        println!("h+{h:2} ({:02}:30) events {ev:7} orders {o:6} delivered {dn:6} avg_total {:.1} min pings {pings}", (11 + h) % 24, d / (*dn).max(1) as f64);
    }
    let mut sim = Simulation::new(&cfg, None).unwrap();
    let t0 = std::time::Instant::now();
    let mut k = 0;
    while k < 5_000_000 && sim.next_into(&mut out) { k += 1; }
    println!("raw sim: {k} events in {:?} = {:.0}/s", t0.elapsed(), k as f64 / t0.elapsed().as_secs_f64());
}
