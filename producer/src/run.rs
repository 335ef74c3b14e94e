//! Driving a simulation into a sink: limits, pacing, progress and Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::ProducerError;
use crate::sim::{Produced, SimConfig, Simulation};
use crate::sink::EventSink;

/// How often `progress` is called.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// A paced run sleeps at most this long at a time, so it notices Ctrl-C and the end of
/// its duration promptly.
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// A paced run lets readers see its records at least this often.
const PACED_FLUSH_EVERY: Duration = Duration::from_millis(100);
/// An unpaced run looks at the clock and the stop flag once per this many records.
const UNPACED_BATCH: u64 = 1024;

/// When a run ends (`rushhour generate --orders N | --rate R --duration D`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunLimits {
    /// Place this many orders, then let their lifecycles complete and stop.
    pub orders: Option<u64>,
    /// Hold emission at this many events per second of wall clock; as fast as
    /// possible when `None`.
    pub rate: Option<f64>,
    /// Stop after this much wall-clock time.
    pub duration: Option<Duration>,
}

impl RunLimits {
    /// Refuses limits under which a run would never end, or a rate that is not a
    /// positive number.
    pub fn validate(&self) -> Result<(), ProducerError> {
        if self.orders.is_none() && self.duration.is_none() {
            return Err(ProducerError::Config(
                "the generator needs an end: give a number of orders (--orders N) or a duration \
                 (--rate R --duration D)"
                    .into(),
            ));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(ProducerError::Config(format!(
                "the rate must be a positive number of events per second, got {rate}"
            )));
        }
        Ok(())
    }
}

/// What a run did so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Records sent (duplicates and malformed records included).
    pub events: u64,
    /// Orders started (`order_placed` of new orders).
    pub orders: u64,
    /// Payload bytes sent (without newlines or framing).
    pub bytes: u64,
    /// Wall-clock time since the start.
    pub elapsed: Duration,
    /// Event time of the latest record sent, epoch milliseconds (the start time before
    /// any).
    pub sim_time_ms: i64,
}

impl Report {
    /// Records per second of wall clock (0 before any time has passed).
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.events as f64 / secs
        } else {
            0.0
        }
    }
}

/// Runs the simulation of `config` into `sink` until `limits` say stop or `stop`
/// becomes true (Ctrl-C), then finishes the sink (flush and sync) and returns what was
/// done.
///
/// With a rate, record *i* is due at start + *i*/rate: the run sleeps whenever it is
/// ahead, in short naps, and never spins. `progress` is called about every 250 ms and
/// once more at the end. On an error the sink is left unfinished.
pub fn generate(
    config: &SimConfig,
    limits: &RunLimits,
    sink: &mut dyn EventSink,
    progress: &mut dyn FnMut(&Report),
    stop: &AtomicBool,
) -> Result<Report, ProducerError> {
    limits.validate()?;
    let mut sim = Simulation::new(config, limits.orders)?;
    let start = Instant::now();
    // A duration too long to represent is no deadline at all.
    let deadline = limits.duration.and_then(|d| start.checked_add(d));
    // Check the clock about every 10 ms worth of records when paced.
    let batch = match limits.rate {
        Some(rate) => ((rate / 100.0).ceil() as u64).clamp(1, UNPACED_BATCH),
        None => UNPACED_BATCH,
    };
    let mut report = Report {
        sim_time_ms: config.start_ms,
        ..Report::default()
    };
    let mut next_progress = start + PROGRESS_EVERY;
    let mut last_flush = start;
    let mut rec = Produced::default();
    let mut in_batch = 0u64;

    'run: loop {
        if in_batch == 0 {
            let mut now = Instant::now();
            loop {
                if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| now >= d) {
                    break 'run;
                }
                if now >= next_progress {
                    report.elapsed = now - start;
                    progress(&report);
                    next_progress = now + PROGRESS_EVERY;
                }
                let Some(rate) = limits.rate else { break };
                // Flushed whether or not the run keeps up, so that readers see records
                // at most PACED_FLUSH_EVERY after they were made.
                if now - last_flush >= PACED_FLUSH_EVERY {
                    sink.flush()?;
                    last_flush = now;
                    // The append side of `benches/latency.sh`: everything up to this
                    // event time is now readable.
                    tracing::debug!(
                        target: "rushhour::trace",
                        event_time_ms = report.sim_time_ms,
                        events = report.events,
                        "flushed"
                    );
                }
                // `None`: so far ahead that it is never due (an absurdly low rate).
                let due = Duration::try_from_secs_f64(report.events as f64 / rate)
                    .ok()
                    .and_then(|d| start.checked_add(d));
                if due.is_some_and(|due| now >= due) {
                    break;
                }
                let mut nap = MAX_SLEEP.min(next_progress - now);
                if let Some(due) = due {
                    nap = nap.min(due - now);
                }
                if let Some(d) = deadline {
                    nap = nap.min(d.saturating_duration_since(now));
                }
                std::thread::sleep(nap.max(Duration::from_micros(100)));
                now = Instant::now();
            }
            in_batch = batch;
        }
        if !sim.next_into(&mut rec) {
            break;
        }
        sink.send(&rec.key, rec.payload.as_bytes())?;
        report.events += 1;
        report.bytes += rec.payload.len() as u64;
        report.orders += u64::from(rec.order_started);
        report.sim_time_ms = report.sim_time_ms.max(rec.event_time);
        in_batch -= 1;
    }

    sink.finish()?;
    report.elapsed = start.elapsed();
    progress(&report);
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;

    fn config(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            ..SimConfig::default()
        }
    }

    #[test]
    fn orders_run_to_completion_and_finish_the_sink() {
        let mut sink = MemorySink::default();
        let mut calls = 0;
        let limits = RunLimits {
            orders: Some(25),
            ..RunLimits::default()
        };
        let report = generate(
            &config(3),
            &limits,
            &mut sink,
            &mut |_| calls += 1,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(sink.finished);
        assert_eq!(report.orders, 25);
        assert_eq!(report.events, sink.records.len() as u64);
        assert_eq!(
            report.bytes,
            sink.records.iter().map(|r| r.1.len() as u64).sum::<u64>()
        );
        assert!(report.sim_time_ms > config(3).start_ms);
        assert!(calls >= 1);
        let expected: Vec<Produced> = Simulation::new(&config(3), Some(25)).unwrap().collect();
        assert_eq!(expected.len(), sink.records.len());
    }

    #[test]
    fn refuses_an_endless_run() {
        let mut sink = MemorySink::default();
        let stop = AtomicBool::new(false);
        for limits in [
            RunLimits::default(),
            RunLimits {
                rate: Some(100.0),
                ..RunLimits::default()
            },
            RunLimits {
                orders: Some(1),
                rate: Some(0.0),
                ..RunLimits::default()
            },
            RunLimits {
                orders: Some(1),
                rate: Some(f64::NAN),
                ..RunLimits::default()
            },
        ] {
            let err = generate(&config(1), &limits, &mut sink, &mut |_| {}, &stop).unwrap_err();
            assert!(matches!(err, ProducerError::Config(_)), "{err}");
        }
        assert!(sink.records.is_empty());
    }

    #[test]
    fn pacer_keeps_to_the_rate() {
        let mut sink = MemorySink::default();
        let limits = RunLimits {
            orders: None,
            rate: Some(2_000.0),
            duration: Some(Duration::from_millis(400)),
        };
        let report = generate(
            &config(9),
            &limits,
            &mut sink,
            &mut |_| {},
            &AtomicBool::new(false),
        )
        .unwrap();
        // 800 expected; allow a factor of 2 either way.
        assert!(report.events >= 400 && report.events <= 1_600, "{report:?}");
        assert!(report.elapsed >= Duration::from_millis(400), "{report:?}");
        assert!(report.elapsed < Duration::from_millis(900), "{report:?}");
        assert!(sink.finished);
        assert!(sink.flushes >= 1, "a paced run flushes while it waits");
    }

    #[test]
    fn stop_flag_ends_the_run_and_still_finishes() {
        let mut sink = MemorySink::default();
        let stop = AtomicBool::new(false);
        let limits = RunLimits {
            orders: None,
            rate: Some(1_000.0),
            duration: Some(Duration::from_secs(30)),
        };
        let started = Instant::now();
        let mut progress = |r: &Report| {
            if r.elapsed >= Duration::from_millis(200) {
                stop.store(true, Ordering::Relaxed);
            }
        };
        let report = generate(&config(2), &limits, &mut sink, &mut progress, &stop).unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(report.events > 0);
        assert!(sink.finished);
    }

    #[test]
    fn unpaced_duration_stops() {
        let mut sink = MemorySink::default();
        let limits = RunLimits {
            orders: None,
            rate: None,
            duration: Some(Duration::from_millis(50)),
        };
        let started = Instant::now();
        let report = generate(
            &config(4),
            &limits,
            &mut sink,
            &mut |_| {},
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(report.events > 0);
        assert!(report.rate() > 0.0);
    }
}
