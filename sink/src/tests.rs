use std::fs::File;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rushhour_schemas::{Provenance, RawEventsBuilder, decode};

use super::*;

fn io() -> rushhour_cloud::Io {
    rushhour_cloud::Io::new(1).unwrap()
}

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
    let lake = Lake::open(dir.path().to_str().unwrap(), &io()).unwrap();
    let mut sink = ParquetSink::new(lake, "p", 3, SinkOptions::default()).unwrap();
    // No epoch begun: refused (a bug in the caller, not a silent epoch 1).
    assert!(sink.write(raw_batch(1)).is_err());
    sink.begin_epoch(7);
    sink.write(raw_batch(3)).unwrap();
    sink.write(raw_batch(2)).unwrap();
    assert!(sink.prepare_commit(6).is_err(), "not the open epoch");
    let files = sink.prepare_commit(7).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].rows, 5);
    sink.verify_staged(&files).unwrap();
    // Staged only: nothing where readers look.
    assert!(
        files_under(dir.path())
            .iter()
            .all(|f| f.starts_with("_staging/p/g00000000000000000003/"))
    );
    sink.publish(&files).unwrap();
    sink.publish(&files).unwrap(); // again: a no-op
    let published = files_under(dir.path());
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(
        published[0],
        "raw/events/event_date=2026-11-21/event_hour=12/part-p.00000000000000000007-g3-0001.parquet"
    );
    let reader = ParquetRecordBatchReaderBuilder::try_new(
        File::open(dir.path().join(&published[0])).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 5);
    // Published: no longer staged, so a checkpoint could not name it.
    assert!(
        sink.verify_staged(&files)
            .unwrap_err()
            .to_string()
            .contains("gone")
    );
}

#[test]
fn small_target_size_rolls_files() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), &io()).unwrap();
    let opts = SinkOptions {
        target_file_bytes: 1,
        ..SinkOptions::default()
    };
    let mut sink = ParquetSink::new(lake, "p", 1, opts).unwrap();
    sink.begin_epoch(1);
    for _ in 0..3 {
        sink.write(raw_batch(2)).unwrap();
    }
    let files = sink.prepare_commit(1).unwrap();
    assert_eq!(files.len(), 3);
    sink.publish(&files).unwrap();
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

#[test]
fn staging_is_cleaned_only_for_older_generations() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), &io()).unwrap();
    let mut sinks: Vec<ParquetSink> = [1, 2, 3]
        .into_iter()
        .map(|g| ParquetSink::new(lake.clone(), "p", g, SinkOptions::default()).unwrap())
        .collect();
    // Another pipeline whose name starts like this one's.
    sinks.push(ParquetSink::new(lake.clone(), "p-2", 1, SinkOptions::default()).unwrap());
    for sink in &mut sinks {
        sink.begin_epoch(1);
        sink.write(raw_batch(1)).unwrap();
        sink.prepare_commit(1).unwrap();
    }
    // Generation 2 cleans up after 1, never after itself, 3, or pipeline p-2.
    assert_eq!(sinks[1].clean_staging(Stale::Generation(2)).unwrap(), 0);
    assert_eq!(sinks[1].clean_staging(Stale::OlderThanMine).unwrap(), 1);
    let left: Vec<String> = files_under(dir.path())
        .into_iter()
        .map(|f| f.split('/').take(3).collect::<Vec<_>>().join("/"))
        .collect();
    assert_eq!(
        left,
        [
            "_staging/p-2/g00000000000000000001",
            "_staging/p/g00000000000000000002",
            "_staging/p/g00000000000000000003",
        ]
    );
}

#[test]
fn retraction_takes_exactly_the_undone_epochs_of_this_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), &io()).unwrap();
    let mut published = Vec::new();
    for (pipeline, epochs) in [("p", 1..=5), ("p-2", 1..=5)] {
        let mut sink = ParquetSink::new(lake.clone(), pipeline, 1, SinkOptions::default()).unwrap();
        for e in epochs {
            sink.begin_epoch(e);
            sink.write(raw_batch(1)).unwrap();
            let files = sink.prepare_commit(e).unwrap();
            sink.publish(&files).unwrap();
            published.extend(files);
        }
    }
    let mut sink = ParquetSink::new(lake, "p", 2, SinkOptions::default()).unwrap();
    // Undo epochs 3 and 4 of p (after 2, before 5); the listed file is one of them.
    let listed = [published[2].target.clone()];
    assert_eq!(sink.retract(2, 5, &listed).unwrap(), 2);
    assert_eq!(sink.retract(2, 5, &listed).unwrap(), 0, "idempotent");
    let epochs: Vec<(String, u64)> = files_under(dir.path())
        .into_iter()
        .filter_map(|f| {
            let name = f.rsplit('/').next().unwrap().to_owned();
            ["p", "p-2"]
                .into_iter()
                .find_map(|p| file_epoch(&name, p).map(|e| (p.to_owned(), e)))
        })
        .collect();
    let mut epochs = epochs;
    epochs.sort();
    let want: Vec<(String, u64)> = [1, 2, 5]
        .map(|e| ("p".to_owned(), e))
        .into_iter()
        .chain((1..=5).map(|e| ("p-2".to_owned(), e)))
        .collect();
    assert_eq!(epochs, want);
}

#[test]
fn file_names_carry_pipeline_and_epoch_exactly() {
    let name = file_name("orders", 1_000_000, 4, 12);
    assert_eq!(name, "part-orders.00000000000001000000-g4-0012.parquet");
    assert_eq!(file_epoch(&name, "orders"), Some(1_000_000));
    assert_eq!(file_epoch(&name, "order"), None);
    assert_eq!(file_epoch(&name, "orders-2"), None);
    assert_eq!(
        file_epoch(&file_name("p", u64::MAX, 1, 1), "p"),
        Some(u64::MAX)
    );
    // The layout before epochs were fixed-width is not mistaken for one.
    assert_eq!(
        file_epoch("part-orders-000001-18c2f-0001.parquet", "orders"),
        None
    );
    assert!(
        ParquetSink::new(
            Lake::open(tempfile::tempdir().unwrap().path().to_str().unwrap(), &io()).unwrap(),
            "a.b",
            1,
            SinkOptions::default()
        )
        .is_err()
    );
}
