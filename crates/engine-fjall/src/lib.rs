//! The persistent storage engine, on fjall.
//!
//! fjall writes every batch to its journal before applying it, so a batch that has been
//! handed to the operating system survives a `kill -9`; an fsync of the journal makes it
//! survive a power cut. That maps directly onto the [`Engine`] contract: `write` commits a
//! batch with journal flush-to-OS, and `sync` fsyncs the journal. Group commit (many
//! connections' writes in one batch and one fsync) is the store's job, above this crate.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use fjall::{
    CompressionType, Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode,
};
use murakumo_engine::{
    Engine, EngineError, EngineMetrics, KeyHead, KeyValue, Table, WriteBatch, WriteOp,
};

const MIB: u64 = 1024 * 1024;

/// The smallest journaling limit fjall accepts.
const MIN_JOURNALING_BYTES: u64 = 64 * MIB;

/// Why fjall's journal does not compress (its default is LZ4 for entries of 4 KiB and
/// more): for the same reason the blobs are not compressed. Large memcached values come
/// compressed by their clients or are incompressible, and the compression ran on the
/// connection thread that commits the write, while the journal is deleted once its
/// memtable is flushed. Measured with 512 KiB values (20 connections, 1:1, 2,000 keys,
/// 3 alternating 8 s runs on fresh nodes): 1,003-1,111 ops/s before, 1,110-1,154 after,
/// with the same bytes written to disk per request. Each journal entry records whether it
/// is compressed, so journals written before are still read.
const JOURNAL_COMPRESSION: CompressionType = CompressionType::None;

/// Item records of this many bytes and more are kept in fjall's blob files, and the tree
/// holds a pointer to each (key-value separation, as in WiscKey).
///
/// Why: a compaction rewrites every value in the tables it merges, and with large items
/// that rewriting is most of the engine's work and of its allocations. Measured with
/// 512 KiB values (20 connections, 1:1 set:get, 2,000 keys, 15 s): at `-m 32` throughput
/// went from 314 to 653-679 ops/s and the RSS high-water mark from 204 to 162-173 MiB;
/// at the default `-m 256`, from 679 to 927-964 ops/s and 475 to 392-400 MiB, and the
/// data directory held 1.5 GB instead of 4.2 for 1 GB of live items. Small records stay
/// in the tree, where a point read finds them in one block. Blobs are not compressed:
/// memcached clients compress large values themselves, and tables do not compress their
/// first levels either. fjall fixes the choice when it creates the table, so a data
/// directory created before keeps its layout.
const SEPARATE_VALUES_FROM: u32 = 4096;

/// Tuning for the fjall engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FjallOptions {
    /// Block cache size in bytes (fjall recommends ~20–25% of memory, or all of the data
    /// if it fits).
    pub cache_bytes: u64,
    /// Size at which a table's memtable (its write buffer) is sealed and flushed.
    pub memtable_bytes: u64,
}

impl FjallOptions {
    /// Splits `bytes` of memory between the write buffer and the block cache.
    ///
    /// Why the write buffer is part of the budget: fjall keeps every memtable whose
    /// journal has not been flushed in memory, and with its defaults (64 MiB memtables, up
    /// to 512 MiB of journals) that alone could take several times a small `--cache-mb`.
    /// A sixth of the engine's share, between 4 and 64 MiB, goes to the memtable, and the
    /// write buffer as a whole (the memtable being filled and the one being flushed) is
    /// held to twice that: writes wait while it is over (see
    /// [`Engine::write_buffer_full`]). The block cache has the rest. Measured on the 2-core
    /// test VM with the default 256 MiB (a 32 MiB memtable instead of 64 MiB): RSS after
    /// loading 1 M items of 100 B fell from 146 to 111 MiB; the pipeline-1 1:10 load was
    /// unchanged within noise, sets alone were 13% faster (a shallower skiplist).
    ///
    /// fjall records a table's memtable size when it creates the table and ignores the
    /// option afterwards, so the size chosen at a data directory's first start stays; a
    /// later budget changes the caches, the journal cap and the write buffer's bound only.
    pub fn within(bytes: u64) -> Self {
        let memtable_bytes = (bytes / 6).clamp(4 * MIB, 64 * MIB);
        Self {
            cache_bytes: bytes.saturating_sub(2 * memtable_bytes),
            memtable_bytes,
        }
    }

    /// What the write buffer (every memtable not yet flushed, in every table) may hold
    /// before writes wait for a flush.
    pub fn write_buffer_limit(&self) -> u64 {
        self.memtable_bytes.saturating_mul(2)
    }

    fn journaling_bytes(&self) -> u64 {
        self.memtable_bytes
            .saturating_mul(2)
            .max(MIN_JOURNALING_BYTES)
    }
}

impl Default for FjallOptions {
    fn default() -> Self {
        Self::within(192 * MIB)
    }
}

/// An [`Engine`] backed by one fjall database with a keyspace per [`Table`].
///
/// Both keyspaces receive writes continually (every batch of items also advances the
/// sequence-number bookkeeping in `meta`), which matters with fjall: a keyspace that is
/// never written can pin old journal files (fjall#288).
pub struct FjallEngine {
    db: Database,
    items: Keyspace,
    meta: Keyspace,
    /// The database folder, where fjall keeps its journals.
    dir: PathBuf,
    /// Our own handle on the journal fjall is appending to, with its id, for
    /// [`Engine::sync`].
    journal: Mutex<Option<(u64, File)>>,
    /// See [`FjallOptions::write_buffer_limit`].
    write_buffer_limit: u64,
}

impl std::fmt::Debug for FjallEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallEngine").finish_non_exhaustive()
    }
}

fn storage(err: &fjall::Error) -> EngineError {
    match err {
        // fjall refuses every write after one of its background workers failed, and says
        // only "Poisoned"; the cause (a full disk, most often) is in the log line fjall
        // wrote when the worker failed, so point the operator there.
        fjall::Error::Poisoned => EngineError::Storage(
            "fjall stopped accepting writes after one of its background flushes or \
             compactions failed; fjall's error in the server's log gives the cause (such as \
             \"No space left on device\")"
                .to_owned(),
        ),
        // fjall drops a batch that a crash left without its end; this is a batch that is
        // whole but does not match its checksum (or holds the wrong number of items), and
        // fjall will not recover past it. Neither should we guess: writes recorded after
        // it were acknowledged.
        fjall::Error::JournalRecovery(cause) => EngineError::Storage(format!(
            "the journal is damaged ({cause:?}) and cannot be recovered past the damage; \
             starting would drop every write recorded after it. Keep the data directory \
             for inspection and restore from a backup"
        )),
        // fjall holds a lock file for as long as a database is open; a second process
        // (or a second `murakumo dev` in the same directory) gets only "Locked".
        fjall::Error::Locked => EngineError::Storage(
            "the data directory is in use by another process (fjall's lock is held); stop \
             that process, or use another data directory"
                .to_owned(),
        ),
        other => EngineError::Storage(other.to_string()),
    }
}

impl FjallEngine {
    /// Bytes held in memtables not yet flushed, in every table.
    ///
    /// fjall marks this (and the sealed memtable count used with it) as an experimental
    /// API; `Cargo.lock` pins fjall's version, and the store's durability tests check that
    /// the bound holds.
    pub fn write_buffer_bytes(&self) -> u64 {
        self.db.write_buffer_size()
    }

    /// Opens (or creates) the database in `dir`, recovering from its journal.
    pub fn open(dir: &Path, options: FjallOptions) -> Result<Self, EngineError> {
        let db = Database::builder(dir)
            .cache_size(options.cache_bytes)
            .max_journaling_size(options.journaling_bytes())
            .journal_compression(JOURNAL_COMPRESSION)
            .open()
            .map_err(|e| storage(&e))?;
        let table_options =
            || KeyspaceCreateOptions::default().max_memtable_size(options.memtable_bytes);
        let items = db
            .keyspace("items", || {
                table_options().with_kv_separation(Some(
                    KvSeparationOptions::default()
                        .separation_threshold(SEPARATE_VALUES_FROM)
                        .compression(CompressionType::None),
                ))
            })
            .map_err(|e| storage(&e))?;
        let meta = db
            .keyspace("meta", table_options)
            .map_err(|e| storage(&e))?;
        Ok(Self {
            db,
            items,
            meta,
            dir: dir.to_path_buf(),
            journal: Mutex::new(None),
            write_buffer_limit: options.write_buffer_limit(),
        })
    }

    /// Up to `limit` entries of `table` with keys starting with `prefix`, from `start` on
    /// (clamped to the prefix), each made into what a scan returns by `entry`.
    fn walk<T>(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
        mut entry: impl FnMut(fjall::Slice, fjall::Slice) -> T,
    ) -> Result<Vec<T>, EngineError> {
        let from = if start > prefix { start } else { prefix };
        let mut out = Vec::with_capacity(limit.min(1024));
        for guard in self.keyspace(table).range(from..) {
            if out.len() >= limit {
                break;
            }
            let (key, value) = guard.into_inner().map_err(|e| storage(&e))?;
            if !key.starts_with(prefix) {
                break;
            }
            out.push(entry(key, value));
        }
        Ok(out)
    }

    /// Fsyncs the journal fjall is appending to through a handle of our own; `false` if
    /// that journal cannot be found where fjall keeps it.
    ///
    /// Why not `Database::persist`: fjall fsyncs while holding its journal's writer lock,
    /// so a commit that arrives during the fsync waits for the disk. The store commits on
    /// its connection threads (with the periodic policy), so such a commit stalled a whole
    /// event loop: ~250 µs per fsync on the 2-core test VM, against under 10 µs for a
    /// commit otherwise (the `fsync_stall` example measures it). An fsync is a property of
    /// the file, not of the descriptor, so ours covers every batch fjall has handed to the
    /// OS. Older journals were fsynced by fjall when it sealed them (and the folder with
    /// them), so the active one is all there is to sync.
    ///
    /// `fdatasync` rather than `fsync`: it still writes out whatever metadata reading the
    /// data back needs (block allocation, a size change) and skips only the modification
    /// time, which costs an extra metadata commit on ext4 (machine CPU per request on a
    /// 1:10 set:get load: 11.32 µs against 11.47, three runs each).
    fn fsync_active_journal(&self) -> std::io::Result<bool> {
        let mut journal = self
            .journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // fjall rotates from `<id>.jnl` to `<id + 1>.jnl`; until that appears, the journal
        // we hold is still the active one, and one `stat` saves listing the folder.
        let still_active = journal.as_ref().is_some_and(|(id, _)| {
            !self
                .dir
                .join(format!("{}.jnl", id + 1))
                .try_exists()
                .unwrap_or(true)
        });
        if !still_active {
            let Some((id, path)) = active_journal_id(&self.dir)? else {
                return Ok(false);
            };
            match File::open(&path) {
                Ok(file) => *journal = Some((id, file)),
                // Sealed and removed since we looked: fjall synced it when it sealed it.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(err) => return Err(err),
            }
        }
        match journal.as_ref() {
            Some((_, file)) => file.sync_data().map(|()| true),
            None => Ok(false),
        }
    }

    fn keyspace(&self, table: Table) -> &Keyspace {
        match table {
            Table::Items => &self.items,
            Table::Meta => &self.meta,
        }
    }
}

/// The journal fjall appends to: the highest-numbered `<id>.jnl` in the database
/// folder (fjall 3 names them so and rotates to `id + 1`). The `journal_file_layout`
/// test guards that assumption.
pub fn active_journal(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    Ok(active_journal_id(dir)?.map(|(_, path)| path))
}

fn active_journal_id(dir: &Path) -> std::io::Result<Option<(u64, PathBuf)>> {
    let mut newest: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let id = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".jnl"))
            .and_then(|id| id.parse::<u64>().ok());
        if let Some(id) = id
            && newest.as_ref().is_none_or(|(newest_id, _)| id > *newest_id)
        {
            newest = Some((id, path));
        }
    }
    Ok(newest)
}

impl Engine for FjallEngine {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>, EngineError> {
        self.keyspace(table)
            .get(key)
            .map(|found| found.map(Bytes::from_owner))
            .map_err(|e| storage(&e))
    }

    fn value_len(&self, table: Table, key: &[u8]) -> Result<Option<usize>, EngineError> {
        // fjall answers from the index entry, which holds a separated value's length.
        self.keyspace(table)
            .size_of(key)
            .map(|found| found.map(|len| len as usize))
            .map_err(|e| storage(&e))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), EngineError> {
        // Flush the journal to the OS before returning: the acknowledgement of a write may
        // follow immediately, and it must survive a process crash.
        let mut commit = self.db.batch().durability(Some(PersistMode::Buffer));
        // Keys and values are copied into fjall's own byte type (see the workspace
        // manifest for why we do not hand it our `Bytes`).
        for op in batch.into_ops() {
            match op {
                WriteOp::Put { table, key, value } => {
                    commit.insert(self.keyspace(table), &key[..], &value[..]);
                }
                WriteOp::Delete { table, key } => commit.remove(self.keyspace(table), &key[..]),
            }
        }
        commit.commit().map_err(|e| storage(&e))
    }

    fn sync(&self) -> Result<(), EngineError> {
        match self.fsync_active_journal() {
            Ok(true) => Ok(()),
            Ok(false) => self
                .db
                .persist(PersistMode::SyncAll)
                .map_err(|e| storage(&e)),
            Err(err) => Err(EngineError::Storage(format!(
                "fsync of the journal failed: {err}"
            ))),
        }
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        self.walk(table, prefix, start, limit, |key, value| {
            (Bytes::from_owner(key), Bytes::from_owner(value))
        })
    }

    fn scan_heads(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
        head_len: usize,
    ) -> Result<Vec<KeyHead>, EngineError> {
        self.walk(table, prefix, start, limit, |key, value| {
            KeyHead::of(Bytes::from_owner(key), &value, head_len)
        })
    }

    fn disk_space(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }

    /// Most of these are fjall's experimental (hidden) figures; `Cargo.lock` pins fjall's
    /// version, and `metrics_follow_writes_flushes_and_compactions` checks that they move.
    fn metrics(&self) -> EngineMetrics {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let both = |per_table: fn(&Keyspace) -> usize| {
            count(per_table(&self.items)).saturating_add(count(per_table(&self.meta)))
        };
        EngineMetrics {
            write_buffer_bytes: self.write_buffer_bytes(),
            write_buffer_limit: self.write_buffer_limit,
            sealed_memtables: both(Keyspace::sealed_memtable_count),
            flushes_pending: count(self.db.outstanding_flushes()),
            compactions_running: count(self.db.active_compactions()),
            compactions_done: count(self.db.compactions_completed()),
            compaction_micros: u64::try_from(self.db.time_compacting().as_micros())
                .unwrap_or(u64::MAX),
            journal_files: count(self.db.journal_count()),
            tables: both(Keyspace::table_count),
            level0_tables: both(Keyspace::l0_table_count),
            blob_files: both(Keyspace::blob_file_count),
            block_cache_bytes: self.db.cache_size(),
            block_cache_limit: self.db.cache_capacity(),
        }
    }

    /// Over the budget while a sealed memtable waits for its flush. Over the budget with
    /// nothing sealed, it seals the items table's memtable first, so that its flush
    /// starts and the write waits for that: there is always something under way to end
    /// the wait, also in a data directory created with larger memtables than today's
    /// budget.
    ///
    /// Why it seals, rather than waiting for fjall to: fjall seals a memtable that has
    /// outgrown its size by asking its worker threads, and while they are busy (blob
    /// garbage collection, compactions) the memtable goes on growing with nothing sealed,
    /// so writers did not wait. Eight writers of 512 KiB values through an 8 MiB write
    /// buffer took it to 30-34 MiB once overwriting a large value no longer read it back
    /// (`value_len`), against 20 MiB allowed by the store's durability test; sealing here,
    /// it peaked at 10-11 MiB in 10 runs of that test. Sealing rotates fjall's journal (a
    /// new file, synced with its directory) on the thread that asks, at most once per
    /// flush and only when that write was about to wait anyway; the other connections of
    /// that thread wait for those milliseconds too. `rotate_memtable` is public but hidden
    /// from fjall's documentation; `Cargo.lock` pins the version and that test guards it.
    fn write_buffer_full(&self) -> bool {
        if self.write_buffer_bytes() <= self.write_buffer_limit {
            return false;
        }
        let sealed = || self.items.sealed_memtable_count() + self.meta.sealed_memtable_count();
        if sealed() == 0 {
            // `Ok(false)`: another writer sealed it first. A failure to seal shows in the
            // writes that follow, which use the same journal.
            let _ = self.items.rotate_memtable();
        }
        sealed() > 0
    }
}
