//! `kafka://HOST:PORT[,HOST:PORT]/TOPIC`: a Kafka topic read as a member of a
//! consumer group, with `rdkafka`.
//!
//! Kafka's group protocol decides which partitions this process reads; rushhour's
//! checkpoints, not the group's committed offsets, decide where it reads them from.
//! The rebalance callback (which librdkafka runs inside `poll`, on the reading thread)
//! therefore goes through the [`PartitionHandler`]: on an assignment the pipeline
//! takes the partitions over from the newest checkpoint holding them and says where
//! to start, and only then are they assigned, at exactly those offsets; on a revoke
//! the pipeline checkpoints and releases them before they are let go. Offsets are
//! also committed to the group after every checkpoint, for lag tools only.
//!
//! Records are buffered per partition and handed over one partition at a time; a
//! partition's position is the offset after the last record handed over, so what is
//! buffered when a partition is revoked is simply read again by its next owner.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::{
    PartitionHandler, PartitionStatus, Poll, Position, PositionStyle, Positions, Source,
    SourceBatch, SourceError, SourceOptions,
};

/// Where a partition no checkpoint holds is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// Its first retained record.
    #[default]
    Earliest,
    /// Its end when it is assigned: only what is produced from then on.
    Latest,
}

/// How a consumer group shares partitions out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Assignor {
    /// Eager: every member gives everything up on each rebalance, then the group
    /// assigns afresh (co-partitioned by number across topics).
    #[default]
    Range,
    /// Incremental: only the partitions that move are revoked — when the broker's
    /// coordinator carries each member's owned partitions to the leader.
    CooperativeSticky,
}

/// Settings of a Kafka source.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// The consumer group.
    pub group: String,
    /// Where partitions no checkpoint holds start.
    pub start: StartAt,
    /// The group's session timeout: a member silent this long is dropped from it.
    pub session_timeout: Duration,
    /// The assignment strategy.
    pub assignor: Assignor,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            group: "rushhour".into(),
            start: StartAt::Earliest,
            session_timeout: Duration::from_secs(10),
            assignor: Assignor::Range,
        }
    }
}

/// A change of assignment, made in the rebalance callback and applied by the source
/// when its `poll` continues.
enum Change {
    Assigned(Positions),
    Revoked(Vec<u32>),
}

/// What the consumer's context and the source share.
struct Shared {
    name: String,
    topic: String,
    start: StartAt,
    handler: Mutex<Option<Arc<dyn PartitionHandler>>>,
    changes: Mutex<Vec<Change>>,
    failure: Mutex<Option<SourceError>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn fail(&self, reason: String) {
        locked(&self.failure).get_or_insert(SourceError::Broker {
            source_url: self.name.clone(),
            reason,
        });
    }

    fn handler(&self) -> Option<Arc<dyn PartitionHandler>> {
        locked(&self.handler).clone()
    }
}

/// The consumer's context: runs the rebalance callback.
struct GroupContext(Arc<Shared>, ErrorLog);

/// librdkafka's own errors, logged at most once per ten seconds: a broker that is down
/// makes it report every reconnection attempt, and it retries by itself.
#[derive(Default)]
pub(crate) struct ErrorLog(Mutex<Option<Instant>>);

impl ErrorLog {
    pub(crate) fn report(&self, error: &KafkaError, reason: &str) {
        let mut last = locked(&self.0);
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::warn!(%error, reason, "kafka client error (retrying)");
        } else {
            tracing::debug!(%error, reason, "kafka client error (retrying)");
        }
    }
}

impl ClientContext for GroupContext {
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(facility = fac, "librdkafka: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.1.report(&error, reason);
    }
}

impl GroupContext {
    fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<u32> {
        tpl.elements_for_topic(&self.0.topic)
            .iter()
            .filter_map(|e| u32::try_from(e.partition()).ok())
            .collect()
    }

    fn assign(&self, consumer: &BaseConsumer<GroupContext>, tpl: &mut TopicPartitionList) {
        let parts = self.partitions_of(tpl);
        let shared = &self.0;
        let mut defaults = Positions::new();
        for &p in &parts {
            match consumer.fetch_watermarks(&shared.topic, p as i32, Duration::from_secs(30)) {
                Ok((low, high)) => {
                    let offset = match shared.start {
                        StartAt::Earliest => low,
                        StartAt::Latest => high,
                    };
                    defaults.insert(p, Position::Kafka { offset });
                }
                Err(e) => shared.fail(format!("reading the offsets of partition {p}: {e}")),
            }
        }
        let positions = match shared.handler() {
            Some(handler) if defaults.len() == parts.len() => match handler.assigned(&defaults) {
                Ok(positions) => positions,
                Err(e) => {
                    shared.fail(format!("taking over partitions {parts:?}: {e}"));
                    Positions::new()
                }
            },
            _ => Positions::new(),
        };
        for (p, pos) in &positions {
            if let &Position::Kafka { offset } = pos {
                let _ = tpl.set_partition_offset(&shared.topic, *p as i32, Offset::Offset(offset));
            }
        }
        let assigned = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(e) = assigned {
            shared.fail(format!("assigning partitions {parts:?}: {e}"));
        }
        locked(&shared.changes).push(Change::Assigned(positions));
    }

    fn revoke(&self, consumer: &BaseConsumer<GroupContext>, tpl: &TopicPartitionList) {
        let parts = self.partitions_of(tpl);
        let shared = &self.0;
        if let Some(handler) = shared.handler() {
            match handler.revoked(&parts) {
                // Their final positions, for lag tools, while they are still ours.
                Ok(()) => commit_offsets(consumer, &shared.topic, handler.committed(), &parts),
                // The pipeline has stopped (the run is over), or could not hand over:
                // the next owner takes over from the last checkpoint either way.
                Err(e) => tracing::debug!(error = %e, ?parts, "revoked partitions not handed over"),
            }
        }
        locked(&shared.changes).push(Change::Revoked(parts.clone()));
        let unassigned = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(e) = unassigned {
            tracing::warn!(error = %e, ?parts, "unassigning partitions");
        }
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => {
                tracing::warn!(error = ?other, "rebalance failed; giving up the assignment");
                let all = self.partitions_of(tpl);
                locked(&self.0.changes).push(Change::Revoked(all));
                let _ = consumer.unassign();
            }
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        if let Err(e) = result {
            // Only lag tools read these offsets; a member dropped from the group (a
            // zombie) is refused here, and that is as it should be.
            tracing::debug!(error = %e, "committing offsets to the group");
        }
    }
}

/// Commits `positions` of the partitions in `parts` to the group: for lag tools only
/// (rushhour resumes from its checkpoints). A member dropped from the group is refused,
/// as it should be.
fn commit_offsets(
    consumer: &BaseConsumer<GroupContext>,
    topic: &str,
    positions: Option<Positions>,
    parts: &[u32],
) {
    let Some(positions) = positions else { return };
    let mut tpl = TopicPartitionList::new();
    for (p, pos) in positions {
        if let Position::Kafka { offset } = pos
            && parts.contains(&p)
        {
            let _ = tpl.add_partition_offset(topic, p as i32, Offset::Offset(offset));
        }
    }
    if tpl.count() > 0
        && let Err(e) = consumer.commit(&tpl, CommitMode::Async)
    {
        tracing::debug!(error = %e, "committing offsets to the group");
    }
}

/// One assigned partition.
struct Part {
    /// The offset after the last record handed over.
    next: i64,
    /// The end offset seen when the run started (`--until-end`).
    end: Option<i64>,
    data: Vec<u8>,
    records: Vec<(std::ops::Range<usize>, u64)>,
    last_offset: Option<i64>,
    last_data: Instant,
}

/// Reads one topic as a member of a consumer group.
pub struct KafkaSource {
    shared: Arc<Shared>,
    consumer: BaseConsumer<GroupContext>,
    parts: BTreeMap<u32, Part>,
    /// Every partition of the topic, when the run started.
    all: Vec<u32>,
    /// End offsets of every partition, when the run started.
    ends: BTreeMap<u32, i64>,
    until_end: bool,
    idle_timeout: Duration,
    batch_bytes: usize,
    /// Turn of the partitions for handing over buffered records.
    turn: u32,
    /// When a bounded run holding no partition last asked whether the group is done.
    asked_done: Option<Instant>,
    /// When a bounded run last asked the pipeline to finish what it holds (which may
    /// have to wait for other members).
    asked_finish: Option<Instant>,
    /// Partitions read to their end and handed over, still assigned (and paused).
    handed_over: std::collections::BTreeSet<u32>,
}

impl KafkaSource {
    /// Joins the group and subscribes to the topic. Partitions arrive with the first
    /// rebalance, inside a later [`poll`](Source::poll).
    pub fn open(
        brokers: &[String],
        topic: &str,
        settings: &KafkaSettings,
        opts: &SourceOptions,
    ) -> Result<KafkaSource, SourceError> {
        let bootstrap = brokers.join(",");
        let name = format!("kafka://{bootstrap}/{topic}");
        let broker = |reason: String| SourceError::Broker {
            source_url: name.clone(),
            reason,
        };
        let shared = Arc::new(Shared {
            name: name.clone(),
            topic: topic.to_owned(),
            start: settings.start,
            handler: Mutex::new(None),
            changes: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
        });
        let session_ms = settings.session_timeout.as_millis().max(1000);
        let mut config = ClientConfig::new();
        // librdkafka's own debug contexts (`cgrp,fetch`…), logged at debug level.
        if let Ok(contexts) = std::env::var("RUSHHOUR_KAFKA_DEBUG") {
            config.set("debug", contexts);
        }
        let consumer: BaseConsumer<GroupContext> = config
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &settings.group)
            .set("client.id", "rushhour-processor")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", session_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (session_ms / 4).max(250).to_string(),
            )
            // Also the rebalance timeout: how long a rebalance waits for a member that
            // stopped polling (a paused zombie, whose session some coordinators do not
            // expire while a rebalance is pending).
            .set(
                "max.poll.interval.ms",
                (session_ms * 3).max(30_000).to_string(),
            )
            .set(
                "partition.assignment.strategy",
                match settings.assignor {
                    Assignor::CooperativeSticky => "cooperative-sticky",
                    Assignor::Range => "range",
                },
            )
            .create_with_context(GroupContext(shared.clone(), ErrorLog::default()))
            .map_err(|e| broker(format!("creating the consumer: {e}")))?;
        let timeout = Duration::from_secs(15);
        let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| {
            broker(format!(
                "cannot reach the brokers (waited {timeout:?}): {e}"
            ))
        })?;
        let partitions: Vec<u32> = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().iter().map(|p| p.id() as u32).collect())
            .unwrap_or_default();
        if partitions.is_empty() {
            return Err(broker(format!(
                "topic `{topic}` does not exist (create it, e.g. with `rushhour generate --to {name} --partitions 4`)"
            )));
        }
        let mut ends = BTreeMap::new();
        if opts.until_end {
            for &p in &partitions {
                let (_, high) = consumer
                    .fetch_watermarks(topic, p as i32, timeout)
                    .map_err(|e| broker(format!("reading the end of partition {p}: {e}")))?;
                ends.insert(p, high);
            }
        }
        consumer
            .subscribe(&[topic])
            .map_err(|e| broker(format!("subscribing: {e}")))?;
        Ok(KafkaSource {
            shared,
            consumer,
            parts: BTreeMap::new(),
            all: partitions,
            ends,
            until_end: opts.until_end,
            idle_timeout: opts.idle_timeout,
            batch_bytes: opts.batch_bytes.max(1),
            turn: 0,
            asked_done: None,
            asked_finish: None,
            handed_over: std::collections::BTreeSet::new(),
        })
    }

    fn apply_changes(&mut self) {
        let changes = std::mem::take(&mut *locked(&self.shared.changes));
        for change in changes {
            match change {
                Change::Assigned(positions) => {
                    for (p, pos) in positions {
                        self.handed_over.remove(&p);
                        let Position::Kafka { offset } = pos else {
                            continue;
                        };
                        self.parts.insert(
                            p,
                            Part {
                                next: offset,
                                end: self.ends.get(&p).copied(),
                                data: Vec::new(),
                                records: Vec::new(),
                                last_offset: None,
                                last_data: Instant::now(),
                            },
                        );
                    }
                }
                Change::Revoked(parts) => {
                    for p in parts {
                        // Buffered records are beyond the handed-over position: the
                        // next owner reads them again.
                        self.parts.remove(&p);
                        self.handed_over.remove(&p);
                    }
                }
            }
        }
    }

    /// Reports the positions of the newest checkpoint to the group (lag tools).
    fn commit_to_group(&self) {
        let held: Vec<u32> = self.parts.keys().copied().collect();
        let committed = self.shared.handler().and_then(|h| h.committed());
        commit_offsets(&self.consumer, &self.shared.topic, committed, &held);
    }

    /// Moves one partition's buffered records into `batch`, taking turns.
    fn hand_over(&mut self, batch: &mut SourceBatch) -> bool {
        let keys: Vec<u32> = self.parts.keys().copied().collect();
        if keys.is_empty() {
            return false;
        }
        let start = keys.iter().position(|&k| k >= self.turn).unwrap_or(0);
        for k in keys.iter().cycle().skip(start).take(keys.len()) {
            let Some(part) = self.parts.get_mut(k) else {
                continue;
            };
            if part.records.is_empty() {
                continue;
            }
            batch.partition = *k;
            std::mem::swap(&mut batch.data, &mut part.data);
            std::mem::swap(&mut batch.records, &mut part.records);
            part.data.clear();
            part.records.clear();
            if let Some(last) = part.last_offset {
                part.next = last + 1;
            }
            self.turn = k + 1;
            return true;
        }
        false
    }

    /// Takes messages from the consumer into the partitions' buffers: waits up to
    /// `wait` for the first, then takes what is there, up to the batch size.
    fn fetch(&mut self, wait: Duration) -> Result<(), SourceError> {
        let mut bytes = 0;
        let mut timeout = wait;
        while bytes < self.batch_bytes {
            let Some(result) = self.consumer.poll(timeout) else {
                break;
            };
            timeout = Duration::ZERO;
            match result {
                Ok(msg) => {
                    let Ok(p) = u32::try_from(msg.partition()) else {
                        continue;
                    };
                    let Some(part) = self.parts.get_mut(&p) else {
                        continue; // a partition just revoked
                    };
                    if msg.offset() < part.next {
                        continue; // read before (librdkafka may refetch after a seek)
                    }
                    let payload = msg.payload().unwrap_or_default();
                    let at = part.data.len();
                    part.data.extend_from_slice(payload);
                    part.records
                        .push((at..part.data.len(), msg.offset().max(0) as u64));
                    part.last_offset = Some(msg.offset());
                    part.last_data = Instant::now();
                    bytes += payload.len().max(1);
                }
                Err(KafkaError::MessageConsumptionFatal(code)) => {
                    return Err(SourceError::Broker {
                        source_url: self.shared.name.clone(),
                        reason: format!("fatal consumer error: {code}"),
                    });
                }
                Err(e) => {
                    // A broker down or restarting: librdkafka reconnects by itself.
                    tracing::warn!(error = %e, "reading from kafka");
                    break;
                }
            }
        }
        Ok(())
    }

    /// Every partition's end, as positions.
    fn end_positions(&self) -> Positions {
        self.ends
            .iter()
            .map(|(&p, &offset)| (p, Position::Kafka { offset }))
            .collect()
    }

    fn finished(&self, part: &Part) -> bool {
        self.until_end && part.records.is_empty() && part.end.is_some_and(|end| part.next >= end)
    }
}

impl Source for KafkaSource {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn partitions(&self) -> Vec<u32> {
        Vec::new()
    }

    fn all_partitions(&self) -> Vec<u32> {
        self.all.clone()
    }

    fn position_style(&self) -> PositionStyle {
        PositionStyle::TopicPartitionOffset(self.shared.topic.clone())
    }

    fn attach(&mut self, handler: Arc<dyn PartitionHandler>) {
        *locked(&self.shared.handler) = Some(handler);
    }

    fn poll(&mut self, batch: &mut SourceBatch) -> Result<Poll, SourceError> {
        batch.clear();
        self.apply_changes();
        if let Some(failure) = locked(&self.shared.failure).take() {
            return Err(failure);
        }
        self.commit_to_group();
        if self.hand_over(batch) {
            return Ok(Poll::Records);
        }
        self.fetch(Duration::from_millis(100))?;
        // The rebalance callback may have run inside the consumer's poll.
        self.apply_changes();
        if let Some(failure) = locked(&self.shared.failure).take() {
            return Err(failure);
        }
        if self.hand_over(batch) {
            return Ok(Poll::Records);
        }
        if self.until_end {
            let done: Vec<u32> = self
                .parts
                .iter()
                .filter(|(_, part)| self.finished(part))
                .map(|(&p, _)| p)
                .collect();
            if !done.is_empty()
                && done.len() == self.parts.len()
                && self
                    .asked_finish
                    .is_none_or(|t| t.elapsed() >= Duration::from_millis(300))
            {
                // Everything held is read: hand it over now, so that the group's run
                // ends once every partition is (whoever reads the rest), and stop
                // reading it — unless its rider windows still wait for other members.
                let Some(handler) = self.shared.handler() else {
                    return Ok(Poll::Ended);
                };
                self.asked_finish = Some(Instant::now());
                if !handler.finished(&done, &self.end_positions())? {
                    // Waiting for other members: read nothing past the end meanwhile
                    // (a record accepted now could credit windows already final).
                    let mut tpl = TopicPartitionList::new();
                    for &p in &done {
                        let _ = tpl.add_partition(&self.shared.topic, p as i32);
                    }
                    if let Err(e) = self.consumer.pause(&tpl) {
                        tracing::debug!(error = %e, "pausing partitions at their end");
                    }
                    return Ok(Poll::Pending);
                }
                self.asked_finish = None;
                let mut tpl = TopicPartitionList::new();
                for &p in &done {
                    let _ = tpl.add_partition(&self.shared.topic, p as i32);
                    self.parts.remove(&p);
                    self.handed_over.insert(p);
                }
                if let Err(e) = self.consumer.pause(&tpl) {
                    tracing::debug!(error = %e, "pausing finished partitions");
                }
            }
            if self.parts.is_empty()
                && self
                    .asked_done
                    .is_none_or(|t| t.elapsed() >= Duration::from_millis(500))
            {
                // Holding nothing still to read (finished, a rebalance in progress, or
                // more members than partitions): done once every partition was read
                // to its end and handed over by whoever held it last.
                self.asked_done = Some(Instant::now());
                let ends = self.end_positions();
                if self
                    .shared
                    .handler()
                    .is_some_and(|h| h.done_elsewhere(&ends))
                {
                    return Ok(Poll::Ended);
                }
            }
        }
        Ok(Poll::Pending)
    }

    fn statuses(&self) -> BTreeMap<u32, PartitionStatus> {
        self.parts
            .iter()
            .map(|(&p, part)| {
                let status = if self.finished(part) {
                    PartitionStatus::Finished
                } else if !self.until_end && part.last_data.elapsed() >= self.idle_timeout {
                    PartitionStatus::Idle
                } else {
                    PartitionStatus::Active
                };
                (p, status)
            })
            .collect()
    }

    fn positions(&self) -> Positions {
        self.parts
            .iter()
            .map(|(&p, part)| (p, Position::Kafka { offset: part.next }))
            .collect()
    }
}
