//! The writer: one thread that sequences every mutation and commits them in groups.
//!
//! Why a single writer:
//! - read-modify-write commands (`cas`, `add`, `append`, `incr`, the meta protocol's
//!   stale/win state) need the current item and the new one to be decided atomically; one
//!   sequencer makes that trivially true without per-key locks;
//! - it assigns each partition's sequence numbers in order, which is what replication will
//!   stream to followers (DESIGN.md §5);
//! - it is where group commit happens: every job that queued while the previous batch was
//!   being written (and fsynced) is evaluated and committed together, as one engine batch
//!   and at most one fsync, however many connections they came from.
//!
//! Within a group, later jobs must see earlier ones even though nothing is written yet, so
//! reads go through an overlay of the group's pending records before the engine. Readers
//! outside the writer see a group only once its batch is in the engine; a client hears
//! "stored" only after that (and after the fsync, with `SyncPolicy::Always`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use murakumo_engine::keys::{NamespaceId, PartitionId, item_key, place_of};
use murakumo_engine::record::{HEADER_LEN, ItemHeader, ItemState, Record, RecordError};
use murakumo_engine::{EngineError, Table, WriteBatch};
use tokio::sync::oneshot;

use crate::error::StoreError;
use crate::expiry::remaining_ttl;
use crate::ops::{
    ArithOutcome, ArithRequest, DeleteOutcome, DeleteRequest, FetchOutcome, FetchRequest, Item,
    StoreMode, StoreOutcome, StoreRequest,
};
use crate::partition::{PartitionState, pending_flush_key, state_key};
use crate::placement::PARTITIONS;
use crate::store::{Shared, is_visible, item_from_record, lapses_at};
use crate::sweep::SweepKnowledge;
use crate::{FastMap, IdMap, IdSet};

/// Most jobs evaluated into one batch; bounds the latency a single group can add.
const MAX_GROUP: usize = 512;

/// Sequence numbers reserved per persisted ceiling (see `PartitionState`).
const SEQ_RESERVATION: u64 = 4096;

/// How often partition counters are persisted when nothing else persists them.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Most partition states a checkpoint adds to one group; the rest wait for the next
/// groups.
///
/// Why a checkpoint is spread out: under load nearly every partition changes within a
/// second, so a checkpoint in one group wrote about 1,000 states, and the commit that
/// carried it held up its connection thread (and every write queued behind it) for
/// milliseconds once a second. Spread over groups, it adds a few dozen small records to
/// each instead; when the store is idle, the inline writer's tick (or the next write)
/// carries it on. Measured at half of memcached's peak on a pipeline-1 1:10 load
/// (`murakumo bench --rate 85000`, 8 paired 10 s runs): set p99.9 had a median of 6.2 ms
/// with 4 runs over 8 ms before, and a median of 4.5 ms with none over 6.4 ms after.
const CHECKPOINT_SLICE: usize = 32;

/// A mutation as queued for the writer.
#[derive(Debug)]
pub(crate) enum Op {
    Store(StoreRequest),
    Delete(DeleteRequest),
    Arith(ArithRequest),
    Fetch(FetchRequest),
}

impl Op {
    fn key(&self) -> &Bytes {
        match self {
            Self::Store(r) => &r.key,
            Self::Delete(r) => &r.key,
            Self::Arith(r) => &r.key,
            Self::Fetch(r) => &r.key,
        }
    }
}

/// The result of an [`Op`], same shape.
#[derive(Debug)]
pub(crate) enum OpOutcome {
    Store(StoreOutcome),
    Delete(DeleteOutcome),
    Arith(ArithOutcome),
    Fetch(FetchOutcome),
}

/// Work for the writer thread.
#[derive(Debug)]
pub(crate) enum Job {
    /// One client mutation.
    Mutate {
        namespace: NamespaceId,
        op: Op,
        reply: oneshot::Sender<Result<OpOutcome, StoreError>>,
    },
    /// `flush_all [delay]`.
    FlushAll {
        namespace: NamespaceId,
        delay_secs: u32,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Remove records the sweeper found invisible, if they are still the same records.
    Reap {
        namespace: NamespaceId,
        partition: PartitionId,
        candidates: Vec<(Bytes, u64)>,
    },
    /// Finish everything queued before this, leave what the sweeper knew for the next
    /// start, make it all durable, and stop.
    Shutdown {
        reply: oneshot::Sender<()>,
        sweep: SweepKnowledge,
    },
}

/// Replies are sent only after the group they belong to is committed.
enum Reply {
    Mutate(oneshot::Sender<Result<OpOutcome, StoreError>>, OpOutcome),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

/// One group's pending changes. The writer keeps one and clears it after each commit, so
/// that its maps and vectors keep their capacity: a group of one write used to spend a
/// tenth of its time growing them from nothing.
#[derive(Default)]
struct Group {
    batch: WriteBatch,
    /// Where each key's latest entry in `changes` is, once the group has more than
    /// [`OVERLAY_SCAN`] changes; smaller groups (nearly all of them, unless many clients
    /// write at once) are searched directly, which costs less than hashing the key.
    overlay: FastMap<Bytes, usize>,
    /// Partitions whose state must be persisted with this group (a raised sequence
    /// ceiling, a flush, a checkpoint).
    dirty: IdSet<(NamespaceId, PartitionId)>,
    replies: Vec<Reply>,
    /// Every item change of the group in order (new record, or `None` for a removal),
    /// published to the item cache once the batch is committed.
    changes: Vec<(Bytes, Option<Bytes>)>,
    /// The partition of every record written that the sweep will have to revisit
    /// (`lapses_at`), and when it lapses; the sweeper hears of them once they are
    /// committed.
    sweepable: Vec<(NamespaceId, PartitionId, u32)>,
    /// Records added (net) and stores performed, for the global counters.
    stored: u64,
    /// Persist every partition's counters with this group (shutdown).
    checkpoint: bool,
}

/// Changes up to which a group's pending records are found by scanning rather than by
/// the overlay map.
const OVERLAY_SCAN: usize = 8;

impl Group {
    /// Records a change: the new encoded record of `key`, or `None` for its removal.
    fn record_change(&mut self, key: Bytes, record: Option<Bytes>) {
        if self.changes.len() == OVERLAY_SCAN {
            for (index, (earlier, _)) in self.changes.iter().enumerate() {
                self.overlay.insert(earlier.clone(), index);
            }
        }
        if self.changes.len() >= OVERLAY_SCAN {
            self.overlay.insert(key.clone(), self.changes.len());
        }
        self.changes.push((key, record));
    }

    /// What this group last did to `key`: `Some` of the new record for a write, or of
    /// `None` for a removal; `None` if the group has not touched it.
    fn pending(&self, key: &[u8]) -> Option<&Option<Bytes>> {
        let index = if self.changes.len() > OVERLAY_SCAN {
            *self.overlay.get(key)?
        } else {
            self.changes
                .iter()
                .rposition(|(changed, _)| changed == key)?
        };
        Some(&self.changes[index].1)
    }

    /// Empties the group for the next one, keeping its allocations.
    fn clear(&mut self) {
        self.batch = WriteBatch::new();
        self.overlay.clear();
        self.dirty.clear();
        self.replies.clear();
        self.changes.clear();
        self.sweepable.clear();
        self.stored = 0;
        self.checkpoint = false;
    }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    jobs: Receiver<Job>,
    /// Shut down: every later job is refused.
    closed: bool,
    /// Partitions whose counters changed since their state was last persisted.
    unpersisted: IdSet<(NamespaceId, PartitionId)>,
    /// The checkpoint in progress: partitions still to persist, a slice per group (see
    /// [`CHECKPOINT_SLICE`]).
    checkpointing: Vec<(NamespaceId, PartitionId)>,
    last_checkpoint: Instant,
    partitions: IdMap<NamespaceId, Vec<PartitionState>>,
    pending_flush: IdMap<NamespaceId, u32>,
    sync_each_group: bool,
    max_value_len: usize,
    /// The group being built; empty between groups.
    group: Group,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        jobs: Receiver<Job>,
        partitions: IdMap<NamespaceId, Vec<PartitionState>>,
        pending_flush: IdMap<NamespaceId, u32>,
        sync_each_group: bool,
        max_value_len: usize,
    ) -> Self {
        Self {
            shared,
            jobs,
            closed: false,
            unpersisted: IdSet::default(),
            checkpointing: Vec::new(),
            last_checkpoint: Instant::now(),
            partitions,
            pending_flush,
            sync_each_group,
            max_value_len,
            group: Group::default(),
        }
    }

    /// Evaluates and commits one group: `first` if given, then whatever else is queued (up
    /// to [`MAX_GROUP`] jobs), plus any delayed flush that has fallen due.
    fn process_group(&mut self, first: Option<Job>) {
        let mut group = std::mem::take(&mut self.group);
        self.apply_due_flushes(&mut group);
        let mut shutdown = None;
        let mut next = first.or_else(|| self.jobs.try_recv().ok());
        let mut taken = 0;
        while let Some(job) = next.take() {
            taken += 1;
            if self.closed {
                reject(job, &StoreError::ShuttingDown);
            } else if let Job::Shutdown { reply, sweep } = job {
                if self.shared.failure().is_none() {
                    for (key, summary) in
                        sweep.summaries(&self.shared, &self.partitions, &group.sweepable)
                    {
                        group.batch.put(Table::Meta, key, summary);
                    }
                }
                shutdown = Some(reply);
                break;
            } else {
                self.handle(&mut group, job);
            }
            if taken < MAX_GROUP {
                next = self.jobs.try_recv().ok();
            }
        }
        group.checkpoint = shutdown.is_some();
        self.commit(&mut group);
        group.clear();
        self.group = group;
        if let Some(reply) = shutdown {
            if self.shared.failure().is_none()
                && let Err(err) = self.shared.engine.sync()
            {
                self.shared.fail(&err);
            }
            self.closed = true;
            self.shared.writer_closed.store(true, Ordering::Release);
            self.reject_queued();
            let _ = reply.send(());
        }
    }

    /// After shutdown: answer everything still queued with `ShuttingDown`.
    fn reject_queued(&mut self) {
        while let Ok(job) = self.jobs.try_recv() {
            reject(job, &StoreError::ShuttingDown);
        }
    }

    fn handle(&mut self, group: &mut Group, job: Job) {
        if let Some(reason) = self.shared.failure() {
            reject(job, &StoreError::Unavailable(reason));
            return;
        }
        match job {
            Job::Mutate {
                namespace,
                op,
                reply,
            } => {
                if !self.partitions.contains_key(&namespace) {
                    let _ = reply.send(Err(StoreError::UnknownNamespace(namespace)));
                    return;
                }
                match self.apply(group, namespace, op) {
                    Ok(outcome) => group.replies.push(Reply::Mutate(reply, outcome)),
                    Err(err) => {
                        self.shared.fail(&err);
                        let reason = self.shared.failure().unwrap_or_default();
                        let _ = reply.send(Err(StoreError::Unavailable(reason)));
                    }
                }
            }
            Job::FlushAll {
                namespace,
                delay_secs,
                reply,
            } => {
                if !self.partitions.contains_key(&namespace) {
                    let _ = reply.send(Err(StoreError::UnknownNamespace(namespace)));
                    return;
                }
                if delay_secs == 0 {
                    self.flush_now(group, namespace);
                } else {
                    let deadline = self.shared.clock.now().saturating_add(delay_secs);
                    self.pending_flush.insert(namespace, deadline);
                    group.batch.put(
                        Table::Meta,
                        pending_flush_key(namespace),
                        Bytes::copy_from_slice(&deadline.to_be_bytes()),
                    );
                }
                group.replies.push(Reply::Flush(reply));
            }
            Job::Reap {
                namespace,
                partition,
                candidates,
            } => {
                if let Err(err) = self.reap(group, namespace, partition, candidates) {
                    self.shared.fail(&err);
                }
            }
            // `run` stops at a shutdown before handing jobs here; answer it regardless.
            Job::Shutdown { reply, .. } => {
                let _ = reply.send(());
            }
        }
    }

    fn apply(
        &mut self,
        group: &mut Group,
        namespace: NamespaceId,
        op: Op,
    ) -> Result<OpOutcome, EngineError> {
        let partition = crate::placement::partition_of(namespace, op.key());
        let slot = Slot::new(namespace, partition, op.key());
        let now = self.shared.clock.now();
        let op = match op {
            // A plain set replaces whatever is there, visible or not: of the record it
            // replaces it needs only the size, for `bytes`. Reading the record itself
            // read a large value from its blob file (and checked its checksum) just for
            // that: on a 512 KiB 1:1 load, most sets.
            Op::Store(req) if req.mode == StoreMode::Set && req.compare_cas.is_none() => {
                let replaced = self.current_value_len(group, &slot.key)?;
                return Ok(OpOutcome::Store(
                    self.store(group, &slot, replaced, None, req, now),
                ));
            }
            other => other,
        };
        let physical = self.current(group, &slot.key)?;
        // Of the record the key holds, visible or not, the writes below need only the
        // size; visibility rules read `live`.
        let replaced = physical.as_ref().map(|r| r.value.len());
        let flushed = self.state(&slot).flushed_seq;
        let live = physical
            .as_ref()
            .filter(|r| is_visible(&r.header, now, flushed))
            .cloned();
        if let (Op::Fetch(_), Some(record), None) = (&op, &physical, &live) {
            self.shared
                .stats
                .count_invisible_read(&record.header, now, flushed);
        }
        let outcome = match op {
            Op::Store(req) => {
                OpOutcome::Store(self.store(group, &slot, replaced, live.as_ref(), req, now))
            }
            Op::Delete(req) => {
                OpOutcome::Delete(self.delete(group, &slot, replaced, live, &req, now))
            }
            Op::Arith(req) => {
                OpOutcome::Arith(self.arith(group, &slot, replaced, live.as_ref(), &req, now))
            }
            Op::Fetch(req) => OpOutcome::Fetch(self.fetch(group, &slot, replaced, live, &req, now)),
        };
        Ok(outcome)
    }

    /// `replaced`: the value length of the record the key holds, visible or not. `live`:
    /// that record if it is visible; a plain `set` (no CAS) never looks at it, so `apply`
    /// does not read it for one.
    fn store(
        &mut self,
        group: &mut Group,
        slot: &Slot,
        replaced: Option<usize>,
        live: Option<&Record>,
        req: StoreRequest,
        now: u32,
    ) -> StoreOutcome {
        let mut state = ItemState::default();
        let mut expires_at = req.exptime.resolve(now);
        if let Some(expected) = req.compare_cas {
            let Some(current) = live else {
                return StoreOutcome::NotFound;
            };
            if current.header.cas != expected {
                if !(req.invalidate && expected < current.header.cas) {
                    return StoreOutcome::Exists;
                }
                // A late writer with an older CAS may store, but must neither revive the
                // item nor extend its life: it stays stale, with the old expiry and any
                // win already handed out.
                expires_at = current.header.expires_at;
                state = ItemState::default().with(ItemState::STALE, true).with(
                    ItemState::WIN_SENT,
                    current.header.state.has(ItemState::WIN_SENT),
                );
            }
        }
        let (value, client_flags) = match (req.mode, live) {
            (StoreMode::Set, _) | (StoreMode::Add, None) | (StoreMode::Replace, Some(_)) => {
                (req.value, req.client_flags)
            }
            (StoreMode::Add, Some(_)) | (StoreMode::Replace, None) => {
                return StoreOutcome::NotStored;
            }
            (StoreMode::Append | StoreMode::Prepend, None) => match req.vivify {
                Some(exptime) => {
                    expires_at = exptime.resolve(now);
                    (req.value, req.client_flags)
                }
                None => return StoreOutcome::NotStored,
            },
            (StoreMode::Append | StoreMode::Prepend, Some(current)) => {
                if current.value.len() + req.value.len() > self.max_value_len {
                    return StoreOutcome::TooLarge;
                }
                let mut joined = Vec::with_capacity(current.value.len() + req.value.len());
                if req.mode == StoreMode::Append {
                    joined.extend_from_slice(&current.value);
                    joined.extend_from_slice(&req.value);
                } else {
                    joined.extend_from_slice(&req.value);
                    joined.extend_from_slice(&current.value);
                }
                // Appending keeps the item's flags and expiry, as memcached does.
                expires_at = current.header.expires_at;
                (Bytes::from(joined), current.header.client_flags)
            }
        };
        let header = ItemHeader {
            state,
            client_flags,
            expires_at,
            cas: 0,
            seq: 0,
            written_at: now,
        };
        let item = self.write(group, slot, replaced, header, value, req.new_cas);
        StoreOutcome::Stored { cas: item.cas }
    }

    fn delete(
        &mut self,
        group: &mut Group,
        slot: &Slot,
        replaced: Option<usize>,
        live: Option<Record>,
        req: &DeleteRequest,
        now: u32,
    ) -> DeleteOutcome {
        let Some(current) = live else {
            return DeleteOutcome::NotFound;
        };
        if req.compare_cas.is_some_and(|c| c != current.header.cas) {
            return DeleteOutcome::Exists;
        }
        if req.invalidate || req.remove_value {
            // Invalidation keeps the value so it can be served stale while one client
            // (the next to fetch it, who wins) recomputes it; `x` keeps the item but not
            // its value.
            let header = ItemHeader {
                state: ItemState::default().with(ItemState::STALE, req.invalidate),
                expires_at: req
                    .exptime
                    .map_or(current.header.expires_at, |e| e.resolve(now)),
                written_at: now,
                ..current.header
            };
            let value = if req.remove_value {
                Bytes::new()
            } else {
                current.value.clone()
            };
            self.write(group, slot, replaced, header, value, req.new_cas);
        } else {
            self.remove(group, slot, replaced);
        }
        DeleteOutcome::Deleted
    }

    fn arith(
        &mut self,
        group: &mut Group,
        slot: &Slot,
        replaced: Option<usize>,
        live: Option<&Record>,
        req: &ArithRequest,
        now: u32,
    ) -> ArithOutcome {
        let Some(current) = live else {
            return match req.vivify {
                Some((initial, exptime)) => {
                    let header = ItemHeader {
                        expires_at: exptime.resolve(now),
                        written_at: now,
                        ..ItemHeader::default()
                    };
                    let value = Bytes::from(initial.to_string());
                    let item = self.write(group, slot, replaced, header, value, req.new_cas);
                    ArithOutcome::Updated {
                        value: initial,
                        item,
                    }
                }
                None => ArithOutcome::NotFound,
            };
        };
        if req.compare_cas.is_some_and(|c| c != current.header.cas) {
            return ArithOutcome::Exists;
        }
        let Some(number) = parse_counter(&current.value) else {
            return ArithOutcome::NonNumeric;
        };
        let value = if req.incr {
            number.wrapping_add(req.delta)
        } else {
            number.saturating_sub(req.delta)
        };
        let header = ItemHeader {
            state: ItemState::default(),
            expires_at: req
                .exptime
                .map_or(current.header.expires_at, |e| e.resolve(now)),
            written_at: now,
            ..current.header
        };
        let item = self.write(
            group,
            slot,
            replaced,
            header,
            Bytes::from(value.to_string()),
            req.new_cas,
        );
        ArithOutcome::Updated { value, item }
    }

    fn fetch(
        &mut self,
        group: &mut Group,
        slot: &Slot,
        replaced: Option<usize>,
        live: Option<Record>,
        req: &FetchRequest,
        now: u32,
    ) -> FetchOutcome {
        let Some(current) = live else {
            return match req.vivify {
                Some(exptime) => {
                    // An empty placeholder whose win goes to this client; everyone else
                    // sees "Z" until the winner stores the real value.
                    let header = ItemHeader {
                        state: ItemState::default().with(ItemState::WIN_SENT, true),
                        expires_at: exptime.resolve(now),
                        written_at: now,
                        ..ItemHeader::default()
                    };
                    let item = self.write(group, slot, replaced, header, Bytes::new(), req.new_cas);
                    let expires_before = item.expires_at;
                    FetchOutcome::Hit {
                        item,
                        won: true,
                        vivified: true,
                        expires_before,
                    }
                }
                None => FetchOutcome::Miss,
            };
        };
        let mut header = current.header;
        let expires_before = header.expires_at;
        let mut changed = false;
        if let Some(exptime) = req.touch {
            header.expires_at = exptime.resolve(now);
            changed = true;
        }
        let wants_recache = req.recache_below.is_some_and(|below| {
            let left = remaining_ttl(header.expires_at, now);
            left >= 0 && left < i64::from(below)
        });
        let mut won = false;
        if (header.state.has(ItemState::STALE) || wants_recache)
            && !header.state.has(ItemState::WIN_SENT)
        {
            header.state = header.state.with(ItemState::WIN_SENT, true);
            won = true;
            changed = true;
        }
        let item = if changed {
            // Touching or handing out a win is not a new value: the CAS stays unless the
            // client asked for a specific one.
            let cas = req.new_cas.unwrap_or(header.cas);
            self.write(group, slot, replaced, header, current.value, Some(cas))
        } else {
            item_from_record(current)
        };
        FetchOutcome::Hit {
            item,
            won,
            vivified: false,
            expires_before,
        }
    }

    /// Writes a record with the next sequence number and returns the item as stored. Its
    /// CAS is `cas` if given, otherwise [`generated_cas`] of the sequence number.
    /// `replaced` is the value length of the record it replaces, if the key held one.
    fn write(
        &mut self,
        group: &mut Group,
        slot: &Slot,
        replaced: Option<usize>,
        mut header: ItemHeader,
        value: Bytes,
        cas: Option<u64>,
    ) -> Item {
        let state = self.state_mut(slot);
        state.seq += 1;
        let raise_ceiling = state.seq > state.seq_ceiling;
        if raise_ceiling {
            state.seq_ceiling = state.seq + SEQ_RESERVATION;
        }
        header.seq = state.seq;
        header.cas = cas.unwrap_or_else(|| generated_cas(state.seq, slot.partition));
        let removed = replaced.map(|len| record_size(&slot.key, len));
        self.account(
            slot.place(),
            Some(record_size(&slot.key, value.len())),
            removed,
        );
        if let Some(due) = lapses_at(&header) {
            group.sweepable.push((slot.namespace, slot.partition, due));
        }
        let record = Record { header, value };
        let encoded = record.encode();
        if !self.shared.cache.holds_items() {
            group
                .batch
                .put(Table::Items, slot.key.clone(), encoded.clone());
        }
        group.record_change(slot.key.clone(), Some(encoded));
        if raise_ceiling {
            group.dirty.insert((slot.namespace, slot.partition));
        } else {
            self.unpersisted.insert((slot.namespace, slot.partition));
        }
        group.stored += 1;
        item_from_record(record)
    }

    /// Removes the key's record, whose value was `replaced` bytes long (nothing to do if
    /// the key held none).
    fn remove(&mut self, group: &mut Group, slot: &Slot, replaced: Option<usize>) {
        let Some(old_len) = replaced else { return };
        self.account(slot.place(), None, Some(record_size(&slot.key, old_len)));
        if !self.shared.cache.holds_items() {
            group.batch.delete(Table::Items, slot.key.clone());
        }
        group.record_change(slot.key.clone(), None);
        self.unpersisted.insert((slot.namespace, slot.partition));
    }

    fn reap(
        &mut self,
        group: &mut Group,
        namespace: NamespaceId,
        partition: PartitionId,
        candidates: Vec<(Bytes, u64)>,
    ) -> Result<(), EngineError> {
        if !self.partitions.contains_key(&namespace) {
            return Ok(());
        }
        let now = self.shared.clock.now();
        for (user_key, seq) in candidates {
            let slot = Slot::new(namespace, partition, &user_key);
            let Some(record) = self.current(group, &slot.key)? else {
                continue;
            };
            let flushed = self.state(&slot).flushed_seq;
            // Only if nobody rewrote it since the sweeper looked.
            if record.header.seq == seq && !is_visible(&record.header, now, flushed) {
                self.remove(group, &slot, Some(record.value.len()));
                self.shared.stats.reclaimed.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn flush_now(&mut self, group: &mut Group, namespace: NamespaceId) {
        if let Some(states) = self.partitions.get_mut(&namespace) {
            for (partition, state) in states.iter_mut().enumerate() {
                state.flushed_seq = state.seq;
                group.dirty.insert((namespace, partition as PartitionId));
            }
        }
        if self.pending_flush.remove(&namespace).is_some() {
            group
                .batch
                .delete(Table::Meta, pending_flush_key(namespace));
        }
        self.shared.sweep_soon();
    }

    fn apply_due_flushes(&mut self, group: &mut Group) {
        let now = self.shared.clock.now();
        let due: Vec<NamespaceId> = self
            .pending_flush
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(ns, _)| *ns)
            .collect();
        for namespace in due {
            self.flush_now(group, namespace);
        }
    }

    /// How long until the earliest pending delayed flush is due (`None`: none pending).
    fn next_flush_deadline(&self) -> Option<Duration> {
        let earliest = self.pending_flush.values().min()?;
        let now = self.shared.clock.now();
        // Re-check at least every second so a manual clock in tests is honoured too.
        let secs = earliest.saturating_sub(now).clamp(0, 1);
        Some(Duration::from_secs(u64::from(secs)))
    }

    /// Adds to `group` the partition states the checkpoint persists with it: all of them
    /// at shutdown, otherwise the next [`CHECKPOINT_SLICE`] of the checkpoint in progress
    /// (starting one once a second has passed since the last).
    fn add_checkpoint(&mut self, group: &mut Group, now: Instant) {
        let due = now.duration_since(self.last_checkpoint) >= CHECKPOINT_EVERY;
        if group.checkpoint || (due && self.checkpointing.is_empty()) {
            self.checkpointing.extend(self.unpersisted.drain());
            self.last_checkpoint = now;
        }
        let keep = if group.checkpoint {
            0
        } else {
            self.checkpointing.len().saturating_sub(CHECKPOINT_SLICE)
        };
        group.dirty.extend(self.checkpointing.drain(keep..));
    }

    fn commit(&mut self, group: &mut Group) {
        // One clock reading serves the checkpoint check and the commit timing.
        let started = Instant::now();
        self.add_checkpoint(group, started);
        // In memory mode a change need not be in the batch: the item table is its only copy.
        if group.batch.is_empty()
            && group.changes.is_empty()
            && group.dirty.is_empty()
            && group.replies.is_empty()
        {
            return;
        }
        for (namespace, partition) in &group.dirty {
            if let Some(state) = self
                .partitions
                .get(namespace)
                .and_then(|states| states.get(usize::from(*partition)))
            {
                group.batch.put(
                    Table::Meta,
                    state_key(*namespace, *partition),
                    state.encode(),
                );
                self.shared
                    .flushed_seq(*namespace, *partition)
                    .store(state.flushed_seq, Ordering::Release);
            }
        }
        let batch = std::mem::take(&mut group.batch);
        let result = self.shared.engine.write(batch).and_then(|()| {
            if self.sync_each_group {
                self.shared.engine.sync()
            } else {
                Ok(())
            }
        });
        if let Err(err) = result {
            self.shared.fail(&err);
            let error = StoreError::Unavailable(self.shared.failure().unwrap_or_default());
            for reply in group.replies.drain(..) {
                match reply {
                    Reply::Mutate(tx, _) => {
                        let _ = tx.send(Err(error.clone()));
                    }
                    Reply::Flush(tx) => {
                        let _ = tx.send(Err(error.clone()));
                    }
                }
            }
            return;
        }
        // Before anyone hears back: a client must never read its acknowledged write back
        // stale from the cache.
        if self.shared.cache.holds_items() {
            self.store_in_memory(group);
        } else {
            for (key, record) in &group.changes {
                self.shared.cache.update(key, record.as_ref());
            }
        }
        // Only now: a sweep that takes these reports must find the records in the engine.
        for (namespace, partition, due) in group.sweepable.drain(..) {
            self.shared.note_lapsing_write(namespace, partition, due);
        }
        let stats = &self.shared.stats;
        stats.total_items.fetch_add(group.stored, Ordering::Relaxed);
        stats.commit_groups.fetch_add(1, Ordering::Relaxed);
        stats
            .commit_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.shared.writes_committed.fetch_add(1, Ordering::Release);
        for reply in group.replies.drain(..) {
            match reply {
                Reply::Mutate(tx, outcome) => {
                    let _ = tx.send(Ok(outcome));
                }
                Reply::Flush(tx) => {
                    let _ = tx.send(Ok(()));
                }
            }
        }
    }

    /// Memory mode: puts the group's changes in the item table, which is the only copy,
    /// and counts the items it evicts to make room out of their partitions.
    fn store_in_memory(&mut self, group: &Group) {
        let shared = Arc::clone(&self.shared);
        for (key, record) in &group.changes {
            shared
                .cache
                .store(key, record.as_ref(), |victim, record_len| {
                    let Some(place) = place_of(victim) else {
                        return;
                    };
                    let value_len = record_len.saturating_sub(HEADER_LEN);
                    self.account(place, None, Some(record_size(victim, value_len)));
                    self.unpersisted.insert(place);
                    shared.stats.evictions.fetch_add(1, Ordering::Relaxed);
                });
        }
    }

    /// Counts a record of `added` bytes in and one of `removed` bytes out of a partition,
    /// and of the store-wide `curr_items`/`bytes` (which start as the sums of the
    /// partitions' persisted counters, so they never need recomputing).
    fn account(
        &mut self,
        place: (NamespaceId, PartitionId),
        added: Option<u64>,
        removed: Option<u64>,
    ) {
        // Disjoint field borrows: the partition states and the shared counters.
        let state = partition_state(&mut self.partitions, place);
        let stats = &self.shared.stats;
        if let Some(size) = removed {
            state.items = state.items.saturating_sub(1);
            state.bytes = state.bytes.saturating_sub(size);
            saturating_sub(&stats.curr_items, 1);
            saturating_sub(&stats.bytes, size);
        }
        if let Some(size) = added {
            state.items += 1;
            state.bytes += size;
            stats.curr_items.fetch_add(1, Ordering::Relaxed);
            stats.bytes.fetch_add(size, Ordering::Relaxed);
        }
    }

    fn current(&self, group: &Group, key: &Bytes) -> Result<Option<Record>, EngineError> {
        if let Some(pending) = group.pending(key) {
            return Ok(pending.as_ref().map(Record::decode).transpose()?);
        }
        if let Some(raw) = self.shared.cache.peek(key) {
            return Ok(Some(Record::decode(&raw)?));
        }
        if self.shared.cache.holds_items() {
            return Ok(None);
        }
        match self.shared.engine.get(Table::Items, key)? {
            Some(raw) => Ok(Some(Record::decode(&raw)?)),
            None => Ok(None),
        }
    }

    /// The value length of the record `key` holds, in the same order of sources as
    /// [`current`](Self::current), without reading the value where it is kept apart.
    fn current_value_len(&self, group: &Group, key: &Bytes) -> Result<Option<usize>, EngineError> {
        let record_len = if let Some(pending) = group.pending(key) {
            pending.as_ref().map(Bytes::len)
        } else if let Some(len) = self.shared.cache.peek_len(key) {
            Some(len)
        } else if self.shared.cache.holds_items() {
            None
        } else {
            self.shared.engine.value_len(Table::Items, key)?
        };
        record_len
            .map(|len| {
                len.checked_sub(HEADER_LEN)
                    .ok_or(EngineError::Corrupt(RecordError::Truncated(len)))
            })
            .transpose()
    }

    fn state(&self, slot: &Slot) -> PartitionState {
        self.partitions
            .get(&slot.namespace)
            .and_then(|s| s.get(usize::from(slot.partition)))
            .copied()
            .unwrap_or_default()
    }

    fn state_mut(&mut self, slot: &Slot) -> &mut PartitionState {
        partition_state(&mut self.partitions, slot.place())
    }
}

/// Where a key lives.
struct Slot {
    namespace: NamespaceId,
    partition: PartitionId,
    /// The engine key.
    key: Bytes,
}

impl Slot {
    /// Why the engine key is built this way: the first clone of a `Bytes` that owns a
    /// plain buffer allocates a shared header, and a write clones the key for its batch
    /// and for the group's changes. Built around the inline key buffer, the key costs
    /// one allocation and its clones none; before, taking the user key whole (a clone of
    /// the request's key) and then cloning the engine key cost three.
    fn new(namespace: NamespaceId, partition: PartitionId, user_key: &[u8]) -> Self {
        Self {
            namespace,
            partition,
            key: Bytes::from_owner(item_key(namespace, partition, user_key)),
        }
    }
}

impl Slot {
    fn place(&self) -> (NamespaceId, PartitionId) {
        (self.namespace, self.partition)
    }
}

/// Bits of a generated CAS that hold the partition.
const CAS_PARTITION_BITS: u32 = PARTITIONS.trailing_zeros();
const _: () = assert!(
    PARTITIONS.is_power_of_two(),
    "CAS packing needs a power-of-two partition count"
);

/// The CAS of a write: its sequence number above the partition number.
///
/// memcached's CAS values are unique across all items, and clients rely on that (a CAS
/// read from one key never matches another key's item, and small numbers such as 1 are
/// never issued). Deriving it from the partition's sequence number keeps it unique in the
/// namespace, rising with every write to a key, and identical on every replica that
/// applies the same write, with no counter of its own to persist.
fn generated_cas(seq: u64, partition: PartitionId) -> u64 {
    (seq << CAS_PARTITION_BITS) | u64::from(partition)
}

fn partition_state(
    partitions: &mut IdMap<NamespaceId, Vec<PartitionState>>,
    (namespace, partition): (NamespaceId, PartitionId),
) -> &mut PartitionState {
    let states = partitions
        .entry(namespace)
        .or_insert_with(|| vec![PartitionState::default(); usize::from(PARTITIONS)]);
    &mut states[usize::from(partition)]
}

fn saturating_sub(counter: &std::sync::atomic::AtomicU64, amount: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(amount))
    });
}

/// What a record counts for in `bytes`: its engine key, header and value.
pub(crate) fn record_size(key: &[u8], value_len: usize) -> u64 {
    (key.len() + HEADER_LEN + value_len) as u64
}

/// Parses a stored counter the way memcached's `strtoull` does: decimal digits, with
/// surrounding white space allowed (memcached space-pads a value that shrank), fitting in
/// 64 bits.
pub(crate) fn parse_counter(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn reject(job: Job, error: &StoreError) {
    match job {
        Job::Mutate { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        Job::FlushAll { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        Job::Reap { .. } => {}
        Job::Shutdown { reply, .. } => {
            let _ = reply.send(());
        }
    }
}

/// Where the writer runs, and how jobs reach it.
///
/// With `SyncPolicy::Always` a dedicated thread is the writer: each group ends in an fsync,
/// which must not block the async workers. Otherwise no fsync is on the acknowledgement
/// path and a group commit takes microseconds, so the task that submits a job runs the
/// writer itself (flat combining): it takes the writer's lock if it is free and commits
/// everything queued, its own job and others' alike; if the lock is taken, the holder
/// will commit the job. This saves two thread hand-offs per write, which matter on small
/// machines where a woken writer thread waits for a CPU. The background thread then only
/// fires delayed flushes and picks up stragglers (the sweeper's removals).
///
/// Why one queue for every connection thread, though answering a task on another
/// thread's runtime costs that thread a wakeup: a queue per thread, each committed only by
/// its own thread, was measured (50 connections, 2 threads, 100 B sets). It did 11-19%
/// more sets per second at pipeline 16 but 6-9% fewer at pipeline 1, the commonest load,
/// where a thread committing the other's writes leaves that thread free to serve its
/// connections, and the tasks it answers are still queued from their yield (see
/// `Store::submit`), so waking them costs nothing.
pub(crate) struct WriterHandle {
    writer: Mutex<Writer>,
    queue: Receiver<Job>,
    inline: bool,
}

/// How often the background thread looks for due flushes and stragglers when commits run
/// inline.
const INLINE_TICK: Duration = Duration::from_millis(50);

impl WriterHandle {
    pub(crate) fn new(writer: Writer, inline: bool) -> Self {
        let queue = writer.jobs.clone();
        Self {
            writer: Mutex::new(writer),
            queue,
            inline,
        }
    }

    /// Whether submitters run the writer themselves.
    pub(crate) fn is_inline(&self) -> bool {
        self.inline
    }

    /// Commits queued jobs on this thread unless another thread is already doing so.
    pub(crate) fn drain(&self) {
        loop {
            {
                let Some(mut writer) = self.writer.try_lock() else {
                    return;
                };
                while !self.queue.is_empty() {
                    writer.process_group(None);
                }
            }
            // A job queued after the last look but while we held the lock would otherwise
            // wait for the next submitter: look again now that the lock is free.
            if self.queue.is_empty() {
                return;
            }
        }
    }

    /// Refuses whatever is queued once the writer is closed (a job that raced shutdown).
    pub(crate) fn reject_queued(&self) {
        self.writer.lock().reject_queued();
    }

    /// The background thread's loop; returns after shutdown or when every handle is gone.
    pub(crate) fn run(&self) {
        loop {
            if self.inline {
                let pause = self
                    .writer
                    .lock()
                    .next_flush_deadline()
                    .map_or(INLINE_TICK, |deadline| deadline.min(INLINE_TICK));
                std::thread::sleep(pause);
                let mut writer = self.writer.lock();
                if writer.closed || writer.shared.stopping() {
                    return;
                }
                writer.process_group(None);
            } else {
                let deadline = self.writer.lock().next_flush_deadline();
                let first = match deadline {
                    Some(deadline) => match self.queue.recv_timeout(deadline) {
                        Ok(job) => Some(job),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    },
                    None => match self.queue.recv() {
                        Ok(job) => Some(job),
                        Err(_) => return,
                    },
                };
                let mut writer = self.writer.lock();
                writer.process_group(first);
                if writer.closed {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Group, OVERLAY_SCAN, parse_counter};
    use bytes::Bytes;
    use std::collections::HashMap;

    #[test]
    fn a_group_finds_the_latest_change_of_each_key_scanned_or_mapped() {
        let mut group = Group::default();
        let mut latest: HashMap<Bytes, Option<Bytes>> = HashMap::new();
        // Five keys rewritten in turn, with every third change a removal, well past the
        // point where the map takes over from the scan.
        for n in 0..(OVERLAY_SCAN * 4) {
            let key = Bytes::from(format!("k{}", n % 5));
            let record = (n % 3 != 0).then(|| Bytes::from(format!("v{n}")));
            group.record_change(key.clone(), record.clone());
            latest.insert(key, record);
            for (key, record) in &latest {
                assert_eq!(group.pending(key), Some(record), "after {n} changes");
            }
            assert_eq!(group.pending(b"untouched"), None);
        }
        group.clear();
        assert_eq!(group.pending(b"k1"), None);
    }

    #[test]
    fn counters_parse_like_memcached() {
        assert_eq!(parse_counter(b"0"), Some(0));
        assert_eq!(parse_counter(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_counter(b"18446744073709551616"), None);
        assert_eq!(parse_counter(b"9 "), Some(9));
        assert_eq!(parse_counter(b""), None);
        assert_eq!(parse_counter(b"q"), None);
        assert_eq!(parse_counter(b"-1"), None);
        assert_eq!(parse_counter(b" 12"), Some(12));
        assert_eq!(parse_counter(b"1 2"), None);
    }
}
