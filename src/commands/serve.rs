//! `rushhour serve`: the ordering services until Ctrl-C or SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use rushhour_orders::{Backend, Routes, ServeConfig, db};

use crate::cli::ServeArgs;

/// The runtime the services run on: two workers (HTTP and the database driver; the
/// outbox relay has a thread of its own).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("serve")
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

/// Runs the services; returns once stopped, with every committed event sent (or left to
/// the process that holds the relay lock).
pub fn run(args: &ServeArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut routes = Routes::new(args.to.clone());
    if let Some(po) = &args.purchase_orders_to {
        routes.purchase_orders = po.clone();
    }
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| db::DEFAULT_URL.to_owned());
    let config = ServeConfig {
        addr: args.addr,
        db: db.clone(),
        routes: routes.clone(),
        sink: args.stream.sink_options(),
        seed: args.seed,
        stores: args.stores,
        max_connections: args.db_connections,
        eta_lake: args.eta_lake.clone(),
        eta_refresh: args.eta_refresh,
        max_rider_distance_m: args.max_rider_distance,
        offer_timeout: args.offer_timeout,
    };
    let rt = runtime()?;
    rt.block_on(async {
        let running = rushhour_orders::start(config)
            .await
            .with_context(|| format!("cannot start the services on {db}"))?;
        let kind = match running.backend {
            Backend::Postgres => "PostgreSQL",
            Backend::Sqlite => "SQLite",
        };
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "rushhour serve: listening on http://{} ({kind} {db}{}); order events to {}, purchase orders to {}; Ctrl-C stops",
                running.addr,
                if running.seeded > 0 {
                    format!(", {} stores added", running.seeded)
                } else {
                    String::new()
                },
                routes.orders,
                routes.purchase_orders,
            );
        }
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let sent = running.stop().await.context("stopping the services")?;
        #[allow(clippy::print_stderr)]
        {
            eprintln!("rushhour serve: stopped; {sent} events sent");
        }
        Ok(())
    })
}
