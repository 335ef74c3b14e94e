//! The AWS path end to end, against the real local servers `infra/local-stack.sh start
//! s3 kinesis` runs (moto for S3, kinesis-local for Kinesis; endpoints from
//! `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL_KINESIS`). Servers that are not there fail
//! these tests: they never skip.
//!
//! Inputs have no late records and bounded disorder (as in the Kafka tests), so every
//! run must write the lake one process writes from a file of the same events.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};

use rushhour_processor::{LakeSink, StagedFile, TableBatch};
use rushhour_schemas::{DeadLetterBuilder, Provenance, Table};
use rushhour_sink::{Lake, ParquetSink, SinkOptions};

use crate::kafka::{assert_same_tables, finish, generate, reference, tables};
use crate::recovery::{delays, process_args};
use crate::{bin, ok, query_json, spawn, stderr, stdout, summary};

fn s3_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_S3")
        .expect("AWS_ENDPOINT_URL_S3: start infra/local-stack.sh s3")
}

/// A name no other test (or earlier run) uses.
fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}

/// Creates a bucket on the S3 server (an unsigned `PUT /BUCKET`, which moto takes).
fn create_bucket(endpoint: &str, bucket: &str) {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = TcpStream::connect(host).unwrap();
    write!(
        conn,
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A fresh S3 lake URL, `s3://BUCKET/lake`.
fn s3_lake(test: &str) -> String {
    let bucket = unique(test).to_lowercase().replace('_', "-");
    let bucket: String = bucket.chars().take(63).collect();
    create_bucket(&s3_endpoint(), &bucket);
    format!("s3://{bucket}/lake")
}

/// A Kinesis client on the environment's settings, with its runtime.
struct Kinesis {
    rt: tokio::runtime::Runtime,
    client: aws_sdk_kinesis::Client,
}

impl Kinesis {
    fn new() -> Kinesis {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = rt.block_on(rushhour_cloud::aws_config());
        Kinesis {
            client: aws_sdk_kinesis::Client::new(&config),
            rt,
        }
    }

    fn wait_active(&self, stream: &str) {
        for _ in 0..300 {
            let out = self
                .rt
                .block_on(
                    self.client
                        .describe_stream_summary()
                        .stream_name(stream)
                        .send(),
                )
                .unwrap();
            if out.stream_description_summary().unwrap().stream_status() == &StreamStatus::Active {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("stream {stream} did not become active");
    }

    /// Open shards: (id, starting hash key, ending hash key).
    fn open_shards(&self, stream: &str) -> Vec<(String, u128, u128)> {
        let out = self
            .rt
            .block_on(self.client.list_shards().stream_name(stream).send())
            .unwrap();
        out.shards()
            .iter()
            .filter(|s| {
                s.sequence_number_range()
                    .unwrap()
                    .ending_sequence_number()
                    .is_none()
            })
            .map(|s| {
                let r = s.hash_key_range().unwrap();
                (
                    s.shard_id().to_owned(),
                    r.starting_hash_key().parse().unwrap(),
                    r.ending_hash_key().parse().unwrap(),
                )
            })
            .collect()
    }

    /// Creates `stream` with `shards` shards and waits until it is active.
    fn create(&self, stream: &str, shards: i32) {
        let call = self
            .client
            .create_stream()
            .stream_name(stream)
            .shard_count(shards);
        self.rt.block_on(call.send()).unwrap();
        self.wait_active(stream);
    }

    /// Splits the `index`-th open shard at `num/den` of its hash range.
    fn split(&self, stream: &str, index: usize, (num, den): (u128, u128)) {
        let (id, lo, hi) = self.open_shards(stream)[index].clone();
        let call = self
            .client
            .split_shard()
            .stream_name(stream)
            .shard_to_split(&id)
            .new_starting_hash_key((lo + (hi - lo) / den * num).to_string());
        self.rt.block_on(call.send()).unwrap();
        self.wait_active(stream);
    }

    /// Merges the first two adjacent open shards.
    fn merge(&self, stream: &str) {
        let mut open = self.open_shards(stream);
        open.sort_by_key(|s| s.1);
        let pair = open
            .windows(2)
            .find(|w| w[0].2 + 1 == w[1].1)
            .expect("adjacent shards");
        let call = self
            .client
            .merge_shards()
            .stream_name(stream)
            .shard_to_merge(&pair[0].0)
            .adjacent_shard_to_merge(&pair[1].0);
        self.rt.block_on(call.send()).unwrap();
        self.wait_active(stream);
    }

    /// Writes `lines` keyed per the contract, 500 a call, in order.
    fn put(&self, stream: &str, lines: &[&str]) {
        for chunk in lines.chunks(500) {
            let entries = chunk
                .iter()
                .map(|line| {
                    let v: serde_json::Value =
                        serde_json::from_str(line).unwrap_or(serde_json::Value::Null);
                    let key = v["store_id"]
                        .as_str()
                        .filter(|_| v["event_type"] != "rider_location")
                        .or(v["rider_id"].as_str())
                        .unwrap_or("unkeyed")
                        .to_owned();
                    PutRecordsRequestEntry::builder()
                        .partition_key(key)
                        .data(Blob::new(line.as_bytes().to_vec()))
                        .build()
                        .unwrap()
                })
                .collect();
            let out = self
                .rt
                .block_on(
                    self.client
                        .put_records()
                        .stream_name(stream)
                        .set_records(Some(entries))
                        .send(),
                )
                .unwrap();
            assert_eq!(out.failed_record_count(), Some(0));
        }
    }
}

#[test]
fn generate_to_kinesis_then_process_into_s3_equals_the_file_answer() {
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("one");
    let url = format!("kinesis://{stream}");
    // A missing stream is an error unless --shards creates it.
    let o = bin()
        .args(["generate", "--to", &url, "--orders", "10"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--shards"), "{}", stderr(&o));
    // One record per key per call: the same stream, in the same order.
    let made = generate(&url, "300", "41", &["--shards", "3", "--strict-key-order"]);
    assert!(made.as_str().unwrap().contains("events/s"), "{made}");
    let (want, want_tables) = reference(dir.path(), "300", "41");
    let lake = s3_lake("one");
    let o = ok(&process_args(&url, &lake));
    assert_eq!(summary(&o), want);
    // `query` (and so `replay`) read the S3 lake.
    assert_same_tables(&tables(Path::new(&lake)), &want_tables, &[]);
    // Every shard was read, positions are shard:record.
    let shards = crate::query_csv(
        Path::new(&lake),
        "SELECT DISTINCT split_part(position, ':', 1) FROM raw_events ORDER BY 1",
    );
    assert_eq!(shards.lines().skip(1).collect::<Vec<_>>(), ["0", "1", "2"]);
    // `replay` reads it too: every raw event, in event-time order.
    let replayed = dir.path().join("replayed.jsonl");
    ok(&[
        "replay",
        "--lake",
        &lake,
        "--to",
        &format!("file:{}", replayed.display()),
    ]);
    let replayed = std::fs::read_to_string(&replayed).unwrap();
    let raw = want["accepted"].as_u64().unwrap() + want["late"].as_u64().unwrap();
    assert_eq!(replayed.lines().count() as u64, raw);
    // Run again: nothing new, and the same summary (the checkpoint is on S3).
    let again = ok(&process_args(&url, &lake));
    assert_eq!(summary(&again), want);
    assert_eq!(tables(Path::new(&lake)), want_tables);
    let o = ok(&["checkpoints", "--lake", &lake, "verify", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let cps = report["pipelines"][0]["checkpoints"].as_array().unwrap();
    assert!(!cps.is_empty(), "{report}");
    assert!(cps.iter().all(|c| c["verifies"] == true), "{report}");
    let seq = &cps[0]["positions"]["0"]["kinesis"]["after"];
    assert!(seq.as_str().is_some_and(|s| s.len() > 20), "{report}");
}

#[test]
fn a_split_and_a_merge_then_sigkills_keep_order_and_exactness() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut args = vec!["generate", "--to"];
    let to = format!("file:{}", input.display());
    args.extend([to.as_str(), "--orders", "400", "--seed", "43"]);
    args.extend(crate::kafka::KNOBS);
    ok(&args);
    let (want, want_tables) = reference(dir.path(), "400", "43");
    let text = std::fs::read_to_string(&input).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let third = lines.len() / 3;

    let kinesis = Kinesis::new();
    let stream = unique("reshard");
    kinesis.create(&stream, 2);
    kinesis.put(&stream, &lines[..third]);
    // Split the first shard in the middle of its hash range, then merge two.
    kinesis.split(&stream, 0, (1, 2));
    kinesis.put(&stream, &lines[third..2 * third]);
    kinesis.merge(&stream);
    kinesis.put(&stream, &lines[2 * third..]);

    let url = format!("kinesis://{stream}");
    let lake = s3_lake("reshard");
    for ms in delays(23, 4, 2500) {
        let mut child = spawn(&process_args(&url, &lake));
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let o = finish(spawn(&process_args(&url, &lake)), 300, "the last run");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(summary(&o), want);
    // Parents before children, key by key: no record late, every table exact.
    assert_same_tables(&tables(Path::new(&lake)), &want_tables, &[]);
    let shards = crate::query_csv(
        Path::new(&lake),
        "SELECT count(DISTINCT split_part(position, ':', 1)) FROM raw_events",
    );
    assert_eq!(
        shards.lines().nth(1),
        Some("5"),
        "2 + 2 children + 1 merged"
    );
}

/// A TCP proxy to `target` that can fail as S3 endpoints do: go down for a while as a
/// stopped server does (open connections cut, new ones refused: the port is closed),
/// or keep accepting connections and drop each once its request is in (the fault
/// object_store does not retry by itself).
struct FlakyProxy {
    port: u16,
    mode: Arc<AtomicU8>,
    /// Connections accepted and dropped so far.
    dropped: Arc<AtomicU64>,
}

/// [`FlakyProxy`] modes.
const UP: u8 = 0;
const DOWN: u8 = 1;
const DROPPING: u8 = 2;

impl FlakyProxy {
    fn start(target: String) -> FlakyProxy {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(UP));
        let dropped = Arc::new(AtomicU64::new(0));
        let (flag, count) = (mode.clone(), dropped.clone());
        std::thread::spawn(move || {
            let mut listener = Some(first);
            loop {
                let open = listener.get_or_insert_with(|| {
                    loop {
                        match TcpListener::bind(("127.0.0.1", port)) {
                            Ok(l) => break l,
                            Err(_) => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                });
                open.set_nonblocking(true).unwrap();
                while flag.load(Ordering::SeqCst) != DOWN {
                    match open.accept() {
                        Ok((client, _)) if flag.load(Ordering::SeqCst) == UP => {
                            client.set_nonblocking(false).unwrap();
                            pump(client, &target, &flag);
                        }
                        Ok((client, _)) => {
                            count.fetch_add(1, Ordering::SeqCst);
                            std::thread::spawn(move || drop_after_request(client));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                // Down: the port is closed until the mode changes.
                listener = None;
                while flag.load(Ordering::SeqCst) == DOWN {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        FlakyProxy {
            port,
            mode,
            dropped,
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

/// Reads what the client sends first (its request, or the start of it) and closes
/// the connection without an answer.
fn drop_after_request(mut client: TcpStream) {
    let _ = client.set_nonblocking(false);
    let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 64 << 10];
    let _ = client.read(&mut buf);
}

/// Copies bytes both ways between `client` and a new connection to `target`, until
/// either side closes or `mode` leaves [`UP`] (then both are cut).
fn pump(client: TcpStream, target: &str, mode: &Arc<AtomicU8>) {
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    for (mut from, mut to) in [
        (client.try_clone().unwrap(), server.try_clone().unwrap()),
        (server, client),
    ] {
        let mode = mode.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 << 10];
            let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
            loop {
                if mode.load(Ordering::SeqCst) != UP {
                    let _ = from.shutdown(std::net::Shutdown::Both);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    return;
                }
                match from.read(&mut buf) {
                    Ok(0) => {
                        let _ = to.shutdown(std::net::Shutdown::Write);
                        return;
                    }
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        });
    }
}

#[test]
fn s3_faults_mid_run_cost_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let to = format!("file:{}", input.display());
    let mut args = vec!["generate", "--to", &to, "--orders", "3000", "--seed", "47"];
    args.extend(crate::kafka::KNOBS);
    ok(&args);
    let (want, want_tables) = reference(dir.path(), "3000", "47");
    let lake = s3_lake("outage");
    let endpoint = s3_endpoint();
    let proxy = FlakyProxy::start(endpoint.trim_start_matches("http://").to_owned());
    let from = format!("file:{}", input.display());
    let args = process_args(&from, &lake);
    let child = bin()
        .args(&args)
        .env(
            "AWS_ENDPOINT_URL_S3",
            format!("http://127.0.0.1:{}", proxy.port),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-run: three seconds of connections accepted and dropped, a second up, then
    // three seconds down.
    std::thread::sleep(Duration::from_millis(300));
    proxy.set(DROPPING);
    std::thread::sleep(Duration::from_secs(3));
    proxy.set(UP);
    std::thread::sleep(Duration::from_secs(1));
    proxy.set(DOWN);
    std::thread::sleep(Duration::from_secs(3));
    proxy.set(UP);
    let mut child = child;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before the faults were over: make it longer"
    );
    assert!(
        proxy.dropped.load(Ordering::SeqCst) > 0,
        "no connection was dropped"
    );
    let o = finish(child, 300, "the run through the outage");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(summary(&o), want);
    assert_same_tables(&tables(Path::new(&lake)), &want_tables, &[]);
}

#[test]
fn a_split_and_a_merge_while_process_follows_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let to = format!("file:{}", input.display());
    let mut args = vec!["generate", "--to", &to, "--orders", "300", "--seed", "53"];
    args.extend(crate::kafka::KNOBS);
    ok(&args);
    let (want, want_tables) = reference(dir.path(), "300", "53");
    let raw_total = want["accepted"].as_u64().unwrap() + want["late"].as_u64().unwrap();
    let text = std::fs::read_to_string(&input).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let third = lines.len() / 3;

    let kinesis = Kinesis::new();
    let stream = unique("live");
    kinesis.create(&stream, 2);
    let url = format!("kinesis://{stream}");
    let lake = s3_lake("live");
    // Follows the stream (no --until-end) while it is resharded under it.
    let follower = spawn(&[
        "process",
        "--from",
        &url,
        "--lake",
        &lake,
        "--quiet",
        "--checkpoint-interval",
        "100ms",
    ]);
    kinesis.put(&stream, &lines[..third]);
    kinesis.split(&stream, 1, (1, 3));
    kinesis.put(&stream, &lines[third..2 * third]);
    kinesis.merge(&stream);
    kinesis.put(&stream, &lines[2 * third..]);
    // Every record reaches the lake while it follows.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while crate::raw_rows(&lake) < raw_total {
        assert!(
            std::time::Instant::now() < deadline,
            "the follower did not read every record: {} of {raw_total}",
            crate::raw_rows(&lake)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    crate::signal(&follower, "-TERM");
    let o = finish(follower, 60, "the follower after SIGTERM");
    assert!(o.status.success(), "{}", stderr(&o));
    // A bounded run from its checkpoint flushes the windows still open.
    let o = ok(&process_args(&url, &lake));
    assert_eq!(summary(&o), want);
    assert_same_tables(&tables(Path::new(&lake)), &want_tables, &[]);
}

/// Writes one dead-letter file of `rows` rows of 2,000 hard-to-compress bytes each,
/// with a sink that spills past 1 MiB, and publishes it. Returns the file and its
/// bytes of `raw_bytes`.
fn write_large_file(lake: &str, rows: usize) -> (StagedFile, usize) {
    let io = rushhour_cloud::Io::new(1).unwrap();
    let lake = Lake::open(lake, &io).unwrap();
    let opts = SinkOptions {
        spool_in_memory: 1 << 20,
        ..SinkOptions::default()
    };
    let mut sink = ParquetSink::new(lake, "big", 1, opts).unwrap();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    let mut b = DeadLetterBuilder::default();
    for i in 0..rows {
        let raw: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % 64) as usize]
            })
            .collect();
        let position = i.to_string();
        let provenance = Provenance {
            source: "file:big",
            position: &position,
            ingest_time: 0,
        };
        b.append(&raw, "not JSON", provenance);
    }
    sink.begin_epoch(1);
    sink.write(TableBatch {
        table: Table::DeadLetter,
        partition: String::new(),
        batch: b.finish().unwrap(),
    })
    .unwrap();
    let mut files = sink.prepare_commit(1).unwrap();
    assert_eq!(files.len(), 1);
    sink.publish(&files).unwrap();
    (files.remove(0), rows * 2000)
}

#[test]
fn a_file_over_the_part_size_goes_up_in_parts() {
    let local = tempfile::tempdir().unwrap();
    let local = local.path().display().to_string();
    for lake in [local, s3_lake("large")] {
        let (file, bytes) = write_large_file(&lake, 10_000);
        // Spilled (past 1 MiB) and multipart (past 10 MiB).
        assert!(file.bytes > 10 << 20, "{} bytes", file.bytes);
        let o = crate::run(&[
            "query",
            "--lake",
            &lake,
            "--format",
            "csv",
            "SELECT count(*) AS n, sum(length(CAST(raw_bytes AS VARCHAR))) AS bytes FROM dead_letter",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let want = format!("n,bytes\n10000,{bytes}\n");
        assert_eq!(stdout(&o), want, "{lake}");
    }
}

/// An HTTP proxy in front of the Kinesis server that makes its first `calls`
/// `PutRecords` calls partly fail, as a throttled stream does: it refuses the first
/// record of every key that has several in the call, and every fourth record; the
/// rest go to the server, and the answer merges the server's results with
/// `ProvisionedThroughputExceededException` for the refused records.
struct RefusingKinesis {
    port: u16,
    /// Records refused so far.
    refused: Arc<AtomicU64>,
}

impl RefusingKinesis {
    fn start(target: String, calls: u64) -> RefusingKinesis {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let refused = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(AtomicU64::new(0));
        let count = refused.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (target, seen, count) = (target.clone(), seen.clone(), count.clone());
                std::thread::spawn(move || {
                    let mut server = TcpStream::connect(&target).unwrap();
                    let mut from_client = std::io::BufReader::new(client.try_clone().unwrap());
                    let mut from_server = std::io::BufReader::new(server.try_clone().unwrap());
                    let mut client = client;
                    while let Some((head, body)) = read_http(&mut from_client) {
                        let put = head
                            .to_ascii_lowercase()
                            .contains("x-amz-target: kinesis_20131202.putrecords");
                        if !put || seen.fetch_add(1, Ordering::SeqCst) >= calls {
                            server.write_all(&with_body(&head, &body)).unwrap();
                            let (head, body) = read_http(&mut from_server).unwrap();
                            client.write_all(&with_body(&head, &body)).unwrap();
                            continue;
                        }
                        let mut call: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let records = call["Records"].as_array().unwrap().clone();
                        let key =
                            |r: &serde_json::Value| r["PartitionKey"].as_str().unwrap().to_owned();
                        let refuse: Vec<bool> = records
                            .iter()
                            .enumerate()
                            .map(|(i, r)| {
                                let repeats = records[i + 1..].iter().any(|l| key(l) == key(r));
                                let first = !records[..i].iter().any(|e| key(e) == key(r));
                                (repeats && first) || i % 4 == 3
                            })
                            .collect();
                        let kept: Vec<_> = records
                            .iter()
                            .zip(&refuse)
                            .filter(|(_, no)| !**no)
                            .map(|(r, _)| r.clone())
                            .collect();
                        let mut taken = Vec::new();
                        let mut failed = 0;
                        if !kept.is_empty() {
                            call["Records"] = serde_json::Value::Array(kept);
                            let body = serde_json::to_vec(&call).unwrap();
                            server.write_all(&with_body(&head, &body)).unwrap();
                            let (_, answer) = read_http(&mut from_server).unwrap();
                            let answer: serde_json::Value =
                                serde_json::from_slice(&answer).unwrap();
                            failed = answer["FailedRecordCount"].as_u64().unwrap_or(0);
                            taken = answer["Records"].as_array().unwrap().clone();
                        }
                        let mut taken = taken.into_iter();
                        let results: Vec<serde_json::Value> = refuse
                            .iter()
                            .map(|&no| {
                                if no {
                                    serde_json::json!({
                                        "ErrorCode": "ProvisionedThroughputExceededException",
                                        "ErrorMessage": "Rate exceeded for shard (injected)"
                                    })
                                } else {
                                    taken.next().unwrap()
                                }
                            })
                            .collect();
                        let n = refuse.iter().filter(|no| **no).count() as u64;
                        count.fetch_add(n, Ordering::SeqCst);
                        let answer = serde_json::to_vec(&serde_json::json!({
                            "FailedRecordCount": failed + n,
                            "Records": results,
                        }))
                        .unwrap();
                        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 0\r\n";
                        client.write_all(&with_body(head, &answer)).unwrap();
                    }
                });
            }
        });
        RefusingKinesis { port, refused }
    }
}

/// One HTTP/1.1 message (head without its blank line, and body), read by its
/// `Content-Length`; `None` at the end of the connection.
fn read_http(from: &mut impl std::io::BufRead) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if from.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let lower = head.to_ascii_lowercase();
    assert!(!lower.contains("transfer-encoding: chunked"), "{head}");
    let len = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |n| n.trim().parse().unwrap());
    let mut body = vec![0; len];
    from.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// `head` (without its blank line) with its `Content-Length` set for `body`, then
/// `body`.
fn with_body(head: &str, body: &[u8]) -> Vec<u8> {
    let mut out = String::new();
    for line in head.lines() {
        if !line.to_ascii_lowercase().starts_with("content-length:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The partition key of a generated event line (the contract's).
fn contract_key(line: &str) -> String {
    let event: serde_json::Value = serde_json::from_str(line).unwrap();
    let field = if event["event_type"] == "rider_location" {
        "rider_id"
    } else {
        "store_id"
    };
    event[field].as_str().unwrap().to_owned()
}

#[test]
fn refused_records_are_sent_again_without_loss_and_strict_order_holds() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.jsonl");
    let args = ["--orders", "60", "--seed", "59"];
    ok(&[
        &["generate", "--to", &format!("file:{}", file.display())],
        &args[..],
    ]
    .concat());
    let lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let kinesis = std::env::var("AWS_ENDPOINT_URL_KINESIS")
        .expect("AWS_ENDPOINT_URL_KINESIS: start infra/local-stack.sh kinesis");
    for strict in [false, true] {
        let proxy = RefusingKinesis::start(kinesis.trim_start_matches("http://").to_owned(), 6);
        let stream = unique(if strict { "strict" } else { "calm" });
        let url = format!("kinesis://{stream}");
        let mut generate = vec!["generate", "--to", &url, "--shards", "2"];
        generate.extend(args);
        if strict {
            generate.push("--strict-key-order");
        }
        let o = bin()
            .args(&generate)
            .env(
                "AWS_ENDPOINT_URL_KINESIS",
                format!("http://127.0.0.1:{}", proxy.port),
            )
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(proxy.refused.load(Ordering::SeqCst) > 0);
        // The first refused call of the default mode was full and the proxy refused
        // a key's first record while taking its second: detected and reported.
        assert_eq!(
            stderr(&o).contains("order is broken"),
            !strict,
            "{}",
            stderr(&o)
        );

        let lake = dir.path().join(&stream);
        ok(&[
            &["process", "--from", &url, "--lake", lake.to_str().unwrap()],
            &["--until-end", "--quiet"][..],
        ]
        .concat());
        let rows = query_json(&lake, "SELECT event_id, position FROM raw_events");
        // Nothing lost, nothing twice.
        assert_eq!(rows.len(), lines.len());
        let at: std::collections::HashMap<String, (u64, u64)> = rows
            .iter()
            .map(|r| {
                let (shard, n) = r["position"].as_str().unwrap().split_once(':').unwrap();
                (
                    r["event_id"].as_str().unwrap().to_owned(),
                    (shard.parse().unwrap(), n.parse().unwrap()),
                )
            })
            .collect();
        assert_eq!(at.len(), lines.len());
        // Each key's records in the stream in the order they were generated.
        let mut last: std::collections::HashMap<String, (u64, u64)> = Default::default();
        let mut broken = 0;
        for line in &lines {
            let id: serde_json::Value = serde_json::from_str(line).unwrap();
            let here = at[id["event_id"].as_str().unwrap()];
            if let Some(before) = last.insert(contract_key(line), here) {
                assert_eq!(before.0, here.0, "a key on two shards");
                broken += u64::from(before.1 > here.1);
            }
        }
        if strict {
            assert_eq!(broken, 0, "a key's records out of order");
        } else {
            assert!(
                broken > 0,
                "the default mode's first refused call reorders (the proxy makes sure)"
            );
        }
    }
}
