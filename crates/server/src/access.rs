//! Which items have been fetched, and when: the meta protocol's `h` and `l` flags.

use std::sync::atomic::{AtomicU64, Ordering};

/// Slots in the table: 8 MiB of marks.
const SLOTS: usize = 1 << 20;

/// What a fetch learns about an item's earlier fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessInfo {
    /// The item had been fetched before this fetch (`h1`).
    pub fetched_before: bool,
    /// Unix seconds of the previous access (the write, if it was never fetched).
    pub last_access: u32,
}

/// Tracks fetches in memory.
///
/// memcached keeps a "fetched" bit and an access time in every item. We do not write them
/// to the engine, because that would turn every read into a write. Instead we keep a mark
/// per fetched item version in a fixed table of atomic words, indexed by a hash of the
/// engine key: a 32-bit tag of (key, sequence number) and the access time in seconds.
/// A mark is valid only for the item version it was taken on, so a rewritten item starts
/// out "not fetched", as in memcached.
///
/// Why this shape: every get observes its item, so this is on the hottest path there is.
/// A lookup is one load; a fetch writes its slot only when the mark changes (a new
/// version, or a new second), so repeated reads of a hot item do not bounce a cache line
/// between cores, and no lock is taken. Memory is fixed. Two item versions that share a
/// slot evict each other's mark, which makes one look not fetched yet; a tag collision
/// (one in 2^32) makes one look fetched. That trade is fine for flags that exist to guide
/// cache heuristics. Marks do not survive a restart.
pub(crate) struct AccessTracker {
    slots: Box<[AtomicU64]>,
}

impl AccessTracker {
    pub(crate) fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
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
        let slot = &self.slots[(key_hash as usize) % SLOTS];
        let tag = version_tag(key_hash, seq);
        let mark = slot.load(Ordering::Relaxed);
        let previous = (mark != 0 && (mark >> 32) as u32 == tag).then_some(mark as u32);
        if bump && previous != Some(now) {
            slot.store((u64::from(tag) << 32) | u64::from(now), Ordering::Relaxed);
        }
        match previous {
            Some(last_access) => AccessInfo {
                fetched_before: true,
                last_access,
            },
            None => AccessInfo {
                fetched_before: false,
                last_access: written_at,
            },
        }
    }
}

/// 32 bits that tell one item version from another sharing its slot. The slot index
/// already used the hash's low bits, so the tag takes the high ones, mixed with the
/// sequence number so that a new version of the same key gets a new tag.
fn version_tag(key_hash: u64, seq: u64) -> u32 {
    let mixed = (key_hash >> 32) ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // Tag 0 with time 0 would read as an empty slot; times are never 0, but keep tags
    // nonzero anyway so the empty word stays unambiguous.
    ((mixed >> 32) as u32 ^ mixed as u32).max(1)
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
