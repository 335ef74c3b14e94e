//! SQL over the rushhour lake, with DataFusion: what `rushhour query` runs.
//!
//! The lake is a directory of Parquet files laid out by table (CONTRACT §3).
//! [`lake_context`] turns it into a DataFusion session in which every table is
//! registered under its SQL name (`raw_events`, `dead_letter`, `store_minute`,
//! `deliveries`, `store_delivery_5m`, `rider_minute`, `late_events`), and [`run_query`]
//! runs one statement and prints its rows as a table, CSV, JSON or NDJSON.
//!
//! Why it is built this way:
//! - Each table is read from its own directory with the schema the writers use
//!   ([`rushhour_schemas::Table::schema`]), never inferred and never from the lake root:
//!   the pipeline's `_staging/` and `_checkpoints/` can then never leak into an answer,
//!   and a query means the same thing on a young lake (a table with no directory yet is
//!   an empty table) as on an old one.
//! - `raw_events` has the hive partition columns `event_date` and `event_hour` as
//!   strings, so `WHERE event_date = '2026-11-21' AND event_hour = '12'` reads one
//!   directory instead of the whole table.
//! - Files in subdirectories of a table are read too (the contract's `**/*.parquet`),
//!   and the list of files is not cached: a context sees what was committed when the
//!   query runs.
//! - The session's time zone is UTC, as every timestamp of the lake is.
//! - A query only reads: DDL (`CREATE …`), DML (`INSERT`, `COPY`) and statements such as
//!   `SET` are refused as invalid queries, so the query tool can never write to the lake.
//!   One statement per call: several statements separated by `;` are refused with a
//!   message saying so (a trailing `;` is fine). `SHOW TABLES`, `SHOW COLUMNS FROM t`,
//!   `DESCRIBE t` and `EXPLAIN` work.
//! - [`QueryError`] separates the user's mistakes (a missing lake, bad SQL, an unknown
//!   table or column) from failures while reading or writing, so the binary can tell the
//!   user what to fix.
//!
//! A lake is a local directory or an `s3://BUCKET/PREFIX` ([`LakeLocation`], the
//! shared parser), read through `object_store` either way.

mod error;
mod lake;
mod output;

use std::io::Write;

use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::DFParser;

pub use error::QueryError;
pub use lake::{LakeLocation, parse_lake};
pub use output::{OutputFormat, UnknownFormat};

/// A DataFusion session over the lake at `lake`, with every table of
/// [`rushhour_schemas::Table::ALL`] registered under its SQL name.
///
/// `lake` is a local directory (a relative or absolute path, `file:PATH` or
/// `file:///ABSOLUTE/PATH`) or `s3://BUCKET/PREFIX`, read with the S3 settings of the
/// environment ([`rushhour_cloud::s3_settings`]). A local lake that does not exist or
/// is not a directory, or an S3 prefix with nothing under it, is [`QueryError::NoLake`].
///
/// Each table is a listing of the `.parquet` files under its directory, read with the
/// table's known schema; `raw_events` gets its `event_date` and `event_hour` partition
/// columns (strings). A table whose directory does not exist yet is an empty table with
/// the same columns. The session's time zone is UTC and `information_schema` is on.
///
/// Running queries on the context needs a Tokio runtime.
pub async fn lake_context(lake: &str) -> Result<SessionContext, QueryError> {
    let location = parse_lake(lake)?;
    let mut config = SessionConfig::new().with_information_schema(true);
    {
        let options = config.options_mut();
        options.execution.time_zone = Some("UTC".to_owned());
        // The contract's `**/*.parquet`: a writer may nest files in subdirectories.
        options.execution.listing_table_ignore_subdirectory = false;
    }
    // A lake grows while it is queried: list the files at every query, not once.
    let runtime = RuntimeEnvBuilder::new()
        .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
        .build_arc()
        .map_err(QueryError::from_datafusion)?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    lake::register_tables(&ctx, lake, &location).await?;
    Ok(ctx)
}

/// Runs one SQL statement over the lake at `lake` and writes its rows to `out` in
/// `format`; returns the number of rows.
///
/// The statement may only read (a `SELECT`, `WITH …`, `VALUES`, `EXPLAIN`, `SHOW`,
/// `DESCRIBE`); anything else is a [`QueryError::InvalidQuery`], and so are several
/// statements separated by `;`. CSV, JSON and NDJSON are written while the query runs,
/// so when it fails half-way, part of the rows may already be in `out`. `out` is flushed
/// at the end.
///
/// Needs a Tokio runtime (DataFusion spawns tasks on it).
pub async fn run_query(
    lake: &str,
    sql: &str,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u64, QueryError> {
    // Before opening the lake: bad SQL is reported as such even on a missing lake.
    check_one_statement(sql)?;
    let ctx = lake_context(lake).await?;
    let read_only = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let df = ctx
        .sql_with_options(sql, read_only)
        .await
        .map_err(QueryError::from_datafusion)?;
    let stream = df
        .execute_stream()
        .await
        .map_err(QueryError::from_datafusion)?;
    output::write_stream(format, stream, out).await
}

/// Parses the text once to refuse several statements with a message that says so
/// (DataFusion's own is "This feature is not implemented"). Parsing uses DataFusion's
/// default (generic) dialect, the one the session plans with.
fn check_one_statement(sql: &str) -> Result<(), QueryError> {
    let statements = DFParser::parse_sql(sql).map_err(QueryError::from_datafusion)?;
    match statements.len() {
        0 => Err(QueryError::InvalidQuery {
            message: "no SQL statement given".to_owned(),
        }),
        1 => Ok(()),
        n => Err(QueryError::InvalidQuery {
            message: format!(
                "{n} statements given; `rushhour query` runs one statement at a time \
                 (separate calls, or combine them with UNION ALL or WITH)"
            ),
        }),
    }
}

/// The raw events of the lake in event-time order (ties by `event_id`), with event time
/// in `[from_ms, to_ms)` when given: the input of `rushhour replay`.
///
/// Needs a Tokio runtime.
pub async fn raw_events_in_order(
    lake: &str,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
) -> Result<datafusion::physical_plan::SendableRecordBatchStream, QueryError> {
    let ctx = lake_context(lake).await?;
    let columns: Vec<String> = rushhour_schemas::Table::RawEvents
        .schema()
        .fields()
        .iter()
        .map(|f| format!("\"{}\"", f.name()))
        .collect();
    let mut conditions = Vec::new();
    if let Some(ms) = from_ms {
        conditions.push(format!("event_time >= to_timestamp_millis({ms})"));
    }
    if let Some(ms) = to_ms {
        conditions.push(format!("event_time < to_timestamp_millis({ms})"));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {} FROM raw_events{filter} ORDER BY event_time, event_id",
        columns.join(", ")
    );
    let df = ctx.sql(&sql).await.map_err(QueryError::from_datafusion)?;
    df.execute_stream()
        .await
        .map_err(QueryError::from_datafusion)
}
