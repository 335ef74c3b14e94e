//! The lake's tables (CONTRACT §3 and §4): names, paths and Arrow schemas.
//!
//! The Arrow types are chosen so that Parquet gets the contract's physical types:
//! `Timestamp(Millisecond, "UTC")` becomes `TIMESTAMP(MILLIS, UTC)`, `Int64` is `INT64`,
//! `Float64` is `DOUBLE` and `Utf8` is `STRING`.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Every table rushhour writes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// `raw/events`: every accepted and late event, flattened.
    RawEvents,
    /// `raw/dead_letter`: every invalid record, with its bytes and the reason.
    DeadLetter,
    /// `curated/store_minute`: per store, tumbling one minute.
    StoreMinute,
    /// `curated/deliveries`: one row per accepted delivery.
    Deliveries,
    /// `curated/store_delivery_5m`: per store, sliding five minutes every minute.
    StoreDelivery5m,
    /// `curated/rider_minute`: per rider, tumbling one minute.
    RiderMinute,
    /// `curated/late_events`: events that arrived behind the watermark.
    LateEvents,
}

impl Table {
    /// All tables, raw first.
    pub const ALL: [Table; 7] = [
        Table::RawEvents,
        Table::DeadLetter,
        Table::StoreMinute,
        Table::Deliveries,
        Table::StoreDelivery5m,
        Table::RiderMinute,
        Table::LateEvents,
    ];

    /// The curated tables (CONTRACT §4).
    pub const CURATED: [Table; 5] = [
        Table::StoreMinute,
        Table::Deliveries,
        Table::StoreDelivery5m,
        Table::RiderMinute,
        Table::LateEvents,
    ];

    /// The SQL name under which `rushhour query` registers the table.
    pub fn name(self) -> &'static str {
        match self {
            Table::RawEvents => "raw_events",
            Table::DeadLetter => "dead_letter",
            Table::StoreMinute => "store_minute",
            Table::Deliveries => "deliveries",
            Table::StoreDelivery5m => "store_delivery_5m",
            Table::RiderMinute => "rider_minute",
            Table::LateEvents => "late_events",
        }
    }

    /// The table's directory under the lake root.
    pub fn dir(self) -> &'static str {
        match self {
            Table::RawEvents => "raw/events",
            Table::DeadLetter => "raw/dead_letter",
            Table::StoreMinute => "curated/store_minute",
            Table::Deliveries => "curated/deliveries",
            Table::StoreDelivery5m => "curated/store_delivery_5m",
            Table::RiderMinute => "curated/rider_minute",
            Table::LateEvents => "curated/late_events",
        }
    }

    /// Hive partition columns of the table's directory layout (not stored in the files).
    pub fn partition_columns(self) -> &'static [&'static str] {
        match self {
            Table::RawEvents => &["event_date", "event_hour"],
            _ => &[],
        }
    }

    /// The Arrow schema of the table's files.
    pub fn schema(self) -> SchemaRef {
        match self {
            Table::RawEvents => RAW_EVENTS.clone(),
            Table::DeadLetter => DEAD_LETTER.clone(),
            Table::StoreMinute => STORE_MINUTE.clone(),
            Table::Deliveries => DELIVERIES.clone(),
            Table::StoreDelivery5m => STORE_DELIVERY_5M.clone(),
            Table::RiderMinute => RIDER_MINUTE.clone(),
            Table::LateEvents => LATE_EVENTS.clone(),
        }
    }

    /// Looks a table up by its SQL name.
    pub fn by_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// The Arrow type of every timestamp in the lake.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn ts(name: &str, nullable: bool) -> Field {
    Field::new(name, timestamp_type(), nullable)
}
fn s(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}
fn i(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Int64, nullable)
}
fn f(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Float64, nullable)
}

/// The fields of one element of `items`.
pub fn item_fields() -> Fields {
    Fields::from(vec![
        s("product_id", false),
        i("qty", false),
        i("unit_price_cents", false),
    ])
}

/// The Arrow type of `items`.
pub fn items_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(item_fields()),
        true,
    )))
}

static RAW_EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        s("event_id", false),
        s("event_type", false),
        ts("event_time", false),
        s("order_id", true),
        s("store_id", true),
        s("rider_id", true),
        s("customer_id", true),
        s("channel", true),
        s("delivery_type", true),
        i("total_cents", true),
        Field::new("items", items_type(), true),
        f("lat", true),
        f("lon", true),
        f("speed_mps", true),
        s("reason", true),
        Field::new("is_late", DataType::Boolean, false),
        s("source", false),
        s("position", false),
        ts("ingest_time", false),
    ]))
});

static DEAD_LETTER: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("raw_bytes", DataType::Binary, false),
        s("error", false),
        s("source", false),
        s("position", false),
        ts("ingest_time", false),
    ]))
});

static STORE_MINUTE: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        ts("window_start", false),
        ts("window_end", false),
        s("store_id", false),
        i("orders_placed", false),
        i("online_orders", false),
        i("items_sold", false),
        i("revenue_cents", false),
        i("orders_picked_up", false),
        i("orders_delivered", false),
        i("orders_cancelled", false),
        f("delivery_s_sum", false),
        i("delivery_s_count", false),
        f("delivery_s_p50", true),
        f("delivery_s_p95", true),
    ]))
});

static DELIVERIES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        s("order_id", false),
        s("store_id", false),
        s("rider_id", false),
        ts("placed_at", true),
        ts("picked_up_at", true),
        ts("delivered_at", false),
        f("prep_s", true),
        f("transit_s", true),
        f("total_s", true),
    ]))
});

static STORE_DELIVERY_5M: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        ts("window_start", false),
        ts("window_end", false),
        s("store_id", false),
        i("deliveries", false),
        f("avg_total_s", true),
    ]))
});

static RIDER_MINUTE: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        ts("window_start", false),
        ts("window_end", false),
        s("rider_id", false),
        i("pings", false),
        f("distance_m", false),
        f("avg_speed_mps", true),
        i("deliveries", false),
    ]))
});

static LATE_EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        s("event_id", false),
        s("event_type", false),
        ts("event_time", false),
        ts("watermark", false),
        s("raw", false),
    ]))
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_dirs_are_distinct() {
        for t in Table::ALL {
            assert_eq!(Table::by_name(t.name()), Some(t));
        }
        let mut dirs: Vec<_> = Table::ALL.iter().map(|t| t.dir()).collect();
        dirs.sort();
        dirs.dedup();
        assert_eq!(dirs.len(), Table::ALL.len());
        for t in Table::CURATED {
            assert!(t.dir().starts_with("curated/"));
        }
    }

    #[test]
    fn raw_columns_follow_the_contract() {
        let names: Vec<_> = Table::RawEvents
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names.join(","),
            "event_id,event_type,event_time,order_id,store_id,rider_id,customer_id,channel,\
             delivery_type,total_cents,items,lat,lon,speed_mps,reason,is_late,source,position,ingest_time"
        );
    }
}
