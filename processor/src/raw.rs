//! The stateless first step of the record path, and the raw rows it builds.
//!
//! Decoding is the costliest step that needs no state, so the runtime runs it on the
//! reader's thread ([`Decoder::decode`]) while the pipeline works on the previous
//! batch. The rows a record will make in the lake are built right there, beside the
//! decoding: a `raw_events` row for each valid event, a `dead_letter` row for each
//! invalid record. What only the pipeline knows — is the event a duplicate, is it late
//! — comes afterwards as a keep mask and late flags over the built rows
//! ([`RawRows`]): an ordinary batch (nothing dropped, nothing late) goes to the sink
//! as built, and the pipeline thread never touches its rows. A late event's
//! `late_events` row ([`LateRow`]) is the pipeline's to make, and converted here too.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, StringBuilder};
use arrow::compute::filter_record_batch;
use arrow::datatypes::TimestampMillisecondType;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use rushhour_schemas::time::{HOUR_MS, date_hour};
use rushhour_schemas::{
    DeadLetterBuilder, Detached, Provenance, RawEventsBuilder, Table, decode, is_blank,
};

use crate::output::{Collector, TableBatch, ts_builder as ts};
use crate::source::{PositionStyle, SourceBatch};

/// A record after the stateless first step of the record path.
// Nearly every record is an event: boxing it would add an allocation per record to
// save space only on the rare blank or invalid one.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A blank line: not a record.
    Blank,
    /// A valid event, to be attached to its record again. Its `raw_events` row is
    /// the next one of [`DecodedBatch::raw`].
    Event(Detached),
    /// An invalid record; its `dead_letter` row is in [`DecodedBatch::dead`].
    Invalid,
}

/// A source batch after [`Decoder::decode`].
#[derive(Debug, Clone)]
pub struct DecodedBatch {
    /// One entry per record of the source batch, in order.
    pub records: Vec<Decoded>,
    /// A `raw_events` row for each [`Decoded::Event`], in the same order, not late.
    pub raw: RecordBatch,
    /// The `dead_letter` rows of the [`Decoded::Invalid`] records.
    pub dead: RecordBatch,
}

/// Decodes source batches and builds their raw rows: everything of the record path
/// that needs no state. One per reader thread.
pub struct Decoder {
    source: String,
    style: PositionStyle,
    max_future_ms: Option<i64>,
    /// The dead-letter reason of an event too far in the future.
    too_far_ahead: String,
    raw: RawEventsBuilder,
    dead: DeadLetterBuilder,
    position: String,
}

impl Decoder {
    /// A decoder for records of the source named `source`, whose positions are
    /// spelled in `style`. With `max_future_ms`, an event whose time is more than
    /// that ahead of the wall clock when read is invalid (`--max-future`).
    pub fn new(source: &str, style: PositionStyle, max_future_ms: Option<i64>) -> Decoder {
        Decoder {
            source: source.to_owned(),
            style,
            max_future_ms,
            too_far_ahead: format!(
                "event_time is more than {} ahead of the wall clock when read (--max-future)",
                short_duration(max_future_ms.unwrap_or(0))
            ),
            raw: RawEventsBuilder::with_capacity(1024),
            dead: DeadLetterBuilder::default(),
            position: String::new(),
        }
    }

    /// Decodes and validates every record of `batch`, read at `ingest_time` (the
    /// wall clock, stamped on its rows), and builds their raw and dead-letter rows.
    pub fn decode(
        &mut self,
        batch: &SourceBatch,
        ingest_time: i64,
    ) -> Result<DecodedBatch, ArrowError> {
        let latest_allowed = self
            .max_future_ms
            .map(|max| ingest_time.saturating_add(max));
        let mut records = Vec::with_capacity(batch.records.len());
        for (range, offset) in &batch.records {
            let bytes = &batch.data[range.clone()];
            if is_blank(bytes) {
                records.push(Decoded::Blank);
                continue;
            }
            format_position(&self.style, batch.partition, *offset, &mut self.position);
            let prov = Provenance {
                source: &self.source,
                position: &self.position,
                ingest_time,
            };
            match decode(bytes) {
                Ok(ev) if latest_allowed.is_some_and(|t| ev.event_time > t) => {
                    self.dead.append(bytes, &self.too_far_ahead, prov);
                    records.push(Decoded::Invalid);
                }
                Ok(ev) => {
                    self.raw.append(&ev, false, prov);
                    records.push(Decoded::Event(Detached::new(ev, bytes)));
                }
                Err(invalid) => {
                    self.dead.append(bytes, &invalid.0, prov);
                    records.push(Decoded::Invalid);
                }
            }
        }
        Ok(DecodedBatch {
            records,
            raw: self.raw.finish()?,
            dead: self.dead.finish()?,
        })
    }
}

/// Writes where a record is in its source, as `raw_events.position` spells it.
fn format_position(style: &PositionStyle, partition: u32, offset: u64, out: &mut String) {
    let mut number = itoa::Buffer::new();
    out.clear();
    match style {
        PositionStyle::Line => {}
        PositionStyle::PartitionOffset => {
            out.push_str(number.format(partition));
            out.push(':');
        }
        PositionStyle::TopicPartitionOffset(topic) => {
            out.push_str(topic);
            out.push('/');
            out.push_str(number.format(partition));
            out.push('/');
        }
    }
    out.push_str(number.format(offset));
}

/// The pipeline's verdict on the raw rows of one batch: which are kept (not
/// duplicates) and which are late. Nothing is stored while every row is kept and on
/// time, the usual case.
#[derive(Debug, Default)]
pub struct RawRows {
    rows: usize,
    /// Set once a row is dropped: one entry per row so far.
    keep: Option<Vec<bool>>,
    /// Set once a row is late: one entry per row so far.
    late: Option<Vec<bool>>,
}

impl RawRows {
    /// The next row is kept, late or not.
    pub fn keep(&mut self, late: bool) {
        if late && self.late.is_none() {
            self.late = Some(vec![false; self.rows]);
        }
        if let Some(l) = &mut self.late {
            l.push(late);
        }
        if let Some(k) = &mut self.keep {
            k.push(true);
        }
        self.rows += 1;
    }

    /// The next row is dropped (a duplicate).
    pub fn drop_row(&mut self) {
        self.keep
            .get_or_insert_with(|| vec![true; self.rows])
            .push(false);
        if let Some(l) = &mut self.late {
            l.push(false);
        }
        self.rows += 1;
    }

    /// Applies the verdict to `raw` (built by [`Decoder::decode`], one row per verdict)
    /// and adds the result to `out`, one batch per hour of event time (the lake's
    /// `event_date=…/event_hour=…` partitions).
    pub fn finish(self, raw: RecordBatch, out: &mut Vec<TableBatch>) -> Result<(), ArrowError> {
        if raw.num_rows() != self.rows {
            return Err(ArrowError::InvalidArgumentError(format!(
                "{} verdicts for {} raw rows",
                self.rows,
                raw.num_rows()
            )));
        }
        let mut raw = raw;
        if let Some(late) = self.late {
            let at = raw.schema().index_of("is_late")?;
            let mut columns: Vec<ArrayRef> = raw.columns().to_vec();
            columns[at] = Arc::new(BooleanArray::from(late));
            raw = RecordBatch::try_new(raw.schema(), columns)?;
        }
        if let Some(keep) = self.keep {
            raw = filter_record_batch(&raw, &BooleanArray::from(keep))?;
        }
        split_by_hour(raw, out)
    }
}

/// Adds `raw` to `out`, split by the hour of its rows' event time.
fn split_by_hour(raw: RecordBatch, out: &mut Vec<TableBatch>) -> Result<(), ArrowError> {
    if raw.num_rows() == 0 {
        return Ok(());
    }
    let at = raw.schema().index_of("event_time")?;
    let times = raw
        .column(at)
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| ArrowError::SchemaError("event_time is not a timestamp".into()))?;
    let hour = |i: usize| times.value(i).div_euclid(HOUR_MS);
    let first = hour(0);
    if (1..times.len()).all(|i| hour(i) == first) {
        out.push(raw_batch(first, raw));
        return Ok(());
    }
    let mut hours: Vec<i64> = (0..times.len()).map(hour).collect();
    hours.sort_unstable();
    hours.dedup();
    for h in hours {
        let mask: BooleanArray = (0..times.len()).map(|i| Some(hour(i) == h)).collect();
        out.push(raw_batch(h, filter_record_batch(&raw, &mask)?));
    }
    Ok(())
}

fn raw_batch(hour: i64, batch: RecordBatch) -> TableBatch {
    TableBatch {
        table: Table::RawEvents,
        partition: hive_partition(hour),
        batch,
    }
}

/// A `dead_letter` batch for the sink, unless it is empty.
pub fn dead_letter(dead: RecordBatch) -> Option<TableBatch> {
    (dead.num_rows() > 0).then(|| TableBatch {
        table: Table::DeadLetter,
        partition: String::new(),
        batch: dead,
    })
}

/// A `late_events` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateRow {
    /// The event's id.
    pub event_id: String,
    /// Its type.
    pub event_type: &'static str,
    /// Its event time.
    pub event_time: i64,
    /// The effective watermark it arrived behind.
    pub watermark: i64,
    /// The record as received.
    pub raw: String,
}

/// Sorts `rows` by key and adds them to `out` as a `late_events` batch; `rows` is left
/// empty.
pub fn emit_late(rows: &mut Vec<LateRow>, out: &mut Vec<TableBatch>) -> Result<(), ArrowError> {
    if rows.is_empty() {
        return Ok(());
    }
    rows.sort_by(|a, b| (a.event_time, &a.event_id).cmp(&(b.event_time, &b.event_id)));
    let batch = late_events_batch(rows)?;
    rows.clear();
    Collector::new(out).emit(Table::LateEvents, batch);
    Ok(())
}

fn late_events_batch(rows: &[LateRow]) -> Result<RecordBatch, ArrowError> {
    let (mut id, mut ty, mut time, mut wm, mut raw) = (
        StringBuilder::new(),
        StringBuilder::new(),
        ts(),
        ts(),
        StringBuilder::new(),
    );
    for r in rows {
        id.append_value(&r.event_id);
        ty.append_value(r.event_type);
        time.append_value(r.event_time);
        wm.append_value(r.watermark);
        raw.append_value(&r.raw);
    }
    RecordBatch::try_new(
        Table::LateEvents.schema(),
        vec![
            Arc::new(id.finish()),
            Arc::new(ty.finish()),
            Arc::new(time.finish()),
            Arc::new(wm.finish()),
            Arc::new(raw.finish()),
        ],
    )
}

/// The hive partition directory of the hour `hour` (hours since the epoch).
fn hive_partition(hour: i64) -> String {
    let (date, hh) = date_hour(hour * HOUR_MS);
    format!("event_date={date}/event_hour={hh}")
}

/// `3600000` → `1h`, `90000` → `90s`.
fn short_duration(ms: i64) -> String {
    match ms {
        0 => "0s".into(),
        ms if ms % HOUR_MS == 0 => format!("{}h", ms / HOUR_MS),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn batch(lines: &[&str]) -> SourceBatch {
        let mut b = SourceBatch::default();
        for (i, line) in lines.iter().enumerate() {
            let start = b.data.len();
            b.data.extend_from_slice(line.as_bytes());
            b.records.push((start..b.data.len(), i as u64 + 1));
        }
        b
    }

    fn ping(id: &str, time: &str) -> String {
        format!(
            r#"{{"event_id":"{id}","event_type":"rider_location","event_time":"{time}","rider_id":"r-1","lat":45.0,"lon":7.0}}"#
        )
    }

    #[test]
    fn rows_are_built_beside_decoding_and_the_verdict_drops_and_flags_them() {
        let lines = [
            ping("a", "2026-11-20T11:59:59.000Z"),
            String::new(),
            "{not json".to_owned(),
            ping("b", "2026-11-20T12:00:01.000Z"),
            ping("c", "2026-11-20T12:00:02.000Z"),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut d = Decoder::new("file:x", PositionStyle::Line, None);
        let decoded = d.decode(&batch(&lines), 7).unwrap();
        assert!(matches!(decoded.records[1], Decoded::Blank));
        assert!(matches!(decoded.records[2], Decoded::Invalid));
        assert_eq!(decoded.raw.num_rows(), 3);
        assert_eq!(decoded.dead.num_rows(), 1);
        let position = decoded
            .dead
            .column(3)
            .as_string::<i32>()
            .value(0)
            .to_owned();
        assert_eq!(position, "3");

        let mut rows = RawRows::default();
        rows.keep(true); // a: late
        rows.drop_row(); // b: a duplicate
        rows.keep(false); // c
        let mut out = Vec::new();
        rows.finish(decoded.raw, &mut out).unwrap();
        // Two hours: 11 and 12.
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].partition, "event_date=2026-11-20/event_hour=11");
        assert_eq!(out[1].partition, "event_date=2026-11-20/event_hour=12");
        let ids = |b: &RecordBatch| b.column(0).as_string::<i32>().value(0).to_owned();
        let late = |b: &RecordBatch| {
            let at = b.schema().index_of("is_late").unwrap();
            b.column(at).as_boolean().value(0)
        };
        assert_eq!(
            (ids(&out[0].batch), late(&out[0].batch)),
            ("a".into(), true)
        );
        assert_eq!(out[1].batch.num_rows(), 1);
        assert_eq!(
            (ids(&out[1].batch), late(&out[1].batch)),
            ("c".into(), false)
        );
    }

    #[test]
    fn an_ordinary_batch_goes_out_as_built() {
        let lines = [
            ping("a", "2026-11-20T12:00:00.000Z"),
            ping("b", "2026-11-20T12:00:01.000Z"),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let decoded = Decoder::new("log:x", PositionStyle::PartitionOffset, Some(1000))
            .decode(&batch(&lines), i64::MAX / 2)
            .unwrap();
        let positions = decoded.raw.column(17).as_string::<i32>();
        assert_eq!((positions.value(0), positions.value(1)), ("0:1", "0:2"));
        let mut rows = RawRows::default();
        rows.keep(false);
        rows.keep(false);
        let mut out = Vec::new();
        rows.finish(decoded.raw.clone(), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].batch, decoded.raw);
        // A verdict count that does not fit is an error, not a panic.
        assert!(RawRows::default().finish(decoded.raw, &mut out).is_err());
    }

    #[test]
    fn an_event_too_far_ahead_is_a_dead_letter() {
        let line = ping("a", "2026-11-20T12:00:00.000Z");
        let mut d = Decoder::new("file:x", PositionStyle::Line, Some(60_000));
        let decoded = d.decode(&batch(&[&line]), 0).unwrap();
        assert!(matches!(decoded.records[0], Decoded::Invalid));
        assert_eq!(decoded.raw.num_rows(), 0);
        let reason = decoded
            .dead
            .column(1)
            .as_string::<i32>()
            .value(0)
            .to_owned();
        assert!(reason.contains("1m ahead"), "{reason}");
    }
}
