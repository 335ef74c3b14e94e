//! The golden test: a small fixture, every table checked against values worked out by
//! hand (see the comments; lateness 10 s).
//!
//! The fixture (tests/fixtures/golden.jsonl), by line:
//!  1 e1  placed   o1 s1 12:00:05  items 2×450 + 1×300, total 1200, online
//!  2 e2  placed   o2 s1 12:00:30  1×450, total 450, in_store
//!  3 e3  placed   o3 s2 12:00:40  no items, total 0, online (+ an unknown field)
//!  4 e4  ping     r1    12:00:50  52.520,13.405 speed 5
//!  5 e5  pickup   o1 s1 r1 12:01:10
//!  6 e6  ping     r1    12:01:20  52.521,13.405 speed 6
//!  7 e7  ping     r1    12:01:40  52.522,13.405 no speed
//!  8 e6  again: duplicate
//!  9 e8  cancel   o2 s1 12:01:50
//! 10 e9  deliver  o1 s1 r1 12:02:05 → watermark 12:01:55
//! 11 e10 ping     r1    12:02:10  52.523 speed 4 → watermark 12:02:00
//! 12 e11 placed   o4 s2 12:01:30 < 12:02:00: LATE
//! 13–19 invalid: truncated JSON, missing store_id, total_cents as a string, unknown
//!       event_type, 30 February, qty 1.5, lat 95
//! 20 blank: not a record
//! 21 e12 deliver  o3 s2 r2 12:03:00 (placed known, no pickup ever)
//! 22 e13 deliver  o9 s2 r2 12:03:10 (nothing else known about o9)
//! 23 e14 ping     r2    12:03:05 (behind 12:03:10 but not behind the watermark 12:03:00)
//! 24 invalid UTF-8
//! 25 e15 placed   o5 s1 13:03:20.123456+01:00 = 12:03:20.123Z, 3×333, total 999
//! 26 e1  again with other content: duplicate
//! 27 lone surrogate escape: invalid

use rushhour_processor::PipelineConfig;
use rushhour_schemas::Table;

use crate::util::{Cell, f, i, null, run_batches, s, t};

fn fixture() -> Vec<Vec<u8>> {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/golden.jsonl"
    ))
    .unwrap();
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !rushhour_schemas::is_blank(l))
        .map(<[u8]>::to_vec)
        .collect()
}

fn minute(m: &str) -> Cell {
    t(&format!("2026-11-21T{m}:00Z"))
}

fn sm(m: &str, store: &str, counts: [i64; 7], sum: f64, count: i64, pct: Option<f64>) -> Vec<Cell> {
    let end = format!("{}:{:02}", &m[..2], m[3..].parse::<u32>().unwrap() + 1);
    let mut row = vec![minute(m), minute(&end), s(store)];
    row.extend(counts.map(i));
    row.extend([
        f(sum),
        i(count),
        pct.map_or(null(), f),
        pct.map_or(null(), f),
    ]);
    row
}

fn rm(
    m: &str,
    rider: &str,
    pings: i64,
    distance: f64,
    speed: Option<f64>,
    deliveries: i64,
) -> Vec<Cell> {
    let end = format!("{}:{:02}", &m[..2], m[3..].parse::<u32>().unwrap() + 1);
    vec![
        minute(m),
        minute(&end),
        s(rider),
        i(pings),
        f(distance),
        speed.map_or(null(), f),
        i(deliveries),
    ]
}

/// Haversine metres between two latitudes on meridian 13.405.
fn lat_metres(a: f64, b: f64) -> f64 {
    (b - a).abs().to_radians() * 6_371_008.8
}

#[test]
fn golden_fixture_gives_the_hand_checked_tables() {
    let records: Vec<(u32, Vec<u8>)> = fixture().into_iter().map(|r| (0, r)).collect();
    // One record per batch and all in one batch must agree.
    for batches in [
        vec![records.clone()],
        records.iter().map(|r| vec![r.clone()]).collect::<Vec<_>>(),
    ] {
        let (lake, c) = run_batches(PipelineConfig::default(), 1, &batches);
        assert_eq!(
            (c.read, c.accepted, c.late, c.duplicates, c.invalid),
            (26, 14, 1, 2, 9)
        );

        // window, store, [placed, online, items, revenue, picked up, delivered, cancelled],
        // delivery seconds (sum, count, p50/p95)
        let mut store_minute = vec![
            sm("12:00", "s1", [2, 1, 4, 1650, 0, 0, 0], 0.0, 0, None),
            sm("12:00", "s2", [1, 1, 0, 0, 0, 0, 0], 0.0, 0, None),
            sm("12:01", "s1", [0, 0, 0, 0, 1, 0, 1], 0.0, 0, None),
            sm("12:02", "s1", [0, 0, 0, 0, 0, 1, 0], 120.0, 1, Some(120.0)),
            sm("12:03", "s1", [1, 0, 3, 999, 0, 0, 0], 0.0, 0, None),
            sm("12:03", "s2", [0, 0, 0, 0, 0, 2, 0], 140.0, 1, Some(140.0)),
        ];
        store_minute.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(
            lake.sorted(Table::StoreMinute),
            store_minute,
            "store_minute"
        );

        let mut deliveries = vec![
            vec![
                s("o1"),
                s("s1"),
                s("r1"),
                t("2026-11-21T12:00:05Z"),
                t("2026-11-21T12:01:10Z"),
                t("2026-11-21T12:02:05Z"),
                f(65.0),
                f(55.0),
                f(120.0),
            ],
            vec![
                s("o3"),
                s("s2"),
                s("r2"),
                t("2026-11-21T12:00:40Z"),
                null(),
                t("2026-11-21T12:03:00Z"),
                null(),
                null(),
                f(140.0),
            ],
            vec![
                s("o9"),
                s("s2"),
                s("r2"),
                null(),
                null(),
                t("2026-11-21T12:03:10Z"),
                null(),
                null(),
                null(),
            ],
        ];
        deliveries.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(lake.sorted(Table::Deliveries), deliveries, "deliveries");

        // Every 5-minute window (stepping by a minute) that holds a delivery.
        let mut slides = Vec::new();
        for (store, first, deliveries, avg) in [
            ("s1", 11 * 60 + 58, 1, 120.0),
            ("s2", 11 * 60 + 59, 2, 140.0),
        ] {
            for start in first..first + 5 {
                let (h, m) = (start / 60, start % 60);
                let end = start + 5;
                slides.push(vec![
                    minute(&format!("{h:02}:{m:02}")),
                    minute(&format!("{:02}:{:02}", end / 60, end % 60)),
                    s(store),
                    i(deliveries),
                    f(avg),
                ]);
            }
        }
        slides.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(
            lake.sorted(Table::StoreDelivery5m),
            slides,
            "store_delivery_5m"
        );

        // window, rider, pings, distance, average speed, deliveries
        let mut riders = vec![
            rm("12:00", "r1", 1, 0.0, Some(5.0), 0),
            rm("12:01", "r1", 2, lat_metres(52.521, 52.522), Some(6.0), 0),
            rm("12:02", "r1", 1, 0.0, Some(4.0), 1),
            rm("12:03", "r2", 1, 0.0, None, 2),
        ];
        riders.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(lake.sorted(Table::RiderMinute), riders, "rider_minute");

        let late = lake.sorted(Table::LateEvents);
        assert_eq!(late.len(), 1);
        assert_eq!(
            late[0][..4],
            [
                s("e11"),
                s("order_placed"),
                t("2026-11-21T12:01:30Z"),
                t("2026-11-21T12:02:00Z")
            ]
        );
        let Cell::Str(raw) = &late[0][4] else {
            panic!("raw is text")
        };
        assert!(raw.starts_with(r#"{"event_id":"e11""#));

        // Raw: 14 accepted + 1 late, flagged; positions are partition:offset here.
        let raw = &lake.tables[&Table::RawEvents];
        assert_eq!(raw.len(), 15);
        let late_flags = raw.iter().filter(|r| r[15] == Cell::Bool(true)).count();
        assert_eq!(late_flags, 1);
        assert!(
            lake.raw_partitions
                .iter()
                .all(|p| p == "event_date=2026-11-21/event_hour=12")
        );

        // Dead letter: every invalid record, bytes as received, with a reason.
        let dead = &lake.tables[&Table::DeadLetter];
        let reasons: Vec<String> = dead
            .iter()
            .map(|r| match &r[1] {
                Cell::Str(e) => e.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        let expect = [
            "invalid JSON",
            "missing required field `store_id`",
            "field `total_cents` must be an integer, found a string",
            "unknown event_type `order_teleported`",
            "not a valid RFC 3339",
            "must be an integer, found 1.5",
            "field `lat` must be within -90..90",
            "invalid UTF-8",
            "invalid JSON",
        ];
        assert_eq!(reasons.len(), expect.len(), "{reasons:?}");
        for (got, want) in reasons.iter().zip(expect) {
            assert!(got.contains(want), "{got:?} should contain {want:?}");
        }
        let Cell::Bytes(bytes) = &dead[7][0] else {
            panic!()
        };
        assert!(bytes.contains(&0xff));
    }
}
