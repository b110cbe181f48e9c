//! The storage node's item store.
//!
//! [`Store`] gives every memcached command its exact semantics over an
//! [`Engine`](murakumo_engine::Engine): CAS, add/replace conditions, append keeping flags,
//! 64-bit counters, expiry, `flush_all` with delay, and the meta protocol's stale/win state.
//! It does so independently of any wire protocol (see [`ops`]), so the gateway's text,
//! meta and binary front ends, and later replication, share one implementation.
//!
//! Shape of the store (details in each module):
//! - reads run on the caller's thread directly against the engine;
//! - mutations go to a single writer thread that sequences them per partition, evaluates
//!   them against the current state, and commits them in groups: one engine batch and at
//!   most one fsync per group ([`SyncPolicy`]);
//! - a sweeper reclaims expired and flushed records in the background;
//! - in memory storage ([`Store::open_in_memory`]) there is no engine for items: the item
//!   cache's table is their only copy, within a byte bound, and evicts to stay in it;
//! - an engine failure takes the store out of service ([`StoreError::Unavailable`]).

mod access;
mod cache;
pub mod clock;
mod error;
pub mod expiry;
pub mod ops;
mod partition;
pub mod placement;
mod store;
mod sweep;
mod wakeup;
mod writer;

/// Maps keyed by client keys on the request path. std's default SipHash guards against
/// keys chosen to collide; these keys are engine keys, which xxh3 spreads as well, and
/// SipHash showed up in every request's profile.
type FastMap<K, V> = std::collections::HashMap<K, V, xxhash_rust::xxh3::Xxh3DefaultBuilder>;

/// Maps keyed by namespace and partition ids. The ids come from the cluster map, never
/// from clients, and even xxh3's streaming hasher cost more per read than the lookup.
type IdMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;
/// The set counterpart of [`IdMap`].
type IdSet<T> = std::collections::HashSet<T, std::hash::BuildHasherDefault<IdHasher>>;

/// A multiply-rotate hash of small integers, for [`IdMap`]. The multiplier is odd, so
/// distinct ids keep distinct low bits, and the multiply spreads them into the high bits
/// the table's control bytes use.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl IdHasher {
    fn mix(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.mix(u64::from(b));
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.mix(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
}

pub use access::AccessInfo;
pub use clock::Clock;
pub use error::StoreError;
pub use expiry::Exptime;
pub use store::{
    DEFAULT_SYNC_INTERVAL_MS, Store, StoreConfig, StoreStats, StoreStatsSnapshot, SweepConfig,
    SyncPolicy,
};
