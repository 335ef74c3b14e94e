//! `kinesis://STREAM`: records to a Kinesis data stream with `aws-sdk-kinesis`.
//!
//! Records go out in `PutRecords` calls as full as the service allows (500 records,
//! 5 MB, 1 MB a record with its key), keyed per the contract (`store_id`, `rider_id`;
//! a record without a key, such as a malformed one, gets [`UNKEYED`]).
//!
//! Records go out in arrival order, one call in flight. When the service refuses part
//! of a call (`ProvisionedThroughputExceededException`, `InternalFailure`) the refused
//! records go first in the next call, in their order, after a jittered exponential
//! backoff (`backon`); accepted ones are not sent again, so nothing is duplicated.
//!
//! A key's order is the delicate part. `PutRecords` does not stop at a refused record:
//! it may take a later record of the same shard (a smaller one, when the shard's byte
//! budget is what ran out), so a call carrying two records of one key can come back
//! with the first refused and the second taken — an order no resend can restore. The
//! only call that cannot do that carries at most one record per key, which caps a key
//! at one record per round trip. So the sink keeps full calls while the stream takes
//! everything, and once it refuses anything (a partial failure or a throttled call)
//! it turns careful for [`CAREFUL_FOR`]: a call then ends before the first record
//! whose key is already in it (calls stay in arrival order, only shorter), which is
//! when the stream cannot take more anyway. The one call that can break a key's order
//! is the first refused one after a calm spell; should the service take a key's later
//! record there after refusing an earlier one, the sink counts it
//! ([`KinesisSink::reordered`]) and warns. [`KinesisOptions::strict_key_order`] makes
//! every call careful: no call can reorder a key, at the price of throughput for hot
//! keys. Order across keys is kept in both modes (calls are only cut, never
//! reordered); order across shards need not be: the processor keeps a watermark per
//! shard.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use backon::{BackoffBuilder, ExponentialBuilder};
use rushhour_cloud::{Io, describe};

use super::EventSink;
use crate::ProducerError;

/// The partition key of records that have none.
pub const UNKEYED: &str = "unkeyed";
/// Records per `PutRecords` call (the service's limit).
const MAX_RECORDS: usize = 500;
/// Bytes per call, data and keys (the service's limit).
const MAX_CALL_BYTES: usize = 5 << 20;
/// Bytes of one record, data and key (the service's limit).
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Longest partition key, in characters.
const MAX_KEY_CHARS: usize = 256;
/// Refused calls in a row before the run fails.
const MAX_RETRIES: usize = 30;
/// How long after a refusal calls stay careful (one record per key).
const CAREFUL_FOR: Duration = Duration::from_secs(10);

/// How to open a Kinesis sink.
#[derive(Debug, Clone, Default)]
pub struct KinesisOptions {
    /// Create the stream with this many shards if it does not exist; `None`: a missing
    /// stream is an error.
    pub create_shards: Option<u32>,
    /// Every call carries at most one record per key, so no partial failure can
    /// reorder a key's records; see the module docs.
    pub strict_key_order: bool,
}

/// Writes records to a Kinesis stream; see the module docs.
pub struct KinesisSink {
    name: String,
    stream: String,
    client: Client,
    io: Io,
    /// Waiting records (key, data), in send order.
    queue: VecDeque<(String, Vec<u8>)>,
    /// Records refused by the service and sent again.
    retried: u64,
    /// Records the service took after refusing an earlier one of the same key.
    reordered: u64,
    /// Every call careful.
    strict: bool,
    /// Calls are careful until then (after a refusal).
    careful_until: Option<Instant>,
}

impl KinesisSink {
    /// Opens the stream `stream` (creating it when `opts` says so, and waiting until it
    /// is active), with the AWS settings of the environment.
    pub fn open(
        stream: &str,
        opts: &KinesisOptions,
        io: &Io,
    ) -> Result<KinesisSink, ProducerError> {
        let name = format!("kinesis://{stream}");
        let fail = |reason: String| ProducerError::Kinesis {
            sink: name.clone(),
            reason,
        };
        let client = Client::new(&io.block_on(rushhour_cloud::aws_config()));
        io.block_on(ensure_stream(&client, stream, opts.create_shards))
            .map_err(fail)?;
        Ok(KinesisSink {
            name,
            stream: stream.to_owned(),
            client,
            io: io.clone(),
            queue: VecDeque::new(),
            retried: 0,
            reordered: 0,
            strict: opts.strict_key_order,
            careful_until: None,
        })
    }

    /// Records the service refused and that were sent again.
    pub fn retried(&self) -> u64 {
        self.retried
    }

    /// Records the service took after refusing an earlier record of the same key in the
    /// same call (their key's order is broken; see the module docs).
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    fn fail(&self, reason: String) -> ProducerError {
        ProducerError::Kinesis {
            sink: self.name.clone(),
            reason,
        }
    }

    /// Whether the next call carries at most one record per key.
    fn careful(&self) -> bool {
        self.strict || self.careful_until.is_some_and(|t| Instant::now() < t)
    }

    fn refused(&mut self) {
        self.careful_until = Some(Instant::now() + CAREFUL_FOR);
    }

    /// One call with the oldest waiting records (see [`call_len`]). Returns whether
    /// the service took every record of it.
    fn put_once(&mut self) -> Result<bool, ProducerError> {
        let sent = call_len(&self.queue, self.careful());
        if sent == 0 {
            return Ok(true);
        }
        let entries = self
            .queue
            .iter()
            .take(sent)
            .map(|(key, data)| {
                PutRecordsRequestEntry::builder()
                    .partition_key(key)
                    .data(Blob::new(data.clone()))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail(e.to_string()))?;
        let call = self
            .client
            .put_records()
            .stream_name(&self.stream)
            .set_records(Some(entries))
            .send();
        let out = match self.io.block_on(call) {
            Ok(out) => out,
            Err(e) => {
                let e = e.into_service_error();
                if e.is_provisioned_throughput_exceeded_exception()
                    || e.is_kms_throttling_exception()
                {
                    self.retried += sent as u64;
                    self.refused();
                    return Ok(false);
                }
                return Err(self.fail(format!("PutRecords: {}", describe(&e))));
            }
        };
        if out.failed_record_count().unwrap_or(0) == 0 {
            self.queue.drain(..sent);
            return Ok(true);
        }
        let taken: Vec<bool> = out
            .records()
            .iter()
            .map(|r| r.error_code().is_none())
            .collect();
        let outcome = settle(&mut self.queue, &taken);
        self.retried += outcome.refused;
        self.reordered += outcome.reordered;
        self.refused();
        Ok(false)
    }

    /// One call, repeated after a backoff while the service refuses part of it.
    fn put(&mut self) -> Result<(), ProducerError> {
        let mut backoff = backoff();
        while !self.put_once()? {
            let Some(wait) = backoff.next() else {
                return Err(self.fail(format!(
                    "the stream kept refusing records (throughput exceeded) after {MAX_RETRIES} tries"
                )));
            };
            tracing::debug!(?wait, "kinesis refused records; backing off");
            std::thread::sleep(wait);
        }
        Ok(())
    }
}

/// How many of the oldest waiting records the next call carries: as many as fit
/// ([`MAX_RECORDS`], [`MAX_CALL_BYTES`]) and, when `careful`, no more than up to the
/// first record whose key is already in the call (at least one record).
fn call_len(queue: &VecDeque<(String, Vec<u8>)>, careful: bool) -> usize {
    let mut keys = HashSet::new();
    let mut bytes = 0;
    let mut n = 0;
    for (key, data) in queue {
        let size = data.len() + key.len();
        if n == MAX_RECORDS || bytes + size > MAX_CALL_BYTES {
            break;
        }
        if careful && !keys.insert(key.as_str()) {
            break;
        }
        bytes += size;
        n += 1;
    }
    n
}

/// What a partly refused call did.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Records refused (kept to be sent again).
    refused: u64,
    /// Records taken after an earlier record of their key was refused.
    reordered: u64,
}

/// Settles a call of the first `taken.len()` records of `queue`, where `taken[i]`
/// says whether the service took record `i`: taken records leave the queue, refused
/// ones stay at its head in their order.
fn settle(queue: &mut VecDeque<(String, Vec<u8>)>, taken: &[bool]) -> Outcome {
    let mut outcome = Outcome {
        refused: 0,
        reordered: 0,
    };
    let mut refused_keys = HashSet::new();
    let mut kept = VecDeque::new();
    for (record, &ok) in queue.drain(..taken.len()).zip(taken) {
        if !ok {
            outcome.refused += 1;
            refused_keys.insert(record.0.clone());
            kept.push_back(record);
        } else if refused_keys.contains(&record.0) {
            outcome.reordered += 1;
        }
    }
    kept.append(queue);
    *queue = kept;
    outcome
}

fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(MAX_RETRIES)
        .with_jitter()
        .build()
}

/// Checks that `stream` exists, creating it with `create` shards when missing, and
/// waits until it is active.
async fn ensure_stream(client: &Client, stream: &str, create: Option<u32>) -> Result<(), String> {
    let mut created = false;
    for _ in 0..600 {
        match client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
        {
            Ok(out) => {
                let status = out
                    .stream_description_summary()
                    .map(|s| s.stream_status().clone());
                if matches!(status, Some(StreamStatus::Active | StreamStatus::Updating)) {
                    return Ok(());
                }
            }
            Err(e) => {
                let e = e.into_service_error();
                if !e.is_resource_not_found_exception() {
                    return Err(format!("DescribeStreamSummary: {}", describe(&e)));
                }
                if created {
                    // Not visible yet.
                } else if let Some(shards) = create {
                    let shards = i32::try_from(shards).map_err(|_| "too many shards".to_owned())?;
                    client
                        .create_stream()
                        .stream_name(stream)
                        .shard_count(shards)
                        .send()
                        .await
                        .map_err(|e| {
                            format!("CreateStream: {}", describe(&e.into_service_error()))
                        })?;
                    created = true;
                } else {
                    return Err(
                        "no such stream; pass --shards N to create it with N shards".to_owned()
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the stream did not become active within a minute".to_owned())
}

impl EventSink for KinesisSink {
    fn send(&mut self, key: &str, payload: &[u8]) -> Result<(), ProducerError> {
        let key = match key {
            "" => UNKEYED,
            k => match k.char_indices().nth(MAX_KEY_CHARS) {
                Some((cut, _)) => &k[..cut],
                None => k,
            },
        };
        if payload.len() + key.len() > MAX_RECORD_BYTES {
            return Err(self.fail(format!(
                "a record of {} bytes is over Kinesis's limit of 1 MiB",
                payload.len()
            )));
        }
        self.queue.push_back((key.to_owned(), payload.to_vec()));
        // A full call's worth waiting.
        while self.queue.len() >= MAX_RECORDS {
            self.put()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ProducerError> {
        while !self.queue.is_empty() {
            self.put()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ProducerError> {
        self.flush()?;
        if self.retried > 0 {
            tracing::info!(
                retried = self.retried,
                "records refused by Kinesis and sent again"
            );
        }
        if self.reordered > 0 {
            tracing::warn!(
                reordered = self.reordered,
                "Kinesis took records after refusing earlier ones of the same key: their order is broken (--strict-key-order prevents it)"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(keys: &[&str]) -> VecDeque<(String, Vec<u8>)> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| ((*k).to_owned(), vec![i as u8]))
            .collect()
    }

    #[test]
    fn a_careful_call_ends_before_a_repeated_key() {
        let q = queue(&["a", "b", "c", "a", "d"]);
        assert_eq!(call_len(&q, false), 5);
        assert_eq!(call_len(&q, true), 3);
        assert_eq!(call_len(&queue(&["a", "a"]), true), 1);
        assert_eq!(call_len(&queue(&[]), true), 0);
    }

    #[test]
    fn a_call_stays_within_the_service_limits() {
        let many: VecDeque<_> = (0..1200).map(|i| (format!("k{i}"), vec![0; 10])).collect();
        assert_eq!(call_len(&many, false), MAX_RECORDS);
        assert_eq!(call_len(&many, true), MAX_RECORDS);
        let big: VecDeque<_> = (0..10)
            .map(|i| (format!("k{i}"), vec![0; MAX_RECORD_BYTES - 10]))
            .collect();
        assert_eq!(call_len(&big, false), 5, "5 MB a call");
    }

    #[test]
    fn refused_records_go_first_in_order_and_a_reorder_is_counted() {
        let mut q = queue(&["a", "b", "a", "c", "d"]);
        // The service refused the first `a` and `c` of a call of four, took the rest.
        let outcome = settle(&mut q, &[false, true, true, false]);
        assert_eq!(
            outcome,
            Outcome {
                refused: 2,
                reordered: 1
            }
        );
        let left: Vec<(&str, u8)> = q.iter().map(|(k, d)| (k.as_str(), d[0])).collect();
        assert_eq!(left, [("a", 0), ("c", 3), ("d", 4)]);
    }

    #[test]
    fn a_careful_call_cannot_reorder_a_key() {
        // Whatever the service refuses of a careful call, no key has two records in
        // it, so none is taken after its own earlier record was refused.
        let mut q = queue(&["a", "b", "a", "c", "b", "a"]);
        let mut pattern = 0u32;
        while !q.is_empty() {
            let n = call_len(&q, true);
            let taken: Vec<bool> = (0..n).map(|i| (pattern >> i) & 1 == 1 || i == 0).collect();
            pattern = pattern.wrapping_mul(2_654_435_761).wrapping_add(7);
            assert_eq!(settle(&mut q, &taken).reordered, 0);
        }
    }
}
