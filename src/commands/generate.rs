//! `rushhour generate`: the simulation into a stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use rushhour_orders::drive::{DriveOptions, DriveReport};
use rushhour_producer::{
    Knobs, Produced, Report, RunLimits, SimConfig, Simulation, generate, open_sink,
};

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
    let Some(to) = &args.to else {
        anyhow::bail!("generate needs --to SINK (or --via URL)");
    };
    let mut sink =
        open_sink(to, &args.stream.sink_options()).with_context(|| format!("cannot open {to}"))?;
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
        Err(e) => Err(e).with_context(|| format!("generating into {to}")),
    }
}

/// The simulation of `args` through the ordering services at `url` (`args.clients`
/// concurrent clients), with a progress line unless `quiet`. Returns the report and
/// the seconds it took.
pub fn drive_services(
    args: &GenerateArgs,
    url: &str,
    stop: &Arc<AtomicBool>,
    quiet: bool,
) -> anyhow::Result<(DriveReport, f64)> {
    let config = sim_config(args);
    let orders = args.orders.unwrap_or(DEFAULT_ORDERS);
    let mut sim = Simulation::new(&config, Some(orders))?;
    let mut record = Produced::default();
    let records = std::iter::from_fn(|| {
        (!stop.load(Ordering::SeqCst) && sim.next_into(&mut record)).then(|| record.payload.clone())
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("drive")
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let bar = spinner(quiet);
    let started = std::time::Instant::now();
    let options = DriveOptions {
        clients: args.clients as usize,
        restock_every: (!args.restock_every.is_zero()).then_some(args.restock_every),
        // This run's customers (a key prefix from the clock): running the same
        // simulation again orders again.
        key_prefix: String::new(),
    };
    let report = rt.block_on(rushhour_orders::drive::drive(url, records, options, |r| {
        bar.set_message(format!(
            "{} records · {} requests · {} orders accepted, {} rejected, {} delivered",
            human(r.records as f64),
            human(r.requests as f64),
            r.accepted,
            r.rejected,
            r.delivered
        ));
    }));
    bar.finish_and_clear();
    let r = report.with_context(|| format!("driving the services at {url}"))?;
    Ok((r, started.elapsed().as_secs_f64()))
}

/// One line on what a drive did.
pub fn drive_line(url: &str, clients: u32, r: &DriveReport, secs: f64) -> String {
    format!(
        "drove {url} with {} records from {clients} clients in {secs:.1}s ({:.0} requests/s): \
         orders accepted {} ({} with an ETA from the lake), rejected {}, cancelled {}, \
         deliveries declined {}, picked up {}, delivered {}; {} rider pings; \
         {} purchase orders delivered; {} unexpected answers",
        r.records,
        r.requests as f64 / secs.max(1e-9),
        r.accepted,
        r.eta_from_lake,
        r.rejected,
        r.cancelled,
        r.declined,
        r.picked_up,
        r.delivered,
        r.pings,
        r.restocked,
        r.errors
    )
}

/// `rushhour generate --via URL`: the simulation through the ordering services.
fn run_via(args: &GenerateArgs, url: &str, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    let (r, secs) = drive_services(args, url, stop, false)?;
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{}", drive_line(url, args.clients, &r, secs));
    }
    let summary = serde_json::json!({
        "records": r.records, "requests": r.requests, "accepted": r.accepted,
        "rejected": r.rejected, "cancelled": r.cancelled, "declined": r.declined,
        "picked_up": r.picked_up, "delivered": r.delivered, "pings": r.pings,
        "errors": r.errors, "restocked": r.restocked, "eta_from_lake": r.eta_from_lake, "clients": args.clients,
        "orders_per_s": (r.accepted + r.rejected) as f64 / secs.max(1e-9),
        "requests_per_s": r.requests as f64 / secs.max(1e-9),
        "order_p50_ms": r.order_latency_ms(0.5),
        "order_p99_ms": r.order_latency_ms(0.99),
    });
    #[allow(clippy::print_stdout)]
    {
        println!("{summary}");
    }
    Ok(())
}

/// `rushhour generate`.
pub fn run(args: &GenerateArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    if let Some(url) = &args.via {
        return run_via(args, url, stop);
    }
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
