//! `murakumo dev`: the whole of murakumo on one machine, with persistent data.
//!
//! Until the cluster exists this is one node: the fjall engine, the store, and the
//! memcached front end in one process. The command and its flags stay the same when it
//! grows into a local cluster.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use murakumo_engine_fjall::{FjallEngine, FjallOptions};
use murakumo_gateway::{ConnectionWorkers, Gateway, GatewayConfig, read_memory_limit};
use murakumo_protocol::Limits;
use murakumo_server::{Clock, DEFAULT_SYNC_INTERVAL_MS, Store, StoreConfig, SyncPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Item cache when neither `--cache-mb` nor an earlier `cache_memlimit` says otherwise.
const DEFAULT_CACHE_MB: u64 = 256;

/// When acknowledged writes are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SyncMode {
    /// fsync (shared by concurrent writers) before acknowledging each write.
    Always,
    /// Acknowledge once the write reached the OS (survives kill -9); fsync every
    /// --sync-interval-ms.
    Periodic,
}

/// Where the items live (DESIGN §3's storage modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageMode {
    /// On disk (fjall), journaled: acknowledged writes survive a crash and a restart.
    Persistent,
    /// In memory only, as memcached: within -m, the least recently used items are
    /// evicted to make room, and nothing survives a restart.
    Memory,
}

/// Flags of `murakumo dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the data lives; reused across restarts.
    #[arg(long, short = 's', default_value = "./murakumo-data")]
    data_dir: PathBuf,
    /// memcached address (text, meta and binary protocols).
    #[arg(long, short = 'l', default_value = "127.0.0.1:11211")]
    listen: SocketAddr,
    /// Where the items live.
    #[arg(long, value_enum, default_value_t = StorageMode::Persistent)]
    storage: StorageMode,
    /// Durability of acknowledged writes (persistent storage).
    #[arg(long, value_enum, default_value_t = SyncMode::Periodic)]
    sync: SyncMode,
    /// fsync interval for --sync periodic, in milliseconds.
    #[arg(long, default_value_t = DEFAULT_SYNC_INTERVAL_MS, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    sync_interval_ms: u64,
    /// Most simultaneous client connections (memcached -c).
    #[arg(long, short = 'c', default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Threads serving client connections (memcached -t); default: one per CPU.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,
    /// Close client connections idle this many seconds (0 = never).
    #[arg(long, default_value_t = 0)]
    idle_timeout: u64,
    /// Largest value accepted, in bytes, or with a k or m suffix as memcached's -I takes
    /// it (1k to 128m).
    #[arg(long, short = 'I', default_value = "1m", value_parser = parse_item_size)]
    max_item_size: u64,
    /// Memory for items, in MiB. Persistent storage: a quarter for hot items in front of
    /// the storage engine, the rest for the engine's write buffer (two memtables of a
    /// sixth of it each, 4 to 64 MiB, fixed when the data directory is created; writes
    /// wait while it is full) and block cache. Memory storage: all of it for the items
    /// (at least twice --max-item-size, as memcached asks). Without it, the last
    /// `cache_memlimit` a client sent is used, else 256.
    #[arg(long, short = 'm')]
    cache_mb: Option<u64>,
    /// Require SASL PLAIN on binary connections, with users from this file
    /// (`user:password` per line).
    #[arg(long)]
    auth_file: Option<PathBuf>,
    /// Let clients stop the node with `shutdown` (memcached -A); it stops as on SIGTERM.
    #[arg(long, short = 'A')]
    enable_shutdown: bool,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    // First, so that a hangup during a long journal recovery does not kill the node either.
    ignore_hangups();
    without_huge_pages();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let memory_limit_file = args.data_dir.join("memory-limit");
    let cache_mb = match args.cache_mb {
        Some(mb) => mb,
        None => read_memory_limit(&memory_limit_file)
            .with_context(|| format!("reading {}", memory_limit_file.display()))?
            .unwrap_or(DEFAULT_CACHE_MB),
    };
    let cache_bytes = cache_mb * 1024 * 1024;
    let sync = match args.sync {
        SyncMode::Always => SyncPolicy::Always,
        SyncMode::Periodic => SyncPolicy::Periodic(Duration::from_millis(args.sync_interval_ms)),
    };
    let max_value_len = usize::try_from(args.max_item_size)?;
    let store_config = StoreConfig {
        sync,
        max_value_len,
        ..StoreConfig::default()
    };
    let store = match args.storage {
        StorageMode::Persistent => {
            // A quarter of the memory goes to the cache of hot items in front of the
            // engine (a hash lookup), the rest to the engine: its write buffer and block
            // cache.
            let item_cache_bytes = cache_bytes / 4;
            let engine = FjallEngine::open(
                &args.data_dir.join("store"),
                FjallOptions::within(cache_bytes - item_cache_bytes),
            )
            .with_context(|| format!("opening data directory {}", args.data_dir.display()))?;
            let config = StoreConfig {
                item_cache_bytes: usize::try_from(item_cache_bytes)?,
                ..store_config
            };
            Store::open(Arc::new(engine), config, Clock::System)?
        }
        StorageMode::Memory => {
            anyhow::ensure!(
                usize::try_from(cache_bytes)? >= store_config.smallest_memory_limit(),
                "--cache-mb {cache_mb} is too small: memory storage needs at least twice the \
                 item size limit (--max-item-size {})",
                args.max_item_size
            );
            Store::open_in_memory(usize::try_from(cache_bytes)?, store_config, Clock::System)?
        }
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    let sync_description = match (args.storage, sync) {
        (StorageMode::Memory, _) => "none (memory storage)".to_owned(),
        (_, SyncPolicy::Always) => "always".to_owned(),
        (_, SyncPolicy::Periodic(every)) => format!("periodic {}ms", every.as_millis()),
    };
    let threads = match args.threads {
        Some(n) => NonZeroUsize::try_from(usize::try_from(n)?)?,
        None => std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
    };
    let workers = ConnectionWorkers::start(threads).context("starting connection threads")?;
    let config = GatewayConfig {
        max_connections: usize::try_from(args.max_connections)?,
        idle_timeout: (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout)),
        limits: Limits {
            max_value_len,
            ..Limits::default()
        },
        sasl_users: args.auth_file.as_deref().map(read_auth_file).transpose()?,
        worker_threads: workers.len(),
        node_name: local.to_string(),
        sync_description: sync_description.clone(),
        memory_limit_mb: cache_mb,
        memory_limit_file: Some(memory_limit_file),
        enable_shutdown: args.enable_shutdown,
        ..GatewayConfig::default()
    };
    let gateway = Gateway::new(store.clone(), config);
    println!("murakumo {} dev", env!("CARGO_PKG_VERSION"));
    println!("  memcached  {local}  (text, meta and binary protocols)");
    match args.storage {
        StorageMode::Persistent => println!(
            "  data       {}  (sync {sync_description})",
            args.data_dir.display()
        ),
        StorageMode::Memory => println!(
            "  data       in memory only, {cache_mb} MiB; evicts when full, lost on restart"
        ),
    }

    let (stop, stopped) = watch::channel(false);
    let asked = Arc::clone(&gateway);
    tokio::spawn(async move {
        tokio::select! {
            () = wait_for_signal() => {}
            () = asked.shutdown_requested() => {}
        }
        tracing::info!("shutting down: finishing requests in progress");
        let _ = stop.send(true);
    });
    murakumo_gateway::serve(listener, gateway, &workers, stopped).await?;
    drop(workers);
    store.shutdown().await;
    if let Some(reason) = store.failure() {
        anyhow::bail!("storage failed: {reason}");
    }
    if store.in_memory() {
        tracing::info!("stopped cleanly");
    } else {
        tracing::info!("stopped cleanly; all acknowledged writes are on disk");
    }
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// Keeps serving on SIGHUP, as memcached does, instead of the default of dying on the
/// spot: the hangup of the terminal `dev` was started from, or a log rotator's habit of
/// sending HUP, would otherwise stop the node without its final sync. There is nothing to
/// reload yet, and the log line says so.
fn ignore_hangups() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP: nothing to reload; still serving");
                }
            });
        }
        Err(err) => tracing::warn!(error = %err, "cannot handle SIGHUP; it will stop the node"),
    }
}

/// Turns transparent huge pages off for this process.
///
/// Why: mimalloc asks for huge pages on its arenas (`MADV_HUGEPAGE`), which Debian's
/// default THP mode (`madvise`) grants. The first touch of each 2 MiB then zeroes a whole
/// huge page inside the request that allocated it: `perf` caught connection threads
/// descheduled in `folio_zero_user` under a commit's memtable allocation. Without them,
/// on the 2-core VM: RSS after loading 1 M items of 100 B 191-199 MiB against 204-236
/// (high-water mark 195-201 against 236-249), half-load set p99.9 2.6-5.0 ms against
/// 2.7-6.8 in four alternating runs, and the 1:10 and sets-only loads +1.5% and +2.3%
/// (within noise). Best effort: a kernel without the setting serves the same.
fn without_huge_pages() {
    if let Err(err) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(error = %err, "transparent huge pages stay as the system sets them");
    }
}

fn read_auth_file(path: &std::path::Path) -> anyhow::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading auth file {}", path.display()))?;
    let mut users = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, password) = line.split_once(':').with_context(|| {
            format!("{}:{}: expected user:password", path.display(), number + 1)
        })?;
        users.insert(user.to_owned(), password.to_owned());
    }
    Ok(users)
}

/// Reads `-I` as memcached does: bytes, or kilobytes or megabytes with a `k` or `m` suffix.
/// The bounds are memcached's minimum and the largest value the store accepts.
fn parse_item_size(text: &str) -> Result<u64, String> {
    const KIB: u64 = 1024;
    const MAX: u64 = 128 * KIB * KIB;
    let trimmed = text.trim();
    let (digits, unit) = if let Some(digits) = trimmed.strip_suffix(['k', 'K']) {
        (digits, KIB)
    } else if let Some(digits) = trimmed.strip_suffix(['m', 'M']) {
        (digits, KIB * KIB)
    } else {
        (trimmed, 1)
    };
    let size = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{text:?} is not a size (bytes, or a number with k or m)"))?;
    if (KIB..=MAX).contains(&size) {
        Ok(size)
    } else {
        Err(format!("{text:?} is outside 1k..=128m"))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_item_size;

    #[test]
    fn item_sizes_read_like_memcached() {
        assert_eq!(parse_item_size("1048576"), Ok(1024 * 1024));
        assert_eq!(parse_item_size("512k"), Ok(512 * 1024));
        assert_eq!(parse_item_size("2M"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_item_size("1k"), Ok(1024));
        assert_eq!(parse_item_size("128m"), Ok(128 * 1024 * 1024));
        for bad in [
            "",
            "m",
            "1g",
            "-1",
            "1023",
            "129m",
            "1.5m",
            "99999999999999999999k",
        ] {
            assert!(parse_item_size(bad).is_err(), "{bad:?}");
        }
    }
}
