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
mod writer;

/// Maps on the request path. std's default SipHash guards against keys chosen to
/// collide; these maps are keyed by namespace ids, partitions and engine keys that
/// already spread by a hash of ours, and SipHash showed up in every request's profile.
type FastMap<K, V> = std::collections::HashMap<K, V, xxhash_rust::xxh3::Xxh3DefaultBuilder>;
/// The set counterpart of [`FastMap`].
type FastSet<T> = std::collections::HashSet<T, xxhash_rust::xxh3::Xxh3DefaultBuilder>;

pub use access::AccessInfo;
pub use clock::Clock;
pub use error::StoreError;
pub use expiry::Exptime;
pub use store::{Store, StoreConfig, StoreStats, StoreStatsSnapshot, SweepConfig, SyncPolicy};
