//! Test knobs: controlled imperfection on top of the simulation's clean stream.
//!
//! A real stream is never as tidy as a simulation: records arrive out of order, some
//! very late, some twice, some broken. Each knob turns one of these on, by a seeded
//! random draw per record, so a processor's late-data, de-duplication and dead-letter
//! paths can be exercised reproducibly. All knobs are off by default.
//!
//! Knobs use their own random stream, so turning them on perturbs the delivery of the
//! very same events a run without knobs produces; it never changes the events.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::sim::Produced;

/// A duplicate arrives up to this many milliseconds of event time after the original.
const DUPLICATE_DELAY_MAX_MS: i64 = 2_000;

/// Imperfections to add to the stream. The default adds none.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Knobs {
    /// Bounded disorder: each record's emission is delayed by a uniform random
    /// `0..=disorder_ms` of event time, so arrival order lags event-time order by at
    /// most this much.
    pub disorder_ms: i64,
    /// Fraction (0–1) of records held back by [`late_by_ms`](Knobs::late_by_ms) of
    /// event time, to arrive behind a processor's watermark.
    pub late_fraction: f64,
    /// How far late records are held back, in milliseconds of event time.
    pub late_by_ms: i64,
    /// Fraction (0–1) of records emitted a second time, byte for byte, a little later.
    pub duplicate_fraction: f64,
    /// Fraction (0–1) of records replaced by a malformed variant. The variants cycle
    /// through truncated JSON, a missing required field (`event_id`), a wrong type
    /// (e.g. `total_cents` as a string), an unknown `event_type`, an impossible
    /// `event_time` (`2026-02-30T25:00:00Z`) and a bad number (e.g. `qty` 1.5).
    pub malformed_fraction: f64,
}

impl Knobs {
    /// Whether every knob is off (the stream is the simulation's, untouched).
    pub fn is_off(&self) -> bool {
        self.disorder_ms == 0
            && self.late_fraction == 0.0
            && self.duplicate_fraction == 0.0
            && self.malformed_fraction == 0.0
    }

    /// Checks the ranges: fractions within 0–1, delays not negative.
    pub fn validate(&self) -> Result<(), String> {
        for (name, f) in [
            ("late_fraction", self.late_fraction),
            ("duplicate_fraction", self.duplicate_fraction),
            ("malformed_fraction", self.malformed_fraction),
        ] {
            if !(0.0..=1.0).contains(&f) {
                return Err(format!("knob {name} must be between 0 and 1, got {f}"));
            }
        }
        if self.disorder_ms < 0 {
            return Err(format!(
                "knob disorder_ms must not be negative, got {}",
                self.disorder_ms
            ));
        }
        if self.late_by_ms < 0 {
            return Err(format!(
                "knob late_by_ms must not be negative, got {}",
                self.late_by_ms
            ));
        }
        Ok(())
    }
}

/// A record waiting for its emission time.
struct Pending {
    emit_at: i64,
    seq: u64,
    rec: Produced,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.emit_at, self.seq) == (other.emit_at, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.emit_at, self.seq).cmp(&(other.emit_at, other.seq))
    }
}

/// Applies the knobs: records go in in event-time order and come out in emission-time
/// order, through a min-heap keyed by emission time.
pub(crate) struct KnobStage {
    knobs: Knobs,
    rng: ChaCha8Rng,
    heap: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    malformed: usize,
}

impl KnobStage {
    pub fn new(knobs: Knobs, seed: u64) -> KnobStage {
        KnobStage {
            knobs,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6b6e_6f62_735f_7631),
            heap: BinaryHeap::new(),
            seq: 0,
            malformed: 0,
        }
    }

    /// Takes a record from the simulation (whose clock is now at its event time).
    pub fn push(&mut self, mut rec: Produced) {
        let k = self.knobs;
        if k.malformed_fraction > 0.0 && self.rng.random_bool(k.malformed_fraction) {
            malform(
                &mut rec.payload,
                Malformation::ALL[self.malformed % Malformation::ALL.len()],
            );
            // A malformed record has no key a producer could trust (CONTRACT §1).
            rec.key.clear();
            self.malformed += 1;
        }
        let emit_at = if k.late_fraction > 0.0 && self.rng.random_bool(k.late_fraction) {
            rec.event_time.saturating_add(k.late_by_ms)
        } else if k.disorder_ms > 0 {
            rec.event_time
                .saturating_add(self.rng.random_range(0..=k.disorder_ms))
        } else {
            rec.event_time
        };
        if k.duplicate_fraction > 0.0 && self.rng.random_bool(k.duplicate_fraction) {
            let mut copy = rec.clone();
            copy.order_started = false;
            let delay = self.rng.random_range(1..=DUPLICATE_DELAY_MAX_MS);
            self.schedule(emit_at.saturating_add(delay), copy);
        }
        self.schedule(emit_at, rec);
    }

    fn schedule(&mut self, emit_at: i64, rec: Produced) {
        self.seq += 1;
        self.heap.push(Reverse(Pending {
            emit_at,
            seq: self.seq,
            rec,
        }));
    }

    /// Moves the next record due at or before `clock` into `out`.
    pub fn pop_ready(&mut self, clock: i64, out: &mut Produced) -> bool {
        match self.heap.peek() {
            Some(Reverse(p)) if p.emit_at <= clock => {}
            _ => return false,
        }
        match self.heap.pop() {
            Some(Reverse(p)) => {
                *out = p.rec;
                true
            }
            None => false,
        }
    }
}

/// The ways the malformed knob breaks a record, in the order it cycles through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformation {
    /// The record cut in half: not valid JSON.
    Truncated,
    /// `event_id` removed.
    MissingField,
    /// A field of the wrong JSON type: `total_cents` (or `lat`) as a string, or
    /// `order_id` as a number.
    WrongType,
    /// `event_type` that the contract does not know.
    UnknownEventType,
    /// An impossible `event_time`.
    BadEventTime,
    /// A number the contract refuses: `qty` 1.5, `lat` beyond 90, or an `order_id` of 1.5.
    BadNumber,
}

impl Malformation {
    pub const ALL: [Malformation; 6] = [
        Malformation::Truncated,
        Malformation::MissingField,
        Malformation::WrongType,
        Malformation::UnknownEventType,
        Malformation::BadEventTime,
        Malformation::BadNumber,
    ];
}

/// Rewrites a record as written by `rushhour_schemas::encode` into an invalid one.
pub(crate) fn malform(payload: &mut String, how: Malformation) {
    match how {
        Malformation::Truncated => {
            let mut cut = payload.len() / 2;
            while !payload.is_char_boundary(cut) {
                cut -= 1;
            }
            payload.truncate(cut);
        }
        Malformation::MissingField => {
            if let Some(r) = value_range(payload, "event_id") {
                // `{"event_id":"…",` becomes `{`.
                let end = if payload[r.end..].starts_with(',') {
                    r.end + 1
                } else {
                    r.end
                };
                payload.replace_range(1..end, "");
            }
        }
        Malformation::WrongType => {
            if !quote_number(payload, "total_cents") && !quote_number(payload, "lat") {
                replace_value(payload, "order_id", "4217");
            }
        }
        Malformation::UnknownEventType => {
            replace_value(payload, "event_type", "\"order_teleported\"");
        }
        Malformation::BadEventTime => {
            replace_value(payload, "event_time", "\"2026-02-30T25:00:00Z\"");
        }
        Malformation::BadNumber => {
            if !replace_value(payload, "qty", "1.5") && !replace_value(payload, "lat", "95.5") {
                replace_value(payload, "order_id", "1.5");
            }
        }
    }
}

/// Byte range of the (first) value of `"field":` in a compact JSON record whose
/// strings have no escaped quotes (true of everything the simulation writes).
fn value_range(payload: &str, field: &str) -> Option<std::ops::Range<usize>> {
    let mut pat = String::with_capacity(field.len() + 3);
    pat.push('"');
    pat.push_str(field);
    pat.push_str("\":");
    let start = payload.find(&pat)? + pat.len();
    let rest = &payload[start..];
    let len = if let Some(s) = rest.strip_prefix('"') {
        s.find('"')? + 2
    } else {
        rest.find([',', '}', ']'])?
    };
    Some(start..start + len)
}

fn replace_value(payload: &mut String, field: &str, raw: &str) -> bool {
    match value_range(payload, field) {
        Some(r) => {
            payload.replace_range(r, raw);
            true
        }
        None => false,
    }
}

fn quote_number(payload: &mut String, field: &str) -> bool {
    match value_range(payload, field) {
        Some(r) => {
            payload.insert(r.end, '"');
            payload.insert(r.start, '"');
            true
        }
        None => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PLACED: &str = r#"{"event_id":"e1","event_type":"order_placed","event_time":"2026-11-20T11:30:00.000Z","order_id":"o-1","store_id":"store-001","items":[{"product_id":"cola","qty":2,"unit_price_cents":300}],"total_cents":600}"#;
    const PING: &str = r#"{"event_id":"e2","event_type":"rider_location","event_time":"2026-11-20T11:30:00.000Z","rider_id":"rider-0001","lat":52.5,"lon":13.4,"speed_mps":5.5}"#;
    const PICKUP: &str = r#"{"event_id":"e3","event_type":"order_picked_up","event_time":"2026-11-20T11:30:00.000Z","order_id":"o-1","store_id":"store-001","rider_id":"rider-0001"}"#;

    #[test]
    fn every_variant_of_every_type_is_invalid() {
        for good in [PLACED, PING, PICKUP] {
            assert!(rushhour_schemas::decode(good.as_bytes()).is_ok(), "{good}");
            for how in Malformation::ALL {
                let mut bad = good.to_owned();
                malform(&mut bad, how);
                assert_ne!(bad, good, "{how:?}");
                assert!(
                    rushhour_schemas::decode(bad.as_bytes()).is_err(),
                    "{how:?}: {bad}"
                );
            }
        }
    }

    #[test]
    fn the_variants_do_what_they_say() {
        let mut s = PLACED.to_owned();
        malform(&mut s, Malformation::WrongType);
        assert!(s.contains(r#""total_cents":"600""#), "{s}");
        let mut s = PLACED.to_owned();
        malform(&mut s, Malformation::BadNumber);
        assert!(s.contains(r#""qty":1.5"#), "{s}");
        let mut s = PLACED.to_owned();
        malform(&mut s, Malformation::MissingField);
        assert!(s.starts_with(r#"{"event_type":"#), "{s}");
    }

    #[test]
    fn validation_refuses_out_of_range() {
        assert!(Knobs::default().is_off());
        assert!(Knobs::default().validate().is_ok());
        assert!(
            Knobs {
                late_fraction: 1.5,
                ..Knobs::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Knobs {
                duplicate_fraction: f64::NAN,
                ..Knobs::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Knobs {
                disorder_ms: -1,
                ..Knobs::default()
            }
            .validate()
            .is_err()
        );
    }
}
