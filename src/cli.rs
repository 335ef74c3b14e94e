//! The command line (CONTRACT §5). Every flag has a help text and a default that works.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rushhour_schemas::Endpoint;

/// rushhour: stream-processing analytics for food and pizza delivery.
///
/// Generate realistic delivery events, process them with event-time windows into a
/// Parquet lake, and query the lake with SQL.
///
/// Sources and sinks are URLs: file:PATH (newline-delimited JSON; file:- is stdin or
/// stdout), log:DIR (the embedded stream log), kafka://HOST:PORT/TOPIC,
/// kinesis://STREAM.
#[derive(Debug, Parser)]
#[command(
    name = "rushhour",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Simulate a delivery city and write its events to a stream.
    ///
    /// Example: rushhour generate --to log:./stream --orders 20000 --seed 7
    Generate(GenerateArgs),
    /// Process a stream into the lake: validation, de-duplication, watermarks, windows.
    ///
    /// Example: rushhour process --from log:./stream --lake ./lake --until-end
    Process(ProcessArgs),
    /// Replay the lake's raw events into a stream, in event-time order.
    ///
    /// Example: rushhour replay --lake ./lake --to log:./replayed --speed 60
    Replay(ReplayArgs),
    /// Run SQL over the lake with DataFusion.
    ///
    /// Tables: raw_events, dead_letter, store_minute, deliveries, store_delivery_5m,
    /// rider_minute, late_events.
    ///
    /// Example: rushhour query --lake ./lake "SELECT store_id, sum(revenue_cents) FROM store_minute GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
    Query(QueryArgs),
    /// A busy lunch hour end to end: generate into log:, process into a lake, query it.
    ///
    /// With --services, the whole loop instead: simulated customers and riders order
    /// through the ordering services (embedded SQLite), whose events go to log:, are
    /// processed into the lake, and come back as the ETAs quoted to the next orders.
    ///
    /// Example: rushhour demo --services --orders 2000
    Demo(DemoArgs),
    /// Show every checkpoint of a lake's pipelines, and who holds each pipeline's lease.
    ///
    /// `list` (the default) reads every manifest and checks its state's size and
    /// checksum; `verify` also decodes every state. A checkpoint that does not verify
    /// is skipped by `process`, which falls back to the one before it. Exit status 1
    /// when a pipeline has checkpoints but none that `process` could resume from.
    ///
    /// Example: rushhour checkpoints --lake ./lake verify --json
    Checkpoints(CheckpointsArgs),
    /// Run the ordering services: orders against store inventory, over HTTP.
    ///
    /// Orders are accepted only when the store can make them (every raw material of
    /// every item's recipe reserved in one database transaction); accepted orders and
    /// cancellations go to --to as the contract's events, supplier purchase orders to
    /// --purchase-orders-to. The catalogue (stores, menus, prices) is the generator's
    /// city for --seed and --stores, put into an empty database at start.
    ///
    /// API: GET /stores, GET /stores/{id}, GET /stores/{id}/stock,
    /// PUT /stores/{id}/stock/{material} {"amount": N}, POST /orders (optional
    /// Idempotency-Key header), GET /orders/{id}, POST /orders/{id}/cancel,
    /// GET /purchase-orders[?status=open], POST /purchase-orders/{id}/receive.
    ///
    /// Example: rushhour serve --to log:./stream
    /// then: curl -X POST localhost:8080/orders -d '{"store_id":"store-001","items":[{"product_id":"margherita","qty":1}]}'
    Serve(ServeArgs),
}

/// Parses a duration written like `500ms`, `10s`, `2m` or `6h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write it like 500ms, 10s, 2m or 6h")
    })
}

fn parse_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a pipeline name: use 1-64 letters, digits, - or _"
        ))
    }
}

fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    text.parse::<Endpoint>().map_err(|e| e.to_string())
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{text}` is not a fraction between 0 and 1")),
    }
}

fn parse_positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "`{text}` is not a positive number of events per second"
        )),
    }
}

fn parse_metres(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{text}` is not a positive distance in metres")),
    }
}

fn parse_time(text: &str) -> Result<i64, String> {
    rushhour_schemas::time::parse_rfc3339_millis(text)
        .ok_or_else(|| format!("`{text}` is not an RFC 3339 time like 2026-11-20T12:00:00Z"))
}

/// Compression of the batches a Kafka sink sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KafkaCompression {
    /// LZ4: cheap, the usual choice at high rates.
    Lz4,
    /// zstd: smaller, a little more CPU.
    Zstd,
    /// Uncompressed.
    None,
}

/// How `generate` and `replay` write to a stream.
#[derive(Debug, Args)]
pub struct StreamOutArgs {
    /// Partitions of a stream this run creates: a new log: (default 4), a Kafka topic
    /// or a Kinesis stream (shards) that does not exist yet (without --partitions, or
    /// --shards, a missing topic or stream is an error).
    #[arg(long, visible_alias = "shards", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: Option<u32>,
    /// Compression of Kafka batches.
    #[arg(long, value_enum, default_value_t = KafkaCompression::Lz4)]
    pub compression: KafkaCompression,
    /// Kinesis: at most one record per key in every PutRecords call, so that no partial
    /// failure can reorder a key's records. Without it, calls are full until the stream
    /// refuses something and only then one record per key for a while (the first
    /// refused call could reorder a key; the run warns if it did). Slower for hot keys.
    #[arg(long)]
    pub strict_key_order: bool,
}

impl StreamOutArgs {
    /// The producer's sink options.
    pub fn sink_options(&self) -> rushhour_producer::SinkOptions {
        use rushhour_producer::sink::kafka::Compression;
        rushhour_producer::SinkOptions {
            partitions: self.partitions,
            compression: match self.compression {
                KafkaCompression::Lz4 => Compression::Lz4,
                KafkaCompression::Zstd => Compression::Zstd,
                KafkaCompression::None => Compression::None,
            },
            strict_key_order: self.strict_key_order,
            io: None,
        }
    }
}

/// `rushhour serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    /// The database: postgres://USER@HOST:PORT/DB, or sqlite:PATH. Without it, an
    /// embedded SQLite file in the working directory (rushhour-services.db).
    #[arg(long, env = "RUSHHOUR_DB")]
    pub db: Option<String>,
    /// Where order events go, as for `generate --to`.
    #[arg(long, value_parser = parse_endpoint, default_value = "log:./stream")]
    pub to: Endpoint,
    /// Where purchase-order events go (their own stream; the processor does not read
    /// them). Default: beside --to, with -purchase-orders added to the topic, stream,
    /// log directory or file name.
    #[arg(long, value_parser = parse_endpoint)]
    pub purchase_orders_to: Option<Endpoint>,
    /// Seed of the city whose stores and menus an empty database is filled with (the
    /// same seed as `generate --seed` gives the same stores and prices).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of stores put into an empty database.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub stores: u32,
    /// Connections to PostgreSQL (SQLite always uses one).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_connections: u32,
    /// Quote delivery ETAs from this lake's store_delivery_5m (the store's newest
    /// window, else the city's), as `process` writes it. Without: a fixed 35 minutes
    /// (15 for pickup).
    #[arg(long)]
    pub eta_lake: Option<String>,
    /// How often --eta-lake is re-read.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub eta_refresh: Duration,
    /// Riders farther than this many metres from the store are not offered its
    /// orders; with nobody closer the delivery is declined (the order cancelled with
    /// reason no_rider_nearby).
    #[arg(long, default_value_t = 5000.0, value_parser = parse_metres)]
    pub max_rider_distance: f64,
    /// An offer a rider has not answered in this long goes to the next nearest rider.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub offer_timeout: Duration,
    #[command(flatten)]
    pub stream: StreamOutArgs,
}

/// `rushhour generate`
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Where to write: file:PATH, file:- (stdout), log:DIR, kafka://HOST:PORT/TOPIC or
    /// kinesis://STREAM (AWS settings from the environment).
    #[arg(long, value_parser = parse_endpoint, required_unless_present = "via")]
    pub to: Option<Endpoint>,
    /// Instead of writing events, drive the ordering services at this URL (e.g.
    /// http://127.0.0.1:8080, `rushhour serve`) with the simulation's customers and
    /// riders: orders, cancellations, pings, pickups and deliveries as HTTP requests.
    /// The services emit the events (to their own --to); a summary of orders accepted,
    /// rejected and declined is printed. Sends as fast as the services answer.
    #[arg(long, conflicts_with_all = ["to", "rate"])]
    pub via: Option<String>,
    /// With --via: concurrent clients. Each carries its own orders from placement to
    /// delivery (records are shared out by order, pings by rider).
    #[arg(long, default_value_t = 4, requires = "via",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub clients: u32,
    /// With --via: how often the simulated suppliers deliver every open purchase order
    /// (0s: never, so stock runs out and orders are refused).
    #[arg(long, value_parser = parse_duration, default_value = "1s", requires = "via")]
    pub restock_every: Duration,
    /// Stop after this many orders have been placed (their lifecycles complete).
    /// Without --orders and --duration: 1000 orders.
    #[arg(long, conflicts_with = "rate")]
    pub orders: Option<u64>,
    /// Emit this many events per second of wall clock, steadily (needs --duration).
    #[arg(long, value_parser = parse_positive_rate, requires = "duration")]
    pub rate: Option<f64>,
    /// How long to generate at --rate, e.g. 30s or 5m.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Seed of the simulation: the same seed gives the same events, byte for byte.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub stream: StreamOutArgs,
    /// Simulated start time (event time of the first events).
    #[arg(long, value_parser = parse_time, default_value = "2026-11-20T11:30:00Z")]
    pub start: i64,
    /// Number of stores.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub stores: u32,
    /// Number of riders.
    #[arg(long, default_value_t = 7000, value_parser = clap::value_parser!(u32).range(1..))]
    pub riders: u32,
    /// Orders per minute at the height of the meal peaks.
    #[arg(long, default_value_t = 300.0, value_parser = parse_positive_rate)]
    pub peak_orders_per_min: f64,
    /// Test knob: delay each record by up to this much event time (bounded disorder).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub disorder: Duration,
    /// Test knob: fraction of records held back by --late-by so they arrive late.
    #[arg(long, value_parser = parse_fraction, default_value_t = 0.0)]
    pub late_fraction: f64,
    /// Test knob: how far late records are held back.
    #[arg(long, value_parser = parse_duration, default_value = "1m")]
    pub late_by: Duration,
    /// Test knob: fraction of records sent twice.
    #[arg(long, value_parser = parse_fraction, default_value_t = 0.0)]
    pub duplicate_fraction: f64,
    /// Test knob: fraction of records replaced by malformed ones.
    #[arg(long, value_parser = parse_fraction, default_value_t = 0.0)]
    pub malformed_fraction: f64,
}

/// `rushhour process`
#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Where to read: file:PATH, file:- (stdin), log:DIR, kafka://HOST:PORT/TOPIC or
    /// kinesis://STREAM (AWS settings from the environment).
    #[arg(long, value_parser = parse_endpoint)]
    pub from: Endpoint,
    /// The lake: a local directory (created if missing), file:PATH, or
    /// s3://BUCKET/PREFIX (the bucket must exist; AWS settings from the environment).
    #[arg(long)]
    pub lake: String,
    /// How far the watermark trails the newest event time; older events are late.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub lateness: Duration,
    /// Stop at the end of the input, flush every window and print a JSON summary.
    #[arg(long)]
    pub until_end: bool,
    /// Event time after an order's last event when its join state is dropped.
    #[arg(long, value_parser = parse_duration, default_value = "6h")]
    pub order_ttl: Duration,
    /// A partition with nothing new for this long stops holding the watermark back (when
    /// following a growing input; with --until-end every partition is read to its end).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub idle_timeout: Duration,
    /// Where checkpoints go (a directory). Default: LAKE/_checkpoints/NAME. Restarted
    /// with the same checkpoint, a run continues exactly where the last one committed.
    #[arg(long)]
    pub checkpoint: Option<String>,
    /// Take a checkpoint (and publish the epoch's lake files) this often.
    #[arg(long, alias = "commit-interval", value_parser = parse_duration, default_value = "10s")]
    pub checkpoint_interval: Duration,
    /// Checkpoints kept; older ones are deleted.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub retain_checkpoints: u32,
    /// The pipeline's name: it keys the default checkpoint directory and the staging
    /// area. Default: made from the source URL, so each source has its own checkpoints.
    #[arg(long, value_parser = parse_name)]
    pub name: Option<String>,
    /// One process at a time runs a pipeline: it holds a lease in the checkpoint
    /// directory, renewed every third of this. A holder paused past it stops before
    /// publishing anything; another process can take over once it has passed (at once
    /// when the holder stopped cleanly or died on this machine).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub lease_ttl: Duration,
    /// If another process holds the pipeline's lease, wait for it to stop (or its lease
    /// to expire) and take over, instead of failing: for rolling deploys.
    #[arg(long)]
    pub wait_for_lease: bool,
    /// Send an event whose time is more than this far ahead of the wall clock (when it
    /// is read) to the dead letter, instead of letting it move the watermark: one event
    /// from a broken clock dated 9999 would make every later event late. Off by
    /// default (the contract's answer); 1h is a sane setting.
    #[arg(long, value_parser = parse_duration)]
    pub max_future: Option<Duration>,
    /// Kafka: the consumer group (default: the pipeline's name). Start more processes
    /// with the same group and lake to share the topic's partitions.
    #[arg(long, value_parser = parse_name)]
    pub group: Option<String>,
    /// Kafka and Kinesis: where a partition (shard) no checkpoint holds starts, for a
    /// new pipeline.
    #[arg(long, value_enum, default_value_t = StartAt::Earliest)]
    pub start: StartAt,
    /// Kafka: a member silent this long is dropped from the group and its partitions
    /// go to the others.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub session_timeout: Duration,
    /// Kafka: how the group shares partitions out. `range` (eager) revokes everything
    /// on each rebalance; `cooperative-sticky` moves only what must move. Either way a
    /// partition handed to a new member while an old one still reads it (a zombie) is
    /// fenced: the old member stops, publishing nothing more.
    #[arg(long, value_enum, default_value_t = Assignor::Range)]
    pub assignor: Assignor,
    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `--start` of a Kafka or Kinesis source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartAt {
    /// The first record the topic (or shard) still has.
    Earliest,
    /// Only what is produced from now on.
    Latest,
}

/// `--assignor` of a Kafka source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Assignor {
    /// Eager rebalances: every member gives everything up each time.
    Range,
    /// Incremental rebalances: only partitions that move are revoked.
    CooperativeSticky,
}

/// How fast `rushhour replay` goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as the sink takes it.
    Max,
    /// This many seconds of event time per second of wall clock.
    Factor(f64),
}

fn parse_speed(text: &str) -> Result<Speed, String> {
    if text.eq_ignore_ascii_case("max") {
        return Ok(Speed::Max);
    }
    match text.trim_end_matches('x').parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(Speed::Factor(v)),
        _ => Err(format!(
            "`{text}` is not a speed: give `max` or a positive factor such as 1, 10 or 0.5"
        )),
    }
}

/// `rushhour replay`
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The lake to read raw events from: a directory or s3://BUCKET/PREFIX.
    #[arg(long)]
    pub lake: String,
    /// Where to write: file:PATH, file:- (stdout), log:DIR, kafka://HOST:PORT/TOPIC or
    /// kinesis://STREAM (AWS settings from the environment).
    #[arg(long, value_parser = parse_endpoint)]
    pub to: Endpoint,
    /// Replay events with event time at or after this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    pub from_time: Option<i64>,
    /// Replay events with event time before this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    pub to_time: Option<i64>,
    /// `max`, or a factor of event time per wall-clock time (1 = as it happened, 60 = an hour a minute).
    #[arg(long, value_parser = parse_speed, default_value = "max")]
    pub speed: Speed,
    #[command(flatten)]
    pub stream: StreamOutArgs,
}

/// Output formats of `rushhour query`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// `rushhour query`
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The lake: a directory or s3://BUCKET/PREFIX.
    #[arg(long)]
    pub lake: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// The SQL statement.
    pub sql: String,
}

/// What `rushhour checkpoints` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckpointsAction {
    /// List checkpoints, checking manifests and state checksums.
    List,
    /// Also decode every state, as a restart would.
    Verify,
}

/// `rushhour checkpoints`
#[derive(Debug, Args)]
pub struct CheckpointsArgs {
    /// The lake (a directory or s3://BUCKET/PREFIX): every pipeline under
    /// LAKE/_checkpoints/ is shown.
    #[arg(long)]
    pub lake: String,
    /// One checkpoint directory to show instead (as given to `process --checkpoint`).
    #[arg(long)]
    pub checkpoint: Option<String>,
    /// `list` or `verify`.
    #[arg(value_enum, default_value_t = CheckpointsAction::List)]
    pub action: CheckpointsAction,
    /// One JSON document on stdout, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// `rushhour demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Working directory for the stream log and the lake (its log/ and lake/ are replaced).
    #[arg(long, default_value = "rushhour-demo")]
    pub dir: PathBuf,
    /// Orders in the lunch hour (default 18,000; with --services 2,000 in the first
    /// wave and a tenth of that in the second).
    #[arg(long)]
    pub orders: Option<u64>,
    /// Seed of the simulation.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Run the whole loop through the ordering services (`rushhour serve`, in this
    /// process, on an embedded SQLite in the working directory): customers → services →
    /// log: → process → lake → ETAs quoted by the services. Two waves of orders: the
    /// first is quoted default ETAs (the lake is empty), the second is quoted from the
    /// delivery times the first one left in the lake.
    #[arg(long)]
    pub services: bool,
    /// With --services: the database instead of the embedded SQLite, e.g.
    /// postgres://user@127.0.0.1:5432/db: one of the demo's own (no other `serve` on it,
    /// nothing left in its outbox); its catalogue and stock are kept.
    #[arg(long, requires = "services")]
    pub db: Option<String>,
    /// With --services: concurrent simulated clients.
    #[arg(long, default_value_t = 4, requires = "services",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub clients: u32,
}
