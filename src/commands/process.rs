//! `rushhour process`: a source through the pipeline into the lake, with checkpoints.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use rushhour_cloud::Io;
use rushhour_processor::checkpoint::CheckpointError;
use rushhour_processor::group::Member;
use rushhour_processor::lease::PIPELINE_SCOPE;
use rushhour_processor::sink::LakeSink;
use rushhour_processor::source::kafka::{
    Assignor as KafkaAssignor, KafkaSettings, StartAt as KafkaStart,
};
use rushhour_processor::source::kinesis::{KinesisSettings, KinesisStart};
use rushhour_processor::source::{SourceOptions, open_source, position_style};
use rushhour_processor::{
    CheckpointStore, Checkpointer, Holder, Lease, LeaseKeeper, LeaseOptions, Pipeline,
    PipelineConfig, RecoveryPoint, RunOptions, RunReport, RuntimeError, Start, recover,
    run as run_pipeline,
};
use rushhour_schemas::Endpoint;
use rushhour_sink::{Lake, ObjectCheckpointStore, ParquetSink, SinkOptions};

use crate::cli::{Assignor, ProcessArgs, StartAt};
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

/// How many times start-up recovery is tried again when a paused process that lost
/// its lease commits a checkpoint while this one starts (each try fences it further).
const RECOVERY_TRIES: usize = 5;

/// Runs the processor; returns its report (the caller prints the summary).
pub fn process(args: &ProcessArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<RunReport> {
    if args.checkpoint_interval.is_zero() {
        bail!("--checkpoint-interval must be more than zero");
    }
    if args.lease_ttl < std::time::Duration::from_millis(100) {
        bail!("--lease-ttl must be at least 100ms");
    }
    // The one runtime every lake and checkpoint request of this process runs on.
    let io = Io::new(2).context("cannot start the I/O runtime")?;
    let lake = Lake::open(&args.lake, &io)?;
    // stdin cannot be read again, so each run over it is a pipeline of its own.
    let name = match (&args.name, &args.from) {
        (Some(name), _) => name.clone(),
        (None, Endpoint::Stdio) => format!(
            "stdin-{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis()
        ),
        (None, from) => default_name(&from.to_string()),
    };
    let store: Arc<dyn CheckpointStore> = Arc::new(match &args.checkpoint {
        Some(url) => ObjectCheckpointStore::open(url, &io)
            .with_context(|| format!("cannot open the checkpoint directory {url}"))?,
        None => ObjectCheckpointStore::in_lake(&lake, &name),
    });
    let cfg = PipelineConfig {
        lateness_ms: ms(args.lateness)?,
        order_ttl_ms: ms(args.order_ttl)?,
        max_future_ms: args.max_future.map(ms).transpose()?,
        ..PipelineConfig::default()
    };
    let source_opts = SourceOptions {
        until_end: args.until_end,
        idle_timeout: args.idle_timeout,
        kafka: KafkaSettings {
            group: args.group.clone().unwrap_or_else(|| name.clone()),
            start: match args.start {
                StartAt::Earliest => KafkaStart::Earliest,
                StartAt::Latest => KafkaStart::Latest,
            },
            session_timeout: args.session_timeout,
            assignor: match args.assignor {
                Assignor::CooperativeSticky => KafkaAssignor::CooperativeSticky,
                Assignor::Range => KafkaAssignor::Range,
            },
        },
        kinesis: KinesisSettings {
            start: match args.start {
                StartAt::Earliest => KinesisStart::Earliest,
                StartAt::Latest => KinesisStart::Latest,
            },
            io: Some(io.clone()),
        },
        ..Default::default()
    };
    let source_name = args.from.to_string();
    let opts = RunOptions {
        commit_interval: args.checkpoint_interval,
        stop: stop.clone(),
        ..RunOptions::default()
    };
    if matches!(args.from, Endpoint::Kafka { .. }) {
        return process_group(args, &lake, &name, store, cfg, &source_opts, &opts);
    }
    if args.group.is_some() {
        bail!(
            "--group is for kafka:// sources (a file, a log or a Kinesis stream is read by one process)"
        );
    }

    let lease_opts = LeaseOptions {
        ttl: args.lease_ttl,
        wait: args.wait_for_lease,
        ..LeaseOptions::default()
    };
    let mut told = false;
    let lease = Arc::new(Lease::acquire(
        store.clone(),
        PIPELINE_SCOPE,
        Holder::this_process(),
        &lease_opts,
        stop,
        &mut |holder| {
            if !std::mem::replace(&mut told, true) {
                tracing::warn!(holder = %holder.describe(), "waiting for the pipeline's lease");
                #[allow(clippy::print_stderr)]
                {
                    eprintln!(
                        "waiting for the lease of pipeline {name}, held by {}",
                        holder.describe()
                    );
                }
            }
        },
    )?);
    let keeper = LeaseKeeper::start(lease.clone()).context("cannot start the lease renewal")?;
    let checkpointer = Checkpointer::new(
        store,
        lease.clone(),
        &name,
        &source_name,
        args.retain_checkpoints as usize,
    );
    let mut tries = 0;
    let (source, mut pipeline, sink, epoch) = loop {
        let mut pipeline = Pipeline::new(cfg.clone(), &source_name, position_style(&args.from));
        let mut sink = ParquetSink::new(
            lake.clone(),
            &name,
            lease.generation(),
            SinkOptions::default(),
        )?;
        // A checkpoint is resumed from only if its files can still be published.
        let point = match checkpointer.recovery_point(&mut |r| {
            sink.verify_publishable(&r.manifest.staged)
                .map_err(|e| format!("a file it names is lost ({e})"))?;
            pipeline
                .restore(&r.state)
                .map_err(|e| format!("its state {} does not restore ({e})", r.manifest.state))
        }) {
            Ok(point) => point,
            Err(e @ CheckpointError::Version { .. }) => {
                bail!(
                    "{e}.\n{}",
                    start_over_steps(&checkpointer, &lake, &name, true)
                );
            }
            Err(e) => return Err(e.into()),
        };
        if point.restored.is_none()
            && let Some(newest) = point.newest
        {
            bail!(no_usable_checkpoint(
                &checkpointer,
                &lake,
                &name,
                newest,
                &point
            ));
        }
        if let Some(r) = &point.restored {
            tracing::info!(epoch = r.manifest.epoch, "resuming from checkpoint");
        }
        let positions = point.restored.as_ref().map(|r| &r.manifest.positions);
        let mut source = open_source(&args.from, &source_opts, positions)
            .with_context(|| format!("cannot open {}", args.from))?;
        for part in source.partitions() {
            if !pipeline.holds(part) {
                pipeline.hold(part);
            }
        }
        match recover(
            &checkpointer,
            &point,
            &mut pipeline,
            source.as_mut(),
            &mut sink,
        ) {
            Ok(epoch) => break (source, pipeline, sink, epoch),
            Err(RuntimeError::Checkpoint(CheckpointError::Fenced { name: taken, .. }))
                if tries < RECOVERY_TRIES =>
            {
                tries += 1;
                tracing::warn!(checkpoint = %taken, "a paused earlier process committed while this one started; recovering again");
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "recovering from the checkpoint in {}",
                    checkpointer.location()
                )));
            }
        }
    };
    let start = Start {
        epoch,
        checkpointer: Some(&checkpointer),
        group: None,
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
    drop(keeper);
    let report = report?;
    // A clean stop: the next process need not wait for the expiry.
    if let Err(e) = lease.release() {
        tracing::warn!(error = %e, "cannot release the lease; the next start waits for its expiry");
    }
    Ok(report)
}

/// A Kafka source: this process joins the pipeline as one member of its consumer
/// group, and takes partitions over (and hands them over) as the group assigns them.
fn process_group(
    args: &ProcessArgs,
    lake: &Lake,
    name: &str,
    store: Arc<dyn CheckpointStore>,
    cfg: PipelineConfig,
    source_opts: &SourceOptions,
    opts: &RunOptions,
) -> anyhow::Result<RunReport> {
    let source_name = args.from.to_string();
    let member = Arc::new(Member::join(
        store,
        name,
        &source_name,
        Holder::this_process(),
    )?);
    tracing::info!(member = member.id(), "joined the pipeline");
    let checkpointer = member.checkpointer(args.retain_checkpoints as usize);
    let source = open_source(&args.from, source_opts, None)
        .with_context(|| format!("cannot open {}", args.from))?;
    let sink = ParquetSink::new(lake.clone(), name, member.id(), SinkOptions::default())?;
    let mut pipeline = Pipeline::new(cfg, &source_name, position_style(&args.from));
    // A rider's pings and its deliveries may be read by different members.
    pipeline.route_riders(source.all_partitions().len() as u32);
    let start = Start {
        epoch: 1,
        checkpointer: Some(&checkpointer),
        group: Some(member.clone()),
    };
    let bar = spinner(args.quiet);
    let report = run_pipeline(
        source,
        &mut pipeline,
        Box::new(sink),
        opts,
        start,
        &mut |p| {
            bar.set_message(process_line(p));
        },
    );
    bar.finish_and_clear();
    Ok(report?)
}

/// The error when checkpoints exist but none can be resumed from: what is wrong, and
/// the exact steps to start the pipeline over.
fn no_usable_checkpoint(
    checkpointer: &Checkpointer,
    lake: &Lake,
    name: &str,
    newest: u64,
    point: &RecoveryPoint,
) -> String {
    let mut text = format!(
        "no usable checkpoint in {} (the newest is epoch {newest}); refusing to guess where pipeline {name} stood.\n",
        checkpointer.location()
    );
    for (epoch, why) in &point.skipped {
        text.push_str(&format!("  epoch {epoch}: {why}\n"));
    }
    text.push_str(&start_over_steps(checkpointer, lake, name, false));
    text
}

/// How to start a pipeline over from the beginning of its source, by hand. With
/// `older_layout`, the files of builds before checkpoint format 4 (named
/// `part-<name>-<epoch:06>-<run>-<seq>.parquet`) are matched too.
fn start_over_steps(
    checkpointer: &Checkpointer,
    lake: &Lake,
    name: &str,
    older_layout: bool,
) -> String {
    let location = checkpointer.location();
    let lake = lake.url();
    let files = if older_layout {
        format!(
            "\\( -name 'part-{name}.*' -o -name 'part-{name}-[0-9][0-9][0-9][0-9][0-9][0-9]-*' \\)"
        )
    } else {
        format!("-name 'part-{name}.*'")
    };
    format!(
        "To start pipeline {name} over from the beginning of its source:\n  \
         1. stop every process of the pipeline (`rushhour checkpoints --lake {lake} --checkpoint {location}` names the lease holder);\n  \
         2. move its checkpoints out of the lake: mv {location} {lake}.{name}.checkpoints.old\n  \
         3. delete its files and staging from the lake: find {lake}/raw {lake}/curated {files} -delete; rm -rf {lake}/_staging/{name}\n  \
         4. run the same `rushhour process` command again."
    )
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
