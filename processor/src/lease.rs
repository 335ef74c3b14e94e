//! One writer per pipeline: a lease kept in the checkpoint store.
//!
//! Two processes on one pipeline — a rolling deploy that starts the new process before
//! the old one stops, a second start by mistake — must not both write its lake and
//! checkpoints. The lease makes the second one wait or go, with the holder named, and
//! makes a holder that was paused past its expiry stop before it publishes anything.
//!
//! It needs nothing but what every object store has — create-only puts, whole-object
//! puts, get and list — so it works on a local directory (which has no compare-and-swap)
//! and on S3 alike:
//!
//! - A lease is a chain of objects `lease-<scope>-<generation>.json`. Taking it means
//!   creating the next generation with a create-only put: of two contenders at most one
//!   succeeds. The generation is the *fencing token*: the holder's files, state objects
//!   and checkpoints carry it.
//! - Only the holder writes its own object: it renews it (a new expiry) every third of
//!   its time to live, and marks it released when it stops cleanly.
//! - A lease is free when its holder released it, when its expiry has passed, or when
//!   the holder was a process on this very machine (same boot) that no longer runs — so
//!   a restart after `kill -9` does not wait for the expiry.
//! - The holder has lost it when a newer generation exists or its own expiry has
//!   passed (it was paused, or could not renew). It checks before every commit
//!   ([`Lease::check`]) and stops.
//!
//! Safety does not rest on clocks or on that check alone: between a check and the
//! commit it guards, a process can be paused for any time. What makes a late commit
//! impossible is the checkpoint chain: a manifest is created with a create-only put and
//! an epoch number is never used twice, and a process that takes over commits a
//! checkpoint of its own *before* it cleans up after the previous holder (see
//! [`crate::runtime::recover`]). The lease gives liveness and clear messages; the chain
//! gives exactness.
//!
//! The scope names what is leased: `pipeline` for a whole pipeline today; one scope per
//! source partition lets consumer-group members fence each other partition by partition
//! with the same objects.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointStore;
use crate::sink::BoxError;

/// Format name in every lease object.
pub const LEASE_FORMAT: &str = "rushhour-lease";

/// The scope of a lease over a whole pipeline.
pub const PIPELINE_SCOPE: &str = "pipeline";

/// Who holds a lease: enough to name it in a message, and to tell that a process on
/// this machine is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The kernel's boot id (Linux), so a pid of an earlier boot is not mistaken for a
    /// running process.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// The process's start time in clock ticks since boot (Linux), so a reused pid is
    /// not mistaken for the holder.
    #[serde(default)]
    pub start_ticks: Option<u64>,
    /// The pid namespace (Linux, `/proc/self/ns/pid`): two containers on one host
    /// share the boot id but not their pids.
    #[serde(default)]
    pub pid_ns: Option<String>,
}

impl Holder {
    /// This process.
    pub fn this_process() -> Holder {
        let pid = std::process::id();
        Holder {
            host: host_name(),
            pid,
            boot_id: boot_id(),
            start_ticks: start_ticks(pid).ok().flatten(),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .ok()
                .map(|p| p.display().to_string()),
        }
    }

    /// Whether this holder is a process of this machine's current boot, in this pid
    /// namespace, that no longer runs. `false` whenever that cannot be told for sure
    /// (another host or container, no `/proc`, a `/proc` this user may not read).
    pub fn is_provably_gone(&self) -> bool {
        let here = Holder::this_process();
        let same_pids = self.host == here.host
            && self.boot_id.is_some()
            && self.boot_id == here.boot_id
            && self.pid_ns.is_some()
            && self.pid_ns == here.pid_ns;
        if !same_pids {
            return false;
        }
        match (start_ticks(self.pid), self.start_ticks) {
            // No such process (or one that has exited and is not yet reaped).
            (Ok(None), _) => true,
            // The pid was reused by a process that started later.
            (Ok(Some(now)), Some(then)) => now != then,
            (Ok(Some(_)), None) | (Err(()), _) => false,
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "process {} on host {}", self.pid, self.host)
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn host_name() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

fn boot_id() -> Option<String> {
    read_trimmed("/proc/sys/kernel/random/boot_id")
}

/// Field 22 of `/proc/<pid>/stat`, the start time: `Ok(None)` if the process does not
/// exist or is a zombie (exited, not yet reaped), `Err` if that cannot be told.
fn start_ticks(pid: u32) -> Result<Option<u64>, ()> {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err(()),
    };
    // The command name (field 2) may hold spaces and parentheses: fields after it
    // start behind the last `)`.
    let rest = &stat[stat.rfind(')').ok_or(())? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next().ok_or(())?;
    if state == "Z" || state == "X" {
        return Ok(None);
    }
    // `rest` starts at field 3 (state); the start time is field 22.
    let ticks = fields.nth(22 - 4).ok_or(())?.parse().map_err(|_| ())?;
    Ok(Some(ticks))
}

/// One generation of a lease, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Always [`LEASE_FORMAT`].
    pub format: String,
    /// What is leased ([`PIPELINE_SCOPE`]).
    pub scope: String,
    /// The generation: one more than the lease it took over.
    pub generation: u64,
    /// Who holds it.
    pub holder: Holder,
    /// Taken at, wall clock, epoch ms.
    pub acquired_at_ms: i64,
    /// Last renewed at, epoch ms.
    pub renewed_at_ms: i64,
    /// Expires at, epoch ms, unless renewed.
    pub expires_at_ms: i64,
    /// Set when the holder stopped cleanly and gave the lease up.
    #[serde(default)]
    pub released_at_ms: Option<i64>,
    /// For a partition's claim in a consumer group: the member (its checkpoint chain)
    /// that holds the partition.
    #[serde(default)]
    pub owner: Option<u64>,
    /// For a partition's claim, once released: the watermark the partition's records
    /// were judged by, and its position, at the handoff (the same as in the handoff,
    /// here so that others can read them cheaply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<Released>,
}

/// Where a released partition stood at its handoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    /// The watermark its records are judged by from there on.
    pub floor: i64,
    /// Its position.
    pub position: crate::source::Position,
    /// Read to its end (as its holder saw the end) and flushed: no record of it is left.
    #[serde(default)]
    pub complete: bool,
}

impl LeaseRecord {
    /// Whether another process may take over, at wall-clock time `now_ms`; and why.
    pub fn free_because(&self, now_ms: i64) -> Option<&'static str> {
        if self.released_at_ms.is_some() {
            Some("released")
        } else if now_ms >= self.expires_at_ms {
            Some("expired")
        } else if self.holder.is_provably_gone() {
            Some("its process is gone")
        } else {
            None
        }
    }

    /// "process 42 on host h since 2026-11-30T12:00:00.000Z (generation 3, expires …)".
    pub fn describe(&self) -> String {
        use rushhour_schemas::time::format_millis;
        let mut text = format!(
            "{} since {} (lease generation {}",
            self.holder,
            format_millis(self.acquired_at_ms),
            self.generation
        );
        match self.released_at_ms {
            Some(at) => text.push_str(&format!(", released at {})", format_millis(at))),
            None => text.push_str(&format!(
                ", renewed at {}, expires at {})",
                format_millis(self.renewed_at_ms),
                format_millis(self.expires_at_ms)
            )),
        }
        text
    }
}

/// Errors of the lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another process holds the lease.
    #[error(
        "another process runs this pipeline: the {scope} lease in {location} is held by {holder}; stop that process first, or start this one with --wait-for-lease to take over when it stops",
        holder = record.describe()
    )]
    Held {
        /// Where.
        location: String,
        /// What.
        scope: String,
        /// The holder.
        record: Box<LeaseRecord>,
    },
    /// This process no longer holds its lease: it must stop without publishing.
    #[error(
        "lost the lease of {scope} in {location} (generation {generation}): {reason}; stopping without publishing anything more (a restart resumes from the last checkpoint)"
    )]
    Lost {
        /// Where.
        location: String,
        /// What.
        scope: String,
        /// The generation this process held.
        generation: u64,
        /// Why it is lost.
        reason: String,
    },
    /// Waiting for the lease was interrupted (Ctrl-C, SIGTERM).
    #[error("stopped while waiting for the lease of {scope} in {location}")]
    Interrupted {
        /// Where.
        location: String,
        /// What.
        scope: String,
    },
    /// The store failed.
    #[error("lease store {location}: {source}")]
    Store {
        /// Where.
        location: String,
        /// What.
        source: BoxError,
    },
}

/// How to take and keep a lease.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// How long a lease lasts without renewal (`--lease-ttl`).
    pub ttl: Duration,
    /// Wait for a held lease to become free instead of failing (`--wait-for-lease`).
    pub wait: bool,
    /// How often to look again while waiting.
    pub poll: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            ttl: Duration::from_secs(30),
            wait: false,
            poll: Duration::from_millis(250),
        }
    }
}

/// The name of generation `generation` of the lease of `scope`.
pub fn lease_name(scope: &str, generation: u64) -> String {
    format!("lease-{scope}-{generation:020}.json")
}

/// The generation in a lease object's name, if it is one of `scope`.
pub fn generation_of(name: &str, scope: &str) -> Option<u64> {
    let digits = name
        .strip_prefix("lease-")?
        .strip_prefix(scope)?
        .strip_prefix('-')?
        .strip_suffix(".json")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The newest generation of a lease in `store`, with its record (`None` inside when it
/// cannot be read), or `None` if the lease was never taken.
pub fn newest(
    store: &dyn CheckpointStore,
    scope: &str,
) -> Result<Option<(u64, Option<LeaseRecord>)>, BoxError> {
    let Some(generation) = store
        .list()?
        .iter()
        .filter_map(|n| generation_of(n, scope))
        .max()
    else {
        return Ok(None);
    };
    let record = store
        .get(&lease_name(scope, generation))?
        .and_then(|bytes| serde_json::from_slice::<LeaseRecord>(&bytes).ok())
        .filter(|r| r.format == LEASE_FORMAT && r.generation == generation);
    Ok(Some((generation, record)))
}

/// A lease this process holds. Renew it with [`Lease::renew`] (or a [`LeaseKeeper`]),
/// check it before every commit with [`Lease::check`], and give it up with
/// [`Lease::release`] after a clean stop.
pub struct Lease {
    store: Arc<dyn CheckpointStore>,
    scope: String,
    ttl: Duration,
    record: Mutex<LeaseRecord>,
    /// Why the lease was lost, once it is.
    lost: Mutex<Option<String>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("scope", &self.scope)
            .field("generation", &self.generation())
            .finish()
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panicking thread held it; the value is intact.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Lease {
    /// Takes the lease of `scope` in `store` for `holder`. A held lease is an error
    /// naming its holder, unless `opts.wait`: then this waits (calling `waiting` with
    /// the holder now and then) until it is free, or `stop` is raised.
    pub fn acquire(
        store: Arc<dyn CheckpointStore>,
        scope: &str,
        holder: Holder,
        opts: &LeaseOptions,
        stop: &AtomicBool,
        waiting: &mut dyn FnMut(&LeaseRecord),
    ) -> Result<Lease, LeaseError> {
        let location = store.location();
        let store_err = |source: BoxError| LeaseError::Store {
            location: location.clone(),
            source,
        };
        let ttl_ms = i64::try_from(opts.ttl.as_millis()).unwrap_or(i64::MAX / 4);
        loop {
            let now = crate::runtime::now_ms();
            let next = match newest(store.as_ref(), scope).map_err(store_err)? {
                None => 1,
                Some((u64::MAX, _)) => {
                    return Err(store_err(
                        format!(
                            "lease generation {} of {scope} is the last there is",
                            u64::MAX
                        )
                        .into(),
                    ));
                }
                Some((generation, None)) => {
                    tracing::warn!(
                        scope,
                        generation,
                        "the newest lease object cannot be read; taking over"
                    );
                    generation + 1
                }
                Some((generation, Some(record))) => match record.free_because(now) {
                    Some(why) => {
                        if why != "released" {
                            tracing::warn!(holder = %record.describe(), why, "taking over a lease that was not released");
                        }
                        generation + 1
                    }
                    None if opts.wait && !stop.load(Ordering::Relaxed) => {
                        waiting(&record);
                        std::thread::sleep(opts.poll);
                        continue;
                    }
                    None if opts.wait => {
                        return Err(LeaseError::Interrupted {
                            location,
                            scope: scope.to_owned(),
                        });
                    }
                    None => {
                        return Err(LeaseError::Held {
                            location,
                            scope: scope.to_owned(),
                            record: Box::new(record),
                        });
                    }
                },
            };
            let record = LeaseRecord {
                format: LEASE_FORMAT.into(),
                scope: scope.to_owned(),
                generation: next,
                holder: holder.clone(),
                acquired_at_ms: now,
                renewed_at_ms: now,
                expires_at_ms: now.saturating_add(ttl_ms),
                released_at_ms: None,
                owner: None,
                released: None,
            };
            let bytes = serde_json::to_vec_pretty(&record).map_err(|e| store_err(Box::new(e)))?;
            if store
                .put_if_absent(&lease_name(scope, next), &bytes)
                .map_err(store_err)?
            {
                let lease = Lease {
                    store,
                    scope: scope.to_owned(),
                    ttl: opts.ttl,
                    record: Mutex::new(record),
                    lost: Mutex::new(None),
                };
                lease.prune_older();
                return Ok(lease);
            }
            // Another process took this generation first: look again.
        }
    }

    /// The generation held: the fencing token stamped on checkpoints and files.
    pub fn generation(&self) -> u64 {
        locked(&self.record).generation
    }

    /// What is leased.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The record as last written.
    pub fn record(&self) -> LeaseRecord {
        locked(&self.record).clone()
    }

    /// How long the lease lasts without renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lost(&self, reason: String) -> LeaseError {
        let mut lost = locked(&self.lost);
        let reason = lost.get_or_insert(reason).clone();
        LeaseError::Lost {
            location: self.store.location(),
            scope: self.scope.clone(),
            generation: self.generation(),
            reason,
        }
    }

    fn store_err(&self, source: BoxError) -> LeaseError {
        LeaseError::Store {
            location: self.store.location(),
            source,
        }
    }

    /// Whether the lease is known to be lost (without asking the store).
    pub fn is_lost(&self) -> bool {
        locked(&self.lost).is_some()
    }

    /// Errors unless this process still holds the lease: no newer generation exists
    /// and the expiry has not passed. Call it before every commit.
    pub fn check(&self) -> Result<(), LeaseError> {
        let known = locked(&self.lost).clone();
        if let Some(reason) = known {
            return Err(self.lost(reason));
        }
        let record = self.record();
        if let Some(successor) = self.successor()? {
            return Err(self.lost(format!("taken over by {}", successor.describe())));
        }
        let now = crate::runtime::now_ms();
        if now >= record.expires_at_ms {
            return Err(self.lost(format!(
                "it expired at {} (this process was paused or could not renew it)",
                rushhour_schemas::time::format_millis(record.expires_at_ms)
            )));
        }
        Ok(())
    }

    /// The record of the newest generation, if another process has taken over since
    /// (whatever number of times: older generations may have been pruned).
    fn successor(&self) -> Result<Option<LeaseRecord>, LeaseError> {
        let own = self.generation();
        match newest(self.store.as_ref(), &self.scope).map_err(|e| self.store_err(e))? {
            Some((g, record)) if g > own => Ok(Some(record.unwrap_or_else(|| LeaseRecord {
                format: LEASE_FORMAT.into(),
                scope: self.scope.clone(),
                generation: g,
                holder: Holder {
                    host: "an unknown host (unreadable lease)".into(),
                    pid: 0,
                    boot_id: None,
                    start_ticks: None,
                    pid_ns: None,
                },
                acquired_at_ms: 0,
                renewed_at_ms: 0,
                expires_at_ms: 0,
                released_at_ms: None,
                owner: None,
                released: None,
            }))),
            _ => Ok(None),
        }
    }

    /// Extends the lease by its time to live. Fails (and marks the lease lost) if it
    /// was taken over or has already expired: an expired lease is never revived, since
    /// another process may be taking it over right now.
    pub fn renew(&self) -> Result<(), LeaseError> {
        self.check()?;
        let mut record = self.record();
        let now = crate::runtime::now_ms();
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX / 4);
        record.renewed_at_ms = now;
        record.expires_at_ms = now.saturating_add(ttl_ms);
        self.write(&record)?;
        *locked(&self.record) = record;
        Ok(())
    }

    /// Gives the lease up, so that a waiting process takes over at once. A lost lease
    /// is left alone.
    pub fn release(&self) -> Result<(), LeaseError> {
        if self.is_lost() || self.successor()?.is_some() {
            return Ok(());
        }
        let mut record = self.record();
        record.released_at_ms = Some(crate::runtime::now_ms());
        self.write(&record)?;
        *locked(&self.record) = record;
        Ok(())
    }

    fn write(&self, record: &LeaseRecord) -> Result<(), LeaseError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| self.store_err(Box::new(e)))?;
        self.store
            .put(&lease_name(&self.scope, record.generation), &bytes)
            .map_err(|e| self.store_err(e))
    }

    /// Deletes lease objects older than the previous generation (the previous one is
    /// kept, for `rushhour checkpoints` to show who held it before). Best effort.
    fn prune_older(&self) {
        let generation = self.generation();
        let Ok(names) = self.store.list() else { return };
        for name in names {
            if generation_of(&name, &self.scope).is_some_and(|g| g + 1 < generation) {
                let _ = self.store.delete(&name);
            }
        }
    }
}

/// Renews a lease on a thread of its own every third of its time to live, until
/// dropped. A renewal that fails because the lease is lost marks it lost, and the next
/// [`Lease::check`] fails; a store error is retried at the next turn.
pub struct LeaseKeeper {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Starts renewing `lease`.
    pub fn start(lease: Arc<Lease>) -> std::io::Result<LeaseKeeper> {
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let flag = stop.clone();
        let every = (lease.ttl() / 3).max(Duration::from_millis(10));
        let handle = std::thread::Builder::new()
            .name("rushhour-lease".into())
            .spawn(move || {
                let (lock, cvar) = &*flag;
                loop {
                    {
                        let stopped = locked(lock);
                        let (stopped, _) = cvar
                            .wait_timeout_while(stopped, every, |stopped| !*stopped)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if *stopped {
                            return;
                        }
                    }
                    // Renewed without the lock held, so a stop never waits for the store.
                    match lease.renew() {
                        Ok(()) => {}
                        Err(e @ LeaseError::Lost { .. }) => {
                            tracing::error!(error = %e, "lease lost");
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot renew the lease; retrying"),
                    }
                }
            })?;
        Ok(LeaseKeeper {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.stop;
        *locked(lock) = true;
        cvar.notify_all();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::MemoryCheckpointStore;

    fn opts(ttl_ms: u64) -> LeaseOptions {
        LeaseOptions {
            ttl: Duration::from_millis(ttl_ms),
            wait: false,
            poll: Duration::from_millis(5),
        }
    }

    fn other_host() -> Holder {
        Holder {
            host: "elsewhere".into(),
            pid: 1,
            boot_id: None,
            start_ticks: None,
            pid_ns: None,
        }
    }

    fn take(
        store: &Arc<dyn CheckpointStore>,
        holder: Holder,
        o: &LeaseOptions,
    ) -> Result<Lease, LeaseError> {
        Lease::acquire(
            store.clone(),
            PIPELINE_SCOPE,
            holder,
            o,
            &AtomicBool::new(false),
            &mut |_| {},
        )
    }

    #[test]
    fn a_held_lease_is_refused_with_its_holder_named() {
        let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::default());
        let a = take(&store, other_host(), &opts(60_000)).unwrap();
        assert_eq!(a.generation(), 1);
        let err = take(&store, Holder::this_process(), &opts(60_000)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("process 1 on host elsewhere") && text.contains("--wait-for-lease"),
            "{text}"
        );
        a.check().unwrap();
        // Released: the next one takes over at once, and the old holder has lost it.
        a.release().unwrap();
        let b = take(&store, Holder::this_process(), &opts(60_000)).unwrap();
        assert_eq!(b.generation(), 2);
        assert!(matches!(a.check(), Err(LeaseError::Lost { .. })));
        b.check().unwrap();
    }

    #[test]
    fn an_expired_lease_is_taken_over_and_its_holder_stops() {
        let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::default());
        let a = take(&store, other_host(), &opts(30)).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        // Expired: a check fails even before anyone takes over, and renewing cannot
        // revive it.
        assert!(matches!(a.check(), Err(LeaseError::Lost { .. })));
        assert!(a.renew().is_err());
        let b = take(&store, Holder::this_process(), &opts(60_000)).unwrap();
        assert_eq!(b.generation(), 2);
        let err = a.check().unwrap_err().to_string();
        assert!(err.contains("lost the lease"), "{err}");
        // Renewing keeps a live lease.
        b.renew().unwrap();
        b.check().unwrap();
    }

    #[test]
    fn a_holder_on_this_machine_that_is_gone_frees_its_lease() {
        let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::default());
        let mut dead = Holder::this_process();
        if dead.boot_id.is_none() {
            return; // no /proc: only expiry can free a lease here
        }
        // A pid that exists with another start time is a reused pid.
        dead.start_ticks = dead.start_ticks.map(|t| t + 1);
        assert!(dead.is_provably_gone());
        assert!(!Holder::this_process().is_provably_gone());
        assert!(!other_host().is_provably_gone());
        take(&store, dead, &opts(60_000)).unwrap();
        let b = take(&store, Holder::this_process(), &opts(60_000)).unwrap();
        assert_eq!(b.generation(), 2);
    }

    #[test]
    fn waiting_takes_over_when_the_holder_releases() {
        let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::default());
        let a = Arc::new(take(&store, other_host(), &opts(60_000)).unwrap());
        let releaser = {
            let a = a.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                a.release().unwrap();
            })
        };
        let mut waited = 0;
        let b = Lease::acquire(
            store.clone(),
            PIPELINE_SCOPE,
            Holder::this_process(),
            &LeaseOptions {
                wait: true,
                ..opts(60_000)
            },
            &AtomicBool::new(false),
            &mut |r| {
                assert_eq!(r.generation, 1);
                waited += 1;
            },
        )
        .unwrap();
        releaser.join().unwrap();
        assert!(waited > 0);
        assert_eq!(b.generation(), 2);
        // A stop while waiting ends the wait.
        let err = Lease::acquire(
            store.clone(),
            PIPELINE_SCOPE,
            other_host(),
            &LeaseOptions {
                wait: true,
                ..opts(60_000)
            },
            &AtomicBool::new(true),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(matches!(err, LeaseError::Interrupted { .. }));
    }

    #[test]
    fn the_keeper_renews_and_old_generations_are_pruned() {
        let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::default());
        for _ in 0..3 {
            take(&store, Holder::this_process(), &opts(60_000))
                .unwrap()
                .release()
                .unwrap();
        }
        let lease = Arc::new(take(&store, Holder::this_process(), &opts(60)).unwrap());
        assert_eq!(lease.generation(), 4);
        let mut names = store.list().unwrap();
        names.sort();
        assert_eq!(
            names,
            [lease_name(PIPELINE_SCOPE, 3), lease_name(PIPELINE_SCOPE, 4)]
        );
        let keeper = LeaseKeeper::start(lease.clone()).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        lease.check().unwrap();
        drop(keeper);
        assert!(lease.record().renewed_at_ms > lease.record().acquired_at_ms);
        assert_eq!(
            generation_of(&lease_name("p0003", 12), "p0003"),
            Some(12),
            "scopes"
        );
        assert_eq!(generation_of(&lease_name("p0003", 12), "p000"), None);
    }
}
