//! The rushhour load generator: a seeded simulation of a food-delivery city that
//! writes the wire events of CONTRACT §1 to a sink (`rushhour generate`).
//!
//! # The model, and why
//!
//! The point of the generator is data that *behaves* like production data where a
//! stream processor is sensitive to it, while staying exactly reproducible:
//!
//! - **Stores and skew.** Stores sit within 6 km of a city centre, each with its own
//!   menu and prices. The top 20 % of stores receive about 80 % of orders, so some
//!   partitions (keyed by `store_id`) run hot, as they do in real marketplaces.
//! - **Demand over the day.** Orders arrive as a non-homogeneous Poisson process whose
//!   rate follows the day: a low base, a lunch peak around 12:30 UTC and a larger
//!   dinner peak around 19:30, scaled so the dinner peak is
//!   [`SimConfig::peak_orders_per_min`]. It is sampled by thinning (Lewis–Shedler):
//!   candidates at the peak rate, each kept with probability rate(t)/peak. Windows
//!   therefore see realistic bursts and quiet spells, not a flat line.
//! - **Order lifecycles.** An order is placed (online or in store, for delivery or
//!   pickup); about 4 % are cancelled a few minutes later. A delivery order is
//!   prepared (lognormal, about 10–15 minutes, longer at peaks), a nearby free rider
//!   is sent so as to arrive around when the food is ready (or the order queues for
//!   the next free rider), picks it up once both rider and food are there, and rides
//!   to the customer. So `order_placed < order_picked_up < order_delivered` in event
//!   time, with the delays a processor's joins and windows have to bridge.
//! - **Riders.** Riders move along great circles at 4–8 m/s and report their
//!   position every ~15 s with a few metres of GPS noise (`order_id` set while they
//!   carry an order). These pings are most of the volume, keyed by `rider_id`.
//! - **Time.** Simulated time runs on a priority queue of future actions, not on the
//!   wall clock: the simulation emits in event-time order as fast as it can, and
//!   [`generate`] paces it to a wall-clock rate when asked.
//! - **Reproducibility.** All randomness comes from `ChaCha8Rng` seeded by
//!   [`SimConfig::seed`]; event ids are derived from the seed and a counter. The same
//!   seed gives the same bytes, which is what lets tests compare a streaming answer
//!   with a batch answer over the same input.
//! - **Imperfection on purpose.** [`Knobs`] add bounded disorder, late records,
//!   duplicates and malformed records, each by seeded draws of their own, to exercise
//!   the processor's watermark, de-duplication and dead-letter paths.
//!
//! # Use
//!
//! ```no_run
//! # fn main() -> Result<(), rushhour_producer::ProducerError> {
//! use std::sync::atomic::AtomicBool;
//! use rushhour_producer::{generate, open_sink, RunLimits, SimConfig};
//! use rushhour_schemas::Endpoint;
//!
//! let mut sink = open_sink(&Endpoint::Log("/tmp/events".into()), &Default::default())?;
//! let limits = RunLimits { orders: Some(1_000), ..RunLimits::default() };
//! let stop = AtomicBool::new(false);
//! let report = generate(&SimConfig::default(), &limits, &mut *sink, &mut |_| {}, &stop)?;
//! assert_eq!(report.orders, 1_000);
//! # Ok(())
//! # }
//! ```

mod city;
pub mod knobs;
pub mod run;
pub mod sim;
pub mod sink;

use std::path::PathBuf;

pub use city::{StoreListing, stores};
pub use knobs::Knobs;
pub use run::{Report, RunLimits, generate};
pub use sim::{DEFAULT_START_MS, Produced, SimConfig, Simulation};
pub use sink::{EventSink, FileSink, LogSink, MemorySink, SinkOptions, open_sink};

/// Errors of the generator.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// Settings that cannot work (the caller's to fix; retrying does not help).
    #[error("invalid generator settings: {0}")]
    Config(String),
    /// A sink kind that this build cannot write to.
    #[error("{0}")]
    Unsupported(String),
    /// Writing to a file sink (or stdout) failed.
    #[error("writing to {sink}: {source}")]
    Io {
        /// The sink, as its URL (`file:PATH`, `file:-`).
        sink: String,
        /// The file, unless it is stdout.
        path: Option<PathBuf>,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing to a Kafka sink failed (the broker, the topic, a delivery).
    #[error("writing to {sink}: {reason}")]
    Kafka {
        /// The sink, as its URL.
        sink: String,
        /// What failed.
        reason: String,
    },
    /// Writing to a Kinesis stream failed (the stream, a call the service refused).
    #[error("writing to {sink}: {reason}")]
    Kinesis {
        /// The sink, as its URL.
        sink: String,
        /// What failed.
        reason: String,
    },
    /// Writing to a stream-log sink failed.
    #[error("writing to {sink}: {source}")]
    Log {
        /// The sink, as its URL (`log:DIR`).
        sink: String,
        /// The underlying error, which names the file.
        #[source]
        source: rushhour_streamlog::LogError,
    },
}

impl ProducerError {
    /// Whether the reader of a stdout sink went away (e.g. `| head`): a normal way for
    /// a generator writing to a pipe to end, which a binary may want to treat as such.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            ProducerError::Io { source, .. } => source.kind() == std::io::ErrorKind::BrokenPipe,
            _ => false,
        }
    }

    /// Whether trying again might succeed: an I/O failure may be transient (a full
    /// disk, a lock held by another writer); bad settings and unsupported sinks are not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProducerError::Io { .. }
                | ProducerError::Log { .. }
                | ProducerError::Kafka { .. }
                | ProducerError::Kinesis { .. }
        )
    }
}
