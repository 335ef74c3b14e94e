//! JSON → Arrow: column builders for the raw tables.
//!
//! A decoded [`Event`] is appended straight into typed Arrow builders, column by
//! column; no intermediate row objects or JSON trees are built.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, ListBuilder,
    StringBuilder, StructBuilder, TimestampMillisecondBuilder,
};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::event::Event;
use crate::tables::{Table, item_fields};

/// Where a record came from, stamped on its raw row.
#[derive(Debug, Clone, Copy)]
pub struct Provenance<'a> {
    /// The source URL, e.g. `file:orders.jsonl`.
    pub source: &'a str,
    /// The record's position in the source, e.g. a line number or `partition:offset`.
    pub position: &'a str,
    /// Wall-clock time of processing, epoch milliseconds.
    pub ingest_time: i64,
}

fn ts_builder(capacity: usize) -> TimestampMillisecondBuilder {
    TimestampMillisecondBuilder::with_capacity(capacity).with_timezone("UTC")
}

/// Builds `raw/events` batches.
pub struct RawEventsBuilder {
    event_id: StringBuilder,
    event_type: StringBuilder,
    event_time: TimestampMillisecondBuilder,
    order_id: StringBuilder,
    store_id: StringBuilder,
    rider_id: StringBuilder,
    customer_id: StringBuilder,
    channel: StringBuilder,
    delivery_type: StringBuilder,
    total_cents: Int64Builder,
    items: ListBuilder<StructBuilder>,
    lat: Float64Builder,
    lon: Float64Builder,
    speed_mps: Float64Builder,
    reason: StringBuilder,
    is_late: BooleanBuilder,
    source: StringBuilder,
    position: StringBuilder,
    ingest_time: TimestampMillisecondBuilder,
    rows: usize,
}

impl RawEventsBuilder {
    /// A builder with room for `capacity` rows before it reallocates.
    pub fn with_capacity(capacity: usize) -> Self {
        let str_b = || StringBuilder::with_capacity(capacity, capacity * 12);
        let items = ListBuilder::new(StructBuilder::from_fields(item_fields(), capacity))
            .with_field(Arc::new(arrow::datatypes::Field::new(
                "item",
                arrow::datatypes::DataType::Struct(item_fields()),
                true,
            )));
        RawEventsBuilder {
            event_id: str_b(),
            event_type: str_b(),
            event_time: ts_builder(capacity),
            order_id: str_b(),
            store_id: str_b(),
            rider_id: str_b(),
            customer_id: str_b(),
            channel: str_b(),
            delivery_type: str_b(),
            total_cents: Int64Builder::with_capacity(capacity),
            items,
            lat: Float64Builder::with_capacity(capacity),
            lon: Float64Builder::with_capacity(capacity),
            speed_mps: Float64Builder::with_capacity(capacity),
            reason: str_b(),
            is_late: BooleanBuilder::with_capacity(capacity),
            source: str_b(),
            position: str_b(),
            ingest_time: ts_builder(capacity),
            rows: 0,
        }
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no rows are pending.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one valid event.
    pub fn append(&mut self, ev: &Event<'_>, is_late: bool, prov: Provenance<'_>) {
        self.event_id.append_value(&ev.event_id);
        self.event_type.append_value(ev.event_type.as_str());
        self.event_time.append_value(ev.event_time);
        self.order_id.append_option(ev.order_id.as_deref());
        self.store_id.append_option(ev.store_id.as_deref());
        self.rider_id.append_option(ev.rider_id.as_deref());
        self.customer_id.append_option(ev.customer_id.as_deref());
        self.channel.append_option(ev.channel.map(|c| c.as_str()));
        self.delivery_type
            .append_option(ev.delivery_type.map(|d| d.as_str()));
        self.total_cents.append_option(ev.total_cents);
        match &ev.items {
            Some(items) => {
                let values = self.items.values();
                for item in items {
                    if let Some(b) = values.field_builder::<StringBuilder>(0) {
                        b.append_value(&item.product_id);
                    }
                    if let Some(b) = values.field_builder::<Int64Builder>(1) {
                        b.append_value(item.qty);
                    }
                    if let Some(b) = values.field_builder::<Int64Builder>(2) {
                        b.append_value(item.unit_price_cents);
                    }
                    values.append(true);
                }
                self.items.append(true);
            }
            None => self.items.append(false),
        }
        self.lat.append_option(ev.lat);
        self.lon.append_option(ev.lon);
        self.speed_mps.append_option(ev.speed_mps);
        self.reason.append_option(ev.reason.as_deref());
        self.is_late.append_value(is_late);
        self.source.append_value(prov.source);
        self.position.append_value(prov.position);
        self.ingest_time.append_value(prov.ingest_time);
        self.rows += 1;
    }

    /// Takes the rows appended so far as a batch; the builder starts over empty.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.event_time.finish()),
            Arc::new(self.order_id.finish()),
            Arc::new(self.store_id.finish()),
            Arc::new(self.rider_id.finish()),
            Arc::new(self.customer_id.finish()),
            Arc::new(self.channel.finish()),
            Arc::new(self.delivery_type.finish()),
            Arc::new(self.total_cents.finish()),
            Arc::new(self.items.finish()),
            Arc::new(self.lat.finish()),
            Arc::new(self.lon.finish()),
            Arc::new(self.speed_mps.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.is_late.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.position.finish()),
            Arc::new(self.ingest_time.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(Table::RawEvents.schema(), columns)
    }
}

/// Builds `raw/dead_letter` batches.
pub struct DeadLetterBuilder {
    raw_bytes: BinaryBuilder,
    error: StringBuilder,
    source: StringBuilder,
    position: StringBuilder,
    ingest_time: TimestampMillisecondBuilder,
    rows: usize,
}

impl Default for DeadLetterBuilder {
    fn default() -> Self {
        DeadLetterBuilder {
            raw_bytes: BinaryBuilder::new(),
            error: StringBuilder::new(),
            source: StringBuilder::new(),
            position: StringBuilder::new(),
            ingest_time: ts_builder(0),
            rows: 0,
        }
    }
}

impl DeadLetterBuilder {
    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no rows are pending.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one invalid record, exactly as received.
    pub fn append(&mut self, raw: &[u8], error: &str, prov: Provenance<'_>) {
        self.raw_bytes.append_value(raw);
        self.error.append_value(error);
        self.source.append_value(prov.source);
        self.position.append_value(prov.position);
        self.ingest_time.append_value(prov.ingest_time);
        self.rows += 1;
    }

    /// Takes the rows appended so far as a batch.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.raw_bytes.finish()),
            Arc::new(self.error.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.position.finish()),
            Arc::new(self.ingest_time.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(Table::DeadLetter.schema(), columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;
    use arrow::array::{Array, AsArray};

    #[test]
    fn raw_rows_match_the_schema() {
        let lines = [
            r#"{"event_id":"a","event_type":"order_placed","event_time":"2026-11-21T12:00:00Z","order_id":"o","store_id":"s","items":[{"product_id":"p","qty":2,"unit_price_cents":5},{"product_id":"q","qty":1,"unit_price_cents":7}],"total_cents":17}"#,
            r#"{"event_id":"b","event_type":"rider_location","event_time":"2026-11-21T12:00:00Z","rider_id":"r","lat":1.5,"lon":2.5}"#,
        ];
        let mut b = RawEventsBuilder::with_capacity(4);
        for (n, line) in lines.iter().enumerate() {
            let ev = decode(line.as_bytes()).unwrap();
            let pos = (n + 1).to_string();
            b.append(
                &ev,
                n == 1,
                Provenance {
                    source: "file:x",
                    position: &pos,
                    ingest_time: 5,
                },
            );
        }
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let items = batch.column_by_name("items").unwrap().as_list::<i32>();
        assert_eq!(items.value(0).len(), 2);
        assert!(items.is_null(1));
        let late = batch.column_by_name("is_late").unwrap().as_boolean();
        assert!(!late.value(0) && late.value(1));
        assert!(b.is_empty());
    }

    #[test]
    fn dead_letter_keeps_bytes() {
        let mut b = DeadLetterBuilder::default();
        b.append(
            b"\xff{",
            "invalid UTF-8",
            Provenance {
                source: "s",
                position: "3",
                ingest_time: 0,
            },
        );
        let batch = b.finish().unwrap();
        assert_eq!(batch.column(0).as_binary::<i32>().value(0), b"\xff{");
    }
}

fn opt_str(a: &arrow::array::StringArray, i: usize) -> Option<&str> {
    use arrow::array::Array;
    (!a.is_null(i)).then(|| a.value(i))
}

/// Arrow → events: the rows of a `raw/events` batch as [`Event`]s (the inverse of
/// [`RawEventsBuilder`]; `is_late`, `source`, `position` and `ingest_time` are dropped).
pub fn events_from_raw(batch: &RecordBatch) -> Result<Vec<Event<'_>>, ArrowError> {
    use arrow::array::{Array, AsArray, ListArray, StringArray, StructArray};
    use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};

    use crate::event::{Channel, DeliveryType, EventType, Item};

    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("raw events have no column `{name}`")))
    };
    let strings = |name: &str| -> Result<&StringArray, ArrowError> {
        col(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| ArrowError::SchemaError(format!("column `{name}` is not a string")))
    };
    let floats = |name: &str| {
        col(name)?
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| ArrowError::SchemaError(format!("column `{name}` is not a double")))
    };
    let (id, ty) = (strings("event_id")?, strings("event_type")?);
    let time = col("event_time")?
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| {
            ArrowError::SchemaError("column `event_time` is not a ms timestamp".into())
        })?;
    let (order, store, rider, customer) = (
        strings("order_id")?,
        strings("store_id")?,
        strings("rider_id")?,
        strings("customer_id")?,
    );
    let (channel, delivery, reason) = (
        strings("channel")?,
        strings("delivery_type")?,
        strings("reason")?,
    );
    let total = col("total_cents")?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| ArrowError::SchemaError("column `total_cents` is not INT64".into()))?;
    let items: &ListArray = col("items")?
        .as_list_opt::<i32>()
        .ok_or_else(|| ArrowError::SchemaError("column `items` is not a list".into()))?;
    let (lat, lon, speed) = (floats("lat")?, floats("lon")?, floats("speed_mps")?);
    let opt_f = |a: &arrow::array::Float64Array, i: usize| (!a.is_null(i)).then(|| a.value(i));

    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let event_type = EventType::parse(ty.value(i)).ok_or_else(|| {
            ArrowError::InvalidArgumentError(format!("unknown event_type `{}`", ty.value(i)))
        })?;
        let mut ev = Event::new(id.value(i), event_type, time.value(i));
        ev.order_id = opt_str(order, i).map(Into::into);
        ev.store_id = opt_str(store, i).map(Into::into);
        ev.rider_id = opt_str(rider, i).map(Into::into);
        ev.customer_id = opt_str(customer, i).map(Into::into);
        ev.channel = match opt_str(channel, i) {
            Some("online") => Some(Channel::Online),
            Some("in_store") => Some(Channel::InStore),
            _ => None,
        };
        ev.delivery_type = match opt_str(delivery, i) {
            Some("delivery") => Some(DeliveryType::Delivery),
            Some("pickup") => Some(DeliveryType::Pickup),
            _ => None,
        };
        ev.total_cents = (!total.is_null(i)).then(|| total.value(i));
        if !items.is_null(i) {
            let list = items.value(i);
            let s: &StructArray = list
                .as_struct_opt()
                .ok_or_else(|| ArrowError::SchemaError("items are not structs".into()))?;
            let pid = s.column(0).as_string_opt::<i32>();
            let qty = s.column(1).as_primitive_opt::<Int64Type>();
            let price = s.column(2).as_primitive_opt::<Int64Type>();
            let (Some(pid), Some(qty), Some(price)) = (pid, qty, price) else {
                return Err(ArrowError::SchemaError(
                    "items have unexpected types".into(),
                ));
            };
            ev.items = Some(
                (0..s.len())
                    .map(|k| Item {
                        product_id: pid.value(k).to_owned().into(),
                        qty: qty.value(k),
                        unit_price_cents: price.value(k),
                    })
                    .collect(),
            );
        }
        ev.lat = opt_f(lat, i);
        ev.lon = opt_f(lon, i);
        ev.speed_mps = opt_f(speed, i);
        ev.reason = opt_str(reason, i).map(Into::into);
        out.push(ev);
    }
    Ok(out)
}

#[cfg(test)]
mod round_trip {
    use super::*;
    use crate::decode::decode;

    #[test]
    fn raw_rows_read_back_as_the_same_events() {
        let lines = [
            r#"{"event_id":"a","event_type":"order_placed","event_time":"2026-11-21T12:00:00Z","order_id":"o","store_id":"s","items":[{"product_id":"p","qty":2,"unit_price_cents":5}],"total_cents":10,"channel":"online","delivery_type":"pickup","customer_id":"c"}"#,
            r#"{"event_id":"b","event_type":"rider_location","event_time":"2026-11-21T12:00:01.5Z","rider_id":"r","lat":1.5,"lon":-2.5,"speed_mps":3.25,"order_id":"o"}"#,
            r#"{"event_id":"c","event_type":"order_cancelled","event_time":"2026-11-21T12:00:02Z","order_id":"o","store_id":"s","reason":"rain"}"#,
        ];
        let events: Vec<Event<'_>> = lines
            .iter()
            .map(|l| decode(l.as_bytes()).unwrap())
            .collect();
        let mut b = RawEventsBuilder::with_capacity(3);
        for ev in &events {
            b.append(
                ev,
                false,
                Provenance {
                    source: "s",
                    position: "1",
                    ingest_time: 0,
                },
            );
        }
        let batch = b.finish().unwrap();
        assert_eq!(events_from_raw(&batch).unwrap(), events);
    }
}
