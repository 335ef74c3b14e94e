//! Helpers: run a pipeline in memory and read its output back as plain values.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMillisecondType};
use rushhour_processor::source::{PositionStyle, SourceBatch};
use rushhour_processor::{Counters, Pipeline, PipelineConfig, TableBatch};
use rushhour_schemas::Table;
use rushhour_schemas::time::format_millis;

/// One cell, comparable with a tolerance for floats.
#[derive(Debug, Clone)]
pub enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    Bytes(Vec<u8>),
    Other,
}

impl PartialEq for Cell {
    fn eq(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Float(a), Cell::Float(b)) => {
                (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
            }
            (Cell::Null, Cell::Null) | (Cell::Other, Cell::Other) => true,
            (Cell::Int(a), Cell::Int(b)) => a == b,
            (Cell::Str(a), Cell::Str(b)) => a == b,
            (Cell::Bool(a), Cell::Bool(b)) => a == b,
            (Cell::Bytes(a), Cell::Bytes(b)) => a == b,
            _ => false,
        }
    }
}

/// Shorthands for expected rows.
pub fn s(v: &str) -> Cell {
    Cell::Str(v.into())
}
pub fn i(v: i64) -> Cell {
    Cell::Int(v)
}
pub fn f(v: f64) -> Cell {
    Cell::Float(v)
}
pub fn null() -> Cell {
    Cell::Null
}
/// A timestamp cell from RFC 3339 text (timestamps are rendered as text).
pub fn t(v: &str) -> Cell {
    let ms = rushhour_schemas::time::parse_rfc3339_millis(v).unwrap();
    Cell::Str(format_millis(ms))
}

fn cell(col: &dyn Array, row: usize) -> Cell {
    if col.is_null(row) {
        return Cell::Null;
    }
    match col.data_type() {
        DataType::Utf8 => Cell::Str(col.as_string::<i32>().value(row).to_owned()),
        DataType::Int64 => Cell::Int(col.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => Cell::Float(col.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => Cell::Bool(col.as_boolean().value(row)),
        DataType::Binary => Cell::Bytes(col.as_binary::<i32>().value(row).to_vec()),
        DataType::Timestamp(_, _) => Cell::Str(format_millis(
            col.as_primitive::<TimestampMillisecondType>().value(row),
        )),
        _ => Cell::Other,
    }
}

/// Rows of every table, in the order written.
#[derive(Debug, Default)]
pub struct Lake {
    pub tables: BTreeMap<Table, Vec<Vec<Cell>>>,
    pub raw_partitions: Vec<String>,
}

impl Lake {
    pub fn add(&mut self, out: Vec<TableBatch>) {
        for tb in out {
            assert_eq!(
                tb.batch.schema(),
                tb.table.schema(),
                "schema of {:?}",
                tb.table
            );
            if tb.table == Table::RawEvents {
                self.raw_partitions.push(tb.partition.clone());
            }
            let rows = self.tables.entry(tb.table).or_default();
            for r in 0..tb.batch.num_rows() {
                rows.push(
                    tb.batch
                        .columns()
                        .iter()
                        .map(|c| cell(c.as_ref(), r))
                        .collect(),
                );
            }
        }
    }

    /// Rows of a table, sorted by their text form (for order-free comparison).
    pub fn sorted(&self, table: Table) -> Vec<Vec<Cell>> {
        let mut rows = self.tables.get(&table).cloned().unwrap_or_default();
        rows.sort_by_key(|r| format!("{r:?}"));
        rows
    }
}

/// Runs `records` (partition, bytes) through a pipeline in the given batches, with a
/// watermark step after each batch; returns the lake and the counters.
pub fn run_batches(
    cfg: PipelineConfig,
    partitions: u32,
    batches: &[Vec<(u32, Vec<u8>)>],
) -> (Lake, Counters) {
    let mut p = pipeline(&cfg, partitions);
    let mut lake = Lake::default();
    let mut offsets = vec![0u64; partitions as usize];
    for batch in batches {
        feed(&mut p, &mut lake, &mut offsets, batch);
    }
    p.flush_all();
    lake.add(p.take_output().unwrap());
    (lake, p.counters())
}

/// Hands `batch` to `p` (a source batch holds one partition: runs of the same
/// partition are split), then steps the watermark and collects the output.
fn feed(p: &mut Pipeline, lake: &mut Lake, offsets: &mut [u64], batch: &[(u32, Vec<u8>)]) {
    let mut k = 0;
    while k < batch.len() {
        let part = batch[k].0;
        let mut sb = SourceBatch {
            partition: part,
            ..Default::default()
        };
        while k < batch.len() && batch[k].0 == part {
            let start = sb.data.len();
            sb.data.extend_from_slice(&batch[k].1);
            sb.records
                .push((start..sb.data.len(), offsets[part as usize]));
            offsets[part as usize] += 1;
            k += 1;
        }
        p.process_batch(&sb, 0).unwrap();
    }
    p.advance();
    lake.add(p.take_output().unwrap());
}

/// A pipeline over the test source.
fn pipeline(cfg: &PipelineConfig, partitions: u32) -> Pipeline {
    Pipeline::holding(
        cfg.clone(),
        "test:in",
        PositionStyle::PartitionOffset,
        0..partitions,
    )
}

/// A first process up to a checkpoint: the pipeline, what it wrote, the source
/// offsets and the checkpoint, taken after the first `cut` batches.
struct Checkpointed {
    first: Pipeline,
    lake: Lake,
    offsets: Vec<u64>,
    checkpoint: Vec<u8>,
}

fn run_to_checkpoint(
    cfg: &PipelineConfig,
    partitions: u32,
    batches: &[Vec<(u32, Vec<u8>)>],
    cut: usize,
) -> Checkpointed {
    let mut first = pipeline(cfg, partitions);
    let mut lake = Lake::default();
    let mut offsets = vec![0u64; partitions as usize];
    for batch in &batches[..cut] {
        feed(&mut first, &mut lake, &mut offsets, batch);
    }
    lake.add(first.take_output().unwrap());
    let checkpoint = first.snapshot().unwrap();
    Checkpointed {
        first,
        lake,
        offsets,
        checkpoint,
    }
}

/// A restart: one process runs the first `cut` batches and takes a checkpoint; a new
/// one restores it whole and runs the rest. Returns the lake both wrote and the final
/// counters.
pub fn run_restarted(
    cfg: PipelineConfig,
    partitions: u32,
    batches: &[Vec<(u32, Vec<u8>)>],
    cut: usize,
) -> (Lake, Counters) {
    let Checkpointed {
        mut lake,
        mut offsets,
        checkpoint,
        ..
    } = run_to_checkpoint(&cfg, partitions, batches, cut);
    let mut second = pipeline(&cfg, partitions);
    second.restore(&checkpoint).unwrap();
    for batch in &batches[cut..] {
        feed(&mut second, &mut lake, &mut offsets, batch);
    }
    second.flush_all();
    lake.add(second.take_output().unwrap());
    (lake, second.counters())
}

/// A consumer-group rebalance in miniature: one process runs the first `cut` batches,
/// takes a checkpoint and gives up the partitions in `moved`; a second process
/// restores just those partitions' state from the checkpoint. Both then read the rest
/// of their own partitions. Returns the lake both wrote and their summed counters.
pub fn run_with_moved_partitions(
    cfg: PipelineConfig,
    partitions: u32,
    batches: &[Vec<(u32, Vec<u8>)>],
    cut: usize,
    moved: &[u32],
) -> (Lake, Counters) {
    let Checkpointed {
        mut first,
        mut lake,
        mut offsets,
        checkpoint,
    } = run_to_checkpoint(&cfg, partitions, batches, cut);
    let mut second = pipeline(&cfg, partitions);
    for part in 0..partitions {
        if moved.contains(&part) {
            first.release_partition(part);
            second.restore_partition(&checkpoint, part).unwrap();
        } else {
            second.release_partition(part);
        }
    }
    for batch in &batches[cut..] {
        let (theirs, ours): (Vec<_>, Vec<_>) =
            batch.iter().cloned().partition(|(p, _)| moved.contains(p));
        feed(&mut first, &mut lake, &mut offsets, &ours);
        feed(&mut second, &mut lake, &mut offsets, &theirs);
    }
    let mut counters = Counters::default();
    for p in [&mut first, &mut second] {
        p.flush_all();
        lake.add(p.take_output().unwrap());
        counters += p.counters();
    }
    (lake, counters)
}

/// Two processes from the start, the second holding the partitions in `theirs`, with
/// rider contributions routed by rider as in a consumer group
/// ([`Pipeline::route_riders`]). After every batch both "commit": each hands the other
/// the credits it wrote and the floors of the partitions it holds, which bound the
/// other's rider windows (what `rushhour_processor::group` does through the checkpoint
/// store). Returns the lake both wrote, and their counters.
pub fn run_split_routed(
    cfg: PipelineConfig,
    partitions: u32,
    batches: &[Vec<(u32, Vec<u8>)>],
    theirs: &[u32],
) -> (Lake, Counters) {
    let mut procs = [(); 2].map(|()| {
        let mut p = Pipeline::new(cfg.clone(), "test:in", PositionStyle::PartitionOffset);
        p.route_riders(partitions);
        p
    });
    for part in 0..partitions {
        procs[usize::from(theirs.contains(&part))].hold(part);
    }
    let mut lake = Lake::default();
    let mut offsets = vec![0u64; partitions as usize];
    for (epoch, batch) in (1..).zip(batches) {
        for (k, p) in procs.iter_mut().enumerate() {
            let share: Vec<(u32, Vec<u8>)> = batch
                .iter()
                .filter(|(part, _)| usize::from(theirs.contains(part)) == k)
                .cloned()
                .collect();
            feed(p, &mut lake, &mut offsets, &share);
        }
        let sent: Vec<_> = procs
            .iter_mut()
            .map(|p| {
                let floor = p.floors().values().copied().min().unwrap_or(i64::MAX);
                (p.take_credits(), floor)
            })
            .collect();
        for (k, p) in procs.iter_mut().enumerate() {
            let (credits, floor) = &sent[1 - k];
            for (&part, credits) in credits {
                assert!(p.apply_credits(part, 1 - k as u64, epoch, credits));
            }
            p.set_rider_bound(*floor);
            p.advance();
            lake.add(p.take_output().unwrap());
        }
    }
    let mut counters = Counters::default();
    for p in &mut procs {
        p.flush_all();
        lake.add(p.take_output().unwrap());
        counters += p.counters();
    }
    (lake, counters)
}
