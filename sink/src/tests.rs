use std::fs::File;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rushhour_schemas::{Provenance, RawEventsBuilder, decode};

use super::*;

fn raw_batch(n: usize) -> TableBatch {
    let mut b = RawEventsBuilder::with_capacity(n);
    for i in 0..n {
        let line = format!(
            r#"{{"event_id":"e{i}","event_type":"order_cancelled","event_time":"2026-11-21T12:00:00Z","order_id":"o{i}","store_id":"s"}}"#
        );
        let ev = decode(line.as_bytes()).unwrap();
        b.append(
            &ev,
            false,
            Provenance {
                source: "file:x",
                position: "1",
                ingest_time: 0,
            },
        );
    }
    TableBatch {
        table: Table::RawEvents,
        partition: "event_date=2026-11-21/event_hour=12".into(),
        batch: b.finish().unwrap(),
    }
}

fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(dir).unwrap().display().to_string());
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn stage_then_publish_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let mut sink = ParquetSink::new(lake, "p", "run1", SinkOptions::default()).unwrap();
    sink.write(raw_batch(3)).unwrap();
    sink.write(raw_batch(2)).unwrap();
    let files = sink.prepare_commit(1).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].rows, 5);
    // Staged only: nothing where readers look.
    assert!(
        files_under(dir.path())
            .iter()
            .all(|f| f.starts_with("_staging/"))
    );
    sink.publish(&files).unwrap();
    sink.publish(&files).unwrap(); // again: a no-op
    let published = files_under(dir.path());
    assert_eq!(published.len(), 1, "{published:?}");
    assert!(
        published[0]
            .starts_with("raw/events/event_date=2026-11-21/event_hour=12/part-p-000001-run1-")
    );
    let reader = ParquetRecordBatchReaderBuilder::try_new(
        File::open(dir.path().join(&published[0])).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 5);
}

#[test]
fn small_target_size_rolls_files() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let opts = SinkOptions {
        target_file_bytes: 1,
        ..SinkOptions::default()
    };
    let mut sink = ParquetSink::new(lake, "p", "r", opts).unwrap();
    for _ in 0..3 {
        sink.write(raw_batch(2)).unwrap();
    }
    let files = sink.prepare_commit(1).unwrap();
    assert_eq!(files.len(), 3);
    sink.publish(&files).unwrap();
    sink.write(raw_batch(1)).unwrap();
    let _never_committed = sink.prepare_commit(2).unwrap();
    assert_eq!(sink.clean_staging().unwrap(), 1);
    assert!(
        files_under(dir.path())
            .iter()
            .all(|f| !f.starts_with("_staging/"))
    );
    let lost = StagedFile {
        staged: "_staging/x.parquet".into(),
        target: "raw/x.parquet".into(),
        ..files[0].clone()
    };
    assert!(
        sink.publish(&[lost])
            .unwrap_err()
            .to_string()
            .contains("neither")
    );
}
