//! Front-end limits and identity.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use murakumo_protocol::Limits;

/// How the memcached front end behaves towards clients.
///
/// Every limit has memcached's default and answers with memcached's error when hit, so
/// an application moving from memcached sees the same behaviour at the same boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Most simultaneous client connections (memcached `-c`, default 1024). Beyond it a
    /// new connection is told `ERROR Too many open connections` and closed.
    pub max_connections: usize,
    /// Close connections idle this long (memcached `-o idle_timeout`; `None` = never):
    /// no request arriving, or a reply that the client does not read.
    pub idle_timeout: Option<Duration>,
    /// Key, value and line limits enforced while parsing.
    pub limits: Limits,
    /// Output bytes buffered for one connection before we stop and write them out. A
    /// client that sends a large multi-get and never reads is then held back by TCP flow
    /// control instead of growing our memory.
    pub max_output_buffer: usize,
    /// SASL PLAIN users and passwords for the binary protocol; `None` disables SASL (as
    /// memcached without `-S`).
    pub sasl_users: Option<HashMap<String, String>>,
    /// Threads serving connections (the [`ConnectionWorkers`](crate::ConnectionWorkers)
    /// given to `serve`), shown as `threads` in `stats`.
    pub worker_threads: usize,
    /// Address shown as `murakumo_node` in `stats`.
    pub node_name: String,
    /// How the store syncs, shown in `stats settings`.
    pub sync_description: String,
    /// Memory the node was started with for caching items, in MiB (`limit_maxbytes`).
    pub memory_limit_mb: u64,
    /// Where `cache_memlimit` records a new limit. The engine's cache cannot be resized
    /// while it runs, so the node applies the recorded limit when it next starts; without
    /// a file, `cache_memlimit` is refused.
    pub memory_limit_file: Option<PathBuf>,
    /// Whether the `shutdown` command may stop the node (memcached's `-A`). Off by
    /// default, as in memcached: any client could otherwise stop the server.
    pub enable_shutdown: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            idle_timeout: None,
            limits: Limits::default(),
            max_output_buffer: 256 * 1024,
            sasl_users: None,
            worker_threads: 1,
            node_name: String::new(),
            sync_description: String::new(),
            memory_limit_mb: 0,
            memory_limit_file: None,
            enable_shutdown: false,
        }
    }
}

/// What `version` answers: the memcached release whose behaviour we reproduce (clients
/// parse the leading `major.minor.patch` to enable features), then our own version.
pub const VERSION: &str = concat!("1.6.18-murakumo-", env!("CARGO_PKG_VERSION"));

/// memcached's floor for `cache_memlimit`, in MiB.
pub const MIN_MEMORY_LIMIT_MB: u64 = 8;

/// Reads the memory limit recorded by `cache_memlimit`, if any.
pub fn read_memory_limit(file: &Path) -> std::io::Result<Option<u64>> {
    match std::fs::read_to_string(file) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Records a memory limit for the next start: written to a temporary file and renamed,
/// so a crash leaves either the old or the new value, never a torn one.
pub(crate) fn write_memory_limit(file: &Path, megabytes: u64) -> std::io::Result<()> {
    let temporary = file.with_extension("tmp");
    std::fs::write(&temporary, format!("{megabytes}\n"))?;
    std::fs::rename(&temporary, file)
}
