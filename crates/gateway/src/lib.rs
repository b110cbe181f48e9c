//! The memcached front end.
//!
//! A [`Gateway`] accepts TCP connections and speaks memcached's text, meta and binary
//! protocols on one port, telling them apart by the first byte as memcached does. Each
//! request is decoded by `murakumo-protocol`, turned into a store operation
//! (`murakumo_server::ops`), and the outcome composed back in the client's protocol.
//!
//! Today the operations go to the node's own [`Store`]. In the cluster the same front end
//! will route them to partition leaders over RPC; nothing here depends on the store being
//! local except the handle type.
//!
//! Resource bounds, per connection: the read buffer never holds more than one maximal
//! frame (the decoders reject or swallow anything larger), and the write buffer is flushed
//! to the socket whenever it passes [`GatewayConfig::max_output_buffer`], so a client that
//! stops reading stalls only itself.

mod ascii;
mod binary;
mod closing;
mod config;
mod connection;
mod conns;
mod counted;
mod crawler;
mod listener;
mod meta;
mod prefix_stats;
mod stats;
mod watch;
mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Instant;

use murakumo_engine::keys::{DEFAULT_NAMESPACE, NamespaceId};
use murakumo_server::Store;

pub use config::{GatewayConfig, MIN_MEMORY_LIMIT_MB, VERSION, read_memory_limit};
pub use listener::serve;
pub use stats::{Counter, GatewayStats};
pub use workers::ConnectionWorkers;

/// Everything connections share: the store, the configuration and the counters.
#[derive(Debug)]
pub struct Gateway {
    store: Store,
    namespace: NamespaceId,
    config: GatewayConfig,
    stats: GatewayStats,
    /// `stats detail`: counts per key prefix, off until asked for.
    prefix_stats: prefix_stats::PrefixStats,
    verbosity: AtomicU32,
    /// Memory limit requested by `cache_memlimit` for the next start, in MiB.
    requested_memory_limit_mb: AtomicU64,
    started: Instant,
    /// Listeners and open connections, for `stats conns`.
    connections: Arc<conns::ConnectionTable>,
    /// Signalled by an allowed `shutdown` command; see [`Gateway::shutdown_requested`].
    shutdown_requested: tokio::sync::Notify,
    /// Connections sent a log of events (`watch`).
    watchers: watch::Watchers,
}

impl Gateway {
    /// A front end for the default namespace of `store`.
    pub fn new(store: Store, config: GatewayConfig) -> Arc<Self> {
        Arc::new(Self {
            requested_memory_limit_mb: AtomicU64::new(config.memory_limit_mb),
            store,
            namespace: DEFAULT_NAMESPACE,
            config,
            stats: GatewayStats::default(),
            prefix_stats: prefix_stats::PrefixStats::default(),
            verbosity: AtomicU32::new(0),
            started: Instant::now(),
            connections: Arc::default(),
            shutdown_requested: tokio::sync::Notify::new(),
            watchers: watch::Watchers::default(),
        })
    }

    /// Resolves once a client has asked the node to stop with `shutdown` (allowed only
    /// with [`GatewayConfig::enable_shutdown`]). Whoever runs the node then stops it as it
    /// would on SIGTERM: the request is only a signal that arrives over the protocol.
    pub async fn shutdown_requested(&self) {
        self.shutdown_requested.notified().await;
    }

    /// The counters, for tests and metrics.
    pub fn stats(&self) -> &GatewayStats {
        &self.stats
    }
}
