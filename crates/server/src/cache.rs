//! A bounded in-memory cache of item records, in front of the engine.

use std::sync::Arc;

use bytes::Bytes;
use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use parking_lot::Mutex;

const SHARDS: usize = 64;
/// Per-entry bookkeeping beyond key and record bytes (table slot, allocation header).
const ENTRY_OVERHEAD: usize = 48;
/// What a shared entry (see [`SHARE_FROM`]) adds: its box, the key's allocation, the
/// `Bytes` handle, and the rest of an engine block (about `SHARE_FROM` bytes) that a
/// record read from the engine may keep alive.
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
/// Layout: each entry is one allocation holding the key and then the record, and the
/// table slot keeps the full hash and the fetch mark (meta `h`/`l`) beside it. A hit
/// therefore touches the slot and one
/// heap block (whose first line holds the reference count, the key and the record
/// header), instead of separate blocks for key, record and their reference counts: on a
/// large cache every one of those is a cache miss, and they dominated the cost of a get.
/// Small records are copied in, so a slice returned by the engine cannot keep a whole
/// block alive and the memory bound holds. Large ones (see [`SHARE_FROM`]) are kept as
/// handed in: a record that large fills most of the engine block it shares, and its
/// entry is charged for the rest of a block as well. Eviction is arbitrary (whatever the
/// table yields first); the cache only has to keep the hot set, and the engine remains the
/// source of truth.
pub(crate) struct ItemCache {
    /// Padded so that readers on different cores locking different shards do not contend
    /// for one cache line.
    shards: Vec<CachePadded<Mutex<Shard>>>,
    shard_capacity: usize,
}

#[derive(Default)]
struct Shard {
    entries: HashTable<Entry>,
    bytes: usize,
    /// Bumped by every writer update of this shard.
    generation: u64,
}

/// Records at least this long are cached as the caller's `Bytes` instead of being copied
/// into a packed block: copying a 100 KiB record twice (into the block, then into its
/// `Arc`) was a sixth of the server's time on a 100 KiB get load, and next to a record that
/// large a separate allocation for its key costs nothing worth counting.
const SHARE_FROM: usize = 4096;

/// A cached record with its key.
struct Entry {
    hash: u64,
    block: Block,
    /// When this version of the item was last fetched (meta `h`, `l`; see `access`).
    /// It lives in the table slot, which a lookup has just read anyway.
    last_fetch: Option<u32>,
}

/// Where an entry's key and record live.
enum Block {
    /// `key || record` in one allocation, for small records (see the cache's layout).
    Packed { bytes: Arc<[u8]>, key_len: usize },
    /// A large record shared with whoever handed it in, and its key.
    Shared(Box<SharedBlock>),
}

struct SharedBlock {
    key: Box<[u8]>,
    record: Bytes,
}

impl Entry {
    fn new(hash: u64, key: &[u8], record: &Bytes) -> Self {
        let block = if record.len() >= SHARE_FROM {
            Block::Shared(Box::new(SharedBlock {
                key: key.into(),
                record: record.clone(),
            }))
        } else {
            let mut packed = Vec::with_capacity(key.len() + record.len());
            packed.extend_from_slice(key);
            packed.extend_from_slice(record);
            Block::Packed {
                bytes: packed.into(),
                key_len: key.len(),
            }
        };
        Self {
            hash,
            block,
            last_fetch: None,
        }
    }

    #[inline]
    fn key(&self) -> &[u8] {
        match &self.block {
            Block::Packed { bytes, key_len } => &bytes[..*key_len],
            Block::Shared(shared) => &shared.key,
        }
    }

    fn record_bytes(&self) -> &[u8] {
        match &self.block {
            Block::Packed { bytes, key_len } => &bytes[*key_len..],
            Block::Shared(shared) => &shared.record,
        }
    }

    /// What tells this entry apart from every other one in its shard, whatever its key.
    fn identity(&self) -> *const u8 {
        match &self.block {
            Block::Packed { bytes, .. } => bytes.as_ptr(),
            Block::Shared(shared) => shared.key.as_ptr(),
        }
    }

    fn cost(&self) -> usize {
        entry_cost(self.key().len(), self.record_bytes().len())
    }

    /// Records a fetch at `fetched_at` (unless `None`: meta `u`) and returns the previous
    /// one. Written only when it changes (once a second at most for a hot key), so that
    /// reads of a hot key do not keep dirtying its slot's cache line; the mark has a
    /// resolution of seconds anyway.
    fn mark_fetch(&mut self, fetched_at: Option<u32>) -> Option<u32> {
        let previous_fetch = self.last_fetch;
        if fetched_at.is_some() && fetched_at != previous_fetch {
            self.last_fetch = fetched_at;
        }
        previous_fetch
    }

    /// The record, sharing the block.
    fn record(&self) -> CachedRecord {
        match &self.block {
            Block::Packed { bytes, key_len } => CachedRecord::Packed {
                block: Arc::clone(bytes),
                start: *key_len,
            },
            Block::Shared(shared) => CachedRecord::Shared(shared.record.clone()),
        }
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
/// [`Bytes`] keeps a get hit free of allocations: a `Bytes` over an `Arc` needs a boxed
/// owner. Callers that must keep the record as `Bytes` pay for that conversion with
/// [`to_bytes`](Self::to_bytes); a large record is a `Bytes` already.
#[derive(Debug, Clone)]
pub(crate) enum CachedRecord {
    Packed { block: Arc<[u8]>, start: usize },
    Shared(Bytes),
}

impl CachedRecord {
    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Packed { block, start } => &block[*start..],
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

impl Shard {
    #[inline]
    fn find(&self, hash: u64, key: &[u8]) -> Option<&Entry> {
        self.entries
            .find(hash, |e| e.hash == hash && e.key() == key)
    }

    #[inline]
    fn find_mut(&mut self, hash: u64, key: &[u8]) -> Option<&mut Entry> {
        self.entries
            .find_mut(hash, |e| e.hash == hash && e.key() == key)
    }

    /// Removes `key`'s entry; whether there was one.
    fn remove(&mut self, hash: u64, key: &[u8]) -> bool {
        let Ok(found) = self
            .entries
            .find_entry(hash, |e| e.hash == hash && e.key() == key)
        else {
            return false;
        };
        let (entry, _) = found.remove();
        self.bytes -= entry.cost();
        true
    }

    /// Whether an entry of `cost` fits beside the others without evicting any.
    fn has_room_for(&self, cost: usize, capacity: usize) -> bool {
        self.bytes + cost <= capacity
    }

    /// Puts `entry` in, replacing the key's old one, and evicts others to make room if
    /// `evict` says so; otherwise an entry that does not fit stays out.
    fn insert(&mut self, entry: Entry, capacity: usize, evict: bool) {
        let added = entry.cost();
        self.remove(entry.hash, entry.key());
        if added > capacity || (!evict && !self.has_room_for(added, capacity)) {
            return;
        }
        while self.bytes + added > capacity {
            let Some(victim) = self.entries.iter().next() else {
                break;
            };
            let (hash, identity) = (victim.hash, victim.identity());
            if let Ok(found) = self.entries.find_entry(hash, |e| e.identity() == identity) {
                let (entry, _) = found.remove();
                self.bytes -= entry.cost();
            }
        }
        self.bytes += added;
        self.entries.insert_unique(entry.hash, entry, |e| e.hash);
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
        }
    }

    /// Bytes the cached entries account for (records, keys and per-entry overhead).
    pub(crate) fn bytes(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().bytes).sum()
    }

    fn shard_of(hash: u64) -> usize {
        // The table uses the low bits; the shard takes the high ones.
        (hash >> 58) as usize % SHARDS
    }

    /// The cached record of `key`, if any. For the writer, which is the only updater, so
    /// a cached record is exactly the committed one.
    pub(crate) fn peek(&self, key: &[u8]) -> Option<Bytes> {
        let hash = key_hash(key);
        self.shards[Self::shard_of(hash)]
            .lock()
            .find(hash, key)
            .map(|entry| entry.record().to_bytes())
    }

    /// Looks up `key`, whose [`key_hash`] the caller has already computed, and records a
    /// fetch at `fetched_at` unless that is `None` (meta `u`).
    pub(crate) fn get(&self, hash: u64, key: &[u8], fetched_at: Option<u32>) -> Lookup {
        let shard = Self::shard_of(hash);
        let mut guard = self.shards[shard].lock();
        match guard.find_mut(hash, key) {
            Some(entry) => Lookup::Hit {
                previous_fetch: entry.mark_fetch(fetched_at),
                record: entry.record(),
            },
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
        let mut entry = Entry::new(token.hash, key, record);
        entry.last_fetch = fetched_at;
        let mut shard = self.shards[token.shard].lock();
        if shard.generation == token.generation {
            shard.insert(entry, self.shard_capacity, true);
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
        let mut shard = self.shards[Self::shard_of(hash)].lock();
        let entry = shard.find_mut(hash, key)?;
        let cached_seq = murakumo_engine::record::decode_header(entry.record_bytes())
            .ok()?
            .seq;
        if cached_seq != seq {
            return None;
        }
        entry.mark_fetch(fetched_at)
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
        let shard = Self::shard_of(hash);
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
        let entry = Entry::new(hash, key, record);
        let mut guard = self.shards[shard].lock();
        if guard.generation == generation && guard.find(hash, key).is_none() {
            guard.insert(entry, self.shard_capacity, replaced);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    #[test]
    fn fill_then_hit_and_writer_updates_win() {
        let cache = ItemCache::new(1 << 20);
        let Lookup::Miss(token) = cache.get(key_hash(b"k"), b"k", None) else {
            panic!()
        };
        cache.fill(token, b"k", &b(b"v1"), None);
        assert!(
            matches!(cache.get(key_hash(b"k"), b"k", None), Lookup::Hit { record: r, .. } if r.as_bytes() == b"v1")
        );
        cache.update(b"k", Some(&b(b"v2")));
        assert!(
            matches!(cache.get(key_hash(b"k"), b"k", None), Lookup::Hit { record: r, .. } if r.as_bytes() == b"v2")
        );
        cache.update(b"k", None);
        assert!(matches!(
            cache.get(key_hash(b"k"), b"k", None),
            Lookup::Miss(_)
        ));
    }

    #[test]
    fn a_fill_that_raced_a_write_is_refused() {
        let cache = ItemCache::new(1 << 20);
        let Lookup::Miss(token) = cache.get(key_hash(b"k"), b"k", None) else {
            panic!()
        };
        // The writer commits (and then evicts, or deletes) while the reader holds an old
        // value from the engine.
        cache.update(b"k", Some(&b(b"new")));
        cache.update(b"k", None);
        cache.fill(token, b"k", &b(b"old"), None);
        assert!(
            matches!(cache.get(key_hash(b"k"), b"k", None), Lookup::Miss(_)),
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
        let shard = ItemCache::shard_of(key_hash(b"read"));
        let same_shard = |prefix: &'static str| {
            (0..)
                .map(move |i| format!("{prefix}{i}"))
                .filter(move |key| ItemCache::shard_of(key_hash(key.as_bytes())) == shard)
        };
        cache.update(b"written", Some(&b(b"v1")));
        assert!(
            matches!(cache.get(key_hash(b"written"), b"written", None), Lookup::Hit { record: r, .. } if r.as_bytes() == b"v1"),
            "a write is cached while there is room"
        );
        read_through(&cache, b"read", &b(b"v1"));
        cache.update(b"read", Some(&b(b"v2")));
        assert!(
            matches!(cache.get(key_hash(b"read"), b"read", None), Lookup::Hit { record: r, .. } if r.as_bytes() == b"v2")
        );
        // Reads fill the shard up; writes of new keys must then stay out rather than
        // push out what was read.
        let read_keys: Vec<String> = same_shard("read").take(40).collect();
        for key in &read_keys {
            read_through(&cache, key.as_bytes(), &b(&[0u8; 100]));
        }
        let full = cache.shards[shard].lock().bytes;
        let cached_before: Vec<bool> = read_keys
            .iter()
            .map(|key| cache.peek(key.as_bytes()).is_some())
            .collect();
        assert!(cached_before.iter().filter(|&&c| c).count() >= 4);
        for key in same_shard("written").take(40) {
            cache.update(key.as_bytes(), Some(&b(&[1u8; 100])));
            assert!(cache.peek(key.as_bytes()).is_none(), "{key} evicted a read");
        }
        let cached_after: Vec<bool> = read_keys
            .iter()
            .map(|key| cache.peek(key.as_bytes()).is_some())
            .collect();
        assert_eq!(cached_before, cached_after);
        assert_eq!(cache.shards[shard].lock().bytes, full);
    }

    #[test]
    fn memory_stays_bounded() {
        let capacity = SHARDS * 1024;
        let cache = ItemCache::new(capacity);
        for i in 0..10_000 {
            let key = format!("key{i}");
            read_through(&cache, key.as_bytes(), &b(&[0u8; 100]));
            cache.update(key.as_bytes(), Some(&b(&[1u8; 100])));
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
        read_through(&cache, b"k", &read);
        let Lookup::Hit { record, .. } = cache.get(key_hash(b"k"), b"k", None) else {
            panic!("k should be cached")
        };
        assert_eq!(
            record.as_bytes().as_ptr(),
            read.as_ptr(),
            "the fill was copied"
        );
        assert_eq!(record.to_bytes().as_ptr(), read.as_ptr());
        let written = Bytes::from(vec![4u8; SHARE_FROM * 2]);
        cache.update(b"k", Some(&written));
        assert_eq!(
            cache.peek(b"k").map(|r| r.as_ptr()),
            Some(written.as_ptr()),
            "the update was copied"
        );
        // Small records are still packed with their key.
        let small = b(b"small");
        read_through(&cache, b"s", &small);
        assert_ne!(cache.peek(b"s").map(|r| r.as_ptr()), Some(small.as_ptr()));
        assert_eq!(cache.peek(b"s"), Some(small));
    }

    #[test]
    fn memory_stays_bounded_with_records_of_every_size() {
        let capacity = SHARDS * 64 * 1024;
        let cache = ItemCache::new(capacity);
        for i in 0..2_000 {
            let key = format!("key{i}");
            let len = [10, SHARE_FROM - 1, SHARE_FROM, 3 * SHARE_FROM][i % 4];
            read_through(&cache, key.as_bytes(), &Bytes::from(vec![0u8; len]));
            if i % 3 == 0 {
                cache.update(key.as_bytes(), Some(&Bytes::from(vec![1u8; len + 1])));
            }
            assert!(cache.bytes() <= capacity, "{} > {capacity}", cache.bytes());
        }
        let cached = (0..2_000)
            .filter(|i| cache.peek(format!("key{i}").as_bytes()).is_some())
            .count();
        assert!(
            cached > 100,
            "the cache should still be used: {cached} entries"
        );
        // Every cached record is the one last written or read, whatever its layout.
        for i in 0..2_000 {
            let key = format!("key{i}");
            if let Some(record) = cache.peek(key.as_bytes()) {
                let len = [10, SHARE_FROM - 1, SHARE_FROM, 3 * SHARE_FROM][i % 4];
                let (fill, want) = if i % 3 == 0 { (1, len + 1) } else { (0, len) };
                assert_eq!(record.len(), want, "{key}");
                assert!(record.iter().all(|&byte| byte == fill), "{key}");
            }
        }
    }

    #[test]
    fn an_update_too_large_to_cache_drops_the_old_record() {
        let cache = ItemCache::new(SHARDS * 1024);
        read_through(&cache, b"k", &b(b"small"));
        cache.update(b"k", Some(&b(&[7u8; 4096])));
        assert!(
            matches!(cache.get(key_hash(b"k"), b"k", None), Lookup::Miss(_)),
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
        match cache.get(key_hash(b"k"), b"k", fetched_at) {
            Lookup::Hit { previous_fetch, .. } => previous_fetch,
            Lookup::Miss(_) => panic!("k should be cached"),
        }
    }

    #[test]
    fn fetch_marks_follow_memcached() {
        let cache = ItemCache::new(1 << 20);
        let Lookup::Miss(token) = cache.get(key_hash(b"k"), b"k", Some(100)) else {
            panic!()
        };
        // Read from the engine at 100: that fetch is the first.
        cache.fill(token, b"k", &b(&record_with_seq(1)), Some(100));
        assert_eq!(previous_fetch(&cache, Some(105)), Some(100));
        // Meta `u`: reported, not recorded.
        assert_eq!(previous_fetch(&cache, None), Some(105));
        assert_eq!(previous_fetch(&cache, Some(110)), Some(105));
        // A new version of the item starts over.
        cache.update(b"k", Some(&b(&record_with_seq(2))));
        assert_eq!(previous_fetch(&cache, Some(120)), None);
        // A fetch through the writer counts for the version it returned, and only that.
        assert_eq!(cache.record_fetch(b"k", 2, Some(125)), Some(120));
        assert_eq!(cache.record_fetch(b"k", 1, Some(126)), None);
        assert_eq!(previous_fetch(&cache, None), Some(125));
    }

    #[test]
    fn a_zero_capacity_cache_stores_nothing() {
        let cache = ItemCache::new(0);
        cache.update(b"k", Some(&b(b"v")));
        let Lookup::Miss(token) = cache.get(key_hash(b"k"), b"k", None) else {
            panic!()
        };
        cache.fill(token, b"k", &b(b"v"), None);
        assert!(matches!(
            cache.get(key_hash(b"k"), b"k", None),
            Lookup::Miss(_)
        ));
    }
}
