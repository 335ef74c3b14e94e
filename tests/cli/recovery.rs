//! Crash recovery, proven by killing: `process` is killed with SIGKILL at many instants
//! (and aborted at every commit step by failpoints), restarted each time with the same
//! checkpoint, and must end with exactly the lake of an uninterrupted run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{bin, files_under, ok, query_csv, stderr, stdout, summary};

/// Every table, row for row, with the columns that do not depend on wall-clock time.
pub(crate) fn lake_fingerprint(lake: &Path) -> Vec<String> {
    let queries = [
        "SELECT event_id, event_type, event_time, order_id, store_id, rider_id, total_cents, lat, lon, is_late, source, position FROM raw_events ORDER BY event_id, is_late, position",
        "SELECT raw_bytes, error, source, position FROM dead_letter ORDER BY position",
        "SELECT * FROM store_minute ORDER BY window_start, store_id",
        "SELECT * FROM deliveries ORDER BY delivered_at, order_id, rider_id",
        "SELECT * FROM store_delivery_5m ORDER BY window_start, store_id",
        "SELECT * FROM rider_minute ORDER BY window_start, rider_id",
        "SELECT * FROM late_events ORDER BY event_time, event_id",
    ];
    queries.iter().map(|q| query_csv(lake, q)).collect()
}

/// `generate --to file:INPUT --orders ORDERS --seed SEED` with `extra` knobs.
fn generate_file(input: &Path, orders: &str, seed: &str, extra: &[&str]) {
    let to = format!("file:{}", input.display());
    let mut args = vec!["generate", "--to", &to, "--orders", orders, "--seed", seed];
    args.extend(extra);
    ok(&args);
}

pub(crate) fn process_args<'a>(from: &'a str, lake: &'a str) -> Vec<&'a str> {
    vec![
        "process",
        "--from",
        from,
        "--lake",
        lake,
        "--until-end",
        "--quiet",
        "--checkpoint-interval",
        "50ms",
    ]
}

/// A small deterministic pseudo-random sequence (no clock, no global state).
pub(crate) fn delays(seed: u64, n: usize, max_ms: u64) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            20 + x % max_ms
        })
        .collect()
}

/// Kills `process` after each delay, then lets a last run finish; returns its summary.
fn run_with_kills(from: &str, lake: &Path, kills: &[u64]) -> serde_json::Value {
    let lake_s = lake.to_str().unwrap();
    for &ms in kills {
        let mut child = bin()
            .args(process_args(from, lake_s))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill(); // SIGKILL; it may have finished already, which is fine
        let _ = child.wait();
    }
    summary(&ok(&process_args(from, lake_s)))
}

pub(crate) fn assert_no_partial_files(lake: &Path) {
    for f in files_under(lake) {
        let rel = f.strip_prefix(lake).unwrap().to_string_lossy().into_owned();
        if rel.starts_with("raw/") || rel.starts_with("curated/") {
            assert!(
                rel.ends_with(".parquet") && !rel.contains('#'),
                "unexpected file {rel}"
            );
        }
    }
}

#[test]
fn sigkill_at_many_instants_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    generate_file(
        &input,
        "1500",
        "11",
        &[
            "--disorder",
            "3s",
            "--late-fraction",
            "0.01",
            "--duplicate-fraction",
            "0.01",
            "--malformed-fraction",
            "0.005",
        ],
    );
    let from = format!("file:{}", input.display());
    let reference = dir.path().join("reference");
    let want = summary(&ok(&process_args(&from, reference.to_str().unwrap())));
    let crashed = dir.path().join("crashed");
    let got = run_with_kills(&from, &crashed, &delays(7, 14, 700));
    assert_eq!(got, want, "summary after restarts");
    assert_no_partial_files(&crashed);
    assert_eq!(lake_fingerprint(&crashed), lake_fingerprint(&reference));
    // Run again with the same checkpoint: nothing new, nothing twice.
    let again = summary(&ok(&process_args(&from, crashed.to_str().unwrap())));
    assert_eq!(again, want);
    assert_eq!(lake_fingerprint(&crashed), lake_fingerprint(&reference));
}

#[test]
fn sigkill_on_a_log_source_while_the_producer_still_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = format!("log:{}", dir.path().join("log").display());
    let mut producer = bin()
        .args([
            "generate",
            "--to",
            &log,
            "--seed",
            "5",
            "--rate",
            "20000",
            "--duration",
            "3s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the processor repeatedly while the producer is still writing.
    let crashed = dir.path().join("crashed");
    let lake_s = crashed.to_str().unwrap().to_owned();
    for ms in delays(3, 8, 500) {
        let mut child = bin()
            .args([
                "process",
                "--from",
                &log,
                "--lake",
                &lake_s,
                "--quiet",
                "--checkpoint-interval",
                "50ms",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    // Let the producer finish.
    let status = producer.wait().unwrap();
    assert!(status.success());
    let got = summary(&ok(&process_args(&log, &lake_s)));
    let reference = dir.path().join("reference");
    let want = summary(&ok(&process_args(&log, reference.to_str().unwrap())));
    assert_eq!(got, want);
    assert_no_partial_files(&crashed);
    assert_eq!(lake_fingerprint(&crashed), lake_fingerprint(&reference));
}

#[test]
fn a_crash_at_every_step_of_the_commit_protocol_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    generate_file(&input, "400", "2", &["--disorder", "2s"]);
    let from = format!("file:{}", input.display());
    let reference = dir.path().join("reference");
    let want = summary(&ok(&process_args(&from, reference.to_str().unwrap())));
    for point in [
        "start-committed",
        "epoch-staged",
        "checkpoint-state-written",
        "checkpoint-committed",
        "mid-publish",
        "epoch-published",
    ] {
        let lake = dir.path().join(point);
        let lake_s = lake.to_str().unwrap();
        // Each run aborts at the point once it is reached (after some epochs). The point
        // must be reached: a renamed or unreachable failpoint fails the test.
        let mut fired = 0;
        for _ in 0..3 {
            let o = Command::new(env!("CARGO_BIN_EXE_rushhour"))
                .args(process_args(&from, lake_s))
                .env("RUSHHOUR_FAILPOINT", point)
                .output()
                .unwrap();
            let reached =
                String::from_utf8_lossy(&o.stderr).contains(&format!("failpoint {point} reached"));
            if reached {
                fired += 1;
                assert!(!o.status.success(), "{point}: reached but not aborted");
            } else {
                assert!(stdout(&o).contains("\"read\""), "{point}: {o:?}");
            }
        }
        assert!(fired > 0, "failpoint {point} never fired");
        let got = summary(&ok(&process_args(&from, lake_s)));
        assert_eq!(got, want, "{point}");
        assert_no_partial_files(&lake);
        assert_eq!(
            lake_fingerprint(&lake),
            lake_fingerprint(&reference),
            "{point}"
        );
    }
}

/// The newest checkpoint names staged files that are gone (deleted by hand, or by a
/// storage lifecycle rule on the staging prefix): recovery resumes from an older one
/// whose files it can still publish, undoes the rest, and the lake is exact.
#[test]
fn a_checkpoint_whose_staged_files_are_lost_is_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    generate_file(&input, "2000", "5", &["--disorder", "2s"]);
    let from = format!("file:{}", input.display());
    let reference = dir.path().join("reference");
    let want = summary(&ok(&process_args(&from, reference.to_str().unwrap())));
    let lake = dir.path().join("lake");
    let lake_s = lake.to_str().unwrap();
    // A first run leaves committed, published checkpoints; a second one commits one
    // more and dies before publishing it.
    let mut first = bin()
        .args(process_args(&from, lake_s))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let manifests = |lake: &Path| {
        files_under(lake)
            .iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("manifest-"))
            })
            .count()
    };
    while manifests(&lake) < 3 && first.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = first.kill();
    let _ = first.wait();
    let o = bin()
        .args(process_args(&from, lake_s))
        .env("RUSHHOUR_FAILPOINT", "checkpoint-committed")
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("failpoint checkpoint-committed reached"),
        "{}",
        stderr(&o)
    );
    let staging = lake.join("_staging");
    let lost = files_under(&staging).len();
    assert!(lost > 0, "nothing was left staged");
    std::fs::remove_dir_all(&staging).unwrap();
    let o = ok(&process_args(&from, lake_s));
    assert!(stderr(&o).contains("is lost"), "{}", stderr(&o));
    assert_eq!(summary(&o), want);
    assert_no_partial_files(&lake);
    assert_eq!(lake_fingerprint(&lake), lake_fingerprint(&reference));
}

#[test]
fn corrupt_and_foreign_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    generate_file(&input, "1500", "8", &[]);
    let from = format!("file:{}", input.display());
    let lake = dir.path().join("lake");
    let lake_s = lake.to_str().unwrap();
    let cp = dir.path().join("cp");
    let cp_s = cp.to_str().unwrap();
    let mut args = process_args(&from, lake_s);
    args.extend(["--checkpoint", cp_s]);
    let want = summary(&ok(&args));
    let reference = lake_fingerprint(&lake);
    let mut manifests: Vec<_> = files_under(&cp)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("manifest-"))
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 2, "{manifests:?}");
    let newest = manifests.last().unwrap().clone();
    // A truncated newest manifest: fall back to the previous good one, with a warning.
    let text = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &text[..text.len() / 2]).unwrap();
    let o = ok(&args);
    assert_eq!(summary(&o), want);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("corrupt"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(lake_fingerprint(&lake), reference);
    // Another source with the same checkpoint is refused with a clear message.
    let other = dir.path().join("other.jsonl");
    std::fs::write(&other, "").unwrap();
    let mut foreign = process_args("", lake_s);
    let other_from = format!("file:{}", other.display());
    foreign[2] = &other_from;
    foreign.extend(["--checkpoint", cp_s]);
    let o = bin().args(&foreign).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot be used: it belongs to pipeline"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Every checkpoint damaged: stop with a clear error rather than redo into the lake.
    for m in files_under(&cp)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("manifest-"))
    {
        std::fs::write(&m, b"{").unwrap();
    }
    let o = bin().args(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("no usable checkpoint"), "{err}");
}

/// The states named by the manifests of lease generation `generation` in `cp`.
fn states_of_generation(cp: &Path, generation: u64) -> Vec<std::path::PathBuf> {
    files_under(cp)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("manifest-")
        })
        .filter_map(|p| {
            let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).ok()?;
            (m["generation"] == generation).then(|| cp.join(m["state"].as_str().unwrap()))
        })
        .collect()
}

#[test]
fn a_fallback_to_before_a_resumed_run_is_exact() {
    // Issue 7's second reproduction: a resumed run named its first epoch's files as
    // epoch 1, so falling back past damaged checkpoints to before it kept them and the
    // epoch was processed twice.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    generate_file(
        &input,
        "3000",
        "21",
        &["--disorder", "2s", "--duplicate-fraction", "0.01"],
    );
    let from = format!("file:{}", input.display());
    let reference = dir.path().join("reference");
    let want = summary(&ok(&process_args(&from, reference.to_str().unwrap())));
    for (k, (first, second)) in [(300, 300), (250, 500), (500, 120)].into_iter().enumerate() {
        let lake = dir.path().join(format!("lake{k}"));
        let lake_s = lake.to_str().unwrap();
        let mut args = process_args(&from, lake_s);
        args.extend(["--retain-checkpoints", "1000"]);
        for ms in [first, second] {
            let mut child = bin()
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(ms));
            let _ = child.kill();
            let _ = child.wait();
        }
        // Damage every state the second (resumed) process committed, including the one
        // its start checkpoint names (the first process's last): recovery falls back to
        // the first process's epoch before that, undoing everything after it.
        let cp = files_under(&lake)
            .into_iter()
            .find(|p| p.to_string_lossy().contains("/_checkpoints/"))
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap();
        let damaged = states_of_generation(&cp, 2);
        for state in &damaged {
            if state.exists() {
                let bytes = std::fs::read(state).unwrap();
                std::fs::write(state, &bytes[..bytes.len() / 2]).unwrap();
            }
        }
        let o = ok(&args);
        assert_eq!(summary(&o), want, "case {k}");
        if !damaged.is_empty() {
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("fell back past damaged"),
                "case {k}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        assert_no_partial_files(&lake);
        assert_eq!(
            lake_fingerprint(&lake),
            lake_fingerprint(&reference),
            "case {k}"
        );
    }
}
