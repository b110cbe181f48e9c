//! A bounded in-memory cache of item records, in front of the engine.

use std::collections::HashMap;

use bytes::Bytes;
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

const SHARDS: usize = 64;
/// Per-entry bookkeeping beyond key and value bytes (map slot, `Bytes` headers).
const ENTRY_OVERHEAD: usize = 64;

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The record as last committed.
    Hit(Bytes),
    /// Not cached; pass the token to [`ItemCache::fill`] after reading the engine.
    Miss(FillToken),
}

/// Proof of which shard state a reader saw before it went to the engine.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FillToken {
    shard: usize,
    generation: u64,
}

/// Records of recently read and written items, keyed by engine key.
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
/// Values are copied on fill: a slice returned by the engine may keep a whole block alive,
/// and the memory bound must hold. Eviction is arbitrary (whatever the map yields first);
/// the cache only has to keep the hot set, and the engine remains the source of truth.
pub(crate) struct ItemCache {
    /// Padded so that readers on different cores locking different shards do not contend
    /// for one cache line.
    shards: Vec<CachePadded<Mutex<Shard>>>,
    shard_capacity: usize,
}

#[derive(Default)]
struct Shard {
    records: HashMap<Bytes, Bytes, Xxh3DefaultBuilder>,
    bytes: usize,
    /// Bumped by every writer update of this shard.
    generation: u64,
}

impl Shard {
    fn remove(&mut self, key: &[u8]) {
        if let Some((key, record)) = self.records.remove_entry(key) {
            self.bytes -= cost(&key, &record);
        }
    }

    fn insert(&mut self, key: Bytes, record: Bytes, capacity: usize) {
        let added = cost(&key, &record);
        if added > capacity {
            return;
        }
        self.remove(&key);
        while self.bytes + added > capacity {
            let Some(victim) = self.records.keys().next().cloned() else {
                break;
            };
            self.remove(&victim);
        }
        self.bytes += added;
        self.records.insert(key, record);
    }
}

fn cost(key: &[u8], record: &[u8]) -> usize {
    key.len() + record.len() + ENTRY_OVERHEAD
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

    fn shard_of(key: &[u8]) -> usize {
        (xxhash_rust::xxh3::xxh3_64(key) as usize) % SHARDS
    }

    /// The cached record of `key`, if any. For the writer, which is the only updater, so
    /// a cached record is exactly the committed one.
    pub(crate) fn peek(&self, key: &[u8]) -> Option<Bytes> {
        self.shards[Self::shard_of(key)]
            .lock()
            .records
            .get(key)
            .cloned()
    }

    /// Looks a key up.
    pub(crate) fn get(&self, key: &[u8]) -> Lookup {
        let shard = Self::shard_of(key);
        let guard = self.shards[shard].lock();
        match guard.records.get(key) {
            Some(record) => Lookup::Hit(record.clone()),
            None => Lookup::Miss(FillToken {
                shard,
                generation: guard.generation,
            }),
        }
    }

    /// Offers a record a reader found in the engine; see the type's documentation.
    pub(crate) fn fill(&self, token: FillToken, key: Bytes, record: &[u8]) {
        if self.shard_capacity == 0 {
            return;
        }
        let mut shard = self.shards[token.shard].lock();
        if shard.generation == token.generation {
            let record = Bytes::copy_from_slice(record);
            shard.insert(key, record, self.shard_capacity);
        }
    }

    /// The writer's record of a committed change: the new record, or `None` for a removal.
    pub(crate) fn update(&self, key: &Bytes, record: Option<&Bytes>) {
        let mut shard = self.shards[Self::shard_of(key)].lock();
        shard.generation += 1;
        match record {
            Some(record) if self.shard_capacity > 0 => {
                shard.insert(key.clone(), record.clone(), self.shard_capacity);
            }
            _ => shard.remove(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn fill_then_hit_and_writer_updates_win() {
        let cache = ItemCache::new(1 << 20);
        let Lookup::Miss(token) = cache.get(b"k") else {
            panic!()
        };
        cache.fill(token, b("k"), b"v1");
        assert!(matches!(cache.get(b"k"), Lookup::Hit(r) if r == "v1"));
        cache.update(&b("k"), Some(&b("v2")));
        assert!(matches!(cache.get(b"k"), Lookup::Hit(r) if r == "v2"));
        cache.update(&b("k"), None);
        assert!(matches!(cache.get(b"k"), Lookup::Miss(_)));
    }

    #[test]
    fn a_fill_that_raced_a_write_is_refused() {
        let cache = ItemCache::new(1 << 20);
        let Lookup::Miss(token) = cache.get(b"k") else {
            panic!()
        };
        // The writer commits (and then evicts, or deletes) while the reader holds an old
        // value from the engine.
        cache.update(&b("k"), Some(&b("new")));
        cache.update(&b("k"), None);
        cache.fill(token, b("k"), b"old");
        assert!(
            matches!(cache.get(b"k"), Lookup::Miss(_)),
            "a stale read must not be cached"
        );
    }

    #[test]
    fn memory_stays_bounded() {
        let capacity = SHARDS * 1024;
        let cache = ItemCache::new(capacity);
        for i in 0..10_000 {
            cache.update(&b(&format!("key{i}")), Some(&Bytes::from(vec![0u8; 100])));
        }
        let total: usize = cache.shards.iter().map(|s| s.lock().bytes).sum();
        assert!(total <= capacity, "{total} > {capacity}");
        assert!(
            total > capacity / 2,
            "the cache should still be used: {total}"
        );
    }

    #[test]
    fn a_zero_capacity_cache_stores_nothing() {
        let cache = ItemCache::new(0);
        cache.update(&b("k"), Some(&b("v")));
        let Lookup::Miss(token) = cache.get(b"k") else {
            panic!()
        };
        cache.fill(token, b("k"), b"v");
        assert!(matches!(cache.get(b"k"), Lookup::Miss(_)));
    }
}
