//! `rushhour process`: a source through the pipeline into the lake.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use rushhour_processor::source::{SourceOptions, open_source};
use rushhour_processor::{Pipeline, PipelineConfig, RunOptions, RunReport, run as run_pipeline};
use rushhour_sink::{Lake, ParquetSink, SinkOptions};

use crate::cli::ProcessArgs;
use crate::progress::{process_line, spinner};

fn ms(d: std::time::Duration) -> anyhow::Result<i64> {
    i64::try_from(d.as_millis()).context("duration too large")
}

/// Runs the processor; returns its report (the caller prints the summary).
pub fn process(args: &ProcessArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<RunReport> {
    if args.commit_interval.is_zero() {
        bail!("--commit-interval must be more than zero");
    }
    let source_opts = SourceOptions {
        until_end: args.until_end,
        idle_timeout: args.idle_timeout,
        ..Default::default()
    };
    let mut source = open_source(&args.from, &source_opts, None)
        .with_context(|| format!("cannot open {}", args.from))?;
    let lake = Lake::open(&args.lake)?;
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let sink = ParquetSink::new(lake, &run_id, SinkOptions::default())?;
    let cfg = PipelineConfig {
        lateness_ms: ms(args.lateness)?,
        order_ttl_ms: ms(args.order_ttl)?,
        ..PipelineConfig::default()
    };
    let mut pipeline = Pipeline::new(
        cfg,
        source.name(),
        source.partitions(),
        source.position_style(),
    );
    let opts = RunOptions {
        commit_interval: args.commit_interval,
        stop: stop.clone(),
        ..RunOptions::default()
    };
    let bar = spinner(args.quiet);
    let report = run_pipeline(
        source.as_mut(),
        &mut pipeline,
        Box::new(sink),
        &opts,
        &mut |p| {
            bar.set_message(process_line(p));
        },
    );
    bar.finish_and_clear();
    Ok(report?)
}

/// The JSON summary line of CONTRACT §5, keys in the contract's order.
pub fn summary(report: &RunReport) -> String {
    let c = report.counters;
    format!(
        r#"{{"read":{},"accepted":{},"late":{},"duplicates":{},"invalid":{}}}"#,
        c.read, c.accepted, c.late, c.duplicates, c.invalid
    )
}

/// `rushhour process`.
pub fn run(args: &ProcessArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    let report = process(args, stop)?;
    let c = report.counters;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    tracing::info!(
        events_per_s = c.read as f64 / secs,
        files = report.files,
        "processed"
    );
    #[allow(clippy::print_stderr, clippy::print_stdout)]
    {
        eprintln!(
            "processed {} records in {:.2}s ({:.0} records/s), published {} files in {} epochs",
            c.read,
            secs,
            c.read as f64 / secs,
            report.files,
            report.epochs
        );
        if args.until_end || report.ended {
            println!("{}", summary(&report));
        }
    }
    Ok(())
}
