//! `rushhour checkpoints`: every checkpoint of a lake's pipelines, whether each one
//! verifies, and who holds each pipeline's lease — what an operator needs before a
//! restart, a rollback or a hand repair.

use anyhow::{Context, bail};
use rushhour_cloud::{Io, LakeUrl};
use rushhour_processor::checkpoint::{CheckpointInfo, inspect};
use rushhour_processor::group::{GroupStatus, group_status};
use rushhour_processor::lease::{LeaseRecord, PIPELINE_SCOPE, newest};
use rushhour_processor::source::Positions;
use rushhour_processor::{CheckpointStore, Pipeline, runtime::now_ms};
use rushhour_schemas::time::format_millis;
use rushhour_sink::{Lake, ObjectCheckpointStore};
use serde::Serialize;

use crate::cli::{CheckpointsAction, CheckpointsArgs};

/// One pipeline's checkpoints and lease.
#[derive(Debug, Serialize)]
struct PipelineReport {
    /// The pipeline (its checkpoint directory's name).
    name: String,
    /// Where its checkpoints are.
    location: String,
    /// The newest lease generation's record, if the lease was ever taken.
    lease: Option<LeaseRecord>,
    /// Whether another process could take the lease now, and why; `None` while held.
    lease_free: Option<&'static str>,
    /// Whether `process` would find a checkpoint to resume from (true when there are
    /// no checkpoints at all: it starts afresh).
    resumable: bool,
    /// Newest first.
    checkpoints: Vec<CheckpointRow>,
    /// A consumer group's members, partition claims and pending rider credits (each
    /// member has a checkpoint chain of its own, not listed above).
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<GroupStatus>,
}

/// One checkpoint, flattened for people and scripts.
#[derive(Debug, Serialize)]
struct CheckpointRow {
    epoch: u64,
    committed_at: Option<String>,
    generation: Option<u64>,
    /// For a start checkpoint: the epoch it resumed from (0: a fresh start).
    resumed_from: Option<u64>,
    positions: Positions,
    state: Option<String>,
    state_bytes: Option<u64>,
    files: Option<usize>,
    read: Option<u64>,
    verifies: bool,
    problem: Option<String>,
}

impl From<CheckpointInfo> for CheckpointRow {
    fn from(info: CheckpointInfo) -> Self {
        let m = info.manifest.as_ref();
        CheckpointRow {
            epoch: info.epoch,
            committed_at: m.map(|m| format_millis(m.created_at_ms)),
            generation: m.map(|m| m.generation),
            resumed_from: m.and_then(|m| m.start).map(|s| s.resumed_from),
            positions: m.map(|m| m.positions.clone()).unwrap_or_default(),
            state: m.map(|m| m.state.clone()),
            state_bytes: m.map(|m| m.state_bytes),
            files: m.map(|m| m.staged.len()),
            read: m.map(|m| m.counters.read),
            verifies: info.problem.is_none(),
            problem: info.problem,
        }
    }
}

fn report(
    name: &str,
    store: &dyn CheckpointStore,
    action: CheckpointsAction,
) -> anyhow::Result<PipelineReport> {
    let deep = |bytes: &[u8]| Pipeline::check_snapshot(bytes).map_err(|e| e.to_string());
    let shallow = |_: &[u8]| Ok(());
    let check: &dyn Fn(&[u8]) -> Result<(), String> = match action {
        CheckpointsAction::Verify => &deep,
        CheckpointsAction::List => &shallow,
    };
    let infos = inspect(store, check)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading checkpoints in {}", store.location()))?;
    let lease = newest(store, PIPELINE_SCOPE)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading the lease in {}", store.location()))?
        .and_then(|(_, record)| record);
    let checkpoints: Vec<CheckpointRow> = infos.into_iter().map(CheckpointRow::from).collect();
    let group = group_status(store)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading the consumer group in {}", store.location()))?;
    Ok(PipelineReport {
        group: (!group.members.is_empty()).then_some(group),
        name: name.to_owned(),
        location: store.location(),
        lease_free: lease.as_ref().and_then(|l| l.free_because(now_ms())),
        lease,
        resumable: checkpoints.is_empty() || checkpoints.iter().any(|c| c.verifies),
        checkpoints,
    })
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn print_text(reports: &[PipelineReport]) -> String {
    let mut out = String::new();
    for r in reports {
        out.push_str(&format!("pipeline {} ({})\n", r.name, r.location));
        let lease = match (&r.lease, r.lease_free) {
            (None, _) => "never taken".to_owned(),
            (Some(l), None) => format!("held by {}", l.describe()),
            (Some(l), Some(why)) => format!("free ({why}); last held by {}", l.describe()),
        };
        if let Some(group) = &r.group {
            print_group(&mut out, group);
            out.push('\n');
            continue;
        }
        out.push_str(&format!("  lease: {lease}\n"));
        if r.checkpoints.is_empty() {
            out.push_str("  no checkpoints: `process` starts from the beginning\n\n");
            continue;
        }
        out.push_str(&format!(
            "  {:>8}  {:<24}  {:>4}  {:<16}  {:>10}  {:>5}  {:>10}  {:<7}  positions\n",
            "epoch", "committed", "gen", "kind", "state", "files", "read", "status"
        ));
        for c in &r.checkpoints {
            let kind = match c.resumed_from {
                Some(0) => "start (fresh)".to_owned(),
                Some(e) => format!("start (from {e})"),
                None if c.committed_at.is_some() => "epoch".to_owned(),
                None => "-".to_owned(),
            };
            let status = if c.verifies { "ok" } else { "BAD" };
            out.push_str(&format!(
                "  {:>8}  {:<24}  {:>4}  {:<16}  {:>10}  {:>5}  {:>10}  {:<7}  {}\n",
                c.epoch,
                c.committed_at.as_deref().unwrap_or("-"),
                c.generation.map_or("-".into(), |g| g.to_string()),
                kind,
                c.state_bytes.map_or("-".into(), human_bytes),
                c.files.map_or("-".into(), |n| n.to_string()),
                c.read.map_or("-".into(), |n| n.to_string()),
                status,
                c.positions
                    .iter()
                    .map(|(p, pos)| format!("{p}:{pos}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ));
            if let Some(problem) = &c.problem {
                out.push_str(&format!("  {:>8}  ^ {problem}\n", ""));
            }
        }
        if !r.resumable {
            out.push_str(
                "  no checkpoint verifies: `process` refuses to start and says how to start over\n",
            );
        }
        out.push('\n');
    }
    out
}

/// A consumer group: who holds each partition, its members' chains, pending credits.
fn print_group(out: &mut String, group: &GroupStatus) {
    out.push_str(&format!(
        "  consumer group: {} members joined, {} partitions claimed, {} rider credit objects pending\n",
        group.members.len(),
        group.partitions.len(),
        group.pending_credits
    ));
    for p in &group.partitions {
        let owner = p.owner.map_or("?".into(), |m| format!("member {m}"));
        let state = match &p.released {
            None => format!("held by {owner} (or its holder stopped without handing it over)"),
            Some(r) => format!(
                "handed over by {owner} at {}{}, judged from {}",
                r.position,
                if r.complete { ", complete" } else { "" },
                if r.floor == i64::MIN {
                    "the start".to_owned()
                } else {
                    format_millis(r.floor)
                }
            ),
        };
        out.push_str(&format!(
            "  partition {:>3}  claim {:>4}  {state}\n",
            p.partition, p.generation
        ));
    }
    for (member, epoch) in &group.members {
        out.push_str(&format!(
            "  member {member:>5}  newest checkpoint epoch {epoch}\n"
        ));
    }
}

/// `rushhour checkpoints`.
pub fn run(args: &CheckpointsArgs) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    let io = Io::new(2).context("cannot start the I/O runtime")?;
    match &args.checkpoint {
        Some(url) => {
            if let LakeUrl::Local(dir) = LakeUrl::parse(url)?
                && !dir.is_dir()
            {
                bail!("checkpoint directory {url} does not exist");
            }
            let store = ObjectCheckpointStore::open(url, &io)
                .with_context(|| format!("cannot open the checkpoint directory {url}"))?;
            let name = url
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(url)
                .to_owned();
            reports.push(report(&name, &store, args.action)?);
        }
        None => {
            let lake = Lake::open_existing(&args.lake, &io)?;
            let names = ObjectCheckpointStore::pipelines(&lake)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("listing the pipelines of {}", lake.url()))?;
            for name in names {
                let store = ObjectCheckpointStore::in_lake(&lake, &name);
                reports.push(report(&name, &store, args.action)?);
            }
        }
    }
    #[allow(clippy::print_stdout)]
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "pipelines": reports }))?
        );
    } else if reports.is_empty() {
        println!("no pipeline has checkpoints in {}", args.lake);
    } else {
        print!("{}", print_text(&reports));
    }
    let stuck: Vec<&str> = reports
        .iter()
        .filter(|r| !r.resumable)
        .map(|r| r.name.as_str())
        .collect();
    if !stuck.is_empty() {
        bail!(
            "no usable checkpoint for pipeline(s) {}: see the `process` error for the steps to start over",
            stuck.join(", ")
        );
    }
    Ok(())
}
