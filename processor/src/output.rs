//! Curated rows → Arrow record batches with the contract's schemas.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use rushhour_schemas::Table;
use rushhour_schemas::time::MINUTE_MS;

use crate::operator::percentile_cont;
use crate::operator::{
    Curated, DeliveryRow, LateRow, RiderMinuteRow, StoreDeliveryRow, StoreMinuteRow,
};
use crate::store::SLIDE_SIZE_MS;

/// A batch of rows for one table, and the hive partition directory it belongs in
/// (`event_date=…/event_hour=…` for raw events, empty otherwise).
#[derive(Debug, Clone)]
pub struct TableBatch {
    /// The table.
    pub table: Table,
    /// Hive partition path inside the table directory, or empty.
    pub partition: String,
    /// The rows.
    pub batch: RecordBatch,
}

fn ts() -> TimestampMillisecondBuilder {
    TimestampMillisecondBuilder::new().with_timezone("UTC")
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn store_minute(rows: &[StoreMinuteRow]) -> Result<RecordBatch, ArrowError> {
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

fn deliveries(rows: &[DeliveryRow]) -> Result<RecordBatch, ArrowError> {
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

fn store_delivery_5m(rows: &[StoreDeliveryRow]) -> Result<RecordBatch, ArrowError> {
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

fn rider_minute(rows: &[RiderMinuteRow]) -> Result<RecordBatch, ArrowError> {
    let (mut start, mut end, mut rider) = (ts(), ts(), StringBuilder::new());
    let (mut pings, mut dist, mut speed, mut deliveries) = (
        Int64Builder::new(),
        Float64Builder::new(),
        Float64Builder::new(),
        Int64Builder::new(),
    );
    for r in rows {
        start.append_value(r.window_start);
        end.append_value(r.window_start + MINUTE_MS);
        rider.append_value(&r.rider_id);
        pings.append_value(r.pings);
        dist.append_value(r.distance_m);
        speed.append_option(r.avg_speed_mps);
        deliveries.append_value(r.deliveries);
    }
    RecordBatch::try_new(
        Table::RiderMinute.schema(),
        vec![
            Arc::new(start.finish()),
            Arc::new(end.finish()),
            Arc::new(rider.finish()),
            Arc::new(pings.finish()),
            Arc::new(dist.finish()),
            Arc::new(speed.finish()),
            Arc::new(deliveries.finish()),
        ],
    )
}

fn late_events(rows: &[LateRow]) -> Result<RecordBatch, ArrowError> {
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

/// Turns held curated rows into table batches (sorted by key), leaving `rows` empty.
pub fn curated_batches(rows: &mut Curated) -> Result<Vec<TableBatch>, ArrowError> {
    rows.sort();
    let mut out = Vec::new();
    let mut push = |table: Table, batch: RecordBatch| {
        if batch.num_rows() > 0 {
            out.push(TableBatch {
                table,
                partition: String::new(),
                batch,
            });
        }
    };
    push(Table::StoreMinute, store_minute(&rows.store_minute)?);
    push(Table::Deliveries, deliveries(&rows.deliveries)?);
    push(
        Table::StoreDelivery5m,
        store_delivery_5m(&rows.store_delivery_5m)?,
    );
    push(Table::RiderMinute, rider_minute(&rows.rider_minute)?);
    push(Table::LateEvents, late_events(&rows.late_events)?);
    *rows = Curated::default();
    Ok(out)
}
