//! Throughput of the hot path, stage by stage: decoding, the record path with its
//! operators, and Parquet encoding. Inputs come from the generator and are built
//! outside the timed part. `cargo bench -p rushhour-benches`.

#![allow(clippy::unwrap_used, clippy::print_stderr, missing_docs)] // a benchmark harness, not library code

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rushhour_processor::source::{PositionStyle, SourceBatch};
use rushhour_processor::{LakeSink, Pipeline, PipelineConfig};
use rushhour_producer::{Produced, SimConfig, Simulation};
use rushhour_sink::{Lake, ParquetSink, SinkOptions};

fn events(orders: u64) -> Vec<String> {
    let mut sim = Simulation::new(
        &SimConfig {
            seed: 7,
            ..SimConfig::default()
        },
        Some(orders),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut p = Produced::default();
    while sim.next_into(&mut p) {
        out.push(p.payload.clone());
    }
    out
}

fn source_batches(lines: &[String], per_batch: usize) -> Vec<SourceBatch> {
    let mut batches = Vec::new();
    for (k, chunk) in lines.chunks(per_batch).enumerate() {
        let mut b = SourceBatch::default();
        for (j, line) in chunk.iter().enumerate() {
            let start = b.data.len();
            b.data.extend_from_slice(line.as_bytes());
            b.records
                .push((start..b.data.len(), (k * per_batch + j) as u64));
        }
        batches.push(b);
    }
    batches
}

fn bench(c: &mut Criterion) {
    let lines = events(3_000);
    let n = lines.len() as u64;
    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);

    g.bench_function("decode", |b| {
        b.iter(|| {
            for line in &lines {
                let _ = black_box(rushhour_schemas::decode(line.as_bytes()));
            }
        })
    });

    let batches = source_batches(&lines, 4096);
    g.bench_function("pipeline", |b| {
        b.iter_batched(
            || {
                Pipeline::holding(
                    PipelineConfig::default(),
                    "bench",
                    PositionStyle::Line,
                    0..1,
                )
            },
            |mut p| {
                for batch in &batches {
                    p.process_batch(batch, 0).unwrap();
                    p.advance();
                    black_box(p.take_output().unwrap());
                }
                p.flush_all();
                black_box(p.take_output().unwrap())
            },
            BatchSize::LargeInput,
        )
    });

    let mut p = Pipeline::holding(
        PipelineConfig::default(),
        "bench",
        PositionStyle::Line,
        0..1,
    );
    let mut outputs = Vec::new();
    for batch in &batches {
        p.process_batch(batch, 0).unwrap();
        p.advance();
        outputs.extend(p.take_output().unwrap());
    }
    p.flush_all();
    outputs.extend(p.take_output().unwrap());
    let io = rushhour_cloud::Io::new(1).unwrap();
    g.bench_function("parquet", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let lake = Lake::open(dir.path().to_str().unwrap(), &io).unwrap();
                let mut sink = ParquetSink::new(lake, "bench", 1, SinkOptions::default()).unwrap();
                sink.begin_epoch(1);
                (dir, sink, outputs.clone())
            },
            |(dir, mut sink, outputs)| {
                for o in outputs {
                    sink.write(o).unwrap();
                }
                let files = sink.prepare_commit(1).unwrap();
                sink.publish(&files).unwrap();
                drop(dir);
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// Checkpoint of a pipeline holding one million open orders: size and time.
fn checkpoint(c: &mut Criterion) {
    const ORDERS: usize = 1_000_000;
    let fresh = || {
        Pipeline::holding(
            PipelineConfig::default(),
            "bench",
            PositionStyle::PartitionOffset,
            0..4,
        )
    };
    let mut p = fresh();
    let lines: Vec<String> = (0..ORDERS)
        .map(|k| {
            format!(
                r#"{{"event_id":"e{k}","event_type":"order_placed","event_time":"2026-11-21T12:{:02}:{:02}.{:03}Z","order_id":"o-{k:07}","store_id":"store-{:03}","items":[{{"product_id":"margherita","qty":1,"unit_price_cents":900}}],"total_cents":900}}"#,
                (k / 60_000) % 60,
                (k / 1000) % 60,
                k % 1000,
                k % 40
            )
        })
        .collect();
    for (k, batch) in source_batches(&lines, 8192).iter_mut().enumerate() {
        batch.partition = (k % 4) as u32;
        p.process_batch(batch, 0).unwrap();
    }
    let _ = p.take_output().unwrap();
    let state = p.snapshot().unwrap();
    eprintln!(
        "checkpoint of {ORDERS} open orders ({} state entries): {:.1} MB compressed",
        p.state_entries(),
        state.len() as f64 / 1e6
    );
    let mut g = c.benchmark_group("checkpoint");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ORDERS as u64));
    g.bench_function("snapshot_1m_open_orders", |b| {
        b.iter(|| black_box(p.snapshot().unwrap()))
    });
    g.bench_function("restore_1m_open_orders", |b| {
        b.iter_batched(
            fresh,
            |mut p| p.restore(&state).unwrap(),
            BatchSize::LargeInput,
        )
    });
    // What a process taking over one partition in a rebalance reads: a quarter.
    g.bench_function("restore_one_of_4_partitions", |b| {
        b.iter_batched(
            fresh,
            |mut p| p.restore_partition(&state, 2).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench, checkpoint);
criterion_main!(benches);
