//! The key promise, as a property: for random streams with disorder, duplicates and
//! invalid records, cut into random batches and spread over partitions, every curated
//! table equals a plain batch computation over the accepted events, written here
//! independently of the operators (sort, group, sum).

use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;
use rushhour_processor::{Counters, PipelineConfig};
use rushhour_schemas::Table;
use rushhour_schemas::time::format_millis;

use crate::util::{
    Cell, Lake, f, i, null, run_batches, run_restarted, run_split_routed,
    run_with_moved_partitions, s,
};

const BASE: i64 = 1_795_262_400_000; // 2026-11-21T12:00:00Z
const LATENESS: i64 = 10_000;

#[derive(Debug, Clone)]
struct Ev {
    id: String,
    kind: u8, // 0 placed, 1 picked up, 2 delivered, 3 cancelled, 4 ping
    time: i64,
    order: u8,
    store: u8,
    rider: u8,
    qty: i64,
    total: i64,
    online: bool,
    lat: f64,
    lon: f64,
    speed: Option<f64>,
}

impl Ev {
    fn json(&self) -> String {
        let time = format_millis(self.time);
        let (id, o, st, r) = (&self.id, self.order, self.store, self.rider);
        match self.kind {
            0 => format!(
                r#"{{"event_id":"{id}","event_type":"order_placed","event_time":"{time}","order_id":"o{o}","store_id":"s{st}","items":[{{"product_id":"p","qty":{},"unit_price_cents":100}}],"total_cents":{},"channel":"{}"}}"#,
                self.qty,
                self.total,
                if self.online { "online" } else { "in_store" }
            ),
            1 => format!(
                r#"{{"event_id":"{id}","event_type":"order_picked_up","event_time":"{time}","order_id":"o{o}","store_id":"s{st}","rider_id":"r{r}"}}"#
            ),
            2 => format!(
                r#"{{"event_id":"{id}","event_type":"order_delivered","event_time":"{time}","order_id":"o{o}","store_id":"s{st}","rider_id":"r{r}"}}"#
            ),
            3 => format!(
                r#"{{"event_id":"{id}","event_type":"order_cancelled","event_time":"{time}","order_id":"o{o}","store_id":"s{st}"}}"#
            ),
            _ => {
                let speed = self
                    .speed
                    .map(|v| format!(r#","speed_mps":{v:?}"#))
                    .unwrap_or_default();
                format!(
                    r#"{{"event_id":"{id}","event_type":"rider_location","event_time":"{time}","rider_id":"r{r}","lat":{:?},"lon":{:?}{speed}}}"#,
                    self.lat, self.lon
                )
            }
        }
    }
}

fn arb_event() -> impl Strategy<Value = Ev> {
    (
        0u8..5,
        // Whole seconds, so that event times often meet the watermark exactly.
        (0i64..900).prop_map(|sec| sec * 1000),
        0u8..12,
        0u8..3,
        0u8..4,
        1i64..4,
        -50i64..5000,
        any::<bool>(),
        (52.4f64..52.6, 13.3f64..13.5),
        proptest::option::of(0.0f64..12.0),
    )
        .prop_map(
            |(kind, dt, order, store, rider, qty, total, online, (lat, lon), speed)| Ev {
                id: String::new(),
                kind,
                time: BASE + dt,
                order,
                store,
                rider,
                qty,
                total,
                online,
                lat,
                lon,
                speed,
            },
        )
}

/// A stream: events in event-time order with ids, then arrival order perturbed by up to
/// `disorder` ms, some duplicates and invalid lines mixed in.
fn arb_stream() -> impl Strategy<Value = (Vec<(u32, String)>, u32, Vec<usize>)> {
    arb_stream_with(30, false)
}

/// [`arb_stream`] with arrival disorder of up to `max_disorder_s` seconds; `keyed`
/// makes it a stream as the contract's producers write it: an order's events all
/// name one store (so they share a partition), and a duplicate is the same record
/// sent again (so it lands on the same partition).
fn arb_stream_with(
    max_disorder_s: i64,
    keyed: bool,
) -> impl Strategy<Value = (Vec<(u32, String)>, u32, Vec<usize>)> {
    (
        proptest::collection::vec(arb_event(), 1..160),
        (0..=max_disorder_s).prop_map(|sec| sec * 1000),
        proptest::collection::vec(any::<u64>(), 160),
        1u32..4,
        proptest::collection::vec(1usize..40, 1..20),
    )
        .prop_map(move |(mut evs, disorder, noise, partitions, cuts)| {
            evs.sort_by_key(|e| e.time);
            for (k, e) in evs.iter_mut().enumerate() {
                e.id = format!("ev{k}");
                if keyed {
                    e.store = e.order % 3;
                }
            }
            // Arrival = time + jitter in [0, disorder]; stable sort keeps ties in order.
            let mut arrivals: Vec<(i64, usize)> = evs
                .iter()
                .enumerate()
                .map(|(k, e)| {
                    (
                        e.time
                            + (noise[k % noise.len()] % (disorder as u64 / 1000 + 1)) as i64 * 1000,
                        k,
                    )
                })
                .collect();
            arrivals.sort();
            let mut lines = Vec::new();
            // Records sent again later: (position in `lines` to insert at, record).
            let mut resent = Vec::new();
            for (n, (_, k)) in arrivals.iter().enumerate() {
                let e = &evs[*k];
                // Order events by store, pings by rider: the contract's partition keys.
                let key = if e.kind == 4 {
                    u32::from(e.rider)
                } else {
                    u32::from(e.store)
                };
                let part = key % partitions;
                lines.push((part, e.json()));
                let r = noise[n % noise.len()];
                if r % 13 == 0 {
                    lines.push((part, e.json())); // a duplicate
                }
                if r % 11 == 0 {
                    // A duplicate a while later (a producer's retry).
                    resent.push((lines.len() + (r / 11 % 40) as usize, (part, e.json())));
                }
                if r % 19 == 0 && !keyed {
                    lines.push(((part + 1) % partitions, e.json())); // one on another partition
                }
                if r % 17 == 0 {
                    lines.push((
                        part,
                        r#"{"event_id":"bad","event_type":"order_placed"}"#.to_owned(),
                    ));
                }
            }
            for (at, line) in resent.into_iter().rev() {
                lines.insert(at.min(lines.len()), line);
            }
            (lines, partitions, cuts)
        })
}

/// Replays the contract's rules in arrival (processing) order: which events are
/// accepted, which are late and behind what watermark.
fn classify(
    lines: &[(u32, String)],
    partitions: u32,
) -> (Vec<serde_json::Value>, Vec<(serde_json::Value, i64)>) {
    let mut wm = vec![i64::MIN; partitions as usize];
    let mut effective = i64::MIN;
    let mut seen: HashSet<String> = HashSet::new();
    let (mut accepted, mut late) = (Vec::new(), Vec::new());
    for (p, line) in lines {
        let p = *p as usize;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v.get("event_time").is_none() {
            continue; // the invalid line
        }
        let id = v["event_id"].as_str().unwrap().to_owned();
        if !seen.insert(id) {
            continue;
        }
        let time = rushhour_schemas::time::parse_rfc3339_millis(v["event_time"].as_str().unwrap())
            .unwrap();
        if time < effective {
            late.push((v, effective));
        } else {
            wm[p] = wm[p].max(time - LATENESS);
            effective = effective.max(*wm.iter().min().unwrap());
            accepted.push(v);
        }
    }
    (accepted, late)
}

fn ts(ms: i64) -> Cell {
    Cell::Str(format_millis(ms))
}

fn sorted(mut rows: Vec<Vec<Cell>>) -> Vec<Vec<Cell>> {
    rows.sort_by_key(|r| format!("{r:?}"));
    rows
}

fn pct(sorted_vals: &[f64], q: f64) -> Cell {
    if sorted_vals.is_empty() {
        return null();
    }
    let rank = q * (sorted_vals.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    f(sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (rank - lo as f64))
}

fn haversine(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * h.sqrt().asin()
}

struct Batch {
    store_minute: Vec<Vec<Cell>>,
    deliveries: Vec<Vec<Cell>>,
    store_delivery_5m: Vec<Vec<Cell>>,
    rider_minute: Vec<Vec<Cell>>,
    late_events: Vec<Vec<Cell>>,
}

/// The batch answer of CONTRACT §4 over the accepted events.
fn batch_answer(accepted: &[serde_json::Value], late: &[(serde_json::Value, i64)]) -> Batch {
    let time = |v: &serde_json::Value| {
        rushhour_schemas::time::parse_rfc3339_millis(v["event_time"].as_str().unwrap()).unwrap()
    };
    let st = |v: &serde_json::Value, k: &str| v[k].as_str().map(str::to_owned);
    let minute = |t: i64| t.div_euclid(60_000) * 60_000;
    // Earliest placement and pickup per order.
    let mut placed: HashMap<String, i64> = HashMap::new();
    let mut picked: HashMap<String, i64> = HashMap::new();
    for v in accepted {
        let t = time(v);
        let Some(o) = st(v, "order_id") else { continue };
        match v["event_type"].as_str().unwrap() {
            "order_placed" => {
                let e = placed.entry(o).or_insert(t);
                *e = (*e).min(t);
            }
            "order_picked_up" => {
                let e = picked.entry(o).or_insert(t);
                *e = (*e).min(t);
            }
            _ => {}
        }
    }
    let mut deliveries = Vec::new();
    // (minute, store) → counts [placed, online, items, revenue, picked, delivered, cancelled], delivery secs
    let mut sm: BTreeMap<(i64, String), ([i64; 7], Vec<f64>)> = BTreeMap::new();
    let mut slides: BTreeMap<(i64, String), (i64, Vec<f64>)> = BTreeMap::new();
    let mut rm: BTreeMap<(i64, String), (Vec<(i64, String, f64, f64, Option<f64>)>, i64)> =
        BTreeMap::new();
    for v in accepted {
        let t = time(v);
        let kind = v["event_type"].as_str().unwrap();
        if kind == "rider_location" {
            let e = rm
                .entry((minute(t), st(v, "rider_id").unwrap()))
                .or_default();
            e.0.push((
                t,
                st(v, "event_id").unwrap(),
                v["lat"].as_f64().unwrap(),
                v["lon"].as_f64().unwrap(),
                v["speed_mps"].as_f64(),
            ));
            continue;
        }
        let store = st(v, "store_id").unwrap();
        let order = st(v, "order_id").unwrap();
        let e = sm.entry((minute(t), store.clone())).or_default();
        match kind {
            "order_placed" => {
                e.0[0] += 1;
                e.0[1] += i64::from(v["channel"] == "online");
                e.0[2] += v["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|it| it["qty"].as_i64().unwrap())
                    .sum::<i64>();
                e.0[3] += v["total_cents"].as_i64().unwrap();
            }
            "order_picked_up" => e.0[4] += 1,
            "order_cancelled" => e.0[6] += 1,
            "order_delivered" => {
                e.0[5] += 1;
                let p = placed.get(&order).copied();
                let u = picked.get(&order).copied();
                let total = p.map(|p| (t - p) as f64 / 1000.0);
                if let Some(x) = total {
                    e.1.push(x);
                }
                let rider = st(v, "rider_id").unwrap();
                deliveries.push(vec![
                    s(&order),
                    s(&store),
                    s(&rider),
                    p.map_or(null(), ts),
                    u.map_or(null(), ts),
                    ts(t),
                    p.zip(u).map_or(null(), |(p, u)| f((u - p) as f64 / 1000.0)),
                    u.map_or(null(), |u| f((t - u) as f64 / 1000.0)),
                    total.map_or(null(), f),
                ]);
                for k in 0..5 {
                    let w = slides
                        .entry((minute(t) - k * 60_000, store.clone()))
                        .or_default();
                    w.0 += 1;
                    if let Some(x) = total {
                        w.1.push(x);
                    }
                }
                rm.entry((minute(t), rider)).or_default().1 += 1;
            }
            _ => unreachable!(),
        }
    }
    let store_minute = sm
        .into_iter()
        .map(|((m, store), (c, mut secs))| {
            secs.sort_by(f64::total_cmp);
            let mut row = vec![ts(m), ts(m + 60_000), s(&store)];
            row.extend(c.iter().map(|&x| i(x)));
            row.extend([
                f(secs.iter().sum()),
                i(secs.len() as i64),
                pct(&secs, 0.5),
                pct(&secs, 0.95),
            ]);
            row
        })
        .collect();
    let store_delivery_5m = slides
        .into_iter()
        .map(|((m, store), (n, secs))| {
            let avg = if secs.is_empty() {
                null()
            } else {
                f(secs.iter().sum::<f64>() / secs.len() as f64)
            };
            vec![ts(m), ts(m + 300_000), s(&store), i(n), avg]
        })
        .collect();
    let rider_minute = rm
        .into_iter()
        .map(|((m, rider), (mut pings, deliveries))| {
            pings.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            let dist: f64 = pings
                .windows(2)
                .map(|w| haversine((w[0].2, w[0].3), (w[1].2, w[1].3)))
                .sum();
            let speeds: Vec<f64> = pings.iter().filter_map(|p| p.4).collect();
            let avg = if speeds.is_empty() {
                null()
            } else {
                f(speeds.iter().sum::<f64>() / speeds.len() as f64)
            };
            vec![
                ts(m),
                ts(m + 60_000),
                s(&rider),
                i(pings.len() as i64),
                f(dist),
                avg,
                i(deliveries),
            ]
        })
        .collect();
    let late_events = late
        .iter()
        .map(|(v, wm)| {
            vec![
                s(v["event_id"].as_str().unwrap()),
                s(v["event_type"].as_str().unwrap()),
                ts(time(v)),
                ts(*wm),
            ]
        })
        .collect();
    Batch {
        store_minute: sorted(store_minute),
        deliveries: sorted(deliveries),
        store_delivery_5m: sorted(store_delivery_5m),
        rider_minute: sorted(rider_minute),
        late_events: sorted(late_events),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn curated_tables_equal_the_batch_answer((lines, partitions, cuts) in arb_stream()) {
        let batches = cut_batches(&lines, &cuts);
        // The pipeline sees records in exactly this order, so the oracle replays it.
        let order = arrival_order(&batches);
        let cfg = PipelineConfig { lateness_ms: LATENESS, ..PipelineConfig::default() };
        let (lake, counters) = run_batches(cfg, partitions, &batches);
        let (accepted, late) = classify(&order, partitions);
        prop_assert_eq!(counters.accepted as usize, accepted.len());
        prop_assert_eq!(counters.late as usize, late.len());
        let want = batch_answer(&accepted, &late);
        prop_assert_eq!(lake.sorted(Table::StoreMinute), want.store_minute);
        prop_assert_eq!(lake.sorted(Table::Deliveries), want.deliveries);
        prop_assert_eq!(lake.sorted(Table::StoreDelivery5m), want.store_delivery_5m);
        prop_assert_eq!(lake.sorted(Table::RiderMinute), want.rider_minute);
        let got_late: Vec<Vec<Cell>> = lake.sorted(Table::LateEvents).into_iter().map(|mut r| { r.truncate(4); r }).collect();
        prop_assert_eq!(sorted(got_late), want.late_events);
        let raw_rows = lake.tables.get(&Table::RawEvents).map_or(0, Vec::len);
        prop_assert_eq!(raw_rows, accepted.len() + late.len());
    }

    /// Exact recovery: a checkpoint taken at any cut and restored in a new process
    /// gives the tables and counters of the run that never stopped — with late events,
    /// duplicates on other partitions and orders spread over partitions.
    #[test]
    fn a_run_restored_from_a_checkpoint_equals_one_that_never_stopped(
        (lines, partitions, cuts) in arb_stream(),
        cut_at in 0usize..20,
    ) {
        let batches = cut_batches(&lines, &cuts);
        let cut = cut_at.min(batches.len());
        let cfg = PipelineConfig { lateness_ms: LATENESS, ..PipelineConfig::default() };
        let (whole, whole_counters) = run_batches(cfg.clone(), partitions, &batches);
        let (restarted, counters) = run_restarted(cfg, partitions, &batches, cut);
        prop_assert_eq!(counters, whole_counters);
        for table in Table::ALL {
            prop_assert_eq!(restarted.sorted(table), whole.sorted(table), "{:?}", table);
        }
    }

    /// Separable state: partitions handed to another process mid-stream, with just
    /// their part of a checkpoint, lose and duplicate nothing. Disorder stays within
    /// the lateness, so no event is late and acceptance does not depend on which
    /// process's watermark judged it.
    #[test]
    fn partitions_moved_to_another_process_take_exactly_their_state(
        (lines, partitions, cuts) in arb_stream_with(9, true),
        cut_at in 0usize..20,
        mask in any::<u8>(),
    ) {
        let batches = cut_batches(&lines, &cuts);
        let cut = cut_at.min(batches.len());
        let moved: Vec<u32> = (0..partitions).filter(|p| mask >> p & 1 == 1).collect();
        let cfg = PipelineConfig { lateness_ms: LATENESS, ..PipelineConfig::default() };
        let (lake, counters) = run_with_moved_partitions(cfg, partitions, &batches, cut, &moved);
        // Each process writes its own partial rider rows: merged here.
        let riders = merge_rider_partials(lake.sorted(Table::RiderMinute));
        assert_split_exact(&batches, partitions, &lake, counters, riders)?;
    }

    /// A consumer group's layout: two processes split the partitions, rider
    /// contributions routed to their rider's partition (pings here are keyed by a
    /// partitioner other than the router's, so most are routed too) with credits and
    /// floors exchanged at each commit. `rider_minute` is then one row per rider and
    /// minute, as one process writes it — no partial rows to merge.
    #[test]
    fn rider_windows_split_between_two_processes_are_exact_with_routing(
        (lines, partitions, cuts) in arb_stream_with(9, true),
        mask in any::<u8>(),
    ) {
        let batches = cut_batches(&lines, &cuts);
        let theirs: Vec<u32> = (0..partitions).filter(|p| mask >> p & 1 == 1).collect();
        let cfg = PipelineConfig { lateness_ms: LATENESS, ..PipelineConfig::default() };
        let (lake, counters) = run_split_routed(cfg, partitions, &batches, &theirs);
        let riders = lake.sorted(Table::RiderMinute);
        assert_split_exact(&batches, partitions, &lake, counters, riders)?;
    }
}

/// What two processes splitting the partitions wrote (`riders`: its `rider_minute`
/// rows) equals the batch answer, for inputs whose disorder stays within the lateness
/// (so no event is late whichever process judged it).
fn assert_split_exact(
    batches: &[Vec<(u32, Vec<u8>)>],
    partitions: u32,
    lake: &Lake,
    counters: Counters,
    riders: Vec<Vec<Cell>>,
) -> Result<(), TestCaseError> {
    let (accepted, late) = classify(&arrival_order(batches), partitions);
    prop_assert!(late.is_empty());
    prop_assert_eq!(counters.late, 0);
    prop_assert_eq!(counters.accepted as usize, accepted.len());
    let want = batch_answer(&accepted, &late);
    prop_assert_eq!(lake.sorted(Table::StoreMinute), want.store_minute);
    prop_assert_eq!(lake.sorted(Table::Deliveries), want.deliveries);
    prop_assert_eq!(lake.sorted(Table::StoreDelivery5m), want.store_delivery_5m);
    prop_assert_eq!(riders, want.rider_minute);
    let raw_rows = lake.tables.get(&Table::RawEvents).map_or(0, Vec::len);
    prop_assert_eq!(raw_rows, accepted.len());
    Ok(())
}

/// Cuts the arrival sequence into batches of the sizes in `cuts` (cycled).
fn cut_batches(lines: &[(u32, String)], cuts: &[usize]) -> Vec<Vec<(u32, Vec<u8>)>> {
    let mut batches = Vec::new();
    let mut rest = lines;
    let mut k = 0;
    while !rest.is_empty() {
        let n = cuts[k % cuts.len()].min(rest.len());
        batches.push(
            rest[..n]
                .iter()
                .map(|(p, l)| (*p, l.clone().into_bytes()))
                .collect(),
        );
        rest = &rest[n..];
        k += 1;
    }
    batches
}

/// The records in the order the pipeline sees them (it keeps the order within a batch).
fn arrival_order(batches: &[Vec<(u32, Vec<u8>)>]) -> Vec<(u32, String)> {
    batches
        .iter()
        .flatten()
        .map(|(p, l)| (*p, String::from_utf8(l.clone()).unwrap()))
        .collect()
}

/// Merges the `rider_minute` rows that two processes write for one rider and minute
/// once its partitions are split between them: the pings come from the rider's
/// partition, deliveries from their stores' (CONTRACT §1's partition keys).
fn merge_rider_partials(rows: Vec<Vec<Cell>>) -> Vec<Vec<Cell>> {
    let mut by_key: BTreeMap<String, Vec<Cell>> = BTreeMap::new();
    for row in rows {
        let key = format!("{:?}", &row[..3]);
        let Some(acc) = by_key.get_mut(&key) else {
            by_key.insert(key, row);
            continue;
        };
        let (Cell::Int(p1), Cell::Int(p2), Cell::Int(d1), Cell::Int(d2)) =
            (&acc[3], &row[3], &acc[6], &row[6])
        else {
            panic!("rider_minute pings and deliveries are integers");
        };
        assert!(*p1 == 0 || *p2 == 0, "a rider's pings share a partition");
        let deliveries = Cell::Int(d1 + d2);
        if *p2 > 0 {
            acc[3..6].clone_from_slice(&row[3..6]);
        }
        acc[6] = deliveries;
    }
    sorted(by_key.into_values().collect())
}
