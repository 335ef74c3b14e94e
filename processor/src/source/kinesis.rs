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
//! position. `MillisBehindLatest` is kept per shard ([`KinesisSource::behind_ms`]).
//! `--until-end` reads every shard, parents before children, until it is drained
//! (closed) or caught up (`MillisBehindLatest` 0 and nothing returned).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use rushhour_cloud::Io;

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
    state: State,
    iterator: Option<String>,
    position: Position,
    next_call: Instant,
    backoff: Duration,
    last_data: Instant,
    behind_ms: Option<i64>,
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
    since_ms: Option<i64>,
    shards: BTreeMap<u32, Shard>,
    /// The shards read from the start (held by the pipeline before the first poll).
    initial: Vec<u32>,
    next: u32,
    handler: Option<Arc<dyn PartitionHandler>>,
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
        let mut source = KinesisSource {
            name,
            stream: stream.to_owned(),
            client,
            io,
            until_end: opts.until_end,
            idle_timeout: opts.idle_timeout,
            since_ms: match settings.start {
                KinesisStart::Earliest => None,
                KinesisStart::Latest => Some(now_ms()),
            },
            shards: BTreeMap::new(),
            initial: Vec::new(),
            next: 0,
            handler: None,
        };
        let fresh = positions.is_none_or(|p| p.is_empty());
        for (part, position) in positions.into_iter().flatten() {
            if let Position::Kinesis {
                since_ms,
                after: None,
                ..
            } = position
            {
                source.since_ms = *since_ms;
            }
            if !matches!(position, Position::Kinesis { .. }) {
                return Err(source.bad_position(format!(
                    "shard {part}: {position:?} is not a Kinesis position"
                )));
            }
        }
        for (number, id, parents, closed) in source.list_shards()? {
            let held = positions.and_then(|p| p.get(&number)).copied();
            let state = match held {
                Some(_) => State::Reading,
                None if closed && fresh && source.since_ms.is_some() => State::Skipped,
                None => State::Waiting,
            };
            source.shards.insert(
                number,
                Shard {
                    id,
                    parents,
                    state,
                    iterator: None,
                    position: held.unwrap_or(Position::Kinesis {
                        after: None,
                        count: 0,
                        since_ms: source.since_ms,
                    }),
                    next_call: Instant::now(),
                    backoff: Duration::ZERO,
                    last_data: Instant::now(),
                    behind_ms: None,
                },
            );
        }
        if let Some(p) = positions
            && let Some(missing) = p.keys().find(|k| !source.shards.contains_key(k))
        {
            return Err(source.bad_position(format!(
                "the checkpoint reads shard {missing}, which the stream no longer lists (trimmed past its retention?)"
            )));
        }
        // A shard none of whose parents is read here (a root, or one whose parents
        // are gone or skipped) starts now.
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

    fn broker(&self, what: &str, e: &impl ProvideErrorMetadata) -> SourceError {
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
            let page = self.io.block_on(call.send()).map_err(|e| {
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
    pub fn behind_ms(&self) -> BTreeMap<u32, i64> {
        self.shards
            .iter()
            .filter_map(|(&n, s)| s.behind_ms.map(|b| (n, b)))
            .collect()
    }

    /// An iterator for shard `n` from its position.
    fn iterator(&self, n: u32) -> Result<Option<String>, SourceError> {
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
                let e = e.into_service_error();
                if e.is_provisioned_throughput_exceeded_exception() {
                    Ok(None)
                } else {
                    Err(self.broker(&format!("GetShardIterator of {}", shard.id), &e))
                }
            }
        }
    }

    fn back_off(&mut self, n: u32) {
        if let Some(s) = self.shards.get_mut(&n) {
            s.backoff = (s.backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(10));
            s.next_call = Instant::now() + s.backoff;
        }
    }

    /// One `GetRecords` of shard `n`: `Ok(true)` when `batch` got records.
    fn read_shard(&mut self, n: u32, batch: &mut SourceBatch) -> Result<bool, SourceError> {
        let iterator = match self.shards.get(&n).and_then(|s| s.iterator.clone()) {
            Some(it) => it,
            None => match self.iterator(n)? {
                Some(it) => it,
                None => {
                    self.back_off(n);
                    return Ok(false);
                }
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
                let e = e.into_service_error();
                if e.is_expired_iterator_exception() {
                    if let Some(s) = self.shards.get_mut(&n) {
                        s.iterator = None;
                    }
                    return Ok(false);
                }
                if e.is_provisioned_throughput_exceeded_exception()
                    || e.is_kms_throttling_exception()
                    || e.is_internal_failure_exception()
                {
                    tracing::debug!(shard = n, error = %describe(&e), "GetRecords refused; backing off");
                    self.back_off(n);
                    return Ok(false);
                }
                return Err(self.broker(&format!("GetRecords of shard {n}"), &e));
            }
        };
        let name = self.name.clone();
        let Some(shard) = self.shards.get_mut(&n) else {
            return Ok(false);
        };
        shard.backoff = Duration::ZERO;
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
        for record in out.records() {
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
        let got = !out.records().is_empty();
        if got {
            shard.last_data = Instant::now();
            batch.partition = n;
        }
        if shard.iterator.is_none() {
            shard.state = State::Drained;
            tracing::info!(shard = %shard.id, "shard closed and read to its end");
        } else if self.until_end && !got && shard.behind_ms == Some(0) {
            shard.state = State::AtEnd;
        }
        Ok(got)
    }

    /// Starts the children whose parents are all drained, telling the pipeline first.
    fn start_children(&mut self) -> Result<(), SourceError> {
        // The stream's view, for children created since the start.
        for (number, id, parents, _) in self.list_shards()? {
            self.shards.entry(number).or_insert_with(|| Shard {
                id,
                parents,
                state: State::Waiting,
                iterator: None,
                position: Position::Kinesis {
                    after: None,
                    count: 0,
                    since_ms: None,
                },
                next_call: Instant::now(),
                backoff: Duration::ZERO,
                last_data: Instant::now(),
                behind_ms: None,
            });
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

/// An SDK error with its code and message.
fn describe(e: &impl ProvideErrorMetadata) -> String {
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => "no answer from the service (is AWS_ENDPOINT_URL_KINESIS or the region right?)"
            .to_owned(),
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
        let reading: Vec<u32> = self
            .shards
            .iter()
            .filter(|(_, s)| s.state == State::Reading)
            .map(|(&n, _)| n)
            .collect();
        // Turns in shard order, from the cursor on.
        let (after, before): (Vec<u32>, Vec<u32>) = reading.iter().partition(|&&n| n >= self.next);
        for n in after.into_iter().chain(before) {
            if self.shards[&n].next_call > Instant::now() {
                continue;
            }
            self.next = n + 1;
            let got = self.read_shard(n, batch)?;
            if self.shards[&n].state == State::Drained {
                self.start_children()?;
            }
            if got {
                return Ok(Poll::Records);
            }
        }
        let open = self
            .shards
            .values()
            .any(|s| matches!(s.state, State::Reading | State::Waiting));
        if self.until_end && !open {
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
