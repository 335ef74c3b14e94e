//! The `rushhour` binary: glue between the command line and the crates.
//!
//! `main` → [`run`] → exit code: 0 on success, 1 on a failure (with the reason on
//! stderr), 2 on a usage error (clap).

mod cli;
mod commands;
mod progress;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: logs piped to a file or a
        // collector stay plain text.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("{e:#}");
            #[allow(clippy::print_stderr)]
            {
                eprintln!("rushhour: error: {text}");
                if let Some(hint) = rushhour_cloud::hint(&text) {
                    eprintln!("rushhour: hint: {hint}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let stop = stop_on_signals();
    match cli.command {
        Command::Generate(args) => commands::generate::run(&args, &stop),
        Command::Process(args) => commands::process::run(&args, &stop),
        Command::Query(args) => commands::query::run(&args),
        Command::Replay(args) => commands::replay::run(&args, &stop),
        Command::Demo(args) => commands::demo::run(&args, &stop),
        Command::Checkpoints(args) => commands::checkpoints::run(&args),
        Command::Serve(args) => commands::serve::run(&args, &stop),
    }
}

/// A flag raised by Ctrl-C or SIGTERM, so long-running commands stop cleanly.
fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                flag.store(true, Ordering::SeqCst);
            });
        });
    if spawned.is_err() {
        tracing::warn!("cannot watch for Ctrl-C; stop with SIGKILL");
    }
    stop
}
