//! The storage engine contract.
//!
//! Everything above this crate (the store, replication, partition moves) talks to storage
//! through the [`Engine`] trait and the formats defined here; nothing above it names a
//! concrete engine. Like tikv's `engine_traits`, this crate deliberately has no dependency on
//! any engine, so the fjall engine (`murakumo-engine-fjall`) and the in-memory engine
//! ([`MemoryEngine`], for memory namespaces and deterministic simulation tests) are
//! interchangeable, and the on-disk formats are owned by us rather than by the engine.
//!
//! What lives here:
//! - [`keys`]: how a (namespace, partition, user key) triple becomes an engine key, so that a
//!   partition is one contiguous key range (moving a partition is a prefix scan);
//! - [`record`]: the versioned item header (client flags, expiry, CAS, sequence number, state
//!   bits) that prefixes every stored value, guarded by fixture tests;
//! - [`Engine`], [`WriteBatch`], [`Table`]: the operations an engine must provide.

pub mod conformance;
pub mod keys;
mod memory;
pub mod record;

use bytes::Bytes;

pub use memory::MemoryEngine;

/// Figures an operator watches to see whether the engine keeps up with the write load; the
/// reply to `stats engine`.
///
/// Why they are worth a stats group: an LSM takes writes into memory at once and pays for
/// them later, in flushes and compactions on background threads. When those fall behind,
/// nothing fails; writes slow down instead (fjall holds back writers once level 0 holds
/// 20 runs, and halts them at 30), the disk fills with tables waiting to be merged, and the
/// journal grows. These figures show the debt building before the latency does. An engine
/// without a background side (the memory engine) reports zeros.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineMetrics {
    /// Bytes of writes held in memory and not yet flushed to tables (every memtable,
    /// sealed or not, in every table).
    pub write_buffer_bytes: u64,
    /// What the write buffer may hold before writes wait for a flush (see
    /// [`Engine::write_buffer_full`]); 0 where there is no such bound.
    pub write_buffer_limit: u64,
    /// Memtables sealed and waiting to be flushed.
    pub sealed_memtables: u64,
    /// Flushes queued for the engine's worker threads.
    pub flushes_pending: u64,
    /// Compactions running now.
    pub compactions_running: u64,
    /// Compactions finished since start.
    pub compactions_done: u64,
    /// Time spent compacting since start, in microseconds.
    pub compaction_micros: u64,
    /// Journal files on disk: the active one and those whose memtables are not flushed
    /// yet. (Not their size: fjall sizes the active journal to its limit up front, so its
    /// length says nothing about what it holds; the write buffer does.)
    pub journal_files: u64,
    /// Tables on disk, in every level and every table.
    pub tables: u64,
    /// Tables in level 0, where every flush lands and which every read must search:
    /// compaction keeps it to a few, so a count that climbs means compaction is behind.
    pub level0_tables: u64,
    /// Files holding large values apart from the tables (key-value separation).
    pub blob_files: u64,
    /// Bytes of data blocks in the block cache.
    pub block_cache_bytes: u64,
    /// The block cache's capacity in bytes.
    pub block_cache_limit: u64,
}

/// The logical tables an engine keeps apart.
///
/// Items and bookkeeping live in separate tables so that a scan over items (a partition
/// move, the expiry sweep) never has to step over metadata, and so engines can tune them
/// differently (fjall gives each its own LSM tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// User items: key from [`keys::ItemKey`], value from [`record`].
    Items,
    /// Store bookkeeping: per-partition sequence numbers, flush watermarks, format version.
    Meta,
}

/// One change inside a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Insert or overwrite `key` in `table`.
    Put {
        /// Which table.
        table: Table,
        /// Engine key.
        key: Bytes,
        /// Engine value.
        value: Bytes,
    },
    /// Remove `key` from `table` (absent keys are fine).
    Delete {
        /// Which table.
        table: Table,
        /// Engine key.
        key: Bytes,
    },
}

/// A group of changes applied atomically: after a crash either all of them are visible or
/// none is.
///
/// Group commit depends on this: the store's writer collects the mutations of many
/// connections, together with the sequence-number bookkeeping they advance, into one batch.
/// If the bookkeeping could land without the items (or the reverse), a restarted server
/// would hand out a sequence number twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, table: Table, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.ops.push(WriteOp::Put {
            table,
            key: key.into(),
            value: value.into(),
        });
    }

    /// Adds a delete.
    pub fn delete(&mut self, table: Table, key: impl Into<Bytes>) {
        self.ops.push(WriteOp::Delete {
            table,
            key: key.into(),
        });
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations, in the order they were added (later ones win on the same key).
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// Takes the operations out.
    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }
}

/// A storage failure.
///
/// Callers do not try to recover from these: the store treats any engine error as "this
/// node may no longer hold what it acknowledged" and takes itself out of service. The
/// message is kept for the log line an operator will read.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine's own I/O or consistency failure.
    #[error("storage engine failure: {0}")]
    Storage(String),
    /// A stored record could not be decoded (corruption, or a format from the future).
    #[error("corrupt record: {0}")]
    Corrupt(#[from] record::RecordError),
}

/// A key-value pair returned by a scan.
pub type KeyValue = (Bytes, Bytes);

/// An entry returned by [`Engine::scan_heads`]: a key, the start of its value, and the
/// value's whole length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHead {
    /// Engine key.
    pub key: Bytes,
    /// The first bytes of the value (all of it if it is shorter than asked for).
    pub head: Bytes,
    /// Length of the whole value.
    pub value_len: usize,
}

impl KeyHead {
    /// The entry for `key` whose value is `value`. The head is a copy, so a chunk of heads
    /// never keeps a value (or the engine block it sits in) alive.
    pub fn of(key: Bytes, value: &[u8], head_len: usize) -> Self {
        Self {
            key,
            head: Bytes::copy_from_slice(&value[..head_len.min(value.len())]),
            value_len: value.len(),
        }
    }
}

/// What the store needs from a storage engine.
///
/// The contract, which both engines are tested against:
/// - `write` applies a batch atomically and, when it returns, the batch has reached the
///   operating system (it survives the process being killed, not necessarily a power cut);
/// - `sync` returns once everything written before it is on stable storage;
/// - reads see every batch whose `write` has returned.
///
/// Methods are synchronous: engines are fast in-memory structures with their own internal
/// locking, and the store decides which thread runs them.
pub trait Engine: Send + Sync + 'static {
    /// Reads one key.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>, EngineError>;

    /// The length of one key's value, or `None` if the key is absent.
    ///
    /// Why apart from [`get`](Self::get): an engine that keeps large values apart from its
    /// index (fjall's blob files) knows their length without reading them, and a plain
    /// overwrite needs only the length of the record it replaces. Reading a 512 KiB value
    /// to learn it was most of what such a `set` read.
    fn value_len(&self, table: Table, key: &[u8]) -> Result<Option<usize>, EngineError> {
        Ok(self.get(table, key)?.map(|value| value.len()))
    }

    /// Applies a batch atomically; see the trait documentation for durability.
    fn write(&self, batch: WriteBatch) -> Result<(), EngineError>;

    /// Makes everything written so far durable (fsync).
    fn sync(&self) -> Result<(), EngineError>;

    /// Returns up to `limit` entries of `table` whose keys start with `prefix` and are
    /// greater than or equal to `start`, in key order.
    ///
    /// A scan is chunked rather than an iterator so that callers never hold engine state
    /// across an await point or a long pause; to continue, call again with `start` set just
    /// past the last key returned (see [`keys::successor`]).
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError>;

    /// Like [`scan`](Self::scan), but each entry keeps only the first `head_len` bytes of
    /// its value (and the value's length).
    ///
    /// Why: walks over whole partitions (the expiry sweep, key dumps) need each record's
    /// header, not its value. A chunk of full values costs the chunk length times the
    /// largest value in memory (512 MiB for 512 records of 1 MiB); a chunk of heads costs
    /// a few dozen bytes per record.
    fn scan_heads(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
        head_len: usize,
    ) -> Result<Vec<KeyHead>, EngineError>;

    /// Bytes the engine occupies on disk (0 for memory engines); for `stats`.
    fn disk_space(&self) -> u64;

    /// How far the engine's background work (flushes, compactions) is keeping up; for
    /// `stats engine`. Zeros for an engine that has none.
    fn metrics(&self) -> EngineMetrics {
        EngineMetrics::default()
    }

    /// Whether new writes should wait: the engine holds as many unflushed writes in
    /// memory as its budget allows, and a flush that will free some is under way.
    ///
    /// Why: an LSM takes writes into memory faster than it can flush them to disk, and
    /// without a bound its write buffer grows to whatever its journal limit allows (for
    /// fjall, at least 64 MiB) whatever memory the operator gave the node. A writer that
    /// waits for the flush keeps memory within the budget; reads do not wait. Engines
    /// that keep nothing unflushed, or whose memory is the data itself, say `false`.
    fn write_buffer_full(&self) -> bool {
        false
    }
}
