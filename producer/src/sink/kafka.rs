//! `kafka://HOST:PORT[,HOST:PORT]/TOPIC`: records to a Kafka topic with `rdkafka`
//! (librdkafka, built from source and linked statically).
//!
//! Nothing is lost quietly: the producer is idempotent (no duplicates or reordering
//! when librdkafka retries), every delivery report is checked, and a failed one fails
//! the run at the next send or flush. A full local queue is back-pressure: the sink
//! waits for deliveries instead of failing or dropping. Keys follow the contract
//! (`store_id` for order events, `rider_id` for pings; malformed records have none)
//! and are placed by Kafka's Java partitioner (murmur2), so a key lands on the same
//! partition number as with `log:DIR`.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

use super::EventSink;
use crate::ProducerError;

/// How batches are compressed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// LZ4: cheap to compress, the usual choice for high rates.
    #[default]
    Lz4,
    /// zstd: smaller batches for a little more CPU.
    Zstd,
    /// None.
    None,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }
}

/// How to open a Kafka sink.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// Create the topic with this many partitions if it does not exist; `None`: a
    /// missing topic is an error (a typo should not create a topic).
    pub create_partitions: Option<u32>,
    /// Batch compression.
    pub compression: Compression,
    /// How long a record may wait for its delivery before the run fails.
    pub delivery_timeout: Duration,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            create_partitions: None,
            compression: Compression::Lz4,
            delivery_timeout: Duration::from_secs(60),
        }
    }
}

/// Delivery reports, counted on librdkafka's thread and read by the sink.
#[derive(Default)]
struct Reports {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

/// The producer's context: counts delivery reports into [`Reports`].
struct Counting(Arc<Reports>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self
                    .0
                    .first_failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// Writes records to one Kafka topic.
pub struct KafkaSink {
    name: String,
    topic: String,
    producer: BaseProducer<Counting>,
    reports: Arc<Reports>,
    sent: u64,
    timeout: Duration,
}

fn kafka_error(sink: &str, what: &str, e: impl std::fmt::Display) -> ProducerError {
    ProducerError::Kafka {
        sink: sink.to_owned(),
        reason: format!("{what}: {e}"),
    }
}

/// The partitions of `topic`, or `None` if the broker does not know it.
pub fn topic_partitions<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<u32>, KafkaError> {
    let metadata = client.fetch_metadata(Some(topic), timeout)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match t.error() {
        None if !t.partitions().is_empty() => Ok(Some(t.partitions().len() as u32)),
        None => Ok(None),
        Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition => {
            Ok(None)
        }
        Some(e) => Err(KafkaError::MetadataFetch(e.into())),
    }
}

/// Creates `topic` with `partitions` partitions (replication 1 on a one-broker
/// cluster, else the broker's default) unless it exists; returns its partitions.
pub fn ensure_topic(
    brokers: &str,
    topic: &str,
    partitions: u32,
    timeout: Duration,
) -> Result<u32, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    if let Some(n) = topic_partitions(admin.inner(), topic, timeout)? {
        return Ok(n);
    }
    let replication = admin
        .inner()
        .fetch_metadata(None, timeout)?
        .brokers()
        .len()
        .clamp(1, 3) as i32;
    let new = NewTopic::new(
        topic,
        partitions as i32,
        TopicReplication::Fixed(replication),
    );
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let results = futures::executor::block_on(admin.create_topics([&new], &opts))?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    // The new topic's metadata may take a moment to show everywhere.
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(n) = topic_partitions(admin.inner(), topic, timeout)? {
            return Ok(n);
        }
        if Instant::now() >= deadline {
            return Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl KafkaSink {
    /// Connects to `brokers` and checks (or creates) `topic`.
    pub fn open(
        brokers: &[String],
        topic: &str,
        opts: &KafkaOptions,
    ) -> Result<KafkaSink, ProducerError> {
        let bootstrap = brokers.join(",");
        let name = format!("kafka://{bootstrap}/{topic}");
        let timeout = Duration::from_secs(15);
        let partitions = match opts.create_partitions {
            Some(n) => Some(
                ensure_topic(&bootstrap, topic, n, timeout)
                    .map_err(|e| kafka_error(&name, "creating the topic", e))?,
            ),
            None => None,
        };
        let reports = Arc::new(Reports::default());
        let producer: BaseProducer<Counting> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("client.id", "rushhour-producer")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", opts.compression.as_str())
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "200000")
            .set("queue.buffering.max.kbytes", "262144")
            .set(
                "message.timeout.ms",
                opts.delivery_timeout.as_millis().to_string(),
            )
            .create_with_context(Counting(reports.clone()))
            .map_err(|e| kafka_error(&name, "creating the producer", e))?;
        if partitions.is_none() {
            match topic_partitions(producer.client(), topic, timeout) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(ProducerError::Config(format!(
                        "topic `{topic}` does not exist on {bootstrap}; pass --partitions N to create it"
                    )));
                }
                Err(e) => return Err(kafka_error(&name, "reading the topic's metadata", e)),
            }
        }
        Ok(KafkaSink {
            name,
            topic: topic.to_owned(),
            producer,
            reports,
            sent: 0,
            timeout: opts.delivery_timeout,
        })
    }

    /// Records whose delivery was confirmed so far.
    pub fn delivered(&self) -> u64 {
        self.reports.delivered.load(Ordering::Relaxed)
    }

    fn check_reports(&self) -> Result<(), ProducerError> {
        let failed = self.reports.failed.load(Ordering::Relaxed);
        if failed == 0 {
            return Ok(());
        }
        let first = self
            .reports
            .first_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        Err(ProducerError::Kafka {
            sink: self.name.clone(),
            reason: format!("{failed} record(s) could not be delivered; the first: {first}"),
        })
    }

    /// Waits until every record sent is delivered (or failed).
    fn drain(&mut self) -> Result<(), ProducerError> {
        self.producer
            .flush(self.timeout)
            .map_err(|e| kafka_error(&self.name, "flushing", e))?;
        self.check_reports()?;
        let delivered = self.delivered();
        if delivered != self.sent {
            return Err(ProducerError::Kafka {
                sink: self.name.clone(),
                reason: format!(
                    "{} of {} records were not confirmed delivered",
                    self.sent - delivered,
                    self.sent
                ),
            });
        }
        Ok(())
    }
}

impl EventSink for KafkaSink {
    fn send(&mut self, key: &str, payload: &[u8]) -> Result<(), ProducerError> {
        let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(&self.topic).payload(payload);
        if !key.is_empty() {
            record = record.key(key);
        }
        let waited_since = Instant::now();
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // Back-pressure: serve delivery reports until there is room.
                    record = back;
                    self.producer.poll(Duration::from_millis(5));
                    self.check_reports()?;
                    if waited_since.elapsed() > self.timeout {
                        return Err(ProducerError::Kafka {
                            sink: self.name.clone(),
                            reason: format!(
                                "the local queue stayed full for {:?}: is the broker reachable?",
                                self.timeout
                            ),
                        });
                    }
                }
                Err((e, _)) => return Err(kafka_error(&self.name, "sending", e)),
            }
        }
        self.sent += 1;
        if self.sent.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO);
            self.check_reports()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ProducerError> {
        self.producer.poll(Duration::ZERO);
        self.check_reports()
    }

    fn finish(&mut self) -> Result<(), ProducerError> {
        self.drain()
    }
}
