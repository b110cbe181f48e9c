//! The store: reads on the caller's thread, writes through the writer thread.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, unbounded};
use murakumo_engine::keys::{
    DEFAULT_NAMESPACE, NamespaceId, PartitionId, item_key, partition_prefix, successor,
};
use murakumo_engine::record::{HEADER_LEN, ItemHeader, ItemState, Record, decode_header};
use murakumo_engine::{Engine, EngineError, KeyHead, MemoryEngine, Table, WriteBatch};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::IdMap;
use crate::access::AccessInfo;
use crate::cache::{ItemCache, Lookup, key_hash};
use crate::clock::Clock;
use crate::error::StoreError;
use crate::expiry::is_expired;
use crate::ops::{
    ArithOutcome, ArithRequest, DeleteOutcome, DeleteRequest, FetchOutcome, FetchRequest, Item,
    ItemCursor, ItemRef, ItemSummary, RawRecord, StoreOutcome, StoreRequest,
};
use crate::partition::{
    FORMAT_KEY, FORMAT_VERSION, PARTITION_STATE_PREFIX, PENDING_FLUSH_PREFIX, PartitionState,
    parse_state_key,
};
use crate::placement::{PARTITIONS, partition_of};
use crate::sweep::{SweepKnowledge, run_sweeper};
use crate::wakeup::Wakeup;
use crate::writer::{Job, Op, OpOutcome, Writer, WriterHandle, record_size};

/// When writes become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync every commit group before acknowledging it (`--sync always`). Connections
    /// that write at the same time share each fsync.
    Always,
    /// Acknowledge once the write has reached the operating system (safe against a process
    /// crash), and fsync in the background at this interval (`--sync periodic`).
    Periodic(Duration),
}

/// The default fsync interval of [`SyncPolicy::Periodic`], in milliseconds.
///
/// Why 10 and not 5: an fsync costs the machine far more than its own few microseconds
/// of CPU. On the 2-core test VM each one submits two I/Os (the journal's pages, then its
/// inode, since fjall's journal is preallocated sparse and its blocks are allocated as it
/// fills), and the cores it interrupts are the ones serving requests. On a pipeline-1
/// 1:10 load at 50 connections, halving the rate (about 140 -> 80 fsyncs a second)
/// raised throughput 4-8% in four alternating series of 5-6 runs (machine CPU per
/// request, from `/proc/stat`, 9.94 -> 9.47 us; idle per request 0.59 -> 0.39 us).
/// Lowering the syncer's priority or making it `SCHED_BATCH` did not help: the cost is
/// the I/O, not the thread. A power cut can now lose the last 10 ms of acknowledged
/// writes instead of 5; a process crash still loses nothing, and `--sync always` nothing
/// at all.
pub const DEFAULT_SYNC_INTERVAL_MS: u64 = 10;

impl Default for SyncPolicy {
    fn default() -> Self {
        Self::Periodic(Duration::from_millis(DEFAULT_SYNC_INTERVAL_MS))
    }
}

/// How the background sweep that reclaims expired and flushed items paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepConfig {
    /// Pause between two full passes over all partitions.
    pub pass_interval: Duration,
    /// Pause between partitions within a pass, so a sweep never competes hard with
    /// client traffic. The starting value: `lru_crawler sleep` changes it while running
    /// ([`Store::set_sweep_pause`]).
    pub partition_pause: Duration,
    /// Records examined per engine scan.
    pub chunk: usize,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            pass_interval: Duration::from_secs(30),
            partition_pause: Duration::from_millis(2),
            chunk: 512,
        }
    }
}

/// Store configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Durability of acknowledged writes.
    pub sync: SyncPolicy,
    /// Largest value the store will build (append/prepend results included).
    pub max_value_len: usize,
    /// Expired-item reclamation.
    pub sweep: SweepConfig,
    /// Memory for the cache of hot item records in front of the engine, in bytes.
    pub item_cache_bytes: usize,
}

impl StoreConfig {
    /// The smallest memory limit of a store in memory storage: twice the largest value,
    /// the rule memcached applies to `-m` and `-I`. Any item then fits however full the
    /// memory is, by evicting others.
    pub fn smallest_memory_limit(&self) -> usize {
        2 * self.max_value_len
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            sync: SyncPolicy::default(),
            max_value_len: 1024 * 1024,
            sweep: SweepConfig::default(),
            item_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The longest a write waits for the engine's write buffer to drain (see
/// `Store::wait_for_write_buffer`). A memtable flush takes milliseconds to a few hundred
/// (a 64 MiB memtable of small items); a second is well past any healthy one.
const WRITE_STALL_LIMIT: Duration = Duration::from_secs(1);
/// How often a waiting write looks again: the timer's resolution.
const WRITE_STALL_STEP: Duration = Duration::from_millis(1);

/// Connections on a thread (tasks on its runtime) from which a write waits one turn of the
/// runtime before it commits; see [`others_may_join`].
const GATHER_FROM_TASKS: usize = 5;

/// Whether other writes may arrive on this thread in the current turn of its runtime, so
/// that a write waiting one turn would share its commit with them.
///
/// Why: with no pipelining each connection sends one write at a time, so a write that
/// commits at once is almost always alone in its group, and each pays the engine batch
/// and the journal's `write` on its own. The connections the same `epoll_wait` woke run in
/// one turn; a write that waits for the end of that turn is committed with theirs. With
/// 50 connections sending 100 B sets (2 threads), groups grew from 1 to about 3.5 jobs,
/// the connection threads' CPU per set fell from 8.1 to 7.1 us, and sets per second rose
/// 20-25%. With only a few connections per thread nobody joins, and the wait is pure
/// latency: at 4 connections (2 per thread) sets per second fell 3-6%. So a write waits
/// only on a thread that serves several connections. Idle ones count too; the cost there
/// is one extra poll of the writing task.
fn others_may_join() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|runtime| runtime.metrics().num_alive_tasks() >= GATHER_FROM_TASKS)
}

/// Lets every other task that is ready on this thread run before the caller goes on.
///
/// Not `tokio::task::yield_now`: that one defers the wakeup until the runtime has polled
/// its I/O driver, an extra `epoll_wait` per turn (0.11 -> 0.20 per set at 50
/// connections); in one alternating series it gave +20% sets per second to this +25%. A
/// task that wakes itself goes to the back of its runtime's run queue, behind the tasks
/// the last poll of the driver made ready.
async fn yield_one_turn() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

/// Counters the store maintains, with memcached's names where one exists.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Records stored, including expired ones not yet reclaimed (`curr_items`).
    pub curr_items: AtomicU64,
    /// Bytes of those records (`bytes`).
    pub bytes: AtomicU64,
    /// Writes of an item since start (`total_items`).
    pub total_items: AtomicU64,
    /// Expired or flushed records removed by the sweep (`reclaimed`, `crawler_reclaimed`).
    pub reclaimed: AtomicU64,
    /// Partitions the sweep has scanned (it skips those with nothing to reclaim).
    pub sweep_scans: AtomicU64,
    /// Records the sweep has examined (`crawler_items_checked`).
    pub sweep_records: AtomicU64,
    /// Reads that found the key's record expired (`get_expired`).
    pub get_expired: AtomicU64,
    /// Reads that found the key's record flushed by `flush_all` (`get_flushed`).
    pub get_flushed: AtomicU64,
    /// Commit groups written (each is one engine batch, and one fsync with `Always`).
    pub commit_groups: AtomicU64,
    /// Total time spent committing groups, in microseconds.
    pub commit_micros: AtomicU64,
    /// Writes that waited for the engine's write buffer to drain.
    pub write_stalls: AtomicU64,
    /// Total time those writes waited, in microseconds.
    pub write_stall_micros: AtomicU64,
    /// Items evicted to stay within the memory limit (memory mode; `evictions`).
    pub evictions: AtomicU64,
}

/// A snapshot of [`StoreStats`] plus engine figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStatsSnapshot {
    /// `curr_items`.
    pub curr_items: u64,
    /// `bytes`.
    pub bytes: u64,
    /// `total_items`.
    pub total_items: u64,
    /// `reclaimed`.
    pub reclaimed: u64,
    /// Partitions the sweep has scanned.
    pub sweep_scans: u64,
    /// `crawler_items_checked`.
    pub sweep_records: u64,
    /// `get_expired`.
    pub get_expired: u64,
    /// `get_flushed`.
    pub get_flushed: u64,
    /// Commit groups written.
    pub commit_groups: u64,
    /// Microseconds spent committing.
    pub commit_micros: u64,
    /// Writes that waited for the engine's write buffer.
    pub write_stalls: u64,
    /// Microseconds those writes waited.
    pub write_stall_micros: u64,
    /// `evictions`.
    pub evictions: u64,
    /// Bytes on disk.
    pub disk_bytes: u64,
    /// Bytes of records held in memory by the item cache.
    pub cached_bytes: u64,
}

/// State shared by the store handle, the writer, the syncer and the sweeper.
pub(crate) struct Shared {
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) clock: Clock,
    pub(crate) stats: StoreStats,
    /// Per namespace, per partition: records at or below this sequence were flushed.
    pub(crate) flushed: IdMap<NamespaceId, Vec<AtomicU64>>,
    /// Per namespace, per partition: the earliest time (the clock's seconds) at which a
    /// record committed since the sweeper last began a scan of the partition can lapse
    /// ([`lapses_at`]), or [`NEVER_DUE`] if no such record was written. The writer lowers it
    /// after each commit and the sweeper takes it when it begins a scan, so the sweeper
    /// learns when new records fall due without reading the partition.
    written_due: IdMap<NamespaceId, Vec<AtomicU32>>,
    /// Set by `lru_crawler crawl`: the next pass reads every partition holding anything
    /// that has lapsed, not only those where enough has.
    pub(crate) sweep_forced: AtomicBool,
    /// Why the store went out of service. Set once, never cleared; a lock-free read,
    /// because every request checks it.
    failure: OnceLock<String>,
    pub(crate) cache: ItemCache,
    /// Bumped after every committed group, so the syncer knows when there is work.
    pub(crate) writes_committed: AtomicU64,
    stopping: AtomicBool,
    /// Set once the writer has shut down; later submissions are refused.
    pub(crate) writer_closed: AtomicBool,
    pub(crate) sweep_wake: Wakeup,
    /// Tells the sweeper to stop and hand over what it knows (shutdown, before the
    /// writer's last commit).
    sweep_stop: AtomicBool,
    /// Wakes the syncer before its interval is up, so that a shutdown does not wait for
    /// it (the interval can be up to a minute).
    sync_wake: Wakeup,
    /// The sweep's switches, which operators set with `lru_crawler enable|disable|sleep|
    /// tocrawl`: whether it runs, its pause between partitions in microseconds, and how
    /// many records of a partition it reads per pass (0: all of them).
    pub(crate) sweep_enabled: AtomicBool,
    sweep_pause_micros: AtomicU64,
    pub(crate) sweep_limit: AtomicU32,
}

impl Shared {
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure.get().cloned()
    }

    /// Takes the store out of service. Logged once, loudly: an operator must act.
    pub(crate) fn fail(&self, err: &EngineError) {
        if self.failure.set(err.to_string()).is_ok() {
            tracing::error!(
                error = %err,
                "storage failure: this node stops serving reads and writes, because it can no \
                 longer guarantee that acknowledged writes are on disk; restart it after \
                 checking the disk"
            );
        }
    }

    pub(crate) fn flushed_seq(&self, namespace: NamespaceId, partition: PartitionId) -> &AtomicU64 {
        partition_counter(&self.flushed, namespace, partition)
    }

    /// The writer's report, after the commit, of a record written to a partition that can
    /// lapse at `due` without another write.
    pub(crate) fn note_lapsing_write(
        &self,
        namespace: NamespaceId,
        partition: PartitionId,
        due: u32,
    ) {
        if let Some(written) = self.written_due(namespace, partition) {
            written.fetch_min(due, Ordering::Release);
        }
    }

    pub(crate) fn written_due(
        &self,
        namespace: NamespaceId,
        partition: PartitionId,
    ) -> Option<&AtomicU32> {
        self.written_due
            .get(&namespace)
            .and_then(|v| v.get(usize::from(partition)))
    }

    /// Up to `limit` items of the partition whose keys begin with `prefix`, from `start`
    /// on, in key order, with the header of each record: from the engine, or in memory
    /// mode from the item table.
    pub(crate) fn scan_item_heads(
        &self,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyHead>, EngineError> {
        if self.cache.holds_items() {
            return Ok(self.cache.scan_heads(prefix, start, limit, HEADER_LEN));
        }
        self.engine
            .scan_heads(Table::Items, prefix, start, limit, HEADER_LEN)
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Whether the sweeper should stop now.
    pub(crate) fn sweep_should_stop(&self) -> bool {
        self.sweep_stop.load(Ordering::Acquire) || self.stopping()
    }

    pub(crate) fn sweep_soon(&self) {
        self.sweep_wake.wake();
    }

    fn wake_syncer(&self) {
        self.sync_wake.wake();
    }

    /// The sweep's pause between partitions, as `lru_crawler sleep` last set it.
    pub(crate) fn sweep_pause(&self) -> Duration {
        Duration::from_micros(self.sweep_pause_micros.load(Ordering::Relaxed))
    }
}

/// Whole microseconds in `duration`, for counters and atomics (saturating, which no real
/// duration reaches).
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// One partition's counter in a per-namespace table; a shared zero for a partition the
/// table does not have (an unknown namespace is refused before anything reads these).
fn partition_counter(
    table: &IdMap<NamespaceId, Vec<AtomicU64>>,
    namespace: NamespaceId,
    partition: PartitionId,
) -> &AtomicU64 {
    static NONE: AtomicU64 = AtomicU64::new(0);
    table
        .get(&namespace)
        .and_then(|v| v.get(usize::from(partition)))
        .unwrap_or(&NONE)
}

/// When a record becomes invisible while nothing writes its key again, so that the sweep
/// has to come back for it: at once (0) for a tombstone, at its expiry for a record that
/// expires, and `None` for one that never lapses. Flushed records are tracked by the flush
/// sequence instead.
pub(crate) fn lapses_at(header: &ItemHeader) -> Option<u32> {
    if header.state.has(ItemState::TOMBSTONE) {
        Some(0)
    } else {
        Some(header.expires_at).filter(|&at| at != 0)
    }
}

/// What [`Shared::written_due`] holds while no record written since the last scan can
/// lapse. An expiry this late (the year 2106) is taken for never too.
pub(crate) const NEVER_DUE: u32 = u32::MAX;

impl StoreStats {
    /// Counts a read that found a record it may not serve, as memcached's `get_flushed`
    /// or `get_expired` (a flushed record counts as flushed, whatever its expiry; a
    /// deleted one as neither).
    pub(crate) fn count_invisible_read(&self, header: &ItemHeader, now: u32, flushed_seq: u64) {
        if header.state.has(ItemState::TOMBSTONE) {
            return;
        }
        let counter = if header.seq <= flushed_seq {
            &self.get_flushed
        } else if is_expired(header.expires_at, now) {
            &self.get_expired
        } else {
            return;
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether a stored record is visible to clients at `now`.
pub(crate) fn is_visible(header: &ItemHeader, now: u32, flushed_seq: u64) -> bool {
    !header.state.has(ItemState::TOMBSTONE)
        && !is_expired(header.expires_at, now)
        && header.seq > flushed_seq
}

pub(crate) fn item_from_record(record: Record) -> Item {
    let h = record.header;
    Item {
        value: record.value,
        client_flags: h.client_flags,
        cas: h.cas,
        expires_at: h.expires_at,
        written_at: h.written_at,
        seq: h.seq,
        stale: h.state.has(ItemState::STALE),
        win_sent: h.state.has(ItemState::WIN_SENT),
    }
}

/// A handle to the node's item store. Cheap to clone; all clones share one store.
///
/// Reads run on the caller's thread straight against the engine (no queueing, so `get`
/// scales with the caller's threads). Every mutation goes to the single writer thread
/// (see the `writer` module for why) and resolves once it is committed under the
/// configured [`SyncPolicy`].
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    jobs: Sender<Job>,
    writer: Arc<WriterHandle>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// The sweeper, which returns what it knows when it stops (see [`Store::shutdown`]).
    sweeper: Arc<Mutex<Option<JoinHandle<SweepKnowledge>>>>,
    /// [`StoreConfig::smallest_memory_limit`], for `set_memory_limit`.
    smallest_memory_limit: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store on `engine`, recovering its bookkeeping, and starts the writer,
    /// the background syncer (periodic policy) and the sweeper.
    pub fn open(
        engine: Arc<dyn Engine>,
        config: StoreConfig,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let cache = ItemCache::new(config.item_cache_bytes);
        Self::start(engine, cache, config, clock)
    }

    /// Opens an empty store whose items live only in memory, within `limit_bytes` (DESIGN
    /// §3's `memory` storage mode, memcached's `-m`): items are evicted to make room,
    /// least recently used first as CLOCK approximates it (counted in `evictions`),
    /// nothing is written to disk, and nothing survives a restart. `config.item_cache_bytes` and `config.sync`
    /// do not apply.
    ///
    /// Why the items live in the item cache's table rather than in an engine: a read is
    /// then exactly a cached read of the persistent mode (one slot, one block), and a
    /// write replaces one entry, where an ordered in-memory engine behind the cache cost
    /// a set as much CPU as fjall did (a `BTreeMap` insert, plus the cache's copy). The
    /// writer, with its sequencing and memcached's rules, is the same in both modes; an
    /// in-memory engine keeps only the bookkeeping (partition sequence numbers).
    pub fn open_in_memory(
        limit_bytes: usize,
        config: StoreConfig,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let config = StoreConfig {
            sync: SyncPolicy::default(),
            ..config
        };
        Self::start(
            Arc::new(MemoryEngine::new()),
            ItemCache::holding_items(limit_bytes),
            config,
            clock,
        )
    }

    fn start(
        engine: Arc<dyn Engine>,
        cache: ItemCache,
        config: StoreConfig,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let unavailable = |e: EngineError| StoreError::Unavailable(e.to_string());
        check_format(engine.as_ref()).map_err(unavailable)?;
        let (partitions, pending_flush) = load_bookkeeping(engine.as_ref()).map_err(unavailable)?;
        let known = SweepKnowledge::load(engine.as_ref(), &partitions).map_err(unavailable)?;
        let all_partitions: usize = partitions.values().map(Vec::len).sum();
        tracing::info!(
            "sweep: {} of {all_partitions} partitions are as the last clean shutdown left \
             them; the rest are read once to find expired items",
            known.known_partitions()
        );
        let flushed = partitions
            .iter()
            .map(|(ns, states)| {
                let seqs = states
                    .iter()
                    .map(|s| AtomicU64::new(s.flushed_seq))
                    .collect();
                (*ns, seqs)
            })
            .collect();
        let written_due = partitions
            .iter()
            .map(|(ns, states)| {
                let dues = states.iter().map(|_| AtomicU32::new(NEVER_DUE)).collect();
                (*ns, dues)
            })
            .collect();
        let shared = Arc::new(Shared {
            engine,
            clock,
            stats: StoreStats::default(),
            flushed,
            written_due,
            sweep_forced: AtomicBool::new(false),
            failure: OnceLock::new(),
            cache,
            writes_committed: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            writer_closed: AtomicBool::new(false),
            sweep_wake: Wakeup::default(),
            sweep_stop: AtomicBool::new(false),
            sync_wake: Wakeup::default(),
            sweep_enabled: AtomicBool::new(true),
            sweep_pause_micros: AtomicU64::new(micros(config.sweep.partition_pause)),
            sweep_limit: AtomicU32::new(0),
        });
        let (items, bytes) = partitions
            .values()
            .flatten()
            .fold((0, 0), |(i, b), s| (i + s.items, b + s.bytes));
        shared.stats.curr_items.store(items, Ordering::Relaxed);
        shared.stats.bytes.store(bytes, Ordering::Relaxed);

        let (jobs, job_queue) = unbounded();
        let writer = Writer::new(
            Arc::clone(&shared),
            job_queue,
            partitions,
            pending_flush,
            config.sync == SyncPolicy::Always,
            config.max_value_len,
        );
        let writer = Arc::new(WriterHandle::new(writer, config.sync != SyncPolicy::Always));
        let mut threads = {
            let writer = Arc::clone(&writer);
            vec![spawn("murakumo-writer", move || writer.run())]
        };
        if let SyncPolicy::Periodic(interval) = config.sync
            && !shared.cache.holds_items()
        {
            let shared = Arc::clone(&shared);
            threads.push(spawn("murakumo-syncer", move || {
                run_syncer(&shared, interval);
            }));
        }
        let sweeper = {
            let shared = Arc::clone(&shared);
            let jobs = jobs.clone();
            let sweep = config.sweep;
            spawn("murakumo-sweeper", move || {
                run_sweeper(&shared, &jobs, &sweep, known)
            })
        };
        Ok(Self {
            shared,
            jobs,
            writer,
            threads: Arc::new(Mutex::new(threads)),
            sweeper: Arc::new(Mutex::new(Some(sweeper))),
            smallest_memory_limit: config.smallest_memory_limit(),
        })
    }

    fn available(&self) -> Result<(), StoreError> {
        match self.shared.failure() {
            Some(reason) => Err(StoreError::Unavailable(reason)),
            None => Ok(()),
        }
    }

    /// Reads one item and marks it fetched. Expired, flushed and deleted items are misses.
    pub fn get(&self, namespace: NamespaceId, key: &[u8]) -> Result<Option<Item>, StoreError> {
        Ok(self
            .get_observed(namespace, key, true)?
            .map(|(item, _)| item))
    }

    /// Reads one item, for a caller that only writes it out (a text `get` hit). The value
    /// stays in the bytes it was read from, which keeps a read served by the item cache
    /// free of allocations.
    pub fn get_ref(
        &self,
        namespace: NamespaceId,
        key: &[u8],
    ) -> Result<Option<ItemRef>, StoreError> {
        Ok(self.read(namespace, key, true)?.map(|(item, _)| item))
    }

    /// Reads one item and reports its earlier fetches (meta `h`, `l`); marks it fetched
    /// unless `bump` is false (meta `u`).
    pub fn get_observed(
        &self,
        namespace: NamespaceId,
        key: &[u8],
        bump: bool,
    ) -> Result<Option<(Item, AccessInfo)>, StoreError> {
        Ok(self
            .get_ref_observed(namespace, key, bump)?
            .map(|(item, access)| (item.into_item(), access)))
    }

    /// [`get_observed`](Self::get_observed) for a caller that only writes the item out
    /// (a meta get): the value stays where it was read, as with [`get_ref`](Self::get_ref).
    pub fn get_ref_observed(
        &self,
        namespace: NamespaceId,
        key: &[u8],
        bump: bool,
    ) -> Result<Option<(ItemRef, AccessInfo)>, StoreError> {
        self.read(namespace, key, bump)
    }

    fn read(
        &self,
        namespace: NamespaceId,
        key: &[u8],
        bump: bool,
    ) -> Result<Option<(ItemRef, AccessInfo)>, StoreError> {
        self.available()?;
        let Some(flushed) = self.shared.flushed.get(&namespace) else {
            return Err(StoreError::UnknownNamespace(namespace));
        };
        let partition = partition_of(namespace, key);
        let engine_key = item_key(namespace, partition, key);
        let now = self.shared.clock.now();
        // An expired or flushed record is marked too; it is never served, and its next
        // version starts unmarked.
        let fetched_at = bump.then_some(now);
        let (raw, previous_fetch) =
            match self
                .shared
                .cache
                .get(key_hash(&engine_key), &engine_key, fetched_at)
            {
                Lookup::Hit {
                    record,
                    previous_fetch,
                } => (RawRecord::Cached(record), previous_fetch),
                Lookup::Miss(_) if self.shared.cache.holds_items() => return Ok(None),
                Lookup::Miss(token) => match self.shared.engine.get(Table::Items, &engine_key) {
                    Ok(Some(raw)) => {
                        self.shared.cache.fill(token, &engine_key, &raw, fetched_at);
                        (RawRecord::Loaded(raw), None)
                    }
                    Ok(None) => return Ok(None),
                    Err(err) => return Err(self.failed(&err)),
                },
            };
        let header = decode_header(raw.as_bytes()).map_err(|e| self.failed(&e.into()))?;
        let flushed_seq = flushed[usize::from(partition)].load(Ordering::Acquire);
        if !is_visible(&header, now, flushed_seq) {
            self.shared
                .stats
                .count_invisible_read(&header, now, flushed_seq);
            return Ok(None);
        }
        let access = AccessInfo::new(previous_fetch, header.written_at);
        Ok(Some((ItemRef { raw, header }, access)))
    }

    /// Records a fetch of `item` (returned by [`fetch`](Self::fetch) or
    /// [`arith`](Self::arith)) and reports its earlier fetches.
    pub fn observe_fetch(
        &self,
        namespace: NamespaceId,
        key: &[u8],
        item: &Item,
        bump: bool,
    ) -> AccessInfo {
        let engine_key = item_key(namespace, partition_of(namespace, key), key);
        let fetched_at = bump.then(|| self.shared.clock.now());
        let previous_fetch = self
            .shared
            .cache
            .record_fetch(&engine_key, item.seq, fetched_at);
        AccessInfo::new(previous_fetch, item.written_at)
    }

    fn failed(&self, err: &EngineError) -> StoreError {
        self.shared.fail(err);
        StoreError::Unavailable(self.shared.failure().unwrap_or_default())
    }

    async fn submit(&self, namespace: NamespaceId, op: Op) -> Result<OpOutcome, StoreError> {
        self.available()?;
        if self.shared.engine.write_buffer_full() {
            self.wait_for_write_buffer().await;
        }
        let (reply, answer) = oneshot::channel();
        self.queue(Job::Mutate {
            namespace,
            op,
            reply,
        })?;
        if self.writer.is_inline() && others_may_join() {
            // Should this task be dropped while it waits (its runtime shutting down), the
            // job is still committed by the next drain or the writer thread's tick, as a
            // job taken into someone else's group would be.
            yield_one_turn().await;
        }
        self.commit_queued();
        answer.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Holds a write back while the engine's write buffer is full (see
    /// [`Engine::write_buffer_full`]), for at most [`WRITE_STALL_LIMIT`].
    ///
    /// The wait is a timer on the connection's task, so the connection's thread goes on
    /// serving reads and the writes of others meanwhile, and the writer (which may run on
    /// this thread) is never blocked by it. Past the limit the write goes ahead: the
    /// engine then applies its own limits, and a flush that has failed for good shows as
    /// the write's storage error instead of as writes that never finish.
    async fn wait_for_write_buffer(&self) {
        let started = std::time::Instant::now();
        while self.shared.engine.write_buffer_full() && started.elapsed() < WRITE_STALL_LIMIT {
            tokio::time::sleep(WRITE_STALL_STEP).await;
        }
        let stats = &self.shared.stats;
        stats.write_stalls.fetch_add(1, Ordering::Relaxed);
        stats
            .write_stall_micros
            .fetch_add(micros(started.elapsed()), Ordering::Relaxed);
    }

    /// Queues a job for the writer and, when commits run inline, commits it (and whatever
    /// else is queued) on this thread.
    fn enqueue(&self, job: Job) -> Result<(), StoreError> {
        self.queue(job)?;
        self.commit_queued();
        Ok(())
    }

    /// Queues a job for the writer without committing it.
    fn queue(&self, job: Job) -> Result<(), StoreError> {
        if self.shared.writer_closed.load(Ordering::Acquire) {
            return Err(StoreError::ShuttingDown);
        }
        self.jobs.send(job).map_err(|_| StoreError::ShuttingDown)
    }

    /// When commits run inline, commits whatever is queued on this thread (unless another
    /// thread is already doing so); either way makes sure a job that raced shutdown is
    /// answered rather than stranded.
    fn commit_queued(&self) {
        if self.writer.is_inline() {
            self.writer.drain();
        }
        if self.shared.writer_closed.load(Ordering::Acquire) {
            self.writer.reject_queued();
        }
    }

    /// set / add / replace / append / prepend / cas.
    pub async fn store(
        &self,
        namespace: NamespaceId,
        request: StoreRequest,
    ) -> Result<StoreOutcome, StoreError> {
        match self.submit(namespace, Op::Store(request)).await? {
            OpOutcome::Store(outcome) => Ok(outcome),
            other => Err(mismatched(&other)),
        }
    }

    /// delete, or meta invalidation.
    pub async fn delete(
        &self,
        namespace: NamespaceId,
        request: DeleteRequest,
    ) -> Result<DeleteOutcome, StoreError> {
        match self.submit(namespace, Op::Delete(request)).await? {
            OpOutcome::Delete(outcome) => Ok(outcome),
            other => Err(mismatched(&other)),
        }
    }

    /// incr / decr.
    pub async fn arith(
        &self,
        namespace: NamespaceId,
        request: ArithRequest,
    ) -> Result<ArithOutcome, StoreError> {
        match self.submit(namespace, Op::Arith(request)).await? {
            OpOutcome::Arith(outcome) => Ok(outcome),
            other => Err(mismatched(&other)),
        }
    }

    /// touch / gat / meta get with updaters.
    pub async fn fetch(
        &self,
        namespace: NamespaceId,
        request: FetchRequest,
    ) -> Result<FetchOutcome, StoreError> {
        match self.submit(namespace, Op::Fetch(request)).await? {
            OpOutcome::Fetch(outcome) => Ok(outcome),
            other => Err(mismatched(&other)),
        }
    }

    /// `flush_all [delay]`: every item stored before the flush takes effect becomes
    /// invisible at once; the sweep reclaims the space afterwards.
    pub async fn flush_all(
        &self,
        namespace: NamespaceId,
        delay_secs: u32,
    ) -> Result<(), StoreError> {
        self.available()?;
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job::FlushAll {
            namespace,
            delay_secs,
            reply,
        })?;
        answer.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Examines up to `limit` records of `namespace` from `cursor` on, moves the cursor
    /// past them, and returns the visible ones among them (partition by partition, in key
    /// order within each). Call again until [`ItemCursor::is_done`]; a call may return
    /// nothing before the walk is over.
    ///
    /// Why a cursor rather than a list: a key dump of a large store runs on a connection
    /// thread, between writes of its reply. Each call is one short engine scan of record
    /// headers (never values), so neither the thread nor the memory is held for long.
    pub fn scan_items(
        &self,
        namespace: NamespaceId,
        cursor: &mut ItemCursor,
        limit: usize,
    ) -> Result<Vec<ItemSummary>, StoreError> {
        self.available()?;
        let Some(flushed) = self.shared.flushed.get(&namespace) else {
            return Err(StoreError::UnknownNamespace(namespace));
        };
        let now = self.shared.clock.now();
        let limit = limit.max(1);
        let mut examined = 0;
        let mut found = Vec::new();
        while examined < limit && !cursor.is_done() {
            let partition = cursor.partition;
            let prefix = partition_prefix(namespace, partition);
            let start = cursor.start.take().unwrap_or_else(|| prefix.to_vec());
            let wanted = limit - examined;
            let chunk = self
                .shared
                .scan_item_heads(&prefix, &start, wanted)
                .map_err(|e| self.failed(&e))?;
            examined += chunk.len();
            match chunk.last() {
                Some(last) if chunk.len() == wanted => cursor.start = Some(successor(&last.key)),
                _ => cursor.partition += 1,
            }
            let flushed_seq = flushed[usize::from(partition)].load(Ordering::Acquire);
            for entry in chunk {
                let header = decode_header(&entry.head).map_err(|e| self.failed(&e.into()))?;
                if !is_visible(&header, now, flushed_seq) {
                    continue;
                }
                let previous_fetch = self.shared.cache.record_fetch(&entry.key, header.seq, None);
                let value_len = entry.value_len.saturating_sub(HEADER_LEN);
                found.push(ItemSummary {
                    stored_size: record_size(&entry.key, value_len),
                    key: entry.key.slice(prefix.len()..),
                    value_len,
                    client_flags: header.client_flags,
                    cas: header.cas,
                    expires_at: header.expires_at,
                    access: AccessInfo::new(previous_fetch, header.written_at),
                });
            }
        }
        Ok(found)
    }

    /// `stats reset`: zeroes the cumulative counters, as memcached does (`total_items`,
    /// `reclaimed`, `get_expired`, ...); the gauges (`curr_items`, `bytes`) stay.
    pub fn reset_stats(&self) {
        let s = &self.shared.stats;
        for counter in [
            &s.total_items,
            &s.reclaimed,
            &s.sweep_scans,
            &s.sweep_records,
            &s.get_expired,
            &s.get_flushed,
            &s.commit_groups,
            &s.commit_micros,
            &s.write_stalls,
            &s.write_stall_micros,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// Counters for `stats`.
    pub fn stats(&self) -> StoreStatsSnapshot {
        let s = &self.shared.stats;
        StoreStatsSnapshot {
            curr_items: s.curr_items.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            total_items: s.total_items.load(Ordering::Relaxed),
            reclaimed: s.reclaimed.load(Ordering::Relaxed),
            sweep_scans: s.sweep_scans.load(Ordering::Relaxed),
            sweep_records: s.sweep_records.load(Ordering::Relaxed),
            get_expired: s.get_expired.load(Ordering::Relaxed),
            get_flushed: s.get_flushed.load(Ordering::Relaxed),
            commit_groups: s.commit_groups.load(Ordering::Relaxed),
            commit_micros: s.commit_micros.load(Ordering::Relaxed),
            write_stalls: s.write_stalls.load(Ordering::Relaxed),
            write_stall_micros: s.write_stall_micros.load(Ordering::Relaxed),
            evictions: s.evictions.load(Ordering::Relaxed),
            disk_bytes: self.shared.engine.disk_space(),
            cached_bytes: self.shared.cache.bytes() as u64,
        }
    }

    /// The engine's background work: write buffer, flushes, compactions (`stats engine`).
    pub fn engine_metrics(&self) -> murakumo_engine::EngineMetrics {
        self.shared.engine.metrics()
    }

    /// Starts a sweep pass now rather than at the next interval (`lru_crawler crawl`):
    /// expired and flushed items are reclaimed in the background, in every partition that
    /// holds any (a regular pass waits until enough of a partition has lapsed).
    pub fn sweep_now(&self) {
        self.shared.sweep_forced.store(true, Ordering::Release);
        self.shared.sweep_soon();
    }

    /// The reason the store went out of service, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// Whether the items live only in memory ([`open_in_memory`](Self::open_in_memory)).
    pub fn in_memory(&self) -> bool {
        self.shared.cache.holds_items()
    }

    /// In memory storage, the bytes the items may take (`limit_maxbytes`); `None` in
    /// persistent storage.
    pub fn memory_limit(&self) -> Option<usize> {
        self.shared.cache.limit()
    }

    /// In memory storage, changes the bytes the items may take (`cache_memlimit`), as
    /// memcached does while it runs: a lower limit is reached by evicting a few items
    /// more with each write. Refused (false) below twice the largest value, which
    /// memcached refuses at start, or in persistent storage.
    pub fn set_memory_limit(&self, bytes: usize) -> bool {
        if !self.in_memory() || bytes < self.smallest_memory_limit {
            return false;
        }
        self.shared.cache.set_limit(bytes);
        true
    }

    /// The store's clock.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// `lru_crawler enable`: lets the background sweep run again. `false` if it already
    /// ran (memcached refuses to start a crawler that runs).
    pub fn enable_sweep(&self) -> bool {
        let was_off = !self.shared.sweep_enabled.swap(true, Ordering::AcqRel);
        if was_off {
            self.shared.sweep_soon();
        }
        was_off
    }

    /// `lru_crawler disable`: pauses the background sweep after the partition it is in.
    /// Lapsed items stay invisible; only reclaiming their space waits.
    pub fn disable_sweep(&self) {
        self.shared.sweep_enabled.store(false, Ordering::Release);
    }

    /// Whether the background sweep runs.
    pub fn sweep_enabled(&self) -> bool {
        self.shared.sweep_enabled.load(Ordering::Acquire)
    }

    /// `lru_crawler sleep`: the sweep's pause between partitions.
    pub fn set_sweep_pause(&self, pause: Duration) {
        self.shared
            .sweep_pause_micros
            .store(micros(pause), Ordering::Relaxed);
    }

    /// The sweep's pause between partitions.
    pub fn sweep_pause(&self) -> Duration {
        self.shared.sweep_pause()
    }

    /// `lru_crawler tocrawl`: how many records of a partition one pass of the sweep reads
    /// at most (the next pass goes on from there); 0 for all of them.
    pub fn set_sweep_limit(&self, records: u32) {
        self.shared.sweep_limit.store(records, Ordering::Relaxed);
    }

    /// The sweep's records per partition per pass; 0 for all.
    pub fn sweep_limit(&self) -> u32 {
        self.shared.sweep_limit.load(Ordering::Relaxed)
    }

    /// Commits and fsyncs everything queued so far, then stops the background threads.
    /// Mutations submitted afterwards fail with [`StoreError::ShuttingDown`]. Call it
    /// before dropping the last handle: until then the writer, syncer and sweeper threads
    /// keep running (and keep the engine open).
    ///
    /// The sweeper stops first and hands over what it knows, which the writer's last
    /// commit leaves for the next start (see [`SweepKnowledge`]); the removals it queued
    /// before it stopped are ahead of the shutdown in the writer's queue, so they are
    /// committed too.
    pub async fn shutdown(&self) {
        self.shared.sweep_stop.store(true, Ordering::Release);
        self.shared.sweep_soon();
        let sweeper = self.sweeper.lock().take();
        let sweep = match sweeper {
            Some(sweeper) => tokio::task::spawn_blocking(move || sweeper.join())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => SweepKnowledge::default(),
        };
        let (reply, done) = oneshot::channel();
        if self.enqueue(Job::Shutdown { reply, sweep }).is_ok() {
            let _ = done.await;
        }
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.sweep_soon();
        self.shared.wake_syncer();
        let threads = std::mem::take(&mut *self.threads.lock());
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

fn mismatched(outcome: &OpOutcome) -> StoreError {
    StoreError::Unavailable(format!(
        "writer answered with the wrong kind of outcome: {outcome:?}"
    ))
}

fn spawn<T: Send + 'static>(
    name: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    match std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
    {
        Ok(handle) => handle,
        // Without its threads the store cannot work at all; this is start-up only.
        Err(err) => panic!("cannot start thread {name}: {err}"),
    }
}

fn check_format(engine: &dyn Engine) -> Result<(), EngineError> {
    match engine.get(Table::Meta, FORMAT_KEY)? {
        Some(version) if version.as_ref() == [FORMAT_VERSION] => Ok(()),
        Some(version) => Err(EngineError::Storage(format!(
            "data directory has store format {version:?}, this build reads {FORMAT_VERSION}"
        ))),
        None => {
            let mut batch = WriteBatch::new();
            batch.put(Table::Meta, FORMAT_KEY, vec![FORMAT_VERSION]);
            engine.write(batch)?;
            engine.sync()
        }
    }
}

type Bookkeeping = (
    IdMap<NamespaceId, Vec<PartitionState>>,
    IdMap<NamespaceId, u32>,
);

fn load_bookkeeping(engine: &dyn Engine) -> Result<Bookkeeping, EngineError> {
    let mut partitions = IdMap::default();
    partitions.insert(
        DEFAULT_NAMESPACE,
        vec![PartitionState::default(); usize::from(PARTITIONS)],
    );
    for (key, value) in engine.scan(Table::Meta, PARTITION_STATE_PREFIX, b"", usize::MAX)? {
        let corrupt = || EngineError::Storage(format!("corrupt partition state under {key:?}"));
        let (ns, partition) = parse_state_key(&key).ok_or_else(corrupt)?;
        let state = PartitionState::decode(&value).ok_or_else(corrupt)?;
        let states = partitions
            .entry(ns)
            .or_insert_with(|| vec![PartitionState::default(); usize::from(PARTITIONS)]);
        if let Some(slot) = states.get_mut(usize::from(partition)) {
            *slot = state;
        }
    }
    let mut pending_flush = IdMap::default();
    for (key, value) in engine.scan(Table::Meta, PENDING_FLUSH_PREFIX, b"", usize::MAX)? {
        let (Some(ns), Ok(deadline)) = (
            key.get(1..5)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes),
            <[u8; 4]>::try_from(value.as_ref()).map(u32::from_be_bytes),
        ) else {
            return Err(EngineError::Storage(format!(
                "corrupt pending flush under {key:?}"
            )));
        };
        pending_flush.insert(ns, deadline);
    }
    Ok((partitions, pending_flush))
}

fn run_syncer(shared: &Shared, interval: Duration) {
    let mut synced = 0;
    loop {
        // Woken early only to stop: the writer's shutdown has already synced everything.
        shared.sync_wake.wait(interval);
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let committed = shared.writes_committed.load(Ordering::Acquire);
        if committed == synced || shared.failure().is_some() {
            continue;
        }
        match shared.engine.sync() {
            Ok(()) => synced = committed,
            Err(err) => shared.fail(&err),
        }
    }
}
