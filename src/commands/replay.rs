//! `rushhour replay`: raw events from the lake back into a stream, in event-time order,
//! as fast as possible or at a multiple of the speed they happened at.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use rushhour_producer::open_sink;
use rushhour_query::raw_events_in_order;
use rushhour_schemas::builders::events_from_raw;
use rushhour_schemas::encode;

use crate::cli::{ReplayArgs, Speed};
use crate::progress::{human, spinner};

/// `rushhour replay`.
pub fn run(args: &ReplayArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    if let (Some(from), Some(to)) = (args.from_time, args.to_time)
        && from >= to
    {
        anyhow::bail!("--from-time must be before --to-time");
    }
    let mut sink = open_sink(&args.to, &args.stream.sink_options())
        .with_context(|| format!("cannot open {}", args.to))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the replay runtime")?;
    let bar = spinner(false);
    let started = Instant::now();
    let mut sent = 0u64;
    rt.block_on(async {
        let mut stream = raw_events_in_order(&args.lake, args.from_time, args.to_time).await?;
        let mut first_time = None;
        let mut line = String::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.context("reading raw events")?;
            for ev in events_from_raw(&batch)? {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if let Speed::Factor(factor) = args.speed {
                    let first = *first_time.get_or_insert(ev.event_time);
                    let due = Duration::from_secs_f64(
                        (ev.event_time - first).max(0) as f64 / 1000.0 / factor,
                    );
                    let elapsed = started.elapsed();
                    if due > elapsed {
                        sink.flush()?;
                        tokio::time::sleep(due - elapsed).await;
                    }
                }
                line.clear();
                encode(&ev, &mut line);
                sink.send(ev.partition_key(), line.as_bytes())?;
                sent += 1;
                if sent.is_multiple_of(10_000) {
                    bar.set_message(format!("replayed {} events", human(sent as f64)));
                }
            }
        }
        anyhow::Ok(())
    })?;
    sink.finish()?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "replayed {sent} events in {secs:.2}s ({:.0} events/s) into {}",
            sent as f64 / secs,
            args.to
        );
    }
    Ok(())
}
