//! `rushhour query`: SQL over the lake.

use std::io::Write;

use anyhow::Context;
use rushhour_query::{OutputFormat, run_query};

use crate::cli::{Format, QueryArgs};

/// Runs one query and writes the result to `out`.
pub fn query_to(lake: &str, sql: &str, format: Format, out: &mut dyn Write) -> anyhow::Result<u64> {
    let format = match format {
        Format::Table => OutputFormat::Table,
        Format::Csv => OutputFormat::Csv,
        Format::Json => OutputFormat::Json,
        Format::Ndjson => OutputFormat::Ndjson,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the query runtime")?;
    Ok(rt.block_on(run_query(lake, sql, format, out))?)
}

/// `rushhour query`.
pub fn run(args: &QueryArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    query_to(&args.lake, &args.sql, args.format, &mut out)?;
    out.flush()?;
    Ok(())
}
