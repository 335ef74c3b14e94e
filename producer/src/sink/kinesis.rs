//! `kinesis://STREAM`: records to a Kinesis data stream with `aws-sdk-kinesis`.
//!
//! Records go out in `PutRecords` calls as full as the service allows (500 records,
//! 5 MB, 1 MB a record with its key), keyed per the contract (`store_id`, `rider_id`;
//! a record without a key, such as a malformed one, gets [`UNKEYED`]).
//!
//! Records go out in arrival order, one call in flight. When the service refuses part
//! of a call (`ProvisionedThroughputExceededException`, `InternalFailure`) the refused
//! records go first in the next call, in their order, after a jittered exponential
//! backoff (`backon`); accepted ones are not sent again, so nothing is duplicated. The
//! service refuses a throttled shard's records from some point of a call on, so a key's
//! records keep their order; should it ever accept a key's later record after refusing
//! an earlier one of the same call, the sink counts it ([`KinesisSink::reordered`]) and
//! warns — a reorder cannot be taken back, only reported. Order across shards is not
//! kept and need not be: the processor keeps a watermark per shard.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

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

/// How to open a Kinesis sink.
#[derive(Debug, Clone, Default)]
pub struct KinesisOptions {
    /// Create the stream with this many shards if it does not exist; `None`: a missing
    /// stream is an error.
    pub create_shards: Option<u32>,
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

    /// One call with the oldest waiting records (up to [`MAX_RECORDS`] and
    /// [`MAX_CALL_BYTES`]). Returns whether the service took every record of it.
    fn put_once(&mut self) -> Result<bool, ProducerError> {
        let mut entries = Vec::new();
        let mut bytes = 0;
        for (key, data) in &self.queue {
            let size = data.len() + key.len();
            if entries.len() == MAX_RECORDS || bytes + size > MAX_CALL_BYTES {
                break;
            }
            bytes += size;
            entries.push(
                PutRecordsRequestEntry::builder()
                    .partition_key(key)
                    .data(Blob::new(data.clone()))
                    .build()
                    .map_err(|e| self.fail(e.to_string()))?,
            );
        }
        if entries.is_empty() {
            return Ok(true);
        }
        let sent = entries.len();
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
                    return Ok(false);
                }
                return Err(self.fail(format!("PutRecords: {}", describe(&e))));
            }
        };
        if out.failed_record_count().unwrap_or(0) == 0 {
            self.queue.drain(..sent);
            return Ok(true);
        }
        // Keep the refused ones, in order, at the head of the queue.
        let mut refused_keys = HashSet::new();
        let mut kept = VecDeque::new();
        for (record, result) in self.queue.drain(..sent).zip(out.records()) {
            if result.error_code().is_some() {
                self.retried += 1;
                refused_keys.insert(record.0.clone());
                kept.push_back(record);
            } else if refused_keys.contains(&record.0) {
                self.reordered += 1;
            }
        }
        kept.append(&mut self.queue);
        self.queue = kept;
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
                "Kinesis took records after refusing earlier ones of the same key: their order is broken"
            );
        }
        Ok(())
    }
}
