//! One writer per pipeline: a second `process` on the same pipeline, started at any
//! instant of the first's run, is refused (or waits) and breaks nothing; a holder
//! paused past its lease's expiry publishes nothing once resumed; `rushhour
//! checkpoints` shows checkpoints and the lease.

use std::path::Path;
use std::time::Duration;

use crate::recovery::{assert_no_partial_files, delays, lake_fingerprint, process_args};
use crate::{bin, files_under, ok, published, signal, spawn, stderr, stdout, summary};

fn generate(input: &Path, orders: &str, seed: &str) {
    ok(&[
        "generate",
        "--to",
        &format!("file:{}", input.display()),
        "--orders",
        orders,
        "--seed",
        seed,
        "--disorder",
        "3s",
        "--late-fraction",
        "0.01",
        "--duplicate-fraction",
        "0.01",
        "--malformed-fraction",
        "0.005",
    ]);
}

fn checkpoints_verify(lake: &Path) -> serde_json::Value {
    let o = ok(&[
        "checkpoints",
        "--lake",
        lake.to_str().unwrap(),
        "verify",
        "--json",
    ]);
    serde_json::from_str(&stdout(&o)).unwrap()
}

#[test]
fn a_second_process_started_at_any_instant_breaks_nothing() {
    // Issue 7's first reproduction: a second start deleted the first's staged files,
    // which then committed a manifest naming files that no longer existed, and every
    // later start failed.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    generate(&input, "2000", "11");
    let from = format!("file:{}", input.display());
    let reference = dir.path().join("reference");
    let want = summary(&ok(&process_args(&from, reference.to_str().unwrap())));
    let want_lake = lake_fingerprint(&reference);
    let (mut refused, mut waited) = (0, 0);
    for (k, ms) in delays(13, 9, 700).into_iter().enumerate() {
        let lake = dir.path().join(format!("lake{k}"));
        let lake_s = lake.to_str().unwrap();
        let first = spawn(&process_args(&from, lake_s));
        std::thread::sleep(Duration::from_millis(ms));
        let mut second_args = process_args(&from, lake_s);
        let wait = k % 3 == 2;
        if wait {
            second_args.push("--wait-for-lease");
        }
        let second = spawn(&second_args);
        let first_pid = first.id();
        let first = first.wait_with_output().unwrap();
        let second = second.wait_with_output().unwrap();
        assert!(first.status.success(), "case {k}: {}", stderr(&first));
        assert_eq!(summary(&first), want, "case {k}");
        if second.status.success() {
            // It waited, or came after the first had finished: nothing new.
            assert_eq!(summary(&second), want, "case {k}");
            waited += usize::from(wait);
        } else {
            assert!(
                !wait,
                "case {k}: a waiting process failed: {}",
                stderr(&second)
            );
            let err = stderr(&second);
            assert!(
                err.contains(&format!("held by process {first_pid} on host"))
                    && err.contains("since")
                    && err.contains("--wait-for-lease"),
                "case {k}: {err}"
            );
            refused += 1;
        }
        // The checkpoint stays usable and the lake is exact.
        assert_eq!(summary(&ok(&process_args(&from, lake_s))), want, "case {k}");
        assert_no_partial_files(&lake);
        assert_eq!(lake_fingerprint(&lake), want_lake, "case {k}");
        let report = checkpoints_verify(&lake);
        assert_eq!(report["pipelines"][0]["resumable"], true, "case {k}");
    }
    assert!(refused > 0, "no start came while the first ran");
    assert!(waited > 0, "no start waited for the lease");
}

#[test]
fn a_paused_holder_resumed_after_its_lease_expired_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    generate(&input, "5000", "4");
    let from = format!("file:{}", input.display());
    let reference = dir.path().join("reference");
    let want = summary(&ok(&process_args(&from, reference.to_str().unwrap())));
    let mut stopped = 0;
    for (k, pause_after) in [250u64, 500].into_iter().enumerate() {
        let lake = dir.path().join(format!("lake{k}"));
        let lake_s = lake.to_str().unwrap();
        let mut args = process_args(&from, lake_s);
        args.extend(["--lease-ttl", "1s"]);
        let zombie = spawn(&args);
        std::thread::sleep(Duration::from_millis(pause_after));
        signal(&zombie, "-STOP");
        // While its lease is valid, another start is refused and names the holder.
        let o = bin().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "case {k}");
        assert!(
            stderr(&o).contains(&format!("held by process {}", zombie.id())),
            "case {k}: {}",
            stderr(&o)
        );
        // Past the expiry, the next start takes over and finishes the run.
        std::thread::sleep(Duration::from_millis(1300));
        let o = ok(&args);
        assert_eq!(summary(&o), want, "case {k}");
        let before = published(&lake);
        // The paused holder wakes up: it must stop, publishing nothing.
        signal(&zombie, "-CONT");
        let z = zombie.wait_with_output().unwrap();
        // Paused mid-run, it stops; paused after its last commit, it just exits.
        let err = stderr(&z);
        if !z.status.success() {
            assert!(
                err.contains("lost the lease") || err.contains("no longer owns the pipeline"),
                "case {k}: {err}"
            );
            stopped += 1;
        }
        assert_eq!(published(&lake), before, "case {k}: the zombie published");
        assert_no_partial_files(&lake);
        assert_eq!(
            lake_fingerprint(&lake),
            lake_fingerprint(&reference),
            "case {k}"
        );
        // And the pipeline is still fine.
        assert_eq!(summary(&ok(&args)), want, "case {k}");
    }
    assert!(stopped > 0, "no holder was paused mid-run");
}

#[test]
fn checkpoints_lists_verifies_and_names_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    generate(&input, "300", "9");
    let from = format!("file:{}", input.display());
    let lake = dir.path().join("lake");
    let lake_s = lake.to_str().unwrap();
    let mut args = process_args(&from, lake_s);
    args.extend(["--name", "orders"]);
    ok(&args);
    let report = checkpoints_verify(&lake);
    let p = &report["pipelines"][0];
    assert_eq!(p["name"], "orders");
    assert_eq!(p["lease_free"], "released");
    assert!(p["lease"]["holder"]["pid"].as_u64().is_some());
    let cps = p["checkpoints"].as_array().unwrap();
    assert!(!cps.is_empty() && cps.len() <= 3, "{cps:?}");
    assert!(cps.iter().all(|c| c["verifies"] == true), "{cps:?}");
    assert!(
        cps[0]["positions"]["0"]["file"]["line"].as_u64().is_some(),
        "{cps:?}"
    );
    // The text form names the same.
    let text = stdout(&ok(&["checkpoints", "--lake", lake_s]));
    assert!(
        text.contains("pipeline orders") && text.contains("free (released)"),
        "{text}"
    );
    // Damage the newest state: it no longer verifies (process would fall back).
    let cp = lake.join("_checkpoints/orders");
    let newest = cp.join(cps[0]["state"].as_str().unwrap());
    std::fs::write(&newest, b"junk").unwrap();
    let report = checkpoints_verify(&lake);
    let first = &report["pipelines"][0]["checkpoints"][0];
    assert_eq!(first["verifies"], false);
    assert!(
        first["problem"].as_str().unwrap().contains("bytes"),
        "{first}"
    );
    // Every state damaged: exit 1, and `process` says exactly how to start over.
    for f in files_under(&cp) {
        if f.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("state-")
        {
            std::fs::write(&f, b"junk").unwrap();
        }
    }
    let o = bin()
        .args(["checkpoints", "--lake", lake_s, "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no usable checkpoint"),
        "{}",
        stderr(&o)
    );
    let o = bin().args(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    for step in [
        "no usable checkpoint",
        "mv ",
        "-name 'part-orders.*' -delete",
        "rushhour checkpoints",
    ] {
        assert!(err.contains(step), "lacks {step:?}: {err}");
    }
    // A lake without checkpoints, and one that does not exist.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = ok(&["checkpoints", "--lake", empty.to_str().unwrap()]);
    assert!(stdout(&o).contains("no pipeline has checkpoints"));
    let o = bin()
        .args([
            "checkpoints",
            "--lake",
            dir.path().join("nope").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn a_checkpoint_of_an_older_format_is_refused_with_the_steps() {
    // tests/fixtures/checkpoint-v3: written by the build before lease generations
    // (checkpoint format version 3), over tests/fixtures/log-v1.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp");
    std::fs::create_dir_all(&cp).unwrap();
    for f in std::fs::read_dir(fixtures.join("checkpoint-v3")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, cp.join(f.file_name().unwrap())).unwrap();
    }
    let log = format!("log:{}", fixtures.join("log-v1").display());
    let lake = dir.path().join("lake");
    let o = bin()
        .args([
            "process",
            "--from",
            &log,
            "--lake",
            lake.to_str().unwrap(),
            "--checkpoint",
            cp.to_str().unwrap(),
            "--until-end",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("version 3")
            && err.contains("this build reads rushhour-checkpoint version 4")
            && err.contains("mv "),
        "{err}"
    );
    let o = bin()
        .args([
            "checkpoints",
            "--lake",
            lake.to_str().unwrap(),
            "--checkpoint",
            cp.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "nothing to resume from");
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let problem = report["pipelines"][0]["checkpoints"][0]["problem"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(problem.contains("version 3"), "{problem}");
}

#[test]
fn the_log_format_of_version_1_is_read_and_others_are_refused() {
    // tests/fixtures/log-v1: `generate --to log:… --orders 20 --seed 3 --partitions 2`.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let log = format!("log:{}", fixtures.join("log-v1").display());
    let lake = dir.path().join("lake");
    let o = ok(&[
        "process",
        "--from",
        &log,
        "--lake",
        lake.to_str().unwrap(),
        "--until-end",
        "--quiet",
        "--checkpoint",
        dir.path().join("cp").to_str().unwrap(),
    ]);
    let want: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/log-v1.summary.json")).unwrap();
    assert_eq!(summary(&o), want);
    // The same log claiming a newer version is refused, naming it.
    let copy = dir.path().join("log-v2");
    std::fs::create_dir_all(&copy).unwrap();
    for f in files_under(&fixtures.join("log-v1")) {
        let rel = f.strip_prefix(fixtures.join("log-v1")).unwrap();
        std::fs::create_dir_all(copy.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&f, copy.join(rel)).unwrap();
    }
    let meta = copy.join("streamlog.json");
    let text = std::fs::read_to_string(&meta)
        .unwrap()
        .replace("\"version\":1", "\"version\":2");
    std::fs::write(&meta, text).unwrap();
    let o = bin()
        .args([
            "process",
            "--from",
            &format!("log:{}", copy.display()),
            "--lake",
            lake.to_str().unwrap(),
            "--until-end",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is not a usable stream log") && stderr(&o).contains("version 2"),
        "{}",
        stderr(&o)
    );
}
