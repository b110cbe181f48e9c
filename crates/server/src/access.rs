//! What a fetch learns about an item's earlier fetches: the meta protocol's `h` and `l`.
//!
//! memcached keeps a "fetched" bit and an access time in every item. We do not write them
//! to the engine, because that would turn every read into a write. The item cache keeps
//! them instead, beside each cached record (see `cache`): a get already holds the record's
//! table slot, so the mark costs no extra memory access, and a rewritten item gets a new
//! cache entry and so starts out "not fetched", as in memcached. The trade: an item whose
//! record is not in the cache (never read since the last start, or evicted) reads as not
//! fetched yet. That is fine for flags that exist to guide cache heuristics.

/// What a fetch learns about an item's earlier fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessInfo {
    /// The item had been fetched before this fetch (`h1`).
    pub fetched_before: bool,
    /// Unix seconds of the previous access (the write, if it was never fetched).
    pub last_access: u32,
}

impl AccessInfo {
    /// From the time of the previous fetch, if there was one, and the time of the write.
    pub(crate) fn new(previous_fetch: Option<u32>, written_at: u32) -> Self {
        Self {
            fetched_before: previous_fetch.is_some(),
            last_access: previous_fetch.unwrap_or(written_at),
        }
    }
}
