//! What operators hand to the sink: record batches by table, through a [`Collector`].

use arrow::array::TimestampMillisecondBuilder;
use arrow::record_batch::RecordBatch;
use rushhour_schemas::Table;

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

/// Where operators put the record batches of their curated tables.
#[derive(Debug)]
pub struct Collector<'a> {
    out: &'a mut Vec<TableBatch>,
}

impl<'a> Collector<'a> {
    /// A collector adding to `out`.
    pub fn new(out: &'a mut Vec<TableBatch>) -> Collector<'a> {
        Collector { out }
    }

    /// Adds `batch` of the (unpartitioned) table `table`; an empty batch is dropped.
    pub fn emit(&mut self, table: Table, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.out.push(TableBatch {
                table,
                partition: String::new(),
                batch,
            });
        }
    }
}

/// A builder of the contract's timestamps (milliseconds, UTC).
pub fn ts_builder() -> TimestampMillisecondBuilder {
    TimestampMillisecondBuilder::new().with_timezone("UTC")
}

/// Milliseconds → seconds, as the curated tables spell durations.
pub fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}
