//! `rushhour demo`: a busy lunch hour end to end on the embedded defaults — generate
//! into `log:`, process into a local lake, show the summary and a few analyst queries.
//! `demo --services` runs the whole loop instead: customers order through the ordering
//! services, whose events are processed into the lake, whose delivery times come back
//! as the services' ETAs.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use rushhour_orders::drive::DriveReport;
use rushhour_orders::{Routes, ServeConfig};
use rushhour_schemas::Endpoint;

use crate::cli::{DemoArgs, Format, GenerateArgs, ProcessArgs};
use crate::commands::{generate, process, query, serve};

/// The analyst queries the demo shows: (title, SQL).
pub const QUERIES: [(&str, &str); 3] = [
    (
        "Top stores by revenue",
        "SELECT store_id, sum(orders_placed) AS orders, sum(revenue_cents) / 100.0 AS revenue \
         FROM store_minute GROUP BY store_id ORDER BY revenue DESC LIMIT 5",
    ),
    (
        "Delivery time by store (slowest p95 first)",
        "SELECT store_id, count(*) AS deliveries, round(median(total_s) / 60, 1) AS p50_min, \
         round(approx_percentile_cont(total_s, 0.95) / 60, 1) AS p95_min \
         FROM deliveries WHERE total_s IS NOT NULL GROUP BY store_id ORDER BY p95_min DESC LIMIT 5",
    ),
    (
        "Late, duplicate-free raw and invalid records",
        "SELECT (SELECT count(*) FROM raw_events) AS raw_events, \
         (SELECT count(*) FROM raw_events WHERE is_late) AS late, \
         (SELECT count(*) FROM late_events) AS late_events, \
         (SELECT count(*) FROM dead_letter) AS invalid",
    ),
];

/// Removes `path` if it exists and is what the demo made (a marker file proves it).
fn reset(path: &Path, marker: &str) -> anyhow::Result<()> {
    if path.exists() {
        if !path.join(marker).exists() {
            bail!(
                "{} exists and is not a demo directory (no {marker}); choose another --dir",
                path.display()
            );
        }
        std::fs::remove_dir_all(path)
            .with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(())
}

/// A fresh lake directory (replacing one the demo made).
fn fresh_lake(lake_dir: &Path) -> anyhow::Result<()> {
    reset(lake_dir, ".rushhour-lake")?;
    std::fs::create_dir_all(lake_dir)?;
    std::fs::write(lake_dir.join(".rushhour-lake"), "made by rushhour demo\n")?;
    Ok(())
}

/// The simulation the demo runs: a lunch hour of `orders` orders.
fn simulation(to: Option<Endpoint>, via: Option<String>, orders: u64, seed: u64) -> GenerateArgs {
    let start =
        rushhour_schemas::time::parse_rfc3339_millis("2026-11-20T12:00:00Z").unwrap_or_default();
    GenerateArgs {
        to,
        via,
        clients: 4,
        restock_every: Duration::from_secs(1),
        orders: Some(orders),
        rate: None,
        duration: None,
        seed,
        stream: crate::cli::StreamOutArgs {
            partitions: Some(4),
            compression: crate::cli::KafkaCompression::Lz4,
            strict_key_order: false,
        },
        start,
        stores: 40,
        riders: 7000,
        peak_orders_per_min: 300.0,
        disorder: Duration::from_secs(3),
        late_fraction: 0.002,
        late_by: Duration::from_secs(60),
        duplicate_fraction: 0.005,
        malformed_fraction: 0.001,
    }
}

/// Processing `log_dir` into `lake` to the end, as `process --until-end` does.
fn process_to_end(log_dir: &Path, lake: &str) -> ProcessArgs {
    ProcessArgs {
        from: Endpoint::Log(log_dir.to_path_buf()),
        lake: lake.to_owned(),
        lateness: Duration::from_secs(10),
        until_end: true,
        order_ttl: Duration::from_secs(6 * 3600),
        idle_timeout: Duration::from_secs(30),
        checkpoint: None,
        checkpoint_interval: Duration::from_secs(10),
        retain_checkpoints: 3,
        name: Some("demo".into()),
        lease_ttl: Duration::from_secs(30),
        wait_for_lease: false,
        max_future: None,
        group: None,
        start: crate::cli::StartAt::Earliest,
        session_timeout: Duration::from_secs(10),
        assignor: crate::cli::Assignor::Range,
        quiet: false,
    }
}

/// Runs `queries` over `lake`, each under its title, as tables on standard output.
#[allow(clippy::print_stdout)]
fn show(lake: &str, queries: &[(&str, &str)]) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    for (title, sql) in queries {
        println!("\n{title}:");
        let mut out = stdout.lock();
        query::query_to(lake, sql, Format::Table, &mut out)?;
    }
    Ok(())
}

/// `rushhour demo`.
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub fn run(args: &DemoArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    if args.services {
        return run_services(args, stop);
    }
    let orders = args.orders.unwrap_or(18_000);
    let log_dir = args.dir.join("log");
    let lake_dir = args.dir.join("lake");
    reset(&log_dir, "streamlog.json")?;
    fresh_lake(&lake_dir)?;

    let gen_args = simulation(
        Some(Endpoint::Log(log_dir.clone())),
        None,
        orders,
        args.seed,
    );
    eprintln!(
        "1/3 generating a lunch hour of {} orders into log:{} …",
        orders,
        log_dir.display()
    );
    let g = generate::run_generate(&gen_args, stop, false)?;
    eprintln!(
        "    {} events in {:.2}s ({:.0} events/s)",
        g.events,
        g.elapsed.as_secs_f64(),
        g.rate()
    );

    let lake = lake_dir.display().to_string();
    let proc_args = process_to_end(&log_dir, &lake);
    eprintln!("2/3 processing into the lake {lake} …");
    let report = process::process(&proc_args, stop)?;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "    {} records in {:.2}s ({:.0} records/s), {} files",
        report.counters.read,
        secs,
        report.counters.read as f64 / secs,
        report.files
    );
    println!("{}", process::summary(&report));

    eprintln!("3/3 querying the lake …");
    show(&lake, &QUERIES)?;
    println!(
        "\nTry your own: rushhour query --lake {lake} \"SELECT * FROM store_minute LIMIT 10\""
    );
    Ok(())
}

/// One wave of simulated customers through services started on `config`: the drive's
/// report and the events the services sent.
#[allow(clippy::print_stderr)]
fn wave(
    rt: &tokio::runtime::Runtime,
    config: &ServeConfig,
    sim: &mut GenerateArgs,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<(DriveReport, u64)> {
    let running = rt
        .block_on(rushhour_orders::start(config.clone()))
        .with_context(|| format!("cannot start the services on {}", config.db))?;
    let url = format!("http://{}", running.addr);
    sim.via = Some(url.clone());
    let driven = generate::drive_services(sim, &url, stop, false);
    // Stopped either way: what was committed reaches the stream.
    let sent = rt
        .block_on(running.stop())
        .context("stopping the services")?;
    let (report, secs) = driven?;
    eprintln!(
        "    {}",
        generate::drive_line(&url, sim.clients, &report, secs)
    );
    eprintln!(
        "    {sent} events sent (orders to {}, purchase orders to {})",
        config.routes.orders, config.routes.purchase_orders
    );
    Ok((report, sent))
}

/// What the lake says of the orders: (placed, cancelled, delivered), from store_minute.
fn lake_orders(lake: &str) -> anyhow::Result<(u64, u64, u64)> {
    let mut out = Vec::new();
    query::query_to(
        lake,
        "SELECT coalesce(sum(orders_placed), 0) AS placed, \
         coalesce(sum(orders_cancelled), 0) AS cancelled, \
         coalesce(sum(orders_delivered), 0) AS delivered FROM store_minute",
        Format::Json,
        &mut out,
    )?;
    let rows: serde_json::Value = serde_json::from_slice(&out).context("reading the counts")?;
    let row = &rows[0];
    let n = |k: &str| row[k].as_u64().unwrap_or(0);
    Ok((n("placed"), n("cancelled"), n("delivered")))
}

/// `rushhour demo --services`: the whole loop.
#[allow(clippy::print_stdout, clippy::print_stderr)]
fn run_services(args: &DemoArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    let log_dir = args.dir.join("log");
    let lake_dir = args.dir.join("lake");
    let db_dir = args.dir.join("services");
    let routes = Routes::new(Endpoint::Log(log_dir.clone()));
    reset(&log_dir, "streamlog.json")?;
    if let Endpoint::Log(po) = &routes.purchase_orders {
        reset(po, "streamlog.json")?;
    }
    reset(&db_dir, ".rushhour-demo")?;
    std::fs::create_dir_all(&db_dir)?;
    std::fs::write(db_dir.join(".rushhour-demo"), "made by rushhour demo\n")?;
    fresh_lake(&lake_dir)?;
    let lake = lake_dir.display().to_string();
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", db_dir.join("services.db").display()));
    let first = args.orders.unwrap_or(2_000);
    let second = (first / 10).max(1);

    let config = ServeConfig {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        db,
        routes,
        sink: rushhour_producer::SinkOptions {
            partitions: Some(4),
            ..Default::default()
        },
        // The generator's city for the same seed: its stores and menus.
        seed: args.seed,
        stores: 40,
        max_connections: 16,
        eta_lake: Some(lake.clone()),
        eta_refresh: Duration::from_secs(5),
        max_rider_distance_m: 5_000.0,
        offer_timeout: Duration::from_secs(30),
    };
    let rt = serve::runtime()?;
    // Customers retry now and then (the same request, the same idempotency key); the
    // stream-level test knobs (disorder, late and malformed records) stay off: these
    // are requests, and the services stamp their own event times. The second wave is
    // the same city an hour later in the simulation (other customers, same menus).
    let customers = |orders: u64, later: Duration| {
        let mut sim = simulation(None, None, orders, args.seed);
        sim.start += i64::try_from(later.as_millis()).unwrap_or(0);
        sim.clients = args.clients;
        (sim.disorder, sim.late_fraction, sim.malformed_fraction) = (Duration::ZERO, 0.0, 0.0);
        sim
    };

    eprintln!(
        "1/5 ordering: {first} orders of simulated customers and their riders through the \
         services ({}); the lake is empty, so ETAs are the defaults …",
        config.db
    );
    let (one, sent_one) = wave(&rt, &config, &mut customers(first, Duration::ZERO), stop)?;
    let interrupted = || stop.load(std::sync::atomic::Ordering::SeqCst);
    if interrupted() {
        eprintln!(
            "stopped; what the services accepted is in {}",
            log_dir.display()
        );
        return Ok(());
    }

    eprintln!("2/5 processing the stream into the lake {lake} …");
    let report = process::process(&process_to_end(&log_dir, &lake), stop)?;
    eprintln!(
        "    {} records, {} files",
        report.counters.read, report.files
    );

    eprintln!(
        "3/5 ordering again: {second} orders; the services now quote ETAs from the \
         lake's store_delivery_5m …"
    );
    let (two, sent_two) = wave(
        &rt,
        &config,
        &mut customers(second, Duration::from_secs(3600)),
        stop,
    )?;
    if interrupted() {
        eprintln!(
            "stopped; what the services accepted is in {}",
            log_dir.display()
        );
        return Ok(());
    }

    // Both waves from the start of the stream into a fresh lake: the batch answer over
    // everything the services emitted (resuming would find the second wave's first
    // minute already closed by the first run's end-of-input flush).
    eprintln!("4/5 reprocessing the whole stream (both waves) into a fresh lake …");
    fresh_lake(&lake_dir)?;
    let report = process::process(&process_to_end(&log_dir, &lake), stop)?;
    eprintln!(
        "    {} records, {} files",
        report.counters.read, report.files
    );

    eprintln!("5/5 the lake against what the services did …");
    let (placed, cancelled, delivered) = lake_orders(&lake)?;
    let services = (
        one.accepted + two.accepted,
        one.cancelled + one.declined + two.cancelled + two.declined,
        one.delivered + two.delivered,
    );
    let agree = (placed, cancelled, delivered) == services;
    println!(
        "{}",
        serde_json::json!({
            "first_wave": {"accepted": one.accepted, "rejected": one.rejected,
                "cancelled": one.cancelled, "declined": one.declined,
                "delivered": one.delivered, "eta_from_lake": one.eta_from_lake,
                "events": sent_one},
            "second_wave": {"accepted": two.accepted, "rejected": two.rejected,
                "cancelled": two.cancelled, "declined": two.declined,
                "delivered": two.delivered, "eta_from_lake": two.eta_from_lake,
                "events": sent_two},
            "lake": {"placed": placed, "cancelled": cancelled, "delivered": delivered},
            "lake_matches_services": agree,
        })
    );
    println!(
        "\nOrders placed {placed} (services accepted {}), cancelled or declined {cancelled} \
         ({}), delivered {delivered} ({}): {}.",
        services.0,
        services.1,
        services.2,
        if agree { "the lake agrees" } else { "MISMATCH" }
    );
    println!(
        "Second wave: {} of {} accepted orders were quoted an ETA from the lake (pickup \
         orders keep the default). The simulation runs as fast as the services answer, so \
         its deliveries take seconds, and so do the quotes.",
        two.eta_from_lake, two.accepted
    );
    show(&lake, &SERVICE_QUERIES)?;
    println!(
        "\nTry your own: rushhour query --lake {lake} \"SELECT * FROM store_delivery_5m LIMIT 10\""
    );
    if !agree {
        bail!("the lake does not match what the services did");
    }
    Ok(())
}

/// The queries `demo --services` shows.
const SERVICE_QUERIES: [(&str, &str); 2] = [
    (
        "Newest delivery times by store (store_delivery_5m, where ETAs are quoted from)",
        "SELECT store_id, window_end, deliveries, round(avg_total_s / 60, 1) AS avg_min \
         FROM store_delivery_5m ORDER BY window_end DESC, deliveries DESC LIMIT 5",
    ),
    (
        "Orders by store",
        "SELECT store_id, sum(orders_placed) AS placed, sum(orders_cancelled) AS cancelled, \
         sum(orders_delivered) AS delivered FROM store_minute GROUP BY store_id \
         ORDER BY placed DESC LIMIT 5",
    ),
];
