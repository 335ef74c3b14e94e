//! `rushhour demo`: a busy lunch hour end to end on the embedded defaults — generate
//! into `log:`, process into a local lake, show the summary and a few analyst queries.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use rushhour_schemas::Endpoint;

use crate::cli::{DemoArgs, Format, GenerateArgs, ProcessArgs};
use crate::commands::{generate, process, query};

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

/// `rushhour demo`.
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub fn run(args: &DemoArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    let log_dir = args.dir.join("log");
    let lake_dir = args.dir.join("lake");
    reset(&log_dir, "streamlog.json")?;
    reset(&lake_dir, ".rushhour-lake")?;
    std::fs::create_dir_all(&lake_dir)?;
    std::fs::write(lake_dir.join(".rushhour-lake"), "made by rushhour demo\n")?;

    let start =
        rushhour_schemas::time::parse_rfc3339_millis("2026-11-20T12:00:00Z").unwrap_or_default();
    let gen_args = GenerateArgs {
        to: Some(Endpoint::Log(log_dir.clone())),
        via: None,
        orders: Some(args.orders),
        rate: None,
        duration: None,
        seed: args.seed,
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
    };
    eprintln!(
        "1/3 generating a lunch hour of {} orders into log:{} …",
        args.orders,
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
    let proc_args = ProcessArgs {
        from: Endpoint::Log(log_dir),
        lake: lake.clone(),
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
    };
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
    let stdout = std::io::stdout();
    for (title, sql) in QUERIES {
        println!("\n{title}:");
        let mut out = stdout.lock();
        query::query_to(&lake, sql, Format::Table, &mut out)?;
    }
    println!(
        "\nTry your own: rushhour query --lake {lake} \"SELECT * FROM store_minute LIMIT 10\""
    );
    Ok(())
}
