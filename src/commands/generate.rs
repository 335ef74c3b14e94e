//! `rushhour generate`: the simulation into a stream.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use rushhour_producer::{Knobs, Report, RunLimits, SimConfig, generate, open_sink};

use crate::cli::GenerateArgs;
use crate::progress::{human, spinner};

/// Orders generated when neither --orders nor --duration is given.
pub const DEFAULT_ORDERS: u64 = 1000;

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The simulation settings of the command line.
pub fn sim_config(args: &GenerateArgs) -> SimConfig {
    SimConfig {
        seed: args.seed,
        start_ms: args.start,
        stores: args.stores,
        riders: args.riders,
        peak_orders_per_min: args.peak_orders_per_min,
        knobs: Knobs {
            disorder_ms: ms(args.disorder),
            late_fraction: args.late_fraction,
            late_by_ms: ms(args.late_by),
            duplicate_fraction: args.duplicate_fraction,
            malformed_fraction: args.malformed_fraction,
        },
    }
}

/// Runs the generator with a progress display; returns its report.
pub fn run_generate(
    args: &GenerateArgs,
    stop: &Arc<AtomicBool>,
    quiet: bool,
) -> anyhow::Result<Report> {
    let config = sim_config(args);
    let orders = args
        .orders
        .or(args.duration.is_none().then_some(DEFAULT_ORDERS));
    let limits = RunLimits {
        orders,
        rate: args.rate,
        duration: args.duration,
    };
    let mut sink = open_sink(&args.to, &args.stream.sink_options())
        .with_context(|| format!("cannot open {}", args.to))?;
    let bar = spinner(quiet);
    let report = generate(
        &config,
        &limits,
        sink.as_mut(),
        &mut |r: &Report| {
            bar.set_message(format!(
                "{} events · {} orders · {}/s · event time {}",
                human(r.events as f64),
                human(r.orders as f64),
                human(r.rate()),
                rushhour_schemas::time::format_millis(r.sim_time_ms)
            ));
        },
        stop,
    );
    bar.finish_and_clear();
    match report {
        Ok(r) => Ok(r),
        // `rushhour generate --to file:- | head` is not an error.
        Err(e) if e.is_broken_pipe() => Ok(Report::default()),
        Err(e) => Err(e).with_context(|| format!("generating into {}", args.to)),
    }
}

/// `rushhour generate`.
pub fn run(args: &GenerateArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    let report = run_generate(args, stop, false)?;
    let mut line = format!(
        "generated {} events ({} orders, {:.1} MB) in {:.2}s: {:.0} events/s",
        report.events,
        report.orders,
        report.bytes as f64 / 1e6,
        report.elapsed.as_secs_f64(),
        report.rate()
    );
    if let Some(rate) = args.rate {
        line.push_str(&format!(" (target {rate:.0}/s)"));
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{line}");
    }
    Ok(())
}
