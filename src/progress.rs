//! Progress displays on stderr (hidden when stderr is not a terminal).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rushhour_processor::Progress;
use rushhour_schemas::time::format_millis;

/// A spinner with a one-line status.
pub fn spinner(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Human form of a count: 1234567 → 1.23M.
pub fn human(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.2}G", n / 1e9),
        n if n >= 1e6 => format!("{:.2}M", n / 1e6),
        n if n >= 1e4 => format!("{:.1}k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

/// The processor's status line.
pub fn process_line(p: &Progress) -> String {
    let c = p.counters;
    let secs = p.elapsed.as_secs_f64().max(1e-9);
    let wm = if p.watermark == i64::MIN {
        "-".to_owned()
    } else {
        format_millis(p.watermark)
    };
    let behind = match p.behind_ms {
        Some(ms) => format!(" · {:.1} s behind", ms as f64 / 1000.0),
        None => String::new(),
    };
    format!(
        "read {} ({}/s) · accepted {} · late {} · duplicates {} · invalid {} · watermark {wm} · state {} · epochs {}{behind}",
        human(c.read as f64),
        human(c.read as f64 / secs),
        human(c.accepted as f64),
        human(c.late as f64),
        human(c.duplicates as f64),
        human(c.invalid as f64),
        human(p.state_entries as f64),
        p.epochs,
    )
}
