//! End-to-end tests of the `rushhour` binary: every subcommand, good and bad input.

#![allow(
    clippy::unwrap_used,
    clippy::type_complexity,
    clippy::panic,
    missing_docs
)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use parquet::file::reader::{FileReader, SerializedFileReader};

mod aws;
mod kafka;
mod ownership;
mod recovery;
mod services;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rushhour"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(args: &[&str]) -> Output {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    o
}

/// Starts the binary with its output captured.
fn spawn(args: &[&str]) -> std::process::Child {
    bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Sends `sig` (`-STOP`, `-CONT`, …) to a child.
fn signal(child: &std::process::Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig}");
}

/// Lake files readers see (raw/ and curated/), by path.
fn published(lake: &Path) -> Vec<String> {
    files_under(lake)
        .into_iter()
        .map(|p| p.strip_prefix(lake).unwrap().to_string_lossy().into_owned())
        .filter(|p| p.starts_with("raw/") || p.starts_with("curated/"))
        .collect()
}

/// Raw rows in `lake` (0 before the first publish).
fn raw_rows(lake: impl AsRef<std::ffi::OsStr>) -> u64 {
    let lake = lake.as_ref().to_str().expect("a UTF-8 lake path");
    let o = run(&[
        "query",
        "--lake",
        lake,
        "--format",
        "csv",
        "SELECT count(*) FROM raw_events",
    ]);
    stdout(&o)
        .lines()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn fails(args: &[&str], code: i32, needle: &str) {
    let o = run(args);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
    assert!(
        stderr(&o).contains(needle),
        "{args:?}: stderr lacks {needle:?}:\n{}",
        stderr(&o)
    );
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("processor/tests/fixtures/golden.jsonl")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn summary(o: &Output) -> serde_json::Value {
    let text = stdout(o);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {text}"))
}

/// `process --from file:-` with the golden fixture on stdin.
/// `process` reading stdin into `lake`, the golden fixture written to it; the pipe is
/// returned open.
fn spawn_process_on_fixture_stdin(lake: &Path) -> (std::process::Child, std::process::ChildStdin) {
    let mut child = bin()
        .args([
            "process",
            "--from",
            "file:-",
            "--lake",
            lake.to_str().unwrap(),
            "--quiet",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&std::fs::read(fixture()).unwrap()).unwrap();
    stdin.flush().unwrap();
    (child, stdin)
}

fn process_fixture_from_stdin(lake: &Path) -> Output {
    let (child, stdin) = spawn_process_on_fixture_stdin(lake);
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn query_csv(lake: &Path, sql: &str) -> String {
    stdout(&ok(&[
        "query",
        "--lake",
        lake.to_str().unwrap(),
        "--format",
        "csv",
        sql,
    ]))
}

fn query_json(lake: &Path, sql: &str) -> Vec<serde_json::Value> {
    let o = ok(&[
        "query",
        "--lake",
        lake.to_str().unwrap(),
        "--format",
        "json",
        sql,
    ]);
    serde_json::from_str::<Vec<serde_json::Value>>(&stdout(&o)).unwrap()
}

#[test]
fn help_teaches_every_subcommand() {
    let o = ok(&["--help"]);
    for sub in ["generate", "process", "query", "demo", "serve"] {
        assert!(stdout(&o).contains(sub));
        let h = ok(&[sub, "--help"]);
        assert!(stdout(&h).contains("Usage"), "{sub}");
    }
    assert!(stdout(&ok(&["process", "--help"])).contains("--lateness"));
}

#[test]
fn bad_arguments_are_usage_errors() {
    fails(
        &["generate", "--to", "nowhere", "--orders", "1"],
        2,
        "unknown scheme",
    );
    fails(
        &["generate", "--to", "file:x", "--rate", "10"],
        2,
        "--duration",
    );
    fails(
        &[
            "generate",
            "--to",
            "file:x",
            "--orders",
            "1",
            "--late-fraction",
            "2",
        ],
        2,
        "fraction",
    );
    fails(
        &[
            "process",
            "--from",
            "file:x",
            "--lake",
            "l",
            "--lateness",
            "10 parsecs",
        ],
        2,
        "duration",
    );
    fails(&["process", "--lake", "l"], 2, "--from");
    fails(
        &["query", "--lake", "l", "--format", "xml", "SELECT 1"],
        2,
        "xml",
    );
    fails(&["frobnicate"], 2, "unrecognized subcommand");
}

#[test]
fn process_golden_fixture_into_a_lake() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let from = format!("file:{}", fixture().display());
    let o = ok(&[
        "process",
        "--from",
        &from,
        "--lake",
        lake.to_str().unwrap(),
        "--until-end",
    ]);
    let s = summary(&o);
    assert_eq!(
        s,
        serde_json::json!({"read": 26, "accepted": 14, "late": 1, "duplicates": 2, "invalid": 9})
    );

    let files = files_under(&lake);
    let rel: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(&lake).unwrap().display().to_string())
        .collect();
    assert!(rel.iter().all(|f| !f.starts_with("_staging")), "{rel:?}");
    for dir in [
        "raw/events/event_date=2026-11-21/event_hour=12/",
        "raw/dead_letter/",
        "curated/store_minute/",
        "curated/deliveries/",
        "curated/store_delivery_5m/",
        "curated/rider_minute/",
        "curated/late_events/",
    ] {
        assert!(
            rel.iter()
                .any(|f| f.starts_with(dir) && f.ends_with(".parquet")),
            "no file under {dir}: {rel:?}"
        );
    }
    // Physical types: TIMESTAMP(MILLIS, UTC), INT64, DOUBLE, STRING.
    let sm = files
        .iter()
        .find(|p| p.to_string_lossy().contains("store_minute"))
        .unwrap();
    let reader = SerializedFileReader::new(File::open(sm).unwrap()).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let col = |name: &str| {
        (0..schema.num_columns())
            .map(|i| schema.column(i))
            .find(|c| c.name() == name)
            .unwrap()
    };
    let ts = format!("{:?}", col("window_start").logical_type_ref());
    assert!(
        ts.contains("is_adjusted_to_u_t_c: true") && ts.contains("MILLIS"),
        "{ts}"
    );
    assert_eq!(
        col("window_start").physical_type(),
        parquet::basic::Type::INT64
    );
    assert_eq!(
        col("orders_placed").physical_type(),
        parquet::basic::Type::INT64
    );
    assert_eq!(
        col("delivery_s_sum").physical_type(),
        parquet::basic::Type::DOUBLE
    );
    assert!(format!("{:?}", col("store_id").logical_type_ref()).contains("String"));

    // Query it back.
    let rows = query_json(
        &lake,
        "SELECT count(*) AS n, sum(CASE WHEN is_late THEN 1 ELSE 0 END) AS late FROM raw_events",
    );
    assert_eq!(rows[0]["n"], 15);
    assert_eq!(rows[0]["late"], 1);
    let rows = query_json(
        &lake,
        "SELECT position, error FROM dead_letter ORDER BY CAST(position AS INT)",
    );
    assert_eq!(rows.len(), 9);
    assert_eq!(rows[0]["position"], "13");
    let rows = query_json(
        &lake,
        "SELECT order_id, total_s FROM deliveries ORDER BY order_id",
    );
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["total_s"], 120.0);
    let rows = query_json(
        &lake,
        "SELECT * FROM store_minute WHERE store_id = 's1' ORDER BY window_start",
    );
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["revenue_cents"], 1650);

    // csv and table formats.
    let o = ok(&[
        "query",
        "--lake",
        lake.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT store_id, count(*) AS n FROM store_minute GROUP BY store_id ORDER BY store_id",
    ]);
    assert_eq!(stdout(&o).trim(), "store_id,n\ns1,4\ns2,2");
    let o = ok(&[
        "query",
        "--lake",
        lake.to_str().unwrap(),
        "SELECT count(*) AS n FROM late_events",
    ]);
    assert!(
        stdout(&o).contains("| n |") || stdout(&o).contains("| n"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn stdin_source_and_unreadable_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let o = process_fixture_from_stdin(&lake);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(summary(&o)["accepted"], 14);

    fails(
        &[
            "process",
            "--from",
            "file:/no/such/input.jsonl",
            "--lake",
            lake.to_str().unwrap(),
            "--until-end",
        ],
        1,
        "/no/such/input.jsonl",
    );
    fails(
        &[
            "process",
            "--from",
            &format!("log:{}", dir.path().join("nolog").display()),
            "--lake",
            lake.to_str().unwrap(),
            "--until-end",
        ],
        1,
        "not a usable stream log",
    );
    fails(
        &[
            "process",
            "--from",
            "kinesis://no-such-stream-here",
            "--lake",
            lake.to_str().unwrap(),
        ],
        1,
        "no such stream",
    );
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    fails(
        &[
            "process",
            "--from",
            &format!("file:{}", fixture().display()),
            "--lake",
            file.to_str().unwrap(),
            "--until-end",
        ],
        1,
        "lake",
    );
    fails(
        &[
            "query",
            "--lake",
            dir.path().join("missing").to_str().unwrap(),
            "SELECT 1",
        ],
        1,
        "no lake",
    );
    fails(
        &["query", "--lake", lake.to_str().unwrap(), "SELEC nonsense"],
        1,
        "SQL",
    );
    fails(
        &[
            "query",
            "--lake",
            lake.to_str().unwrap(),
            "SELECT * FROM no_such_table",
        ],
        1,
        "no_such_table",
    );
}

#[test]
fn generate_is_deterministic_and_feeds_process_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    for p in [&a, &b] {
        ok(&[
            "generate",
            "--to",
            &format!("file:{}", p.display()),
            "--orders",
            "200",
            "--seed",
            "9",
        ]);
    }
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(bytes, std::fs::read(&b).unwrap());
    let lines = bytes
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64;
    assert!(lines > 1000, "{lines}");

    let log = dir.path().join("log");
    ok(&[
        "generate",
        "--to",
        &format!("log:{}", log.display()),
        "--orders",
        "200",
        "--seed",
        "9",
        "--duplicate-fraction",
        "0.01",
        "--malformed-fraction",
        "0.01",
        "--disorder",
        "2s",
    ]);
    let lake = dir.path().join("lake");
    let o = ok(&[
        "process",
        "--from",
        &format!("log:{}", log.display()),
        "--lake",
        lake.to_str().unwrap(),
        "--until-end",
    ]);
    let s = summary(&o);
    let n = |k: &str| s[k].as_u64().unwrap();
    assert_eq!(
        n("read"),
        n("accepted") + n("late") + n("duplicates") + n("invalid")
    );
    assert!(n("duplicates") > 0 && n("invalid") > 0, "{s}");
    let rows = query_json(&lake, "SELECT count(*) AS n FROM raw_events");
    assert_eq!(rows[0]["n"].as_u64().unwrap(), n("accepted") + n("late"));
    let rows = query_json(&lake, "SELECT count(*) AS n FROM dead_letter");
    assert_eq!(rows[0]["n"].as_u64().unwrap(), n("invalid"));
    let rows = query_json(&lake, "SELECT sum(orders_placed) AS n FROM store_minute");
    assert!(rows[0]["n"].as_u64().unwrap() >= 190);

    // stdout sink, rate mode.
    let o = ok(&[
        "generate",
        "--to",
        "file:-",
        "--rate",
        "2000",
        "--duration",
        "300ms",
        "--seed",
        "3",
    ]);
    assert!(stdout(&o).lines().count() > 100);
    assert!(stderr(&o).contains("events/s"));
}

#[test]
fn demo_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let o = ok(&["demo", "--dir", demo.to_str().unwrap(), "--orders", "300"]);
    let out = stdout(&o);
    assert!(out.contains("Top stores by revenue"), "{out}");
    assert!(out.contains("store_id"), "{out}");
    // Running it again replaces its own directories.
    ok(&["demo", "--dir", demo.to_str().unwrap(), "--orders", "50"]);
    // It refuses to delete what it did not make.
    let other = dir.path().join("other");
    std::fs::create_dir_all(other.join("lake")).unwrap();
    fails(
        &["demo", "--dir", other.to_str().unwrap(), "--orders", "5"],
        1,
        "not a demo directory",
    );
}

#[test]
fn replay_writes_raw_events_in_event_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let from = format!("file:{}", fixture().display());
    ok(&[
        "process",
        "--from",
        &from,
        "--lake",
        lake.to_str().unwrap(),
        "--until-end",
        "--quiet",
    ]);
    let out = dir.path().join("replayed.jsonl");
    ok(&[
        "replay",
        "--lake",
        lake.to_str().unwrap(),
        "--to",
        &format!("file:{}", out.display()),
    ]);
    let text = std::fs::read_to_string(&out).unwrap();
    let times: Vec<i64> = text.lines().map(event_time_digits).collect();
    assert_eq!(times.len(), 15, "accepted and late events: {text}");
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "not in event-time order: {text}"
    );
    // A window of event time, at a finite speed.
    let part = dir.path().join("part.jsonl");
    ok(&[
        "replay",
        "--lake",
        lake.to_str().unwrap(),
        "--to",
        &format!("file:{}", part.display()),
        "--from-time",
        "2026-11-21T12:01:00Z",
        "--to-time",
        "2026-11-21T12:02:00Z",
        "--speed",
        "1000",
    ]);
    assert_eq!(std::fs::read_to_string(&part).unwrap().lines().count(), 5);
    // The replayed stream is valid input again.
    let lake2 = dir.path().join("lake2");
    let o = ok(&[
        "process",
        "--from",
        &format!("file:{}", out.display()),
        "--lake",
        lake2.to_str().unwrap(),
        "--until-end",
    ]);
    assert_eq!(summary(&o)["invalid"], 0);
    assert_eq!(summary(&o)["read"], 15);
    fails(
        &[
            "replay",
            "--lake",
            lake.to_str().unwrap(),
            "--to",
            "file:-",
            "--speed",
            "fast",
        ],
        2,
        "speed",
    );
}

/// The digits of a record's `event_time` (`YYYYMMDDHHMMSSmmm`, comparable as a number:
/// the generator and replay write UTC with milliseconds).
fn event_time_digits(line: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let digits: String = v["event_time"]
        .as_str()
        .unwrap()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[test]
fn process_follows_a_log_while_it_is_written_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let log = format!("log:{}", dir.path().join("log").display());
    let lake = dir.path().join("lake");
    let producer = bin()
        .args([
            "generate",
            "--to",
            &log,
            "--rate",
            "3000",
            "--duration",
            "2s",
            "--seed",
            "4",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let processor = bin()
        .args([
            "process",
            "--from",
            &log,
            "--lake",
            lake.to_str().unwrap(),
            "--commit-interval",
            "300ms",
            "--quiet",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let produced = producer.wait_with_output().unwrap();
    assert!(produced.status.success());
    let generated: u64 = stderr(&produced)
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {:?}", stderr(&produced)));
    // Files appear while the processor runs; wait until it has caught up.
    let mut seen = 0;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if lake.join("raw/events").exists() {
            seen = query_json(&lake, "SELECT count(*) AS n FROM raw_events")[0]["n"]
                .as_u64()
                .unwrap();
            if seen == generated {
                break;
            }
        }
    }
    assert_eq!(seen, generated);
    let killed = Command::new("kill")
        .args(["-TERM", &processor.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = processor.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        files_under(&lake)
            .iter()
            .all(|p| !p.to_string_lossy().contains("_staging"))
    );
}

#[test]
fn sigterm_stops_a_run_whose_stdin_is_open_and_silent() {
    // A producer that wrote some records and then keeps the pipe open without a word:
    // the reader is blocked in `read`, and SIGTERM must still end the run, with its
    // records in the lake.
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (mut child, stdin) = spawn_process_on_fixture_stdin(&lake);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Wait for the exit while the pipe stays open (stdin is dropped only after).
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "still running 30 s after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    drop(stdin);
    assert!(status.success());
    let n = query_json(&lake, "SELECT count(*) AS n FROM raw_events")[0]["n"]
        .as_u64()
        .unwrap();
    assert_eq!(n, 15, "the fixture's accepted and late events");
}

#[test]
fn stdin_runs_are_independent_and_files_resume() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    for _ in 0..2 {
        let o = process_fixture_from_stdin(&lake);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // Two stdin streams: both are in the lake.
    assert_eq!(
        query_json(&lake, "SELECT count(*) AS n FROM raw_events")[0]["n"],
        30
    );
    // A file processed twice with its checkpoint: the second run finds nothing new.
    let lake2 = dir.path().join("lake2");
    let from = format!("file:{}", fixture().display());
    let first = summary(&ok(&[
        "process",
        "--from",
        &from,
        "--lake",
        lake2.to_str().unwrap(),
        "--until-end",
    ]));
    let second = summary(&ok(&[
        "process",
        "--from",
        &from,
        "--lake",
        lake2.to_str().unwrap(),
        "--until-end",
    ]));
    assert_eq!(first, second);
    assert_eq!(
        query_json(&lake2, "SELECT count(*) AS n FROM raw_events")[0]["n"],
        15
    );
}

#[test]
fn max_future_keeps_a_broken_clock_from_moving_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let ping = |id: &str, time: &str| {
        format!(
            r#"{{"event_id":"{id}","event_type":"rider_location","event_time":"{time}","rider_id":"r1","lat":1,"lon":2}}"#
        )
    };
    let mut lines = vec![
        ping("a", "2026-11-21T12:00:00Z"),
        ping("broken", "9999-12-31T23:59:59.999Z"),
    ];
    for (k, s) in ["10", "20", "30", "40"].iter().enumerate() {
        lines.push(ping(&format!("b{k}"), &format!("2026-11-21T12:00:{s}Z")));
    }
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let from = format!("file:{}", input.display());
    let run_with = |lake: &str, extra: &[&str]| {
        let lake = dir.path().join(lake);
        let mut args = vec![
            "process",
            "--from",
            &from,
            "--lake",
            lake.to_str().unwrap(),
            "--until-end",
            "--quiet",
        ];
        args.extend(extra);
        (summary(&ok(&args)), lake)
    };
    // The contract's default: the 9999 event is accepted and everything after is late.
    let (s, _) = run_with("plain", &[]);
    assert_eq!(
        (s["accepted"].as_u64(), s["late"].as_u64()),
        (Some(2), Some(4))
    );
    // With --max-future it goes to the dead letter, saying why.
    let (s, lake) = run_with("guarded", &["--max-future", "1h"]);
    assert_eq!(
        (
            s["accepted"].as_u64(),
            s["late"].as_u64(),
            s["invalid"].as_u64()
        ),
        (Some(5), Some(0), Some(1))
    );
    let dead = query_json(&lake, "SELECT error, position FROM dead_letter");
    assert_eq!(dead.len(), 1);
    let error = dead[0]["error"].as_str().unwrap();
    assert!(
        error.contains("more than 1h ahead of the wall clock") && error.contains("--max-future"),
        "{error}"
    );
    assert_eq!(dead[0]["position"], "2");
}
