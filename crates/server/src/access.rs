//! Which items have been fetched, and when: the meta protocol's `h` and `l` flags.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Marks are keyed by a hash already; hashing it again would only cost time.
#[derive(Default)]
struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Marks = HashMap<u64, Mark, BuildHasherDefault<PrehashedKey>>;

/// Marks kept per shard before the shard is reset (see [`AccessTracker`]).
const MARKS_PER_SHARD: usize = 1 << 16;
const SHARDS: usize = 16;

/// What a fetch learns about an item's earlier fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessInfo {
    /// The item had been fetched before this fetch (`h1`).
    pub fetched_before: bool,
    /// Unix seconds of the previous access (the write, if it was never fetched).
    pub last_access: u32,
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    seq: u64,
    last_access: u32,
}

/// Tracks fetches in memory.
///
/// memcached keeps a "fetched" bit and an access time in every item. We do not write them
/// to the engine, because that would turn every read into a write. Instead we keep a mark
/// per fetched item in a sharded in-memory map, keyed by a hash of the engine key and
/// valid only for the item version (sequence number) it was taken on, so a rewritten
/// item starts out "not fetched" as in memcached. Memory is bounded: a shard that reaches
/// its limit is cleared, which makes some items look not fetched yet. That trade is fine
/// for flags that exist to guide cache heuristics. Marks do not survive a restart.
pub(crate) struct AccessTracker {
    shards: Vec<Mutex<Marks>>,
}

impl AccessTracker {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Marks::default())).collect(),
        }
    }

    /// Records a fetch of the item version `seq` at `now`, unless `bump` is false (meta
    /// `u`), and returns what was known before it.
    pub(crate) fn observe(
        &self,
        key_hash: u64,
        seq: u64,
        written_at: u32,
        now: u32,
        bump: bool,
    ) -> AccessInfo {
        let mut shard = self.shards[(key_hash as usize) % SHARDS].lock();
        let previous = shard.get(&key_hash).filter(|mark| mark.seq == seq).copied();
        if bump {
            if shard.len() >= MARKS_PER_SHARD && previous.is_none() {
                shard.clear();
            }
            shard.insert(
                key_hash,
                Mark {
                    seq,
                    last_access: now,
                },
            );
        }
        match previous {
            Some(mark) => AccessInfo {
                fetched_before: true,
                last_access: mark.last_access,
            },
            None => AccessInfo {
                fetched_before: false,
                last_access: written_at,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetched_state_follows_memcached() {
        let tracker = AccessTracker::new();
        // Not bumped: the next fetch still sees "not fetched".
        assert!(!tracker.observe(1, 10, 100, 105, false).fetched_before);
        let first = tracker.observe(1, 10, 100, 106, true);
        assert_eq!(
            first,
            AccessInfo {
                fetched_before: false,
                last_access: 100
            }
        );
        let second = tracker.observe(1, 10, 100, 110, true);
        assert_eq!(
            second,
            AccessInfo {
                fetched_before: true,
                last_access: 106
            }
        );
        // A new version of the item starts over.
        assert!(!tracker.observe(1, 11, 120, 121, true).fetched_before);
    }
}
