//! A bounded in-memory cache of item records, in front of the engine.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use crossbeam_utils::CachePadded;
use murakumo_engine::KeyHead;
use murakumo_engine::keys::place_of;
use parking_lot::Mutex;
use smallvec::SmallVec;
use triomphe::ThinArc;

const SHARDS: usize = 64;
/// Per-entry bookkeeping charged beyond key and record bytes. An entry really costs its
/// block's header (reference count, large-record pointer, length and key length: 28
/// bytes) and its share of the 16-byte slots: 21 bytes in a table 3/4 full, up to 43 just
/// after the table doubles. 48 is the lower end, kept from the `hashbrown` table before
/// so that a cache of a given size holds as many entries as it did (the RSS after 1 M
/// items fell by 9-17 MiB with the same count).
const ENTRY_OVERHEAD: usize = 48;
/// What a shared entry (see [`SHARE_FROM`]) adds: the box holding its `Bytes` handle, and
/// the rest of an engine block (about `SHARE_FROM` bytes) that a record read from the
/// engine may keep alive.
const SHARED_OVERHEAD: usize = 64 + SHARE_FROM;

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The record as last committed, and when it was fetched before this lookup (if it
    /// was, since it entered the cache).
    Hit {
        record: CachedRecord,
        previous_fetch: Option<u32>,
    },
    /// Not cached; pass the token to [`ItemCache::fill`] after reading the engine.
    Miss(FillToken),
}

/// Proof of which shard state a reader saw before it went to the engine.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FillToken {
    hash: u64,
    shard: usize,
    generation: u64,
}

/// Records of recently read and written items, keyed by engine key; reads fill it, and
/// writes replace or drop what it holds and add to it while there is free room (see
/// [`update`](Self::update)).
///
/// Why: a point read in fjall searches a skiplist memtable (and maybe tables) with many
/// key comparisons; a hash lookup is several times cheaper, and gets dominate memcached
/// workloads.
///
/// Coherence with the single writer, without per-key locks:
/// - the writer calls [`update`](Self::update) for every key it commits, after the engine
///   write and before it acknowledges, so no client can read its own write back stale;
/// - a reader that misses takes a [`FillToken`], reads the engine, and offers the record
///   with [`fill`](Self::fill), which is refused if any write touched that shard in between.
///   So a value read before a concurrent commit can never be cached after it.
///
/// Layout: on a cache larger than the CPU's caches, every separate piece of memory a hit
/// touches is a cache miss (and, on a VM with 4 KiB pages, often a TLB miss with a nested
/// page walk), and those misses were most of the cost of a get. So a hit touches two
/// places, as memcached's does (a bucket, then the item): a 16-byte [`Slot`] in an
/// open-addressing [`Table`] (four to a cache line; the slot holds the hash and the fetch
/// mark beside the pointer), then one [`Block`] whose first line holds the reference count,
/// the key and the start of the record. (The `hashbrown` table used before kept a control
/// byte array apart from its 40-byte slots, a third miss: `perf annotate` put 20% of a
/// lookup on the control bytes, 40% on the slot and the rest on the block.)
///
/// Small records are copied in, so a slice returned by the engine cannot keep a whole
/// block alive and the memory bound holds. Large ones (see [`SHARE_FROM`]) are kept as
/// handed in: a record that large fills most of the engine block it shares, and its
/// entry is charged for the rest of a block as well. Eviction sweeps the table (see
/// [`Table::evict`]); the cache only has to keep the hot set, and the engine remains the
/// source of truth.
pub(crate) struct ItemCache {
    /// Padded so that readers on different cores locking different shards do not contend
    /// for one cache line.
    shards: Vec<CachePadded<Mutex<Shard>>>,
    shard_capacity: usize,
    /// Set when the table is where the items live (memory mode, see
    /// [`holding_items`](Self::holding_items)) rather than a cache in front of the engine.
    memory: Option<MemoryBound>,
}

/// The byte bound of a store whose items live only in this table (memory mode).
///
/// Why one bound for all shards rather than the cache's bound per shard: a cache that
/// cannot hold a record simply leaves it to the engine, but here a record that does not
/// fit is lost, and a shard's share of a small limit (64 MiB / 64) is less than one
/// largest value. With a single bound any record up to the limit fits, and the evictions
/// that make room for it are taken from every shard in turn.
struct MemoryBound {
    /// Changed while serving by `cache_memlimit` (see [`ItemCache::set_limit`]).
    limit: AtomicUsize,
    /// Bytes held by all shards together. Only the writer inserts and removes in memory
    /// mode, so this has one writer and relaxed readers (`stats`).
    bytes: AtomicUsize,
    /// The shard the next eviction starts in.
    next_victim_shard: AtomicUsize,
}

#[derive(Default)]
struct Shard {
    table: Table,
    bytes: usize,
    /// Bumped by every writer update of this shard.
    generation: u64,
}

/// Records at least this long are cached as the caller's `Bytes` instead of being copied
/// into a packed block: copying a 100 KiB record twice (into the block, then into its
/// `Arc`) was a sixth of the server's time on a 100 KiB get load, and next to a record that
/// large a separate allocation for its key costs nothing worth counting.
const SHARE_FROM: usize = 4096;

/// Evictions a write makes, in memory mode, beyond the room it needs itself, while the
/// table is over a limit that `cache_memlimit` lowered.
const EXTRA_EVICTIONS_PER_STORE: usize = 16;

/// Slots a partition walk reads under one hold of its shard's lock (see
/// [`ItemCache::scan_heads`]): a few thousand slots, tens of microseconds.
const SCAN_STRETCH: usize = 4096;

/// Bytes before the key in a [`Block`]: the key's length, little-endian.
const KEY_LEN_BYTES: usize = 4;

/// An entry's key and record behind one thin pointer, so that a [`Slot`] stays 16 bytes.
///
/// The bytes are the key's length, the key, then the record; for a large record (see
/// [`SHARE_FROM`]) they end after the key, and the header holds the caller's `Bytes`.
#[derive(Clone)]
pub(crate) struct Block(ThinArc<Option<Box<Bytes>>, u8>);

impl Block {
    fn new(key: &[u8], record: &Bytes) -> Self {
        let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes();
        let (shared, packed_record) = if record.len() >= SHARE_FROM {
            (Some(Box::new(record.clone())), &[][..])
        } else {
            (None, &record[..])
        };
        // Assembled on the stack for the usual small item, so that building a block costs
        // one allocation: triomphe copies a slice, and cannot take parts.
        let mut bytes: SmallVec<[u8; 256]> =
            SmallVec::with_capacity(KEY_LEN_BYTES + key.len() + packed_record.len());
        bytes.extend_from_slice(&key_len);
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(packed_record);
        Self(ThinArc::from_header_and_slice(shared, &bytes))
    }

    #[inline]
    fn key_end(&self) -> usize {
        let mut key_len = [0; KEY_LEN_BYTES];
        key_len.copy_from_slice(&self.0.slice[..KEY_LEN_BYTES]);
        KEY_LEN_BYTES + u32::from_le_bytes(key_len) as usize
    }

    #[inline]
    fn key(&self) -> &[u8] {
        &self.0.slice[KEY_LEN_BYTES..self.key_end()]
    }

    fn record_bytes(&self) -> &[u8] {
        match &self.0.header.header {
            Some(shared) => shared,
            None => &self.0.slice[self.key_end()..],
        }
    }

    /// The record, sharing the block.
    fn record(&self) -> CachedRecord {
        match &self.0.header.header {
            Some(shared) => CachedRecord::Shared(Bytes::clone(shared)),
            None => CachedRecord::Packed {
                start: self.key_end(),
                block: self.clone(),
            },
        }
    }

    fn cost(&self) -> usize {
        entry_cost(self.key().len(), self.record_bytes().len())
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("key_len", &self.key().len())
            .field("record_len", &self.record_bytes().len())
            .finish()
    }
}

/// What an entry for a key and record of these lengths counts against the capacity.
fn entry_cost(key_len: usize, record_len: usize) -> usize {
    let shared = if record_len >= SHARE_FROM {
        SHARED_OVERHEAD
    } else {
        0
    };
    key_len + record_len + ENTRY_OVERHEAD + shared
}

/// A cached record, sharing its entry's memory.
///
/// Handing out a small record's packed block itself (one reference count) rather than a
/// [`Bytes`] keeps a get hit free of allocations: a `Bytes` over a block needs a boxed
/// owner. Callers that must keep the record as `Bytes` pay for that conversion with
/// [`to_bytes`](Self::to_bytes); a large record is a `Bytes` already.
#[derive(Debug, Clone)]
pub(crate) enum CachedRecord {
    Packed { block: Block, start: usize },
    Shared(Bytes),
}

impl CachedRecord {
    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Packed { block, start } => &block.0.slice[*start..],
            Self::Shared(record) => record,
        }
    }

    pub(crate) fn to_bytes(&self) -> Bytes {
        match self {
            Self::Packed { .. } => Bytes::from_owner(self.clone()),
            Self::Shared(record) => record.clone(),
        }
    }
}

impl AsRef<[u8]> for CachedRecord {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// One place in a [`Table`]: an entry, or empty.
struct Slot {
    block: Option<Block>,
    /// The low 31 bits of the key's hash: where the entry belongs in the table, and a
    /// filter that spares the key comparison for nearly every other entry a lookup passes.
    /// The top bit is [`REFERENCED`].
    tag: u32,
    /// When this version of the item was last fetched (meta `h`, `l`; see `access`), in
    /// the slot a lookup has just read anyway. A fetch at Unix time 0 would read as none.
    last_fetch: Option<NonZeroU32>,
}

const _: () = assert!(size_of::<Slot>() == 16, "four slots to a cache line");

impl Slot {
    const EMPTY: Self = Self {
        block: None,
        tag: 0,
        last_fetch: None,
    };

    #[inline]
    fn hash(&self) -> u32 {
        self.tag & !REFERENCED
    }

    fn referenced(&self) -> bool {
        self.tag & REFERENCED != 0
    }

    /// Records a fetch at `fetched_at` (unless `None`: meta `u`) and returns the previous
    /// one. Written only when it changes (once a second at most for a hot key), so that
    /// reads of a hot key do not keep dirtying its slot's cache line; the mark has a
    /// resolution of seconds anyway.
    fn mark_fetch(&mut self, fetched_at: Option<u32>) -> Option<u32> {
        let previous_fetch = self.last_fetch.map(NonZeroU32::get);
        if let Some(now) = fetched_at.map(NonZeroU32::new)
            && now != self.last_fetch
        {
            self.last_fetch = now;
        }
        // Meta `u` ("do not bump the item in the LRU") leaves it as it was.
        if fetched_at.is_some() && !self.referenced() {
            self.tag |= REFERENCED;
        }
        previous_fetch
    }
}

/// The bit of [`Slot::tag`] that says the entry was read since the eviction hand last
/// passed it (see [`Table::evict`]).
const REFERENCED: u32 = 1 << 31;

/// What a slot keeps of a key's hash: the bits below [`REFERENCED`].
#[inline]
fn slot_hash(hash: u64) -> u32 {
    hash as u32 & !REFERENCED
}

/// A hash table of cache entries: open addressing with linear probing, at most 3/4 full,
/// and backward-shift deletion, so there are no tombstones and a lookup stops at the
/// first empty slot. The slot count is 0 or a power of two.
#[derive(Default)]
struct Table {
    slots: Box<[Slot]>,
    len: usize,
    /// Where the next eviction starts looking.
    hand: usize,
}

/// The smallest table that holds anything.
const MIN_SLOTS: usize = 16;

impl Table {
    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The index of `key`'s entry, if it has one.
    #[inline]
    fn position(&self, hash: u64, key: &[u8]) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let hash = slot_hash(hash);
        let mask = self.mask();
        let mut at = hash as usize & mask;
        // Ends: the table always has an empty slot.
        loop {
            let slot = &self.slots[at];
            let block = slot.block.as_ref()?;
            if slot.hash() == hash && block.key() == key {
                return Some(at);
            }
            at = (at + 1) & mask;
        }
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<&Block> {
        self.slots[self.position(hash, key)?].block.as_ref()
    }

    /// Adds an entry for a key the table does not hold.
    fn insert_new(&mut self, hash: u64, block: Block, last_fetch: Option<NonZeroU32>) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        self.place(Slot {
            block: Some(block),
            tag: slot_hash(hash),
            last_fetch,
        });
        self.len += 1;
    }

    fn place(&mut self, slot: Slot) {
        let mask = self.mask();
        let mut at = slot.hash() as usize & mask;
        while self.slots[at].block.is_some() {
            at = (at + 1) & mask;
        }
        self.slots[at] = slot;
    }

    fn grow(&mut self) {
        let slots = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, (0..slots).map(|_| Slot::EMPTY).collect());
        for slot in old {
            if slot.block.is_some() {
                self.place(slot);
            }
        }
        self.hand = 0;
    }

    /// Takes out the entry at `at`, and moves back the entries after it that can be
    /// nearer their home slot, so that no lookup stops early at the hole.
    fn remove_at(&mut self, at: usize) -> Block {
        let mask = self.mask();
        let removed = self.slots[at]
            .block
            .take()
            .expect("remove_at is given an occupied slot");
        self.len -= 1;
        let mut hole = at;
        let mut next = (at + 1) & mask;
        while self.slots[next].block.is_some() {
            let home = self.slots[next].hash() as usize & mask;
            // It may fill the hole if the hole lies between its home and where it is.
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.slots.swap(hole, next);
                hole = next;
            }
            next = (next + 1) & mask;
        }
        removed
    }

    /// Takes out an entry to make room, by the CLOCK algorithm: the hand moves on from
    /// where the last eviction stopped, gives each entry read since it last passed a
    /// second chance (clearing its [`REFERENCED`] bit), and takes the first that was not.
    ///
    /// Why: memory mode promises LRU eviction (DESIGN §3), and this is the approximation
    /// of it that costs a read nothing beyond setting a bit the first time it finds the
    /// bit clear. Entries enter unreferenced, so a bulk load of items nobody reads goes
    /// before the items in use (had they entered referenced, the hand's first turn would
    /// clear every bit and evict in table order).
    ///
    /// `spare` (a [`slot_hash`] and key) is never taken: the entry that the evictions
    /// make room for. Within two turns of the hand every other bit has been cleared, so
    /// the search ends there, with `None` if only the spared entry is left.
    fn evict(&mut self, spare: Option<(u32, &[u8])>) -> Option<Block> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut at = self.hand & mask;
        let mut steps = 0;
        loop {
            let slot = &mut self.slots[at];
            if let Some(block) = &slot.block {
                let spared =
                    spare.is_some_and(|(hash, key)| slot.hash() == hash && block.key() == key);
                if !spared {
                    if !slot.referenced() {
                        break;
                    }
                    slot.tag &= !REFERENCED;
                }
            }
            at = (at + 1) & mask;
            steps += 1;
            if steps > 2 * self.slots.len() {
                return None;
            }
        }
        // The hand stays where the victim was: removal shifts later entries back, and the
        // one that lands there has not been looked at yet. (Moving on past it, the hand
        // skipped such an entry on every turn: in a test, 12 of 1,800 unused keys outlived
        // two limits' worth of newer items.)
        self.hand = at;
        Some(self.remove_at(at))
    }
}

impl Shard {
    /// Removes `key`'s entry; whether there was one.
    fn remove(&mut self, hash: u64, key: &[u8]) -> bool {
        let Some(at) = self.table.position(hash, key) else {
            return false;
        };
        let block = self.table.remove_at(at);
        self.bytes -= block.cost();
        true
    }

    /// Whether an entry of `cost` fits beside the others without evicting any.
    fn has_room_for(&self, cost: usize, capacity: usize) -> bool {
        self.bytes + cost <= capacity
    }

    /// Puts `block` in as `hash`'s entry, replacing the key's old one, and evicts others
    /// to make room if `evict` says so; otherwise an entry that does not fit stays out.
    fn insert(
        &mut self,
        hash: u64,
        block: Block,
        last_fetch: Option<NonZeroU32>,
        capacity: usize,
        evict: bool,
    ) {
        let added = block.cost();
        self.remove(hash, block.key());
        if added > capacity || (!evict && !self.has_room_for(added, capacity)) {
            return;
        }
        while self.bytes + added > capacity {
            let Some(victim) = self.table.evict(None) else {
                break;
            };
            self.bytes -= victim.cost();
        }
        self.bytes += added;
        self.table.insert_new(hash, block, last_fetch);
    }
}

/// The hash of an engine key, which places it in the item cache (shard and slot).
pub(crate) fn key_hash(engine_key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(engine_key)
}

impl ItemCache {
    /// A cache holding at most about `capacity` bytes (0 disables it).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(Shard::default())))
                .collect(),
            shard_capacity: capacity / SHARDS,
            memory: None,
        }
    }

    /// A table that is the store of record for every item (memory mode): the writer puts
    /// every record in with [`store`](Self::store), which evicts others to stay within
    /// `limit` bytes, and a lookup that misses means the item does not exist.
    pub(crate) fn holding_items(limit: usize) -> Self {
        Self {
            memory: Some(MemoryBound {
                limit: AtomicUsize::new(limit),
                bytes: AtomicUsize::new(0),
                next_victim_shard: AtomicUsize::new(0),
            }),
            ..Self::new(0)
        }
    }

    /// Whether the table is where the items live (memory mode), not a cache.
    pub(crate) fn holds_items(&self) -> bool {
        self.memory.is_some()
    }

    /// Bytes the cached entries account for (records, keys and per-entry overhead).
    pub(crate) fn bytes(&self) -> usize {
        match &self.memory {
            Some(bound) => bound.bytes.load(Ordering::Relaxed),
            None => self.shards.iter().map(|shard| shard.lock().bytes).sum(),
        }
    }

    /// The shard of an engine key: by its partition, so that all of a partition's entries
    /// share one shard and a walk over a partition (the sweep and key dumps in memory
    /// mode; later, partition moves) reads one shard. Partitions are already a hash of
    /// the key, so the shards fill as evenly as they would by the key's hash.
    fn shard_of(key: &[u8]) -> usize {
        place_of(key).map_or(0, |(_, partition)| usize::from(partition) % SHARDS)
    }

    /// The cached record of `key`, if any. For the writer, which is the only updater, so
    /// a cached record is exactly the committed one.
    pub(crate) fn peek(&self, key: &[u8]) -> Option<Bytes> {
        self.peek_with(key, |block| block.record().to_bytes())
    }

    /// The length of `key`'s cached record, if any; for the writer, as
    /// [`peek`](Self::peek). A plain `set` needs only that, and this spares it the
    /// allocation that handing out the record as `Bytes` costs.
    pub(crate) fn peek_len(&self, key: &[u8]) -> Option<usize> {
        self.peek_with(key, |block| block.record_bytes().len())
    }

    /// What `read` takes from `key`'s cached block, if any, under the shard's lock.
    fn peek_with<T>(&self, key: &[u8], read: impl FnOnce(&Block) -> T) -> Option<T> {
        let hash = key_hash(key);
        self.shards[Self::shard_of(key)]
            .lock()
            .table
            .find(hash, key)
            .map(read)
    }

    /// Looks up `key`, whose [`key_hash`] the caller has already computed, and records a
    /// fetch at `fetched_at` unless that is `None` (meta `u`).
    pub(crate) fn get(&self, hash: u64, key: &[u8], fetched_at: Option<u32>) -> Lookup {
        let shard = Self::shard_of(key);
        let mut guard = self.shards[shard].lock();
        match guard.table.position(hash, key) {
            Some(at) => {
                let slot = &mut guard.table.slots[at];
                let previous_fetch = slot.mark_fetch(fetched_at);
                let record = slot
                    .block
                    .as_ref()
                    .expect("position finds an occupied slot")
                    .record();
                Lookup::Hit {
                    record,
                    previous_fetch,
                }
            }
            None => Lookup::Miss(FillToken {
                hash,
                shard,
                generation: guard.generation,
            }),
        }
    }

    /// Offers a record a reader found in the engine, fetched at `fetched_at` (if it
    /// counts as a fetch); see the type's documentation.
    pub(crate) fn fill(
        &self,
        token: FillToken,
        key: &[u8],
        record: &Bytes,
        fetched_at: Option<u32>,
    ) {
        if self.shard_capacity == 0 {
            return;
        }
        let block = Block::new(key, record);
        let mut shard = self.shards[token.shard].lock();
        if shard.generation == token.generation {
            let last_fetch = fetched_at.and_then(NonZeroU32::new);
            shard.insert(token.hash, block, last_fetch, self.shard_capacity, true);
        }
    }

    /// Records a fetch of the item version `seq` that the writer returned (touch, gat,
    /// meta get with updates), and says when it was fetched before. `None` if that version
    /// is not cached, which reads as "not fetched".
    pub(crate) fn record_fetch(
        &self,
        key: &[u8],
        seq: u64,
        fetched_at: Option<u32>,
    ) -> Option<u32> {
        let hash = key_hash(key);
        let mut shard = self.shards[Self::shard_of(key)].lock();
        let at = shard.table.position(hash, key)?;
        let slot = &mut shard.table.slots[at];
        let cached_seq =
            murakumo_engine::record::decode_header(slot.block.as_ref()?.record_bytes())
                .ok()?
                .seq;
        if cached_seq != seq {
            return None;
        }
        slot.mark_fetch(fetched_at)
    }

    /// The writer's record of a committed change: the new record, or `None` for a removal.
    ///
    /// A new record replaces a cached one. One that was not cached enters only while its
    /// shard has room, without evicting anything: memcached serves an item it has just
    /// stored from memory, and the usual pattern (a miss, then a `set` of the computed
    /// value, then reads of it) would otherwise pay an engine lookup (a memtable search)
    /// on the first read of every key. On a 10 s pipeline-1 gets-only load right after
    /// loading 100,000 keys, those first reads are about 7% of the gets, and throughput
    /// went from 0.92–0.97× of memcached's to 0.98–1.01× with writes filling the cache. A
    /// bulk load of data nobody reads can fill free space but never pushes out what reads
    /// brought in; reads evict, and writes only use what is free.
    pub(crate) fn update(&self, key: &[u8], record: Option<&Bytes>) {
        let hash = key_hash(key);
        let shard = Self::shard_of(key);
        let (generation, replaced, record) = {
            let mut guard = self.shards[shard].lock();
            guard.generation += 1;
            let replaced = guard.remove(hash, key);
            let Some(record) = record else { return };
            // With the cache disabled, nothing was cached and nothing fits.
            let cost = entry_cost(key.len(), record.len());
            if !(replaced || guard.has_room_for(cost, self.shard_capacity)) {
                return;
            }
            (guard.generation, replaced, record)
        };
        // The old version is gone and the engine has the new one, so a reader that misses
        // meanwhile reads (and may cache) the new one. The copy is made outside the lock,
        // so the shard's readers wait for no copying; the entry goes in unless another
        // write touched the shard meanwhile (then a later read fills it) or such a reader
        // already cached it (its entry carries that read's fetch mark). A replacement may
        // evict to make room, as the read that brought the key in could; a newcomer may not.
        let block = Block::new(key, record);
        let mut guard = self.shards[shard].lock();
        if guard.generation == generation && guard.table.position(hash, key).is_none() {
            guard.insert(hash, block, None, self.shard_capacity, replaced);
        }
    }

    /// Memory mode's counterpart of [`update`](Self::update): the writer's committed
    /// change of `key` (the new record, or `None` for a removal), which always goes in.
    /// While the table then holds more than its limit, entries are evicted, one shard
    /// after another, and `evicted` hears of each (its key and record length) so that
    /// the writer can count it out of its partition.
    pub(crate) fn store(
        &self,
        key: &[u8],
        record: Option<&Bytes>,
        mut evicted: impl FnMut(&[u8], usize),
    ) {
        let bound = self
            .memory
            .as_ref()
            .expect("only a store in memory mode stores into its table");
        let hash = key_hash(key);
        // Built before the lock, as in `update`: readers of the shard wait for no copying.
        let block = record.map(|record| Block::new(key, record));
        // The bytes this change adds, which evictions must free (at least, while the
        // table is over its limit).
        let mut owed;
        {
            let mut guard = self.shards[Self::shard_of(key)].lock();
            guard.generation += 1;
            let mut removed = 0;
            if let Some(at) = guard.table.position(hash, key) {
                removed = guard.table.remove_at(at).cost();
                guard.bytes -= removed;
                bound.bytes.fetch_sub(removed, Ordering::Relaxed);
            }
            let Some(block) = block else { return };
            let cost = block.cost();
            owed = cost.saturating_sub(removed);
            guard.bytes += cost;
            bound.bytes.fetch_add(cost, Ordering::Relaxed);
            // The old version and the new must never both be missing, so the new one
            // goes in before room is made for it (the evictions lock other shards, and
            // may need this one), and they spare it.
            guard.table.insert_new(hash, block, None);
        }
        let spare = (slot_hash(hash), key);
        let limit = bound.limit.load(Ordering::Relaxed);
        // Once this change is paid for, a table still over its limit (the limit was
        // lowered) gets down to it a few evictions per write, rather than all at once
        // inside one.
        let mut extra = EXTRA_EVICTIONS_PER_STORE;
        while bound.bytes.load(Ordering::Relaxed) > limit {
            if owed == 0 {
                if extra == 0 {
                    break;
                }
                extra -= 1;
            }
            let Some(victim) = self.evict_from_next_shard(bound, spare) else {
                break;
            };
            owed = owed.saturating_sub(victim.cost());
            evicted(victim.key(), victim.record_bytes().len());
        }
    }

    /// Memory mode: the table's limit from now on (`cache_memlimit`). A lower one is
    /// reached as writes come, [`EXTRA_EVICTIONS_PER_STORE`] evictions each beyond the
    /// room they need themselves.
    pub(crate) fn set_limit(&self, limit: usize) {
        if let Some(bound) = &self.memory {
            bound.limit.store(limit, Ordering::Relaxed);
        }
    }

    /// Memory mode: the table's limit in bytes.
    pub(crate) fn limit(&self) -> Option<usize> {
        self.memory
            .as_ref()
            .map(|bound| bound.limit.load(Ordering::Relaxed))
    }

    /// Takes one entry out of the next shard that holds any, for [`store`](Self::store).
    fn evict_from_next_shard(&self, bound: &MemoryBound, spare: (u32, &[u8])) -> Option<Block> {
        for _ in 0..SHARDS {
            let shard = bound.next_victim_shard.fetch_add(1, Ordering::Relaxed) % SHARDS;
            let mut guard = self.shards[shard].lock();
            if let Some(victim) = guard.table.evict(Some(spare)) {
                guard.bytes -= victim.cost();
                bound.bytes.fetch_sub(victim.cost(), Ordering::Relaxed);
                return Some(victim);
            }
        }
        None
    }

    /// In memory mode, where the table is the only copy of the items: up to `limit`
    /// entries of the partition whose keys begin with `prefix`, from the key `start` on,
    /// in key order, with the first `head_len` bytes of each record. It is the engine's
    /// `scan_heads` for the sweep and for key dumps.
    ///
    /// A partition's entries all live in one shard (see `shard_of`), which is walked a
    /// stretch of slots at a time so that its readers never wait long for the lock. The
    /// table may change between stretches (an entry moved back by a removal, or the table
    /// doubled), so an entry can be missed: like memcached's crawler, this walks a
    /// position, not a snapshot, and what one pass misses the next one finds.
    pub(crate) fn scan_heads(
        &self,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
        head_len: usize,
    ) -> Vec<KeyHead> {
        let shard = &self.shards[Self::shard_of(prefix)];
        let mut found: Vec<Block> = Vec::new();
        let mut at = 0;
        loop {
            let guard = shard.lock();
            let slots = &guard.table.slots;
            let end = slots.len().min(at + SCAN_STRETCH);
            found.extend(
                slots
                    .get(at..end)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|slot| slot.block.as_ref())
                    .filter(|block| block.key().starts_with(prefix) && block.key() >= start)
                    .cloned(),
            );
            if end >= slots.len() {
                break;
            }
            at = end;
        }
        found.sort_unstable_by(|a, b| a.key().cmp(b.key()));
        found.dedup_by(|a, b| a.key() == b.key());
        found.truncate(limit);
        found
            .iter()
            .map(|block| {
                KeyHead::of(
                    Bytes::copy_from_slice(block.key()),
                    block.record_bytes(),
                    head_len,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The engine key of `user_key` in the default namespace, as the store builds it.
    fn ek(user_key: &[u8]) -> Vec<u8> {
        let partition = crate::placement::partition_of(0, user_key);
        murakumo_engine::keys::item_key(0, partition, user_key).to_vec()
    }

    fn b(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    #[test]
    fn fill_then_hit_and_writer_updates_win() {
        let cache = ItemCache::new(1 << 20);
        let Lookup::Miss(token) = cache.get(key_hash(&ek(b"k")), &ek(b"k"), None) else {
            panic!()
        };
        cache.fill(token, &ek(b"k"), &b(b"v1"), None);
        assert!(
            matches!(cache.get(key_hash(&ek(b"k")), &ek(b"k"), None), Lookup::Hit { record: r, .. } if r.as_bytes() == b"v1")
        );
        cache.update(&ek(b"k"), Some(&b(b"v2")));
        assert!(
            matches!(cache.get(key_hash(&ek(b"k")), &ek(b"k"), None), Lookup::Hit { record: r, .. } if r.as_bytes() == b"v2")
        );
        cache.update(&ek(b"k"), None);
        assert!(matches!(
            cache.get(key_hash(&ek(b"k")), &ek(b"k"), None),
            Lookup::Miss(_)
        ));
    }

    #[test]
    fn a_fill_that_raced_a_write_is_refused() {
        let cache = ItemCache::new(1 << 20);
        let Lookup::Miss(token) = cache.get(key_hash(&ek(b"k")), &ek(b"k"), None) else {
            panic!()
        };
        // The writer commits (and then evicts, or deletes) while the reader holds an old
        // value from the engine.
        cache.update(&ek(b"k"), Some(&b(b"new")));
        cache.update(&ek(b"k"), None);
        cache.fill(token, &ek(b"k"), &b(b"old"), None);
        assert!(
            matches!(
                cache.get(key_hash(&ek(b"k")), &ek(b"k"), None),
                Lookup::Miss(_)
            ),
            "a stale read must not be cached"
        );
    }

    /// What a reader does on a miss: read the engine (here: `record`) and offer it.
    fn read_through(cache: &ItemCache, key: &[u8], record: &Bytes) {
        if let Lookup::Miss(token) = cache.get(key_hash(key), key, None) {
            cache.fill(token, key, record, None);
        }
    }

    #[test]
    fn writes_fill_free_room_but_never_evict_what_reads_brought_in() {
        // One shard's worth of room for a few entries: every key below lands in the shard
        // its hash picks, so fill a single shard by choosing keys that hash to it.
        let cache = ItemCache::new(SHARDS * 1024);
        let shard = ItemCache::shard_of(&ek(b"read"));
        let same_shard = |prefix: &'static str| {
            (0..)
                .map(move |i| ek(format!("{prefix}{i}").as_bytes()))
                .filter(move |key| ItemCache::shard_of(key) == shard)
        };
        cache.update(&ek(b"written"), Some(&b(b"v1")));
        assert!(
            matches!(cache.get(key_hash(&ek(b"written")), &ek(b"written"), None), Lookup::Hit { record: r, .. } if r.as_bytes() == b"v1"),
            "a write is cached while there is room"
        );
        read_through(&cache, &ek(b"read"), &b(b"v1"));
        cache.update(&ek(b"read"), Some(&b(b"v2")));
        assert!(
            matches!(cache.get(key_hash(&ek(b"read")), &ek(b"read"), None), Lookup::Hit { record: r, .. } if r.as_bytes() == b"v2")
        );
        // Reads fill the shard up; writes of new keys must then stay out rather than
        // push out what was read.
        let read_keys: Vec<Vec<u8>> = same_shard("read").take(40).collect();
        for key in &read_keys {
            read_through(&cache, key, &b(&[0u8; 100]));
        }
        let full = cache.shards[shard].lock().bytes;
        let cached_before: Vec<bool> = read_keys
            .iter()
            .map(|key| cache.peek(key).is_some())
            .collect();
        assert!(cached_before.iter().filter(|&&c| c).count() >= 4);
        for key in same_shard("written").take(40) {
            cache.update(&key, Some(&b(&[1u8; 100])));
            assert!(cache.peek(&key).is_none(), "{key:?} evicted a read");
        }
        let cached_after: Vec<bool> = read_keys
            .iter()
            .map(|key| cache.peek(key).is_some())
            .collect();
        assert_eq!(cached_before, cached_after);
        assert_eq!(cache.shards[shard].lock().bytes, full);
    }

    #[test]
    fn memory_stays_bounded() {
        let capacity = SHARDS * 1024;
        let cache = ItemCache::new(capacity);
        for i in 0..10_000 {
            let key = ek(format!("key{i}").as_bytes());
            read_through(&cache, &key, &b(&[0u8; 100]));
            cache.update(&key, Some(&b(&[1u8; 100])));
        }
        let total: usize = cache.shards.iter().map(|s| s.lock().bytes).sum();
        assert!(total <= capacity, "{total} > {capacity}");
        assert!(
            total > capacity / 2,
            "the cache should still be used: {total}"
        );
    }

    #[test]
    fn large_records_are_shared_not_copied() {
        let cache = ItemCache::new(1 << 20);
        let read = Bytes::from(vec![3u8; SHARE_FROM]);
        read_through(&cache, &ek(b"k"), &read);
        let Lookup::Hit { record, .. } = cache.get(key_hash(&ek(b"k")), &ek(b"k"), None) else {
            panic!("k should be cached")
        };
        assert_eq!(
            record.as_bytes().as_ptr(),
            read.as_ptr(),
            "the fill was copied"
        );
        assert_eq!(record.to_bytes().as_ptr(), read.as_ptr());
        let written = Bytes::from(vec![4u8; SHARE_FROM * 2]);
        cache.update(&ek(b"k"), Some(&written));
        assert_eq!(
            cache.peek(&ek(b"k")).map(|r| r.as_ptr()),
            Some(written.as_ptr()),
            "the update was copied"
        );
        // Small records are still packed with their key.
        let small = b(b"small");
        read_through(&cache, &ek(b"s"), &small);
        assert_ne!(
            cache.peek(&ek(b"s")).map(|r| r.as_ptr()),
            Some(small.as_ptr())
        );
        assert_eq!(cache.peek(&ek(b"s")), Some(small));
    }

    #[test]
    fn memory_stays_bounded_with_records_of_every_size() {
        let capacity = SHARDS * 64 * 1024;
        let cache = ItemCache::new(capacity);
        for i in 0..2_000 {
            let key = ek(format!("key{i}").as_bytes());
            let len = [10, SHARE_FROM - 1, SHARE_FROM, 3 * SHARE_FROM][i % 4];
            read_through(&cache, &key, &Bytes::from(vec![0u8; len]));
            if i % 3 == 0 {
                cache.update(&key, Some(&Bytes::from(vec![1u8; len + 1])));
            }
            assert!(cache.bytes() <= capacity, "{} > {capacity}", cache.bytes());
        }
        let cached = (0..2_000)
            .filter(|i| cache.peek(&ek(format!("key{i}").as_bytes())).is_some())
            .count();
        assert!(
            cached > 100,
            "the cache should still be used: {cached} entries"
        );
        // Every cached record is the one last written or read, whatever its layout.
        for i in 0..2_000 {
            let key = ek(format!("key{i}").as_bytes());
            if let Some(record) = cache.peek(&key) {
                let len = [10, SHARE_FROM - 1, SHARE_FROM, 3 * SHARE_FROM][i % 4];
                let (fill, want) = if i % 3 == 0 { (1, len + 1) } else { (0, len) };
                assert_eq!(record.len(), want, "{i}");
                assert!(record.iter().all(|&byte| byte == fill), "{i}");
            }
        }
    }

    #[test]
    fn an_update_too_large_to_cache_drops_the_old_record() {
        let cache = ItemCache::new(SHARDS * 1024);
        read_through(&cache, &ek(b"k"), &b(b"small"));
        cache.update(&ek(b"k"), Some(&b(&[7u8; 4096])));
        assert!(
            matches!(
                cache.get(key_hash(&ek(b"k")), &ek(b"k"), None),
                Lookup::Miss(_)
            ),
            "the old record must not be served after a write the cache cannot hold"
        );
    }

    fn record_with_seq(seq: u64) -> Bytes {
        use murakumo_engine::record::{ItemHeader, Record};
        Record {
            header: ItemHeader {
                seq,
                ..ItemHeader::default()
            },
            value: Bytes::from_static(b"v"),
        }
        .encode()
    }

    fn previous_fetch(cache: &ItemCache, fetched_at: Option<u32>) -> Option<u32> {
        match cache.get(key_hash(&ek(b"k")), &ek(b"k"), fetched_at) {
            Lookup::Hit { previous_fetch, .. } => previous_fetch,
            Lookup::Miss(_) => panic!("k should be cached"),
        }
    }

    #[test]
    fn fetch_marks_follow_memcached() {
        let cache = ItemCache::new(1 << 20);
        let Lookup::Miss(token) = cache.get(key_hash(&ek(b"k")), &ek(b"k"), Some(100)) else {
            panic!()
        };
        // Read from the engine at 100: that fetch is the first.
        cache.fill(token, &ek(b"k"), &b(&record_with_seq(1)), Some(100));
        assert_eq!(previous_fetch(&cache, Some(105)), Some(100));
        // Meta `u`: reported, not recorded.
        assert_eq!(previous_fetch(&cache, None), Some(105));
        assert_eq!(previous_fetch(&cache, Some(110)), Some(105));
        // A new version of the item starts over.
        cache.update(&ek(b"k"), Some(&b(&record_with_seq(2))));
        assert_eq!(previous_fetch(&cache, Some(120)), None);
        // A fetch through the writer counts for the version it returned, and only that.
        assert_eq!(cache.record_fetch(&ek(b"k"), 2, Some(125)), Some(120));
        assert_eq!(cache.record_fetch(&ek(b"k"), 1, Some(126)), None);
        assert_eq!(previous_fetch(&cache, None), Some(125));
    }

    /// What the table's operations do to its entries, checked against a map.
    #[derive(Debug, Clone)]
    enum TableOp {
        Insert(u8),
        Remove(u8),
        Evict,
    }

    /// A hash that makes keys collide in small groups, and makes half of them start at
    /// the table's last slots whatever its size, so probes and backward shifts wrap.
    fn crowded_hash(id: u8) -> u64 {
        let low = if id.is_multiple_of(2) {
            u32::MAX - u32::from(id % 3)
        } else {
            u32::from(id % 5)
        };
        (u64::from(id) << 32) | u64::from(low)
    }

    proptest! {
        #[test]
        fn the_table_finds_exactly_what_it_holds(
            ops in proptest::collection::vec(
                prop_oneof![
                    4 => (0u8..48).prop_map(TableOp::Insert),
                    2 => (0u8..48).prop_map(TableOp::Remove),
                    1 => Just(TableOp::Evict),
                ],
                1..400,
            )
        ) {
            let mut table = Table::default();
            let mut model = std::collections::BTreeSet::new();
            let key = |id: u8| format!("key{id}").into_bytes();
            for op in ops {
                match op {
                    TableOp::Insert(id) => {
                        if model.insert(id) {
                            let block = Block::new(&key(id), &b(&[id; 3]));
                            table.insert_new(crowded_hash(id), block, None);
                        }
                    }
                    TableOp::Remove(id) => {
                        let at = table.position(crowded_hash(id), &key(id));
                        prop_assert_eq!(at.is_some(), model.remove(&id));
                        if let Some(at) = at {
                            table.remove_at(at);
                        }
                    }
                    TableOp::Evict => {
                        let victim = table.evict(None);
                        prop_assert_eq!(victim.is_some(), !model.is_empty());
                        if let Some(victim) = victim {
                            let id = victim.record_bytes()[0];
                            prop_assert_eq!(victim.key(), &key(id)[..]);
                            prop_assert!(model.remove(&id));
                        }
                    }
                }
                prop_assert_eq!(table.len, model.len());
                prop_assert!(table.len * 4 <= table.slots.len() * 3);
                for id in 0u8..48 {
                    let found = table.find(crowded_hash(id), &key(id));
                    prop_assert_eq!(found.is_some(), model.contains(&id), "key {}", id);
                    if let Some(block) = found {
                        prop_assert_eq!(block.record_bytes(), &[id; 3][..]);
                    }
                }
            }
        }
    }

    #[test]
    fn a_slot_is_a_quarter_of_a_cache_line_and_a_block_one_allocation() {
        let block = Block::new(b"key", &b(b"record"));
        assert_eq!(block.key(), b"key");
        assert_eq!(block.record_bytes(), b"record");
        // The key and the record share the allocation the slot points at.
        let CachedRecord::Packed { block: shared, .. } = block.record() else {
            panic!("a small record is packed");
        };
        assert_eq!(shared.0.slice.as_ptr(), block.0.slice.as_ptr());
    }

    #[test]
    fn a_zero_capacity_cache_stores_nothing() {
        let cache = ItemCache::new(0);
        cache.update(&ek(b"k"), Some(&b(b"v")));
        let Lookup::Miss(token) = cache.get(key_hash(&ek(b"k")), &ek(b"k"), None) else {
            panic!()
        };
        cache.fill(token, &ek(b"k"), &b(b"v"), None);
        assert!(matches!(
            cache.get(key_hash(&ek(b"k")), &ek(b"k"), None),
            Lookup::Miss(_)
        ));
    }
}
