//! `rushhour-query` against tiny lakes written with the lake's own schemas.

#![allow(clippy::unwrap_used)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use parquet::arrow::ArrowWriter;
use rushhour_query::{OutputFormat, QueryError, lake_context, run_query};
use rushhour_schemas::{Provenance, RawEventsBuilder, Table, decode};
use tempfile::TempDir;

const DAY: &str = "event_date=2026-11-21";

const HOUR_12: [&str; 2] = [
    r#"{"event_id":"e1","event_type":"order_placed","event_time":"2026-11-21T12:00:01.250Z","order_id":"o1","store_id":"s1","items":[{"product_id":"p1","qty":2,"unit_price_cents":350}],"total_cents":700,"channel":"online"}"#,
    r#"{"event_id":"e2","event_type":"rider_location","event_time":"2026-11-21T12:00:02Z","rider_id":"r1","lat":52.5,"lon":13.4}"#,
];
const HOUR_13: [&str; 1] = [
    r#"{"event_id":"e3","event_type":"order_delivered","event_time":"2026-11-21T13:10:00Z","order_id":"o1","store_id":"s1","rider_id":"r1"}"#,
];
const STAGED: [&str; 1] = [
    r#"{"event_id":"staged","event_type":"order_cancelled","event_time":"2026-11-21T12:30:00Z","order_id":"o9","store_id":"s9"}"#,
];

/// 2026-11-21T12:00:00Z in epoch milliseconds.
const NOON: i64 = 1_795_262_400_000;

fn raw_batch(lines: &[&str]) -> RecordBatch {
    let mut builder = RawEventsBuilder::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let event = decode(line.as_bytes()).unwrap();
        let position = (i + 1).to_string();
        let prov = Provenance {
            source: "file:events.jsonl",
            position: &position,
            ingest_time: NOON + 3_600_000 * 2,
        };
        builder.append(&event, false, prov);
    }
    builder.finish().unwrap()
}

fn ts(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(values).with_timezone("UTC"))
}

fn store_minute_batch() -> RecordBatch {
    let int = |v: Vec<i64>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
    let columns: Vec<ArrayRef> = vec![
        ts(vec![NOON, NOON + 60_000]),
        ts(vec![NOON + 60_000, NOON + 120_000]),
        Arc::new(StringArray::from(vec!["s1", "s2"])),
        int(vec![1, 0]),
        int(vec![1, 0]),
        int(vec![2, 0]),
        int(vec![700, 0]),
        int(vec![0, 1]),
        int(vec![0, 1]),
        int(vec![0, 0]),
        Arc::new(Float64Array::from(vec![0.0, 754.5])),
        int(vec![0, 1]),
        Arc::new(Float64Array::from(vec![None, Some(754.5)])),
        Arc::new(Float64Array::from(vec![None, Some(754.5)])),
    ];
    RecordBatch::try_new(Table::StoreMinute.schema(), columns).unwrap()
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut writer =
        ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

/// A lake with three raw events in two hour partitions, two `store_minute` rows, and
/// decoys that must never be read: staged and checkpoint files, a non-Parquet file.
fn tiny_lake() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let raw = root.join(Table::RawEvents.dir()).join(DAY);
    write_parquet(
        &raw.join("event_hour=12/part-0.parquet"),
        &raw_batch(&HOUR_12),
    );
    write_parquet(
        &raw.join("event_hour=13/part-0.parquet"),
        &raw_batch(&HOUR_13),
    );
    fs::write(raw.join("event_hour=12/part-1.parquet.tmp"), b"not parquet").unwrap();
    write_parquet(
        &root.join(Table::StoreMinute.dir()).join("part-0.parquet"),
        &store_minute_batch(),
    );
    // What the pipeline has not published yet.
    write_parquet(
        &root
            .join("_staging")
            .join(Table::RawEvents.dir())
            .join(DAY)
            .join("event_hour=12/part-9.parquet"),
        &raw_batch(&STAGED),
    );
    write_parquet(
        &root.join("_staging/curated/store_minute/part-9.parquet"),
        &store_minute_batch(),
    );
    write_parquet(&root.join("_staging/part-9.parquet"), &raw_batch(&STAGED));
    fs::create_dir_all(root.join("_checkpoints")).unwrap();
    fs::write(root.join("_checkpoints/000001.json"), b"{}").unwrap();
    dir
}

fn lake_str(dir: &TempDir) -> &str {
    dir.path().to_str().unwrap()
}

async fn query(lake: &str, sql: &str, format: OutputFormat) -> Result<(u64, String), QueryError> {
    let mut out = Vec::new();
    let rows = run_query(lake, sql, format, &mut out).await?;
    Ok((rows, String::from_utf8(out).unwrap()))
}

async fn csv(lake: &str, sql: &str) -> String {
    query(lake, sql, OutputFormat::Csv).await.unwrap().1
}

#[tokio::test]
async fn counts_only_published_rows() {
    let lake = tiny_lake();
    let out = csv(lake_str(&lake), "SELECT count(*) AS n FROM raw_events").await;
    assert_eq!(out, "n\n3\n");
    let out = csv(lake_str(&lake), "SELECT count(*) AS n FROM store_minute").await;
    assert_eq!(out, "n\n2\n");
    let out = csv(
        lake_str(&lake),
        "SELECT event_id FROM raw_events ORDER BY event_id",
    )
    .await;
    assert_eq!(out, "event_id\ne1\ne2\ne3\n");
}

#[tokio::test]
async fn partition_columns_filter_and_prune() {
    let lake = tiny_lake();
    let out = csv(
        lake_str(&lake),
        "SELECT event_date, event_hour, count(*) AS n FROM raw_events \
         GROUP BY event_date, event_hour ORDER BY event_hour",
    )
    .await;
    assert_eq!(
        out,
        "event_date,event_hour,n\n2026-11-21,12,2\n2026-11-21,13,1\n"
    );
    let out = csv(
        lake_str(&lake),
        "SELECT count(*) AS n FROM raw_events WHERE event_hour = '12'",
    )
    .await;
    assert_eq!(out, "n\n2\n");

    // Pruning, not just filtering: a broken file in a partition the filter excludes is
    // never opened, while a query that needs it fails (as an execution failure).
    let broken = lake
        .path()
        .join(Table::RawEvents.dir())
        .join(DAY)
        .join("event_hour=14");
    fs::create_dir_all(&broken).unwrap();
    fs::write(broken.join("part-0.parquet"), b"this is not a parquet file").unwrap();
    let out = csv(
        lake_str(&lake),
        "SELECT count(*) AS n FROM raw_events WHERE event_date = '2026-11-21' AND event_hour = '12'",
    )
    .await;
    assert_eq!(out, "n\n2\n");
    let err = query(
        lake_str(&lake),
        "SELECT * FROM raw_events",
        OutputFormat::Csv,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, QueryError::Execution(_)), "{err}");
    assert!(!err.is_user_error());
}

#[tokio::test]
async fn every_table_is_queryable_even_when_absent() {
    let lake = tiny_lake();
    let empty = tempfile::tempdir().unwrap();
    for table in Table::ALL {
        let sql = format!("SELECT count(*) AS n FROM {}", table.name());
        let expected = match table {
            Table::RawEvents => 3,
            Table::StoreMinute => 2,
            _ => 0,
        };
        assert_eq!(
            csv(lake_str(&lake), &sql).await,
            format!("n\n{expected}\n"),
            "{sql}"
        );
        assert_eq!(csv(lake_str(&empty), &sql).await, "n\n0\n", "{sql}");
        // Every column of the schema, partition columns included, is there.
        let mut columns: Vec<String> = table
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        columns.extend(table.partition_columns().iter().map(|c| c.to_string()));
        let sql = format!("SELECT {} FROM {}", columns.join(", "), table.name());
        let (rows, _) = query(lake_str(&empty), &sql, OutputFormat::Json)
            .await
            .unwrap();
        assert_eq!(rows, 0);
    }
    let out = csv(
        lake_str(&empty),
        "SELECT count(*) AS n FROM raw_events WHERE event_date = '2026-11-21'",
    )
    .await;
    assert_eq!(out, "n\n0\n");

    let ctx = lake_context(lake_str(&empty)).await.unwrap();
    for table in Table::ALL {
        assert!(ctx.table_exist(table.name()).unwrap(), "{}", table.name());
    }
}

const MINUTES: &str = "SELECT window_start, store_id, orders_placed, delivery_s_p50 \
                       FROM store_minute ORDER BY window_start";

#[tokio::test]
async fn csv_has_a_header_and_rfc3339_timestamps() {
    let lake = tiny_lake();
    let (rows, out) = query(lake_str(&lake), MINUTES, OutputFormat::Csv)
        .await
        .unwrap();
    assert_eq!(rows, 2);
    assert_eq!(
        out,
        "window_start,store_id,orders_placed,delivery_s_p50\n\
         2026-11-21T12:00:00Z,s1,1,\n\
         2026-11-21T12:01:00Z,s2,0,754.5\n"
    );
    let (rows, out) = query(
        lake_str(&lake),
        "SELECT store_id, orders_placed FROM store_minute WHERE false",
        OutputFormat::Csv,
    )
    .await
    .unwrap();
    assert_eq!((rows, out.as_str()), (0, "store_id,orders_placed\n"));
}

#[tokio::test]
async fn csv_writes_nested_values_as_json_text() {
    let lake = tiny_lake();
    let out = csv(
        lake_str(&lake),
        "SELECT event_id, event_time, items FROM raw_events ORDER BY event_id",
    )
    .await;
    assert_eq!(
        out,
        "event_id,event_time,items\n\
         e1,2026-11-21T12:00:01.250Z,\"[{\"\"product_id\"\":\"\"p1\"\",\"\"qty\"\":2,\"\"unit_price_cents\"\":350}]\"\n\
         e2,2026-11-21T12:00:02Z,\n\
         e3,2026-11-21T13:10:00Z,\n"
    );
}

#[tokio::test]
async fn json_is_one_array_of_objects() {
    let lake = tiny_lake();
    let (rows, out) = query(lake_str(&lake), MINUTES, OutputFormat::Json)
        .await
        .unwrap();
    assert_eq!(rows, 2);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        value,
        serde_json::json!([
            {"window_start": "2026-11-21T12:00:00Z", "store_id": "s1", "orders_placed": 1, "delivery_s_p50": null},
            {"window_start": "2026-11-21T12:01:00Z", "store_id": "s2", "orders_placed": 0, "delivery_s_p50": 754.5},
        ])
    );
    let (rows, out) = query(
        lake_str(&lake),
        "SELECT * FROM deliveries",
        OutputFormat::Json,
    )
    .await
    .unwrap();
    assert_eq!(rows, 0);
    assert_eq!(out.trim(), "[]");

    let (_, out) = query(
        lake_str(&lake),
        "SELECT items, event_date FROM raw_events WHERE event_id = 'e1'",
        OutputFormat::Json,
    )
    .await
    .unwrap();
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        value,
        serde_json::json!([{
            "items": [{"product_id": "p1", "qty": 2, "unit_price_cents": 350}],
            "event_date": "2026-11-21",
        }])
    );
}

#[tokio::test]
async fn ndjson_is_one_object_per_line() {
    let lake = tiny_lake();
    let (rows, out) = query(lake_str(&lake), MINUTES, OutputFormat::Ndjson)
        .await
        .unwrap();
    assert_eq!(rows, 2);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["store_id"], "s1");
    assert_eq!(lines[0]["delivery_s_p50"], serde_json::Value::Null);
    assert_eq!(lines[1]["window_start"], "2026-11-21T12:01:00Z");
    assert!(out.ends_with('\n'));

    let (rows, out) = query(
        lake_str(&lake),
        "SELECT * FROM late_events",
        OutputFormat::Ndjson,
    )
    .await
    .unwrap();
    assert_eq!((rows, out.as_str()), (0, ""));
}

#[tokio::test]
async fn table_is_aligned_with_a_header_even_when_empty() {
    let lake = tiny_lake();
    let (rows, out) = query(lake_str(&lake), MINUTES, OutputFormat::Table)
        .await
        .unwrap();
    assert_eq!(rows, 2);
    assert_eq!(
        out,
        "+----------------------+----------+---------------+----------------+\n\
         | window_start         | store_id | orders_placed | delivery_s_p50 |\n\
         +----------------------+----------+---------------+----------------+\n\
         | 2026-11-21T12:00:00Z | s1       | 1             |                |\n\
         | 2026-11-21T12:01:00Z | s2       | 0             | 754.5          |\n\
         +----------------------+----------+---------------+----------------+\n"
    );
    let (rows, out) = query(
        lake_str(&lake),
        "SELECT rider_id, pings FROM rider_minute",
        OutputFormat::Table,
    )
    .await
    .unwrap();
    assert_eq!(rows, 0);
    assert_eq!(
        out,
        "+----------+-------+\n\
         | rider_id | pings |\n\
         +----------+-------+\n\
         +----------+-------+\n"
    );
}

#[tokio::test]
async fn the_lake_can_be_a_file_url_or_relative() {
    let lake = tiny_lake();
    let url = format!("file://{}", lake_str(&lake));
    assert_eq!(
        csv(&url, "SELECT count(*) AS n FROM raw_events").await,
        "n\n3\n"
    );
    // A relative path, resolved against the working directory.
    let relative = pathdiff(lake.path());
    assert_eq!(
        csv(
            relative.to_str().unwrap(),
            "SELECT count(*) AS n FROM store_minute"
        )
        .await,
        "n\n2\n"
    );
}

/// `path` relative to the current directory, through `..` as needed.
fn pathdiff(path: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
    let path = path.canonicalize().unwrap();
    let common = cwd
        .components()
        .zip(path.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut relative = PathBuf::new();
    for _ in cwd.components().skip(common) {
        relative.push("..");
    }
    for part in path.components().skip(common) {
        relative.push(part);
    }
    relative
}

fn assert_invalid(err: &QueryError, needle: &str) {
    assert!(matches!(err, QueryError::InvalidQuery { .. }), "{err:?}");
    assert!(err.is_user_error());
    assert!(err.to_string().contains(needle), "`{needle}` not in: {err}");
}

#[tokio::test]
async fn user_mistakes_are_user_errors() {
    let lake = tiny_lake();
    let lake = lake_str(&lake);
    let run =
        |sql: &'static str| async move { query(lake, sql, OutputFormat::Table).await.unwrap_err() };
    assert_invalid(&run("SELEC 1").await, "SELEC");
    assert_invalid(&run("SELECT * FROM no_such_table").await, "no_such_table");
    assert_invalid(
        &run("SELECT no_such_column FROM store_minute").await,
        "no_such_column",
    );
    assert_invalid(&run("SELECT 1; SELECT 2").await, "2 statements");
    assert_invalid(&run("").await, "no SQL statement");
    // The query tool never writes.
    assert_invalid(&run("CREATE TABLE t AS SELECT 1").await, "DDL");
    assert_invalid(
        &run("COPY (SELECT 1 AS x) TO '/tmp/rushhour-query-copy.parquet'").await,
        "COPY",
    );
    assert_invalid(
        &run("SET datafusion.execution.time_zone = '+02:00'").await,
        "Statement not supported",
    );
    // A trailing semicolon is one statement.
    let (rows, _) = query(lake, "SELECT 1 AS one;", OutputFormat::Csv)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn a_missing_lake_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = query(missing.to_str().unwrap(), "SELECT 1", OutputFormat::Csv)
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::NoLake { .. }), "{err:?}");
    assert!(err.is_user_error());
    assert_eq!(
        err.to_string(),
        format!("no lake at {}: no such directory", missing.display())
    );

    let file = dir.path().join("lake.parquet");
    fs::write(&file, b"x").unwrap();
    let Err(err) = lake_context(file.to_str().unwrap()).await else {
        panic!("a file is not a lake");
    };
    assert!(matches!(err, QueryError::NoLake { .. }), "{err:?}");
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[tokio::test]
async fn timestamps_are_utc() {
    let lake = tiny_lake();
    let out = csv(
        lake_str(&lake),
        "SELECT count(*) AS n FROM raw_events WHERE event_time >= '2026-11-21T12:00:02' \
         AND event_time < TIMESTAMP '2026-11-21 13:00:00'",
    )
    .await;
    assert_eq!(out, "n\n1\n");
    let out = csv(
        lake_str(&lake),
        "SELECT date_trunc('hour', event_time) AS h FROM raw_events WHERE event_id = 'e3'",
    )
    .await;
    assert_eq!(out, "h\n2026-11-21T13:00:00Z\n");
}
