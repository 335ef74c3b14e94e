//! `kinesis://STREAM`: every shard of a Kinesis data stream, read by this process, with
//! `aws-sdk-kinesis`.
//!
//! Shards are partitions to the pipeline: `shardId-000000000007` is partition 7 (the
//! `position` column reads `7:1042`, the shard's 1043rd record). Positions are the
//! sequence number of the last record handed over, so a restart goes on with
//! `AFTER_SEQUENCE_NUMBER`; a shard no checkpoint holds starts at `TRIM_HORIZON`
//! (`--start earliest`) or at the time the pipeline was first started
//! (`--start latest`, as `AT_TIMESTAMP`, so that a crash before its first record does
//! not move the start).
//!
//! Resharding is read in order: a child shard (a split's two, a merge's one) is read
//! only once all its parents are read to their end (`GetRecords` gives no next
//! iterator). Then the pipeline is told ([`PartitionHandler::continued`]) and holds the
//! child with the parents' watermark; the drained parents stay held, finished, so their
//! counters and the event ids they brought are kept (a duplicate across a reshard is
//! still one).
//!
//! Service limits: one `GetRecords` per shard at most every 200 ms (5 per second);
//! throttling (`ProvisionedThroughputExceeded`) and failed calls back off per shard
//! (from 0.5 s, doubling, up to 10 s); an expired iterator is renewed from the
//! position. `MillisBehindLatest` is kept per shard ([`KinesisSource::behind_ms_by_shard`];
//! the slowest shard's shows in `process`'s progress line).
//! `--until-end` reads every shard, parents before children, until it is drained
//! (closed) or caught up (`MillisBehindLatest` 0 and nothing returned).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use backon::{ExponentialBuilder, Retryable};
use rushhour_cloud::{Io, describe};

use super::{
    PartitionHandler, PartitionStatus, Poll, Position, PositionStyle, Positions, SequenceNumber,
    Source, SourceBatch, SourceError, SourceOptions,
};

/// Where a shard no checkpoint holds is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KinesisStart {
    /// Its oldest record (`TRIM_HORIZON`).
    #[default]
    Earliest,
    /// What arrives from the pipeline's first start on.
    Latest,
}

/// Settings of a Kinesis source.
#[derive(Debug, Clone, Default)]
pub struct KinesisSettings {
    /// Where shards no checkpoint holds start.
    pub start: KinesisStart,
    /// The I/O runtime; one is started when `None`.
    pub io: Option<Io>,
}

/// Shortest time between two `GetRecords` of one shard.
const CALL_INTERVAL: Duration = Duration::from_millis(200);
/// Records asked for per `GetRecords`.
const RECORDS_PER_CALL: i32 = 2_000;
/// Failed calls of one shard in a row (no answer, internal failures) before the run
/// stops: with the backoff's 10 s cap, a few minutes of outage.
const MAX_FAILURES: u32 = 30;

/// A call that may succeed later.
struct Transient(String);

/// Why a call failed.
enum Failure {
    /// Try again later.
    Transient(Transient),
    /// Stop the run.
    Fatal(SourceError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Its parents are still being read.
    Waiting,
    /// Being read.
    Reading,
    /// Closed and read to its end.
    Drained,
    /// A bounded run caught up with it.
    AtEnd,
    /// Not read by this pipeline (closed before a `--start latest` pipeline began).
    Skipped,
}

struct Shard {
    id: String,
    parents: Vec<u32>,
    /// Closed (split or merged away) when listed: it ends only when read to its end.
    closed: bool,
    state: State,
    iterator: Option<String>,
    position: Position,
    next_call: Instant,
    backoff: Duration,
    last_data: Instant,
    behind_ms: Option<i64>,
    /// Calls that failed in a row (throttling aside).
    failures: u32,
}

impl Shard {
    fn new(id: String, parents: Vec<u32>, closed: bool, state: State, position: Position) -> Shard {
        Shard {
            id,
            parents,
            closed,
            state,
            iterator: None,
            position,
            next_call: Instant::now(),
            backoff: Duration::ZERO,
            last_data: Instant::now(),
            behind_ms: None,
            failures: 0,
        }
    }
}

/// A shard as `ListShards` shows it: number, id, parent numbers, closed.
type Listed = (u32, String, Vec<u32>, bool);

/// Reads every shard of a stream; see the module docs.
pub struct KinesisSource {
    name: String,
    stream: String,
    client: Client,
    io: Io,
    until_end: bool,
    idle_timeout: Duration,
    /// When this process opened the stream (ms): a bounded run reads what arrived
    /// before.
    started_ms: i64,
    shards: BTreeMap<u32, Shard>,
    /// The shards read from the start (held by the pipeline before the first poll).
    initial: Vec<u32>,
    next: u32,
    handler: Option<Arc<dyn PartitionHandler>>,
    /// Children may be ready before the first read (their parents gone from the
    /// listing): looked for at the first poll, once the handler is attached.
    check_children: bool,
}

/// Whether a failed SDK call may succeed if made again: no answer (connection,
/// timeout, a garbled response), or the service error `code`.
fn retryable<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>, code: &str) -> bool {
    match e {
        SdkError::ConstructionFailure(_) => false,
        SdkError::ServiceError(service) => service.err().code() == Some(code),
        _ => true,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The partition number of a shard id (`shardId-000000000007` → 7).
pub fn shard_number(id: &str) -> Option<u32> {
    id.strip_prefix("shardId-")?.parse().ok()
}

impl KinesisSource {
    /// Opens `stream`, resuming the shards in `positions`.
    ///
    /// A new pipeline (no positions) reads the roots (`--start earliest`), or the shards
    /// open now from now on (`--start latest`; closed ones are skipped). A restart
    /// ignores `--start`: the shards the checkpoint holds go on from their positions,
    /// those before them (ancestors of held shards) are skipped, and the others are
    /// children still to come, read from their first record once their parents are
    /// drained.
    pub fn open(
        stream: &str,
        settings: &KinesisSettings,
        opts: &SourceOptions,
        positions: Option<&Positions>,
    ) -> Result<KinesisSource, SourceError> {
        let name = format!("kinesis://{stream}");
        let io = match &settings.io {
            Some(io) => io.clone(),
            None => Io::new(1).map_err(|e| SourceError::Broker {
                source_url: name.clone(),
                reason: format!("cannot start the I/O runtime: {e}"),
            })?,
        };
        let client = Client::new(&io.block_on(rushhour_cloud::aws_config()));
        let started_ms = now_ms();
        let mut source = KinesisSource {
            name,
            stream: stream.to_owned(),
            client,
            io,
            until_end: opts.until_end,
            idle_timeout: opts.idle_timeout,
            started_ms,
            shards: BTreeMap::new(),
            initial: Vec::new(),
            next: 0,
            handler: None,
            check_children: true,
        };
        let held = positions.cloned().unwrap_or_default();
        if let Some((part, position)) = held
            .iter()
            .find(|(_, p)| !matches!(p, Position::Kinesis { .. }))
        {
            return Err(source.bad_position(format!(
                "shard {part}: {position:?} is not a Kinesis position"
            )));
        }
        let fresh = held.is_empty();
        let latest = fresh && settings.start == KinesisStart::Latest;
        for (number, id, parents, closed) in source.list_shards()? {
            let state = match held.get(&number) {
                Some(_) => State::Reading,
                None if latest && closed => State::Skipped,
                None => State::Waiting,
            };
            let position = held.get(&number).copied().unwrap_or(Position::Kinesis {
                after: None,
                count: 0,
                since_ms: None,
            });
            source
                .shards
                .insert(number, Shard::new(id, parents, closed, state, position));
        }
        // A shard the checkpoint holds but the stream no longer lists is past its
        // retention: closed long ago (read to its end, or its rest expired unread).
        for (&gone, &position) in &held {
            if source.shards.contains_key(&gone) {
                continue;
            }
            tracing::warn!(
                shard = gone,
                %position,
                "the stream no longer lists a shard the checkpoint holds (past its retention); taken as read to its end"
            );
            let id = format!("shardId-{gone:012}");
            let shard = Shard::new(id, Vec::new(), true, State::Drained, position);
            source.shards.insert(gone, shard);
        }
        if !fresh {
            // Ancestors of held shards were read (or skipped) before: never again.
            let mut stack: Vec<u32> = held.keys().copied().collect();
            while let Some(n) = stack.pop() {
                let parents = source.shards.get(&n).map(|s| s.parents.clone());
                for p in parents.unwrap_or_default() {
                    if let Some(parent) = source.shards.get_mut(&p)
                        && parent.state == State::Waiting
                    {
                        parent.state = State::Skipped;
                        stack.push(p);
                    }
                }
            }
        }
        // A shard none of whose parents is read here (a root, or one whose parents are
        // gone or skipped) starts now.
        let ready: Vec<u32> = source
            .shards
            .iter()
            .filter(|(_, s)| s.state == State::Waiting)
            .filter(|(_, s)| {
                s.parents.iter().all(|p| {
                    source
                        .shards
                        .get(p)
                        .is_none_or(|parent| parent.state == State::Skipped)
                })
            })
            .map(|(&n, _)| n)
            .collect();
        for n in ready {
            if let Some(s) = source.shards.get_mut(&n) {
                s.state = State::Reading;
                if latest {
                    s.position = Position::Kinesis {
                        after: None,
                        count: 0,
                        since_ms: Some(started_ms),
                    };
                }
            }
        }
        source.initial = source
            .shards
            .iter()
            .filter(|(_, s)| s.state == State::Reading)
            .map(|(&n, _)| n)
            .collect();
        Ok(source)
    }

    fn bad_position(&self, reason: String) -> SourceError {
        SourceError::BadPosition {
            source_url: self.name.clone(),
            reason,
        }
    }

    fn broker<E>(&self, what: &str, e: &E) -> SourceError
    where
        E: ProvideErrorMetadata + std::error::Error,
    {
        SourceError::Broker {
            source_url: self.name.clone(),
            reason: format!("{what}: {}", describe(e)),
        }
    }

    /// Every shard of the stream, with paging.
    fn list_shards(&self) -> Result<Vec<Listed>, SourceError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let call = match &token {
                Some(t) => self.client.list_shards().next_token(t),
                None => self.client.list_shards().stream_name(&self.stream),
            };
            // Paging is cheap but limited (LimitExceeded): retried, as are calls
            // without an answer.
            let backoff = ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(8)
                .with_jitter();
            let page = self.io.block_on(
                (|| call.clone().send())
                    .retry(backoff)
                    .when(|e| retryable(e, "LimitExceededException")),
            );
            let page = page.map_err(|e| {
                let e = e.into_service_error();
                if e.is_resource_not_found_exception() {
                    SourceError::Broker {
                        source_url: self.name.clone(),
                        reason: "no such stream (create it with `rushhour generate --to \
                                 kinesis://STREAM --shards N`, or check AWS_REGION and \
                                 AWS_ENDPOINT_URL_KINESIS)"
                            .into(),
                    }
                } else {
                    self.broker("ListShards", &e)
                }
            })?;
            for shard in page.shards() {
                let id = shard.shard_id();
                let Some(number) = shard_number(id) else {
                    return Err(SourceError::Broker {
                        source_url: self.name.clone(),
                        reason: format!("shard id `{id}` is not shardId-NUMBER"),
                    });
                };
                let parents = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .filter_map(shard_number)
                    .collect();
                let closed = shard
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_some();
                out.push((number, id.to_owned(), parents, closed));
            }
            match page.next_token() {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(out),
            }
        }
    }

    /// How far behind the stream's tip each shard read was at its last call.
    pub fn behind_ms_by_shard(&self) -> BTreeMap<u32, i64> {
        self.shards
            .iter()
            .filter_map(|(&n, s)| s.behind_ms.map(|b| (n, b)))
            .collect()
    }

    /// An iterator for shard `n` from its position.
    fn iterator(&self, n: u32) -> Result<Option<String>, Failure> {
        let Some(shard) = self.shards.get(&n) else {
            return Ok(None);
        };
        let Position::Kinesis {
            after, since_ms, ..
        } = shard.position
        else {
            return Ok(None);
        };
        let mut call = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(&shard.id);
        call = match (after, since_ms) {
            (Some(seq), _) => call
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq.to_string()),
            (None, Some(ms)) => call
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from_millis(ms)),
            (None, None) => call.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        match self.io.block_on(call.send()) {
            Ok(out) => Ok(out.shard_iterator().map(str::to_owned)),
            Err(e) => {
                // No answer (connection, timeout) or a refusal that passes: try later.
                let answered = matches!(e, SdkError::ServiceError(_));
                let e = e.into_service_error();
                if !answered
                    || e.is_provisioned_throughput_exceeded_exception()
                    || e.is_internal_failure_exception()
                {
                    Err(Failure::Transient(Transient(format!(
                        "GetShardIterator: {}",
                        describe(&e)
                    ))))
                } else {
                    Err(Failure::Fatal(
                        self.broker(&format!("GetShardIterator of {}", shard.id), &e),
                    ))
                }
            }
        }
    }

    /// Waits before shard `n`'s next call (0.5 s doubling to 10 s). A call that failed
    /// (not merely throttled) counts towards [`MAX_FAILURES`] in a row, past which the
    /// run stops with `why`.
    fn back_off(&mut self, n: u32, failed: Option<String>) -> Result<(), SourceError> {
        let name = self.name.clone();
        let Some(s) = self.shards.get_mut(&n) else {
            return Ok(());
        };
        s.backoff = (s.backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(10));
        s.next_call = Instant::now() + s.backoff;
        if let Some(why) = failed {
            s.failures += 1;
            tracing::warn!(shard = %s.id, failures = s.failures, error = %why, "Kinesis call failed; backing off");
            if s.failures >= MAX_FAILURES {
                return Err(SourceError::Broker {
                    source_url: name,
                    reason: format!(
                        "shard {}: {} calls failed in a row: {why}",
                        s.id, s.failures
                    ),
                });
            }
        }
        Ok(())
    }

    /// One `GetRecords` of shard `n`: `Ok(true)` when `batch` got records.
    fn read_shard(&mut self, n: u32, batch: &mut SourceBatch) -> Result<bool, SourceError> {
        let iterator = match self.shards.get(&n).and_then(|s| s.iterator.clone()) {
            Some(it) => it,
            None => match self.iterator(n) {
                Ok(Some(it)) => it,
                Ok(None) => {
                    // A shard with no records at its position yet (the service says so).
                    self.back_off(n, None)?;
                    return Ok(false);
                }
                Err(Failure::Transient(Transient(why))) => {
                    self.back_off(n, Some(why))?;
                    return Ok(false);
                }
                Err(Failure::Fatal(e)) => return Err(e),
            },
        };
        let call = self
            .client
            .get_records()
            .shard_iterator(&iterator)
            .limit(RECORDS_PER_CALL)
            .send();
        let out = match self.io.block_on(call) {
            Ok(out) => out,
            Err(e) => {
                let answered = matches!(e, SdkError::ServiceError(_));
                let e = e.into_service_error();
                if e.is_expired_iterator_exception() {
                    if let Some(s) = self.shards.get_mut(&n) {
                        s.iterator = None;
                    }
                    return Ok(false);
                }
                if e.is_provisioned_throughput_exceeded_exception()
                    || e.is_kms_throttling_exception()
                {
                    tracing::debug!(shard = n, error = %describe(&e), "GetRecords throttled; backing off");
                    self.back_off(n, None)?;
                    return Ok(false);
                }
                if !answered || e.is_internal_failure_exception() {
                    self.back_off(n, Some(format!("GetRecords: {}", describe(&e))))?;
                    return Ok(false);
                }
                return Err(self.broker(&format!("GetRecords of shard {n}"), &e));
            }
        };
        let name = self.name.clone();
        let (until_end, started_ms) = (self.until_end, self.started_ms);
        let Some(shard) = self.shards.get_mut(&n) else {
            return Ok(false);
        };
        shard.backoff = Duration::ZERO;
        shard.failures = 0;
        shard.next_call = Instant::now() + CALL_INTERVAL;
        shard.iterator = out.next_shard_iterator().map(str::to_owned);
        shard.behind_ms = out.millis_behind_latest();
        let Position::Kinesis {
            after,
            count,
            since_ms,
        } = &mut shard.position
        else {
            return Ok(false);
        };
        let mut past_end = false;
        for record in out.records() {
            // A bounded run reads what arrived before it started.
            let arrived = record
                .approximate_arrival_timestamp()
                .and_then(|t| t.to_millis().ok());
            if until_end && arrived.is_some_and(|t| t >= started_ms) {
                past_end = true;
                break;
            }
            let seq: SequenceNumber =
                record
                    .sequence_number()
                    .parse()
                    .map_err(|reason| SourceError::Broker {
                        source_url: name.clone(),
                        reason,
                    })?;
            let data = record.data().as_ref();
            let start = batch.data.len();
            batch.data.extend_from_slice(data);
            batch.records.push((start..batch.data.len(), *count));
            *count += 1;
            *after = Some(seq);
            *since_ms = None;
        }
        let got = !batch.records.is_empty();
        if got {
            shard.last_data = Instant::now();
            batch.partition = n;
        }
        if past_end {
            shard.state = State::AtEnd;
            shard.iterator = None;
        } else if shard.iterator.is_none() {
            shard.state = State::Drained;
            tracing::info!(shard = %shard.id, "shard closed and read to its end");
        } else if until_end && !got && !shard.closed && shard.behind_ms == Some(0) {
            // Caught up with an open shard; a closed one ends only at its end.
            shard.state = State::AtEnd;
        }
        Ok(got)
    }

    /// Whether waiting shard `n` will be read: no ancestor of it stopped at a bounded
    /// run's end (a child of such a shard was made after that end).
    fn will_start(&self, n: u32) -> bool {
        let mut stack = vec![n];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(k) = stack.pop() {
            if !seen.insert(k) {
                continue;
            }
            for p in self
                .shards
                .get(&k)
                .map(|s| s.parents.as_slice())
                .unwrap_or(&[])
            {
                match self.shards.get(p).map(|parent| parent.state) {
                    Some(State::AtEnd) => return false,
                    Some(State::Waiting) => stack.push(*p),
                    _ => {}
                }
            }
        }
        true
    }

    /// Whether shard `n` has children that are still to be started.
    fn children_to_come(&self, n: u32) -> bool {
        self.shards.iter().any(|(&c, s)| {
            s.state == State::Waiting && s.parents.contains(&n) && self.will_start(c)
        })
    }

    /// Starts the children whose parents are all drained, telling the pipeline first.
    fn start_children(&mut self) -> Result<(), SourceError> {
        // The stream's view, for children created since the start.
        for (number, id, parents, closed) in self.list_shards()? {
            let position = Position::Kinesis {
                after: None,
                count: 0,
                since_ms: None,
            };
            match self.shards.get_mut(&number) {
                Some(known) => known.closed |= closed,
                None => {
                    let shard = Shard::new(id, parents, closed, State::Waiting, position);
                    self.shards.insert(number, shard);
                }
            }
        }
        let ready: Vec<(u32, Vec<u32>)> = self
            .shards
            .iter()
            .filter(|(_, s)| s.state == State::Waiting)
            .filter(|(_, s)| {
                s.parents.iter().all(|p| {
                    self.shards.get(p).is_none_or(|parent| {
                        matches!(parent.state, State::Drained | State::Skipped)
                    })
                })
            })
            .map(|(&n, s)| (n, s.parents.clone()))
            .collect();
        for (child, parents) in ready {
            let default = self.shards[&child].position;
            let start = match &self.handler {
                Some(h) => h.continued(&parents, &Positions::from([(child, default)]))?,
                None => Positions::from([(child, default)]),
            };
            if let Some(s) = self.shards.get_mut(&child) {
                s.position = start.get(&child).copied().unwrap_or(default);
                s.state = State::Reading;
                s.last_data = Instant::now();
                tracing::info!(shard = %s.id, ?parents, "reading a child shard");
            }
        }
        Ok(())
    }
}

impl Source for KinesisSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn partitions(&self) -> Vec<u32> {
        self.initial.clone()
    }

    fn position_style(&self) -> PositionStyle {
        PositionStyle::PartitionOffset
    }

    fn attach(&mut self, handler: Arc<dyn PartitionHandler>) {
        self.handler = Some(handler);
    }

    fn poll(&mut self, batch: &mut SourceBatch) -> Result<Poll, SourceError> {
        batch.clear();
        if std::mem::take(&mut self.check_children) {
            self.start_children()?;
        }
        let reading: Vec<u32> = self
            .shards
            .iter()
            .filter(|(_, s)| s.state == State::Reading)
            .map(|(&n, _)| n)
            .collect();
        // Turns in shard order, from the cursor on.
        let (after, before): (Vec<u32>, Vec<u32>) = reading.iter().partition(|&&n| n >= self.next);
        for n in after.into_iter().chain(before) {
            if self
                .shards
                .get(&n)
                .is_none_or(|s| s.next_call > Instant::now())
            {
                continue;
            }
            self.next = n + 1;
            let got = self.read_shard(n, batch)?;
            if self
                .shards
                .get(&n)
                .is_some_and(|s| s.state == State::Drained)
            {
                // After the parent's last records are handed over: at the next poll.
                self.check_children = true;
            }
            if got {
                return Ok(Poll::Records);
            }
        }
        // A child still to come keeps a bounded run going.
        let open = self.shards.iter().any(|(&n, s)| match s.state {
            State::Reading => true,
            State::Waiting => self.will_start(n),
            _ => false,
        });
        if self.until_end && !open && !self.check_children {
            Ok(Poll::Ended)
        } else {
            Ok(Poll::Pending)
        }
    }

    fn statuses(&self) -> BTreeMap<u32, PartitionStatus> {
        self.shards
            .iter()
            .filter_map(|(&n, s)| {
                let status = match s.state {
                    // Until its children are held, a drained parent holds the
                    // watermark where they will start (see `hold_continuing`).
                    State::Drained if self.check_children || self.children_to_come(n) => {
                        PartitionStatus::Active
                    }
                    State::Drained | State::AtEnd => PartitionStatus::Finished,
                    State::Reading
                        if !self.until_end && s.last_data.elapsed() >= self.idle_timeout =>
                    {
                        PartitionStatus::Idle
                    }
                    State::Reading => PartitionStatus::Active,
                    State::Waiting | State::Skipped => return None,
                };
                Some((n, status))
            })
            .collect()
    }

    fn positions(&self) -> Positions {
        self.shards
            .iter()
            .filter(|(_, s)| matches!(s.state, State::Reading | State::Drained | State::AtEnd))
            .map(|(&n, s)| (n, s.position))
            .collect()
    }

    fn behind_ms(&self) -> Option<i64> {
        self.shards
            .values()
            .filter(|s| s.state == State::Reading)
            .filter_map(|s| s.behind_ms)
            .max()
    }

    fn cursor(&self) -> u32 {
        self.next
    }

    fn set_cursor(&mut self, cursor: u32) {
        self.next = cursor;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_numbers_and_sequence_numbers() {
        assert_eq!(shard_number("shardId-000000000007"), Some(7));
        assert_eq!(shard_number("shard-7"), None);
        for s in [
            "0",
            "49590338271490256608559692538361571095921575989136588898",
            "12345678901234567890123456789012345678",
            "123456789012345678901234567890123456789",
        ] {
            let seq: SequenceNumber = s.parse().unwrap();
            assert_eq!(seq.to_string(), s);
        }
        let a: SequenceNumber = "49590338271490256608559692538361571095921575989136588898"
            .parse()
            .unwrap();
        let b: SequenceNumber = "49590338271490256608559692538361571095921575989136588899"
            .parse()
            .unwrap();
        assert!(a < b);
        assert!("12a".parse::<SequenceNumber>().is_err());
        assert!("".parse::<SequenceNumber>().is_err());
    }
}
