//! The record path of CONTRACT §2, with no I/O: invalid → dead letter, duplicate →
//! dropped, late → raw (flagged) and `late_events`, otherwise accepted → raw and the
//! operators; then windows are emitted as the effective watermark moves.
//!
//! Each source partition has its own watermark; the effective watermark is the
//! minimum over the active ones. Event ids are unique across the stream, so an id seen
//! on any partition makes a duplicate.
//!
//! All state is kept apart by source partition (watermark, counters, the ids it
//! brought, its operator partials — see [`crate::partials`]), and a snapshot holds one
//! separately compressed section per partition: a process that takes over some
//! partitions (a consumer-group rebalance) restores just their sections
//! ([`Pipeline::restore_partition`]), and the one that gives them up forgets them
//! ([`Pipeline::release_partition`]).
//!
//! In a consumer group, rider-side contributions are *routed* by rider
//! ([`Pipeline::route_riders`]): see [`crate::rider`].

use std::collections::BTreeMap;

use arrow::error::ArrowError;
use rushhour_schemas::NO_WATERMARK;
use rushhour_schemas::time::HOUR_MS;
use rushhour_streamlog::partition_for_key;

use crate::dedup::Dedup;
use crate::operator::{Operator, StateError};
use crate::output::{Collector, TableBatch};
use crate::partials::PartitionId;
use crate::raw::{Decoded, DecodedBatch, Decoder, LateRow, RawRows, dead_letter, emit_late};
use crate::rider::{Credit, RiderOperator};
use crate::source::{PartitionStatus, PositionStyle, SourceBatch};
use crate::state::{IdRuns, PipelineState, Section, SectionIn};
use crate::store::StoreOperator;

/// Settings of the record path.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// How far behind the newest accepted event time the watermark trails (`--lateness`).
    pub lateness_ms: i64,
    /// Event time after an order's last event when its join state is dropped (`--order-ttl`).
    pub order_ttl_ms: i64,
    /// Event ids are remembered at least this long in event time.
    pub dedup_horizon_ms: i64,
    /// An event whose time is more than this ahead of the wall clock when it is read is
    /// invalid (`--max-future`), so that one broken clock cannot move the watermark
    /// years ahead. `None`: any event time is taken (the contract's default).
    pub max_future_ms: Option<i64>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            lateness_ms: 10_000,
            order_ttl_ms: 6 * HOUR_MS,
            dedup_horizon_ms: 24 * HOUR_MS,
            max_future_ms: None,
        }
    }
}

/// Why the record path stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A record of a partition this process does not hold: its state would be
    /// missing (a bug in the source or the runtime).
    #[error("a record of partition {0}, which this process does not hold")]
    NotHeld(u32),
    /// A decoded record does not fit its bytes (a bug: the runtime pairs them).
    #[error("a decoded record does not fit its bytes")]
    Detached,
    /// Building Arrow batches failed (a bug: the schemas are fixed).
    #[error("building Arrow batches: {0}")]
    Arrow(#[from] ArrowError),
}

/// Counts of the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Records read (blank lines are not records).
    pub read: u64,
    /// Accepted events.
    pub accepted: u64,
    /// Late events.
    pub late: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Invalid records sent to the dead letter.
    pub invalid: u64,
}

/// Counters and watermark of one source partition this process holds.
#[derive(Debug, Clone)]
struct PartitionState {
    watermark: i64,
    /// The effective watermark of the process that held the partition before, at its
    /// checkpoint: the partition's records are late behind it here too, so nothing
    /// that process already judged final (and wrote) is reopened.
    floor: i64,
    status: PartitionStatus,
    counters: Counters,
    /// With rider routing: by member, the newest epoch whose credits for this
    /// partition were taken (they are in its state, and move with it).
    credits_read: BTreeMap<u64, u64>,
}

impl PartitionState {
    fn fresh() -> Self {
        PartitionState {
            watermark: NO_WATERMARK,
            floor: NO_WATERMARK,
            status: PartitionStatus::Active,
            counters: Counters::default(),
            credits_read: BTreeMap::new(),
        }
    }
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, o: Counters) {
        self.read += o.read;
        self.accepted += o.accepted;
        self.late += o.late;
        self.duplicates += o.duplicates;
        self.invalid += o.invalid;
    }
}

/// The record path and its operators.
pub struct Pipeline {
    cfg: PipelineConfig,
    source: String,
    style: PositionStyle,
    /// The partitions held, by number: their state is here.
    parts: BTreeMap<u32, PartitionState>,
    effective: i64,
    /// Inside [`taking_over`](Self::taking_over): the watermark waits for the end.
    deferring: bool,
    dedup: Dedup,
    /// The operators handed in, each fed the events of the partition they came from.
    operators: Vec<Box<dyn Operator>>,
    /// The rider operator, built in: with rider routing its contributions go to the
    /// partition of their rider, not of their event (see [`crate::rider`]).
    rider: RiderOperator,
    /// With rider routing: the source's partition count (the partitioner's modulus).
    routing: Option<u32>,
    /// Credits for partitions not held, by partition, until the epoch's commit.
    outgoing: BTreeMap<PartitionId, Vec<Credit>>,
    /// `late_events` rows not yet handed to the sink.
    late: Vec<LateRow>,
    /// The decoder of [`process_batch`](Self::process_batch), where decoding runs on
    /// the caller's thread (the runtime gives its reader a [`decoder`](Self::decoder)).
    decoder: Decoder,
    ready: Vec<TableBatch>,
}

impl Pipeline {
    /// A pipeline over a source named `source`, holding no partition yet: call
    /// [`hold`](Self::hold), [`restore`](Self::restore) or
    /// [`restore_partition`](Self::restore_partition) before records arrive.
    ///
    /// Its operators are the contract's: [`StoreOperator`] (`store_minute`,
    /// `deliveries`, `store_delivery_5m`) and the built-in rider operator
    /// (`rider_minute`).
    pub fn new(cfg: PipelineConfig, source: &str, style: PositionStyle) -> Pipeline {
        let store = StoreOperator::new(cfg.order_ttl_ms);
        Pipeline::with_operators(cfg, source, style, vec![Box::new(store)])
    }

    /// [`new`](Self::new) with `operators` instead of the store operator (the rider
    /// operator is always there). Their order is the order of their state in a
    /// snapshot: a pipeline restores only snapshots of the same operators.
    pub fn with_operators(
        cfg: PipelineConfig,
        source: &str,
        style: PositionStyle,
        operators: Vec<Box<dyn Operator>>,
    ) -> Pipeline {
        Pipeline {
            decoder: Decoder::new(source, style.clone(), cfg.max_future_ms),
            parts: BTreeMap::new(),
            cfg,
            source: source.to_owned(),
            style,
            effective: NO_WATERMARK,
            deferring: false,
            dedup: Dedup::default(),
            operators,
            rider: RiderOperator::default(),
            routing: None,
            outgoing: BTreeMap::new(),
            late: Vec::new(),
            ready: Vec::new(),
        }
    }

    /// The operators, in the order of a snapshot's sections.
    fn operators(&self) -> Vec<&dyn Operator> {
        let handed = self.operators.iter().map(|o| o.as_ref());
        handed.chain([&self.rider as &dyn Operator]).collect()
    }

    fn operators_mut(&mut self) -> Vec<&mut dyn Operator> {
        let handed = self
            .operators
            .iter_mut()
            .map(|o| o.as_mut() as &mut dyn Operator);
        handed
            .chain([&mut self.rider as &mut dyn Operator])
            .collect()
    }

    /// Routes every rider-side contribution (a ping, a delivery) to the partition its
    /// rider is keyed to among the source's `partitions` (Kafka's partitioner, as the
    /// producer keys pings), for a consumer group where that partition may be held by
    /// another process. Contributions for a partition held here are counted at once;
    /// the others wait in [`take_credits`](Self::take_credits) for the epoch's commit.
    /// Rider windows close only as far as [`set_rider_bound`](Self::set_rider_bound)
    /// allows, which starts with nothing.
    pub fn route_riders(&mut self, partitions: u32) {
        self.routing = Some(partitions.max(1));
        self.rider.set_bound(NO_WATERMARK);
    }

    /// Whether rider-side contributions are routed ([`route_riders`](Self::route_riders)).
    pub fn routes_riders(&self) -> bool {
        self.routing.is_some()
    }

    /// Every credit for rider windows ends at or past `bound` from now on, and every
    /// earlier one is here: rider windows may close up to it (and the watermark).
    pub fn set_rider_bound(&mut self, bound: i64) {
        self.rider.set_bound(bound);
    }

    /// The bound set by [`set_rider_bound`](Self::set_rider_bound).
    pub fn rider_bound(&self) -> i64 {
        self.rider.bound()
    }

    /// The credits for partitions not held since the last call, by partition: to be
    /// written with this epoch's commit.
    pub fn take_credits(&mut self) -> BTreeMap<PartitionId, Vec<Credit>> {
        std::mem::take(&mut self.outgoing)
    }

    /// By member, the newest epoch whose credits partition `part` (held) has taken.
    pub fn credits_read(&self, part: PartitionId) -> Option<&BTreeMap<u64, u64>> {
        self.parts.get(&part).map(|p| &p.credits_read)
    }

    /// Drops the entries of [`credits_read`](Self::credits_read) for which
    /// `forget(partition, member)` holds.
    pub fn forget_credits_read(&mut self, forget: impl Fn(PartitionId, u64) -> bool) {
        for (&p, part) in &mut self.parts {
            part.credits_read.retain(|&member, _| !forget(p, member));
        }
    }

    /// Adds the credits member `member` committed in `epoch` for partition `part`.
    /// False (and nothing added) if `part` is not held or has taken that epoch of that
    /// member already: a member's epochs are taken in order, each once.
    pub fn apply_credits(
        &mut self,
        part: PartitionId,
        member: u64,
        epoch: u64,
        credits: &[Credit],
    ) -> bool {
        let Some(state) = self.parts.get_mut(&part) else {
            return false;
        };
        let read = state.credits_read.entry(member).or_insert(0);
        if epoch <= *read {
            return false;
        }
        *read = epoch;
        for credit in credits {
            self.rider.credit(part, credit);
        }
        true
    }

    /// By partition held, the watermark its records are judged by from now on: every
    /// record of it accepted later, here or by a process taking it over, is at least
    /// as late.
    pub fn floors(&self) -> BTreeMap<PartitionId, i64> {
        self.parts
            .iter()
            .map(|(&p, part)| (p, part.floor.max(self.effective)))
            .collect()
    }

    /// By active partition held (not idle, not finished), its own watermark: what the
    /// effective watermark is the minimum of.
    pub fn active_watermarks(&self) -> BTreeMap<PartitionId, i64> {
        self.parts
            .iter()
            .filter(|(_, part)| part.status == PartitionStatus::Active)
            .map(|(&p, part)| (p, part.watermark))
            .collect()
    }

    /// Judges the records of every idle partition held by at least `watermark` from
    /// now on: in a group, the watermark of the partitions active elsewhere, as one
    /// process holding them all would judge an idle partition by the others. Without
    /// it, a member whose partitions are all idle would hold every rider window of the
    /// group open (their floors are the group's bound).
    pub fn raise_idle_floors(&mut self, watermark: i64) {
        for part in self.parts.values_mut() {
            if part.status == PartitionStatus::Idle {
                part.floor = part.floor.max(watermark);
            }
        }
    }

    /// The counts so far, over the partitions held.
    pub fn counters(&self) -> Counters {
        let mut sum = Counters::default();
        for part in self.parts.values() {
            sum += part.counters;
        }
        sum
    }

    /// The counts of the partitions in `parts` that are held.
    pub fn counters_of(&self, parts: &[PartitionId]) -> Counters {
        let mut sum = Counters::default();
        for p in parts {
            if let Some(part) = self.parts.get(p) {
                sum += part.counters;
            }
        }
        sum
    }

    /// The effective watermark.
    pub fn watermark(&self) -> i64 {
        self.effective
    }

    /// Entries of operator state held.
    pub fn state_entries(&self) -> usize {
        self.operators()
            .iter()
            .map(|o| o.state_entries())
            .sum::<usize>()
            + self.dedup.len()
    }

    /// Runs every record of a batch through the record path. `ingest_time` is the
    /// wall-clock time stamped on raw rows.
    pub fn process_batch(
        &mut self,
        batch: &SourceBatch,
        ingest_time: i64,
    ) -> Result<(), PipelineError> {
        let decoded = self.decoder.decode(batch, ingest_time)?;
        self.process_decoded(batch, decoded)
    }

    /// A decoder for this pipeline's source: the stateless first step of
    /// [`process_batch`](Self::process_batch), which the runtime runs on the reader's
    /// thread.
    pub fn decoder(&self) -> Decoder {
        Decoder::new(&self.source, self.style.clone(), self.cfg.max_future_ms)
    }

    /// [`process_batch`](Self::process_batch) after its stateless first step,
    /// [`Decoder::decode`], which may have run on another thread.
    pub fn process_decoded(
        &mut self,
        batch: &SourceBatch,
        decoded: DecodedBatch,
    ) -> Result<(), PipelineError> {
        assert_eq!(
            batch.records.len(),
            decoded.records.len(),
            "one decoded entry per record"
        );
        let p = batch.partition;
        let part_id: PartitionId = p;
        // A record of a partition not held here would start it afresh, without its
        // state: never silently.
        let Some(part) = self.parts.get_mut(&p) else {
            return Err(PipelineError::NotHeld(p));
        };
        // A partition handing over records is active, whatever it was before.
        if part.status == PartitionStatus::Idle {
            part.status = PartitionStatus::Active;
        }
        let mut rows = RawRows::default();
        for ((range, _), decoded) in batch.records.iter().zip(&decoded.records) {
            let bytes = &batch.data[range.clone()];
            let Some(part) = self.parts.get_mut(&p) else {
                return Err(PipelineError::NotHeld(p));
            };
            let ev = match decoded {
                Decoded::Blank => continue, // not a record (file sources skip these before)
                Decoded::Invalid => {
                    part.counters.read += 1;
                    part.counters.invalid += 1;
                    continue;
                }
                Decoded::Event(ev) => ev.attach(bytes).ok_or(PipelineError::Detached)?,
            };
            part.counters.read += 1;
            let mut moved = false;
            // Filed under the later of its event time and the watermark, so that the id
            // of a late event is remembered for the full horizon too.
            let watermark = self.effective.max(part.floor);
            if !self
                .dedup
                .insert(part_id, &ev.event_id, ev.event_time.max(watermark))
            {
                part.counters.duplicates += 1;
                rows.drop_row();
                continue;
            }
            if ev.event_time < watermark {
                part.counters.late += 1;
                rows.keep(true);
                self.late.push(LateRow {
                    event_id: ev.event_id.to_string(),
                    event_type: ev.event_type.as_str(),
                    event_time: ev.event_time,
                    watermark,
                    raw: String::from_utf8_lossy(bytes).into_owned(),
                });
            } else {
                part.counters.accepted += 1;
                rows.keep(false);
                let candidate = ev.event_time.saturating_sub(self.cfg.lateness_ms);
                if candidate > part.watermark {
                    part.watermark = candidate;
                    moved = true;
                }
                match (self.routing, Credit::applies_to(&ev)) {
                    (Some(partitions), Some(rider)) => {
                        // The rider side goes to its rider's partition; the store side
                        // stays with the event's.
                        for op in &mut self.operators {
                            op.process(part_id, &ev);
                        }
                        let target = partition_for_key(rider.as_bytes(), partitions);
                        if let Some(credit) = Credit::of(&ev) {
                            if self.parts.contains_key(&target) {
                                self.rider.credit(target, &credit);
                            } else {
                                self.outgoing.entry(target).or_default().push(credit);
                            }
                        }
                    }
                    _ => {
                        for op in &mut self.operators {
                            op.process(part_id, &ev);
                        }
                        self.rider.process(part_id, &ev);
                    }
                }
            }
            if moved {
                self.recompute_effective();
            }
        }
        rows.finish(decoded.raw, &mut self.ready)?;
        self.ready.extend(dead_letter(decoded.dead));
        self.dedup
            .expire(self.effective.saturating_sub(self.cfg.dedup_horizon_ms));
        Ok(())
    }

    /// The whole state of the pipeline, compact: one section per partition held
    /// (its watermark, status, counters, the ids it brought and its operator partials;
    /// postcard, then zstd), behind a header with the effective watermark. Taken
    /// between batches, after [`take_output`](Self::take_output) with `all`, so nothing
    /// is held for the sink.
    pub fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        self.snapshot_sections(|_| true)
    }

    /// A snapshot holding only the partitions in `parts` (that this process holds):
    /// what hands them over to another process, which restores them with
    /// [`restore_partition`](Self::restore_partition).
    pub fn snapshot_of(&self, parts: &[PartitionId]) -> Result<Vec<u8>, StateError> {
        if let Some(p) = parts.iter().find(|p| !self.holds(**p)) {
            return Err(StateError::Mismatch(format!(
                "partition {p} is not held here"
            )));
        }
        self.snapshot_sections(|p| parts.contains(&p))
    }

    fn snapshot_sections(
        &self,
        wanted: impl Fn(PartitionId) -> bool,
    ) -> Result<Vec<u8>, StateError> {
        if self.operators().iter().any(|o| o.holds_rows())
            || !self.late.is_empty()
            || !self.ready.is_empty()
            || !self.outgoing.is_empty()
        {
            return Err(StateError::Mismatch(
                "snapshot taken with output still held".into(),
            ));
        }
        let mut operators = self
            .operators()
            .iter()
            .map(|o| o.snapshot())
            .collect::<Result<Vec<_>, _>>()?;
        let mut sections = Vec::new();
        for (&id, part) in &self.parts {
            if !wanted(id) {
                continue;
            }
            let section = Section {
                watermark: part.watermark,
                floor: part.floor.max(self.effective),
                status: part.status,
                counters: part.counters,
                credits_read: part.credits_read.clone(),
                dedup: self.dedup.partition(id).map(IdRuns),
                operators: operators.iter_mut().map(|o| o.remove(&id)).collect(),
            };
            sections.push((id, section.encode()?));
        }
        let sections: Vec<(PartitionId, &[u8])> =
            sections.iter().map(|(id, b)| (*id, b.as_slice())).collect();
        if let Some(p) = operators
            .iter()
            .flat_map(|o| o.keys())
            .find(|p| !self.holds(**p))
        {
            return Err(StateError::Mismatch(format!(
                "operator state of partition {p}, which is not held"
            )));
        }
        PipelineState::new(self.effective, sections).encode()
    }

    /// Replaces the whole state with one taken by [`snapshot`](Self::snapshot): this
    /// process then holds exactly the partitions the snapshot held.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let state = PipelineState::decode(bytes)?;
        self.forget_all();
        for (id, section) in state.sections {
            if let Err(e) = self.load_section(id, section, state.version) {
                self.forget_all();
                return Err(e);
            }
        }
        self.effective = state.effective;
        Ok(())
    }

    fn forget_all(&mut self) {
        let held: Vec<PartitionId> = self.parts.keys().copied().collect();
        for p in held {
            self.forget(p);
        }
    }

    /// Decodes a snapshot completely, as a restore would — every section and every
    /// operator's part — without keeping it (`rushhour checkpoints verify`).
    pub fn check_snapshot(bytes: &[u8]) -> Result<(), StateError> {
        let mut scratch = Pipeline::new(
            PipelineConfig::default(),
            "",
            PositionStyle::PartitionOffset,
        );
        scratch.restore(bytes)
    }

    /// A pipeline holding partitions `parts` afresh: for sources whose partitions are
    /// known at the start.
    pub fn holding(
        cfg: PipelineConfig,
        source: &str,
        style: PositionStyle,
        parts: impl IntoIterator<Item = PartitionId>,
    ) -> Pipeline {
        let mut p = Pipeline::new(cfg, source, style);
        for part in parts {
            p.hold(part);
        }
        p
    }

    /// Starts holding partition `part` afresh, with no state (a partition no
    /// checkpoint holds). Whatever was held of it is forgotten.
    pub fn hold(&mut self, part: PartitionId) {
        self.forget(part);
        self.parts.insert(part, PartitionState::fresh());
        self.now_held(part);
        self.recompute_effective();
    }

    /// Starts holding partition `part`, which continues `parents` (read to their end
    /// and still held): its watermark and floor start at the parents' lowest, so that
    /// the effective watermark neither stalls at minus infinity until the new partition
    /// has records nor runs ahead of the keys it carries on.
    pub fn hold_continuing(&mut self, part: PartitionId, parents: &[PartitionId]) {
        let from: Vec<(i64, i64)> = parents
            .iter()
            .filter_map(|p| self.parts.get(p))
            .map(|s| (s.watermark, s.floor))
            .collect();
        self.hold(part);
        if let Some(state) = self.parts.get_mut(&part) {
            state.watermark = from.iter().map(|f| f.0).min().unwrap_or(NO_WATERMARK);
            state.floor = from.iter().map(|f| f.1).min().unwrap_or(NO_WATERMARK);
        }
        self.recompute_effective();
    }

    /// With rider routing, `part` has just become held: the credits for it waiting for
    /// this epoch's commit are now local, and rider windows wait for the next exchange
    /// (the bound was read while `part` was elsewhere, and the credits committed for
    /// it since its state was saved are not read yet).
    fn now_held(&mut self, part: PartitionId) {
        if self.routing.is_none() {
            return;
        }
        for credit in self.outgoing.remove(&part).unwrap_or_default() {
            self.rider.credit(part, &credit);
        }
        self.rider.set_bound(NO_WATERMARK);
    }

    /// Takes over partition `part` with its state in a snapshot (of this or another
    /// process over the same source): whatever this process held of it is replaced.
    /// The rest of the state is untouched. The partition's records are judged late
    /// behind the snapshot's effective watermark as well as this process's, so windows
    /// the other process already wrote are never written again. On error the
    /// partition is not held.
    ///
    /// Call it with a snapshot taken after the other process's last record of the
    /// partition (it releases the partition right after its checkpoint), and reopen
    /// the source at that checkpoint's position for the partition.
    pub fn restore_partition(&mut self, bytes: &[u8], part: PartitionId) -> Result<(), StateError> {
        let state = PipelineState::decode(bytes)?;
        let Some(&(_, section)) = state.sections.iter().find(|(id, _)| *id == part) else {
            return Err(StateError::Mismatch(format!(
                "the snapshot does not hold partition {part}"
            )));
        };
        self.forget(part);
        let loaded = self.load_section(part, section, state.version);
        if loaded.is_err() {
            self.forget(part);
        } else {
            self.now_held(part);
        }
        self.recompute_effective();
        loaded
    }

    /// Gives up partition `part`: forgets its watermark, counters, ids and operator
    /// partials. It no longer holds the watermark back, and a record of it is an error
    /// until it is held again.
    pub fn release_partition(&mut self, part: PartitionId) {
        self.release_partitions(&[part]);
    }

    /// Gives up several partitions at once. The watermark is recomputed once, after
    /// all are gone: released one by one, each release would let the next-slowest
    /// partition raise it, and partitions given up together (a revocation) would
    /// leave it at the fastest one's — judging their records late if they come back.
    pub fn release_partitions(&mut self, parts: &[PartitionId]) {
        if self.routing.is_some() {
            // Whoever takes them next judges their records by their floors, which the
            // watermark here may pass once they are gone: rider windows after those
            // may still get credits from them.
            let floors = self.floors();
            if let Some(&low) = parts.iter().filter_map(|p| floors.get(p)).min() {
                self.rider.set_bound(self.rider.bound().min(low));
            }
        }
        for &part in parts {
            self.forget(part);
        }
        self.recompute_effective();
    }

    /// [`release_partition`](Self::release_partition) without moving the watermark,
    /// for a partition about to be restored.
    fn forget(&mut self, part: PartitionId) {
        self.parts.remove(&part);
        self.dedup.release(part);
        for op in self.operators_mut() {
            op.release(part);
        }
    }

    /// Whether this process holds partition `part`.
    pub fn holds(&self, part: PartitionId) -> bool {
        self.parts.contains_key(&part)
    }

    /// The partitions held.
    pub fn held(&self) -> Vec<PartitionId> {
        self.parts.keys().copied().collect()
    }

    fn load_section(
        &mut self,
        part: PartitionId,
        bytes: &[u8],
        version: u32,
    ) -> Result<(), StateError> {
        let section = SectionIn::decode(bytes, version)?;
        if section.operators.len() != self.operators().len() {
            return Err(StateError::Mismatch(format!(
                "{} operators in the state, {} here",
                section.operators.len(),
                self.operators().len()
            )));
        }
        self.parts.insert(
            part,
            PartitionState {
                watermark: section.watermark,
                floor: section.floor,
                status: section.status,
                counters: section.counters,
                credits_read: section.credits_read,
            },
        );
        if let Some(hours) = section.dedup {
            self.dedup.restore(part, hours)?;
        }
        for (op, bytes) in self.operators_mut().into_iter().zip(&section.operators) {
            if let Some(bytes) = bytes {
                op.restore(part, bytes)?;
            }
        }
        Ok(())
    }

    /// Takes the source's view of which partitions are idle or finished.
    pub fn set_statuses(&mut self, statuses: &BTreeMap<u32, PartitionStatus>) {
        for (p, part) in &mut self.parts {
            if let Some(status) = statuses.get(p) {
                part.status = *status;
            }
        }
        self.recompute_effective();
    }

    /// Runs `f`, which takes over partitions (`hold`, `restore_partition`), with the
    /// watermark recomputed once at the end: taken over one by one, the first ones
    /// alone would raise it past the slower ones still to come.
    pub fn taking_over<R>(&mut self, f: impl FnOnce(&mut Pipeline) -> R) -> R {
        let outer = self.deferring;
        self.deferring = true;
        let r = f(self);
        self.deferring = outer;
        self.recompute_effective();
        r
    }

    fn recompute_effective(&mut self) {
        if self.deferring {
            return;
        }
        let active = self
            .parts
            .values()
            .filter(|p| p.status == PartitionStatus::Active)
            .map(|p| p.watermark)
            .min();
        if let Some(wm) = active {
            self.effective = self.effective.max(wm);
        }
    }

    /// Emits every window the effective watermark has passed.
    pub fn advance(&mut self) {
        let watermark = self.effective;
        for op in self.operators_mut() {
            op.on_watermark(watermark);
        }
    }

    /// End of a bounded input: emits every window and every pending row.
    pub fn flush_all(&mut self) {
        for op in self.operators_mut() {
            op.flush();
        }
    }

    /// Takes the batches ready for the sink: the raw and dead-letter rows of every
    /// batch processed, and the curated rows emitted, since the last call.
    pub fn take_output(&mut self) -> Result<Vec<TableBatch>, ArrowError> {
        let mut out = std::mem::take(&mut self.ready);
        let mut collector = Collector::new(&mut out);
        for op in &mut self.operators {
            op.emit(&mut collector)?;
        }
        self.rider.emit(&mut collector)?;
        emit_late(&mut self.late, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rushhour_schemas::Table;

    fn ping(id: &str, time: &str) -> Vec<u8> {
        format!(r#"{{"event_id":"{id}","event_type":"rider_location","event_time":"2026-11-21T12:00:{time}Z","rider_id":"r","lat":1,"lon":2}}"#)
            .into_bytes()
    }

    fn feed(p: &mut Pipeline, partition: u32, records: &[Vec<u8>]) {
        let mut b = SourceBatch {
            partition,
            ..Default::default()
        };
        for (k, r) in records.iter().enumerate() {
            let start = b.data.len();
            b.data.extend_from_slice(r);
            b.records.push((start..b.data.len(), k as u64));
        }
        p.process_batch(&b, 0).unwrap();
    }

    /// An event of rider `rider` at `12:MM:SS` (`time`).
    fn rider_event(id: &str, kind: &str, time: &str, rider: &str) -> Vec<u8> {
        let extra = match kind {
            "rider_location" => r#""lat":1,"lon":2,"speed_mps":4"#.to_string(),
            _ => r#""order_id":"o1","store_id":"s1""#.to_string(),
        };
        format!(r#"{{"event_id":"{id}","event_type":"{kind}","event_time":"2026-11-21T12:{time}Z","rider_id":"{rider}",{extra}}}"#)
            .into_bytes()
    }

    /// `(rider, pings, deliveries)` of the rider_minute rows written.
    fn rider_rows(p: &mut Pipeline) -> Vec<(String, i64, i64)> {
        use arrow::array::{Array, Int64Array, StringArray};
        let mut rows = Vec::new();
        for t in p.take_output().unwrap() {
            if t.table != Table::RiderMinute {
                continue;
            }
            let col = |name: &str| t.batch.column_by_name(name).unwrap().clone();
            let (riders, pings, deliveries) = (col("rider_id"), col("pings"), col("deliveries"));
            let riders = riders.as_any().downcast_ref::<StringArray>().unwrap();
            let pings = pings.as_any().downcast_ref::<Int64Array>().unwrap();
            let deliveries = deliveries.as_any().downcast_ref::<Int64Array>().unwrap();
            for k in 0..riders.len() {
                rows.push((
                    riders.value(k).to_string(),
                    pings.value(k),
                    deliveries.value(k),
                ));
            }
        }
        rows
    }

    #[test]
    fn routed_rider_contributions_make_one_row_across_two_processes() {
        // Rider r's pings are keyed to `home`; another process reads `away`, where r
        // delivers an order (keyed by its store) and one ping arrives mis-keyed.
        let home = partition_for_key(b"r", 2);
        let away = 1 - home;
        let style = PositionStyle::PartitionOffset;
        let mut a = Pipeline::holding(PipelineConfig::default(), "t", style.clone(), [home]);
        let mut b = Pipeline::holding(PipelineConfig::default(), "t", style, [away]);
        a.route_riders(2);
        b.route_riders(2);
        feed(
            &mut a,
            home,
            &[rider_event("p1", "rider_location", "00:05", "r")],
        );
        feed(
            &mut b,
            away,
            &[
                rider_event("d1", "order_delivered", "00:20", "r"),
                rider_event("p2", "rider_location", "00:40", "r"),
            ],
        );
        // Both watermarks pass the minute.
        feed(
            &mut a,
            home,
            &[rider_event("p3", "rider_location", "02:00", "r")],
        );
        feed(
            &mut b,
            away,
            &[rider_event("d2", "order_delivered", "02:00", "r")],
        );
        a.advance();
        b.advance();
        assert_eq!(rider_rows(&mut b), vec![], "b holds no rider window");
        assert_eq!(
            rider_rows(&mut a),
            vec![],
            "a waits for the credits of `away`"
        );
        let credits = b.take_credits();
        assert_eq!(credits.keys().copied().collect::<Vec<_>>(), vec![home]);
        assert_eq!(credits[&home].len(), 3);
        assert!(b.take_credits().is_empty(), "taken once");

        assert!(a.apply_credits(home, 7, 1, &credits[&home]));
        assert!(
            !a.apply_credits(home, 7, 1, &credits[&home]),
            "an epoch counts once"
        );
        assert!(!a.apply_credits(away, 7, 1, &credits[&home]), "not held");
        assert_eq!(a.credits_read(home), Some(&BTreeMap::from([(7, 1)])));
        // `away`'s floor is past 12:01 (its watermark 12:01:50).
        a.set_rider_bound(b.floors()[&away]);
        a.advance();
        assert_eq!(rider_rows(&mut a), vec![("r".into(), 2, 1)]);

        // What a partition has taken moves with it.
        let moved = a.snapshot_of(&[home]).unwrap();
        let mut c = Pipeline::new(
            PipelineConfig::default(),
            "t",
            PositionStyle::PartitionOffset,
        );
        c.route_riders(2);
        c.restore_partition(&moved, home).unwrap();
        assert_eq!(c.credits_read(home), Some(&BTreeMap::from([(7, 1)])));
        assert!(!c.apply_credits(home, 7, 1, &credits[&home]));
    }

    #[test]
    fn a_partition_taken_over_takes_its_waiting_credits_and_holds_windows() {
        let home = partition_for_key(b"r", 2);
        let away = 1 - home;
        let mut b = Pipeline::holding(
            PipelineConfig::default(),
            "t",
            PositionStyle::PartitionOffset,
            [away],
        );
        b.route_riders(2);
        b.set_rider_bound(i64::MAX);
        feed(
            &mut b,
            away,
            &[rider_event("d1", "order_delivered", "00:20", "r")],
        );
        // `home` comes here before the epoch's commit: its credit is now local, and
        // windows wait for the credits others committed for it.
        b.taking_over(|b| b.hold(home));
        assert!(b.take_credits().is_empty());
        assert_eq!(b.rider_bound(), NO_WATERMARK);
        b.flush_all();
        assert_eq!(rider_rows(&mut b), vec![("r".into(), 0, 1)]);
    }

    #[test]
    fn credits_not_yet_written_keep_the_snapshot_waiting() {
        let home = partition_for_key(b"r", 2);
        let mut b = Pipeline::holding(
            PipelineConfig::default(),
            "t",
            PositionStyle::PartitionOffset,
            [1 - home],
        );
        b.route_riders(2);
        feed(
            &mut b,
            1 - home,
            &[rider_event("d1", "order_delivered", "00:20", "r")],
        );
        b.take_output().unwrap();
        assert!(b.snapshot().is_err(), "credits still held");
        b.take_credits();
        assert!(b.snapshot().is_ok());
    }

    #[test]
    fn releasing_a_partition_holds_rider_windows_at_its_floor() {
        // Once `slow` is gone the watermark jumps to `fast`'s, but whoever takes `slow`
        // over accepts records from its floor on, and may credit rider windows here.
        let mut p = Pipeline::holding(
            PipelineConfig::default(),
            "t",
            PositionStyle::PartitionOffset,
            0..2,
        );
        p.route_riders(2);
        p.set_rider_bound(i64::MAX);
        feed(
            &mut p,
            0,
            &[rider_event("a", "rider_location", "05:00", "x")],
        );
        feed(
            &mut p,
            1,
            &[rider_event("b", "rider_location", "01:00", "y")],
        );
        let slow_floor = p.floors()[&1];
        p.take_output().unwrap();
        p.take_credits();
        p.release_partitions(&[1]);
        assert!(p.watermark() > slow_floor);
        assert_eq!(p.rider_bound(), slow_floor);
    }

    #[test]
    fn only_idle_partitions_take_the_watermark_active_elsewhere() {
        let mut p = Pipeline::holding(
            PipelineConfig::default(),
            "t",
            PositionStyle::PartitionOffset,
            0..2,
        );
        feed(
            &mut p,
            0,
            &[rider_event("a", "rider_location", "01:00", "x")],
        );
        feed(
            &mut p,
            1,
            &[rider_event("b", "rider_location", "01:00", "y")],
        );
        let before = p.floors();
        p.set_statuses(&BTreeMap::from([
            (0, PartitionStatus::Active),
            (1, PartitionStatus::Idle),
        ]));
        assert_eq!(
            p.active_watermarks().keys().copied().collect::<Vec<_>>(),
            [0]
        );
        p.raise_idle_floors(before[&1] + 60_000);
        assert_eq!(p.floors()[&0], before[&0]);
        assert_eq!(p.floors()[&1], before[&1] + 60_000);
        // Its records are judged by it: one behind it is late.
        feed(
            &mut p,
            1,
            &[rider_event("c", "rider_location", "01:30", "y")],
        );
        assert_eq!(p.counters().late, 1);
    }

    #[test]
    fn an_event_at_the_watermark_is_accepted_one_before_it_is_late() {
        let mut p = Pipeline::holding(PipelineConfig::default(), "t", PositionStyle::Line, 0..1);
        feed(
            &mut p,
            0,
            &[
                ping("a", "20"),
                ping("b", "10"),
                ping("c", "09.999"),
                ping("b", "30"),
            ],
        );
        let c = p.counters();
        assert_eq!((c.accepted, c.late, c.duplicates), (2, 1, 1));
        assert_eq!(
            rushhour_schemas::time::format_millis(p.watermark()),
            "2026-11-21T12:00:10.000Z"
        );
    }

    #[test]
    fn the_slowest_active_partition_holds_the_watermark() {
        let mut p = Pipeline::holding(
            PipelineConfig::default(),
            "t",
            PositionStyle::PartitionOffset,
            0..2,
        );
        feed(&mut p, 0, &[ping("a", "50")]);
        assert_eq!(
            p.watermark(),
            NO_WATERMARK,
            "partition 1 has said nothing yet"
        );
        feed(&mut p, 1, &[ping("b", "20")]);
        let at = |s: &str| {
            rushhour_schemas::time::parse_rfc3339_millis(&format!("2026-11-21T12:00:{s}Z")).unwrap()
        };
        assert_eq!(p.watermark(), at("10"));
        // Once partition 1 is idle, partition 0 alone sets it; it never goes back.
        p.set_statuses(&BTreeMap::from([
            (0, PartitionStatus::Active),
            (1, PartitionStatus::Idle),
        ]));
        assert_eq!(p.watermark(), at("40"));
        p.set_statuses(&BTreeMap::from([
            (0, PartitionStatus::Active),
            (1, PartitionStatus::Active),
        ]));
        assert_eq!(p.watermark(), at("40"));
        // De-duplication spans partitions: an id is global.
        feed(&mut p, 1, &[ping("a", "55")]);
        assert_eq!(p.counters().duplicates, 1);
    }

    #[test]
    fn a_moved_partition_does_not_reopen_what_its_old_process_wrote() {
        let cfg = PipelineConfig::default();
        let mut a = Pipeline::holding(cfg.clone(), "t", PositionStyle::PartitionOffset, 0..2);
        feed(&mut a, 0, &[ping("a", "20")]);
        let late_ping = ping("c", "30");
        let far = |id: &str| {
            String::from_utf8(ping(id, "00"))
                .unwrap()
                .replace("12:00:00", "12:05:00")
                .into_bytes()
        };
        feed(&mut a, 1, &[far("b")]);
        // Partition 0 goes idle: partition 1 alone moves the watermark past 12:01,
        // and rider r's minute 12:00 is written.
        a.set_statuses(&BTreeMap::from([
            (0, PartitionStatus::Idle),
            (1, PartitionStatus::Active),
        ]));
        a.advance();
        let written = a.take_output().unwrap();
        assert!(written.iter().any(|t| t.table == Table::RiderMinute));
        let state = a.snapshot().unwrap();
        // Another process takes partition 0 over; a record for that minute is late
        // there too, not a second row for it.
        let mut b = Pipeline::holding(cfg, "t", PositionStyle::PartitionOffset, 0..2);
        b.release_partition(1);
        b.restore_partition(&state, 0).unwrap();
        feed(&mut b, 0, &[late_ping]);
        assert_eq!(b.counters().late, 1);
        assert_eq!(b.counters().accepted, 1, "the one accepted before the move");
        b.flush_all();
        let out = b.take_output().unwrap();
        assert!(out.iter().all(|t| t.table != Table::RiderMinute));
    }

    #[test]
    fn partitions_given_up_and_taken_back_together_keep_the_watermark() {
        let cfg = PipelineConfig::default();
        let mut p = Pipeline::holding(cfg, "t", PositionStyle::PartitionOffset, 0..2);
        feed(&mut p, 0, &[ping("a", "10")]);
        feed(&mut p, 1, &[ping("b", "50")]);
        let before = p.watermark();
        p.take_output().unwrap();
        let state = p.snapshot().unwrap();
        // A revocation of both, then an assignment of both (the faster one first).
        p.release_partitions(&[0, 1]);
        assert_eq!(
            p.watermark(),
            before,
            "released together, 1 never set it alone"
        );
        p.taking_over(|p| {
            p.restore_partition(&state, 1).unwrap();
            p.restore_partition(&state, 0).unwrap();
        });
        assert_eq!(
            p.watermark(),
            before,
            "restored together, 1 never set it alone"
        );
        feed(&mut p, 0, &[ping("c", "20")]);
        assert_eq!(p.counters().late, 0);
    }

    #[test]
    fn absurd_amounts_do_not_overflow() {
        let mut p = Pipeline::holding(PipelineConfig::default(), "t", PositionStyle::Line, 0..1);
        let big = |id: &str| {
            format!(r#"{{"event_id":"{id}","event_type":"order_placed","event_time":"2026-11-21T12:00:00Z","order_id":"{id}","store_id":"s","items":[{{"product_id":"p","qty":9223372036854775807,"unit_price_cents":0}},{{"product_id":"p","qty":9223372036854775807,"unit_price_cents":0}}],"total_cents":9223372036854775807}}"#)
                .into_bytes()
        };
        feed(&mut p, 0, &[big("a"), big("b")]);
        p.flush_all();
        let out = p.take_output().unwrap();
        assert!(out.iter().any(|t| t.table == Table::StoreMinute));
    }

    #[test]
    fn snapshot_then_restore_continues_identically() {
        let lines: Vec<Vec<u8>> = (0..40)
            .map(|k| ping(&format!("e{k}"), &format!("{:02}", k % 60)))
            .collect();
        let (first, second) = lines.split_at(25);
        let run = |restore_at: Option<&[u8]>| {
            let mut p =
                Pipeline::holding(PipelineConfig::default(), "t", PositionStyle::Line, 0..2);
            if let Some(state) = restore_at {
                p.restore(state).unwrap();
            } else {
                feed(&mut p, 0, first);
            }
            feed(&mut p, 1, second);
            p.flush_all();
            let out = p.take_output().unwrap();
            (
                p.counters(),
                out.iter()
                    .filter(|t| t.table != Table::RawEvents)
                    .map(|t| format!("{:?}", t.batch))
                    .collect::<Vec<_>>(),
            )
        };
        let mut p = Pipeline::holding(PipelineConfig::default(), "t", PositionStyle::Line, 0..2);
        feed(&mut p, 0, first);
        let _ = p.take_output().unwrap();
        let state = p.snapshot().unwrap();
        assert_eq!(run(Some(&state)), run(None));
        // Partition by partition, in any order, and once more over itself: the same.
        let mut by_part =
            Pipeline::holding(PipelineConfig::default(), "t", PositionStyle::Line, 0..2);
        for part in [1, 0, 1] {
            by_part.restore_partition(&state, part).unwrap();
        }
        assert_eq!(run(Some(&by_part.snapshot().unwrap())), run(None));
        // Given up, a partition holds nothing and counts nothing.
        by_part.release_partition(0);
        assert!(!by_part.holds(0));
        assert_eq!(by_part.counters(), Counters::default());
        assert_eq!(by_part.state_entries(), 0);
        assert!(
            by_part
                .restore_partition(&by_part.snapshot().unwrap(), 0)
                .is_err()
        );
        // A whole restore holds exactly the snapshot's partitions; bytes that are not
        // a state are refused.
        let mut other =
            Pipeline::holding(PipelineConfig::default(), "t", PositionStyle::Line, 0..3);
        other.restore(&state).unwrap();
        assert_eq!(other.held(), [0, 1]);
        assert!(other.restore(b"not a state").is_err());
    }

    #[test]
    fn operators_are_handed_in_and_emit_their_own_tables() {
        let order = |id: &str, kind: &str, secs: u32| {
            format!(r#"{{"event_id":"{id}","event_type":"{kind}","event_time":"2026-11-21T12:00:{secs:02}Z","order_id":"o1","store_id":"s1","rider_id":"r","items":[],"total_cents":5}}"#)
                .into_bytes()
        };
        let events = [
            order("a", "order_placed", 1),
            order("b", "order_delivered", 30),
        ];
        let output = |p: &mut Pipeline| {
            feed(p, 0, &events);
            p.flush_all();
            let out = p.take_output().unwrap();
            out.into_iter()
                .map(|t| (t.table, t.batch))
                .collect::<Vec<_>>()
        };
        let tables = |p: &mut Pipeline| {
            let mut t: Vec<Table> = output(p).into_iter().map(|(t, _)| t).collect();
            t.sort_by_key(|t| t.dir());
            t.dedup();
            t
        };
        let cfg = PipelineConfig::default;
        let style = || PositionStyle::Line;
        let store = || Box::new(StoreOperator::new(cfg().order_ttl_ms)) as Box<dyn Operator>;
        let mut given = Pipeline::with_operators(cfg(), "t", style(), vec![store()]);
        given.hold(0);
        let mut default = Pipeline::holding(cfg(), "t", style(), [0]);
        let written = output(&mut default);
        assert_eq!(output(&mut given), written);
        assert!(written.iter().any(|(t, _)| *t == Table::StoreMinute));
        // Without the store operator its three tables are simply not written.
        let mut bare = Pipeline::with_operators(cfg(), "t", style(), Vec::new());
        bare.hold(0);
        let written = tables(&mut bare);
        assert!(written.contains(&Table::RawEvents) && written.contains(&Table::RiderMinute));
        for t in [
            Table::StoreMinute,
            Table::Deliveries,
            Table::StoreDelivery5m,
        ] {
            assert!(!written.contains(&t), "{t:?}");
        }
        // A snapshot restores only into a pipeline with the same operators.
        let state = default.snapshot().unwrap();
        let mut other = Pipeline::with_operators(cfg(), "t", style(), Vec::new());
        let err = other.restore(&state).unwrap_err().to_string();
        assert!(err.contains("2 operators in the state, 1 here"), "{err}");
    }
}
