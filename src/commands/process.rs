//! `rushhour process`: a source through the pipeline into the lake, with checkpoints.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use rushhour_processor::source::{SourceOptions, open_source};
use rushhour_processor::{
    Checkpointer, Pipeline, PipelineConfig, RunOptions, RunReport, Start, recover,
    run as run_pipeline,
};
use rushhour_schemas::Endpoint;
use rushhour_sink::{Lake, ObjectCheckpointStore, ParquetSink, SinkOptions};

use crate::cli::ProcessArgs;
use crate::progress::{process_line, spinner};

fn ms(d: std::time::Duration) -> anyhow::Result<i64> {
    i64::try_from(d.as_millis()).context("duration too large")
}

/// The default pipeline name of a source: its last path segment, made safe, and a
/// short hash of the whole URL (`file:/data/day1.jsonl` → `day1-jsonl-3f2a9c1e`).
pub fn default_name(source: &str) -> String {
    let tail = source.rsplit(['/', ':']).next().unwrap_or_default();
    let mut base: String = tail
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    if base.trim_matches('-').is_empty() {
        base = "source".into();
    }
    format!(
        "{}-{:08x}",
        base.trim_matches('-'),
        crc32fast::hash(source.as_bytes())
    )
}

/// Runs the processor; returns its report (the caller prints the summary).
pub fn process(args: &ProcessArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<RunReport> {
    if args.checkpoint_interval.is_zero() {
        bail!("--checkpoint-interval must be more than zero");
    }
    let lake = Lake::open(&args.lake)?;
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    // stdin cannot be read again, so each run over it is a pipeline of its own.
    let name = match (&args.name, &args.from) {
        (Some(name), _) => name.clone(),
        (None, Endpoint::Stdio) => format!("stdin-{run_id}"),
        (None, from) => default_name(&from.to_string()),
    };
    let checkpoint_url = match &args.checkpoint {
        Some(url) => url.clone(),
        None => format!("{}/_checkpoints/{name}", lake.url()),
    };
    let store = ObjectCheckpointStore::open(&checkpoint_url)
        .with_context(|| format!("cannot open the checkpoint directory {checkpoint_url}"))?;
    let source_name = args.from.to_string();
    let checkpointer = Checkpointer::new(
        Box::new(store),
        &name,
        &source_name,
        args.retain_checkpoints as usize,
    );
    let restored = checkpointer.latest()?;
    if let Some(r) = &restored {
        tracing::info!(epoch = r.manifest.epoch, "resuming from checkpoint");
    }
    let source_opts = SourceOptions {
        until_end: args.until_end,
        idle_timeout: args.idle_timeout,
        ..Default::default()
    };
    let positions = restored.as_ref().map(|r| r.manifest.positions.as_slice());
    let mut source = open_source(&args.from, &source_opts, positions)
        .with_context(|| format!("cannot open {}", args.from))?;
    let mut sink = ParquetSink::new(lake, &name, &run_id, SinkOptions::default())?;
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
    let epoch = recover(
        &checkpointer,
        restored.as_ref(),
        &mut pipeline,
        source.as_mut(),
        &mut sink,
    )
    .with_context(|| {
        format!(
            "recovering from the checkpoint in {}",
            checkpointer.location()
        )
    })?;
    let opts = RunOptions {
        commit_interval: args.checkpoint_interval,
        stop: stop.clone(),
        ..RunOptions::default()
    };
    let start = Start {
        epoch,
        checkpointer: Some(&checkpointer),
    };
    let bar = spinner(args.quiet);
    let report = run_pipeline(
        source,
        &mut pipeline,
        Box::new(sink),
        &opts,
        start,
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
            "processed {} records in {:.2}s ({:.0} records/s), published {} files in {} epochs; last checkpoint {} bytes in {:.1} ms",
            c.read,
            secs,
            c.read as f64 / secs,
            report.files,
            report.epochs,
            report.checkpoint.bytes,
            report.checkpoint.duration.as_secs_f64() * 1e3
        );
        if args.until_end || report.ended {
            println!("{}", summary(&report));
        }
    }
    Ok(())
}
