//! Counters with memcached's names, and the `stats` replies built from them.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

use murakumo_protocol::ascii::MAX_CLASS_ID;

use crate::Gateway;
use crate::config::VERSION;

/// The slab class every item is reported in: there are no slabs behind an LSM tree, and
/// tools that group items by class (`memcached-tool`, `lru_crawler metadump`) need one.
pub(crate) const ITEM_CLASS: u8 = 1;

/// Records examined per store call while listing items: small enough that a call is
/// brief, large enough that the calls' overhead does not matter.
pub(crate) const SCAN_CHUNK: usize = 256;

/// Stripes per counter: enough that each connection thread has its own.
const STRIPES: usize = 16;

/// A counter that threads add to without contending: each thread adds to its own stripe
/// (a cache line of its own), and a read sums the stripes.
///
/// Why: every request bumps a few counters. With one shared atomic per counter, the
/// cache line holding it moves between cores on every request, which costs more than
/// the rest of a cached get; memcached keeps per-thread counters for the same reason.
#[derive(Debug, Default)]
pub struct Counter {
    stripes: [CachePadded<AtomicU64>; STRIPES],
}

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.stripes[stripe()].fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` (for gauges). Stripes wrap independently; the sum is exact.
    pub fn sub(&self, n: u64) {
        self.stripes[stripe()].fetch_sub(n, Ordering::Relaxed);
    }

    /// The total.
    pub fn get(&self) -> u64 {
        self.stripes
            .iter()
            .fold(0, |sum, s| sum.wrapping_add(s.load(Ordering::Relaxed)))
    }

    /// Back to zero. Adds racing with it may survive; `stats reset` needs no more.
    fn reset(&self) {
        for s in &self.stripes {
            s.store(0, Ordering::Relaxed);
        }
    }
}

/// This thread's stripe, dealt round-robin on first use so that the connection threads
/// (started together) get distinct ones.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<Option<usize>> = const { Cell::new(None) };
    }
    STRIPE.with(|cell| {
        cell.get().unwrap_or_else(|| {
            let stripe = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            cell.set(Some(stripe));
            stripe
        })
    })
}

/// Front-end counters. Each is a [`Counter`]: exact totals, no ordering needs.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Keys looked up by get/gets/gat/gats/mg (memcached counts keys, not commands).
    pub cmd_get: Counter,
    /// Storage commands.
    pub cmd_set: Counter,
    /// flush_all commands.
    pub cmd_flush: Counter,
    /// touch/gat commands.
    pub cmd_touch: Counter,
    /// Lookups that found the key.
    pub get_hits: Counter,
    /// Lookups that did not.
    pub get_misses: Counter,
    /// Deletes that removed something.
    pub delete_hits: Counter,
    /// Deletes of missing keys.
    pub delete_misses: Counter,
    /// Successful incr.
    pub incr_hits: Counter,
    /// incr of missing keys.
    pub incr_misses: Counter,
    /// Successful decr.
    pub decr_hits: Counter,
    /// decr of missing keys.
    pub decr_misses: Counter,
    /// CAS stores that succeeded.
    pub cas_hits: Counter,
    /// CAS stores on missing keys.
    pub cas_misses: Counter,
    /// CAS stores with a stale CAS.
    pub cas_badval: Counter,
    /// Touches that found the key.
    pub touch_hits: Counter,
    /// Touches of missing keys.
    pub touch_misses: Counter,
    /// SASL authentication attempts.
    pub auth_cmds: Counter,
    /// Failed SASL authentications.
    pub auth_errors: Counter,
    /// Open client connections.
    pub curr_connections: Counter,
    /// Connections accepted since start.
    pub total_connections: Counter,
    /// Connections refused for exceeding the limit.
    pub rejected_connections: Counter,
    /// Connections closed for idling.
    pub idle_kicks: Counter,
    /// Storage commands refused because the value was over the size limit.
    pub store_too_large: Counter,
    /// Bytes read from clients.
    pub bytes_read: Counter,
    /// Bytes written to clients.
    pub bytes_written: Counter,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &Counter) {
    counter.add(1);
}

impl GatewayStats {
    /// `stats reset`: zero the cumulative counters (not the gauges).
    pub fn reset(&self) {
        for counter in [
            &self.cmd_get,
            &self.cmd_set,
            &self.cmd_flush,
            &self.cmd_touch,
            &self.get_hits,
            &self.get_misses,
            &self.delete_hits,
            &self.delete_misses,
            &self.incr_hits,
            &self.incr_misses,
            &self.decr_hits,
            &self.decr_misses,
            &self.cas_hits,
            &self.cas_misses,
            &self.cas_badval,
            &self.touch_hits,
            &self.touch_misses,
            &self.auth_cmds,
            &self.auth_errors,
            &self.total_connections,
            &self.rejected_connections,
            &self.idle_kicks,
            &self.store_too_large,
            &self.bytes_read,
            &self.bytes_written,
        ] {
            counter.reset();
        }
    }
}

/// The reply to one `stats` request.
pub(crate) enum StatsReply {
    /// `STAT name value` lines.
    Lines(Vec<(String, String)>),
    /// `stats reset`.
    Reset,
    /// `stats cachedump`: list up to this many items (the text executor walks the store,
    /// since that takes many short steps).
    CacheDump { limit: usize },
    /// `stats detail on|off`.
    DetailToggled,
    /// `stats detail dump`: the `PREFIX` lines and `END`, ready to send.
    DetailDump(Vec<u8>),
    /// A group we do not have.
    Unknown,
    /// A group we have, asked for wrongly: `CLIENT_ERROR <message>`.
    BadArguments(&'static str),
}

/// Builds the reply to `stats [group]`.
pub(crate) fn render(gateway: &Gateway, group: Option<&[u8]>) -> StatsReply {
    match group.map(<[u8]>::trim_ascii) {
        None | Some(b"") => StatsReply::Lines(general(gateway)),
        Some(b"settings") => StatsReply::Lines(settings(gateway)),
        Some(b"items") => StatsReply::Lines(items(gateway)),
        Some(b"slabs") => StatsReply::Lines(slabs(gateway)),
        Some(b"conns") => StatsReply::Lines(gateway.connections.lines(gateway.store.clock().now())),
        // memcached too tracks item sizes only when started with `-o track_sizes`.
        Some(b"sizes") => StatsReply::Lines(vec![line("sizes_status", "disabled")]),
        Some(b"cluster") => StatsReply::Lines(cluster(gateway)),
        Some(b"engine") => StatsReply::Lines(engine(gateway)),
        Some(b"reset") => {
            gateway.stats.reset();
            gateway.store.reset_stats();
            gateway.prefix_stats.clear();
            StatsReply::Reset
        }
        Some(args) if args.split(|b| *b == b' ').next() == Some(b"detail") => {
            detail(gateway, &args[b"detail".len()..])
        }
        Some(args) if args.starts_with(b"cachedump") => cachedump(args),
        Some(_) => StatsReply::Unknown,
    }
}

/// `stats detail on|off|dump`, with memcached's usage error for anything else.
fn detail(gateway: &Gateway, args: &[u8]) -> StatsReply {
    match args.trim_ascii() {
        b"on" => {
            gateway.prefix_stats.set_enabled(true);
            StatsReply::DetailToggled
        }
        b"off" => {
            gateway.prefix_stats.set_enabled(false);
            StatsReply::DetailToggled
        }
        b"dump" => StatsReply::DetailDump(gateway.prefix_stats.dump()),
        _ => StatsReply::BadArguments("usage: stats detail on|off|dump"),
    }
}

/// `stats cachedump <class> <limit>`: every item lives in class 1; a limit of 0 means as
/// many as fit in memcached's 2 MB reply.
fn cachedump(args: &[u8]) -> StatsReply {
    const MAX_ITEMS: usize = 20_000;
    let mut words = args.split(|b| *b == b' ').skip(1);
    let number = |w: Option<&[u8]>| -> Option<u64> { std::str::from_utf8(w?).ok()?.parse().ok() };
    let (Some(class), Some(limit)) = (number(words.next()), number(words.next())) else {
        return StatsReply::BadArguments("bad command line");
    };
    if !(1..=u64::from(MAX_CLASS_ID)).contains(&class) {
        return StatsReply::BadArguments("Illegal slab id");
    }
    let limit = if class == u64::from(ITEM_CLASS) {
        match usize::try_from(limit) {
            Ok(0) | Err(_) => MAX_ITEMS,
            Ok(n) => n.min(MAX_ITEMS),
        }
    } else {
        0
    };
    StatsReply::CacheDump { limit }
}

/// How memcached's `stats settings` writes a switch.
fn yes_no(on: bool) -> &'static str {
    if on { "yes" } else { "no" }
}

fn line(name: &str, value: impl std::fmt::Display) -> (String, String) {
    (name.to_owned(), value.to_string())
}

fn general(gw: &Gateway) -> Vec<(String, String)> {
    let s = &gw.stats;
    let get = Counter::get;
    let store = gw.store.stats();
    let log = gw.watchers.stats();
    let now = gw.store.clock().now();
    let (user, system) = cpu_times();
    let mut lines = vec![
        line("pid", std::process::id()),
        line("uptime", gw.started.elapsed().as_secs()),
        line("time", now),
        line("version", VERSION),
        line("pointer_size", usize::BITS),
        line("rusage_user", user),
        line("rusage_system", system),
        line("max_connections", gw.config.max_connections),
        line("curr_connections", get(&s.curr_connections)),
        line("total_connections", get(&s.total_connections)),
        line("rejected_connections", get(&s.rejected_connections)),
        line("cmd_get", get(&s.cmd_get)),
        line("cmd_set", get(&s.cmd_set)),
        line("cmd_flush", get(&s.cmd_flush)),
        line("cmd_touch", get(&s.cmd_touch)),
        line("get_hits", get(&s.get_hits)),
        line("get_misses", get(&s.get_misses)),
        line("get_expired", store.get_expired),
        line("get_flushed", store.get_flushed),
        line("delete_misses", get(&s.delete_misses)),
        line("delete_hits", get(&s.delete_hits)),
        line("incr_misses", get(&s.incr_misses)),
        line("incr_hits", get(&s.incr_hits)),
        line("decr_misses", get(&s.decr_misses)),
        line("decr_hits", get(&s.decr_hits)),
        line("cas_misses", get(&s.cas_misses)),
        line("cas_hits", get(&s.cas_hits)),
        line("cas_badval", get(&s.cas_badval)),
        line("touch_hits", get(&s.touch_hits)),
        line("touch_misses", get(&s.touch_misses)),
        line("store_too_large", get(&s.store_too_large)),
        // A write never fails for lack of memory: the engine's write buffer holds writes
        // back instead (`murakumo_write_stalls`).
        line("store_no_memory", 0),
        line("auth_cmds", get(&s.auth_cmds)),
        line("auth_errors", get(&s.auth_errors)),
        line("idle_kicks", get(&s.idle_kicks)),
        line("bytes_read", get(&s.bytes_read)),
        line("bytes_written", get(&s.bytes_written)),
        line("threads", gw.config.worker_threads),
        // The listener always accepts; past `max_connections` it answers and closes
        // (`rejected_connections`) instead of pausing as memcached does.
        line("accepting_conns", 1),
        line("curr_items", store.curr_items),
        line("total_items", store.total_items),
        line("bytes", store.bytes),
        // Only memory mode evicts; persistent storage never drops a live item for room.
        line("evictions", store.evictions),
        line("reclaimed", store.reclaimed),
        // The crawler is the background sweep (see `lru_crawler`).
        line("crawler_reclaimed", store.reclaimed),
        line("crawler_items_checked", store.sweep_records),
        line("limit_maxbytes", memory_limit(gw)),
        // `watch`: lines are only ever dropped per watcher, never before (no worker
        // buffer to overflow), so `log_worker_dropped` stays 0.
        line("log_worker_dropped", 0),
        line("log_worker_written", log.written),
        line("log_watcher_skipped", log.skipped),
        line("log_watcher_sent", log.sent),
        line("log_watchers", log.watchers),
        line("murakumo_disk_bytes", store.disk_bytes),
        line("murakumo_commit_groups", store.commit_groups),
        line("murakumo_sweep_scans", store.sweep_scans),
        // `stats detail` operations not counted because 10,000 prefixes were tracked.
        line("murakumo_prefix_untracked", gw.prefix_stats.untracked()),
        // Writes held back until the engine flushed its write buffer (a write load the
        // disk cannot keep up with, or `-m` too small for it), and how long they waited.
        line("murakumo_write_stalls", store.write_stalls),
        line("murakumo_write_stall_us", store.write_stall_micros),
        // 0 once a storage failure took the node out of service (the log says why):
        // `stats` keeps answering then, so this is what monitoring alerts on.
        line(
            "murakumo_storage_ok",
            u8::from(gw.store.failure().is_none()),
        ),
    ];
    lines.extend(cluster(gw));
    lines
}

/// The memory limit in effect, in bytes: memory storage applies `cache_memlimit` at once,
/// persistent storage at the next start.
fn memory_limit(gw: &Gateway) -> u64 {
    match gw.store.memory_limit() {
        Some(bytes) => bytes as u64,
        None => gw.config.memory_limit_mb * 1024 * 1024,
    }
}

fn settings(gw: &Gateway) -> Vec<(String, String)> {
    let c = &gw.config;
    vec![
        line("maxbytes", memory_limit(gw)),
        line(
            "murakumo_maxbytes_next_start",
            gw.requested_memory_limit_mb.load(Ordering::Relaxed) * 1024 * 1024,
        ),
        line("maxconns", c.max_connections),
        line("num_threads", c.worker_threads),
        line(
            "tcpport",
            c.node_name.rsplit(':').next().unwrap_or_default(),
        ),
        line("inter", &c.node_name),
        line("verbosity", gw.verbosity.load(Ordering::Relaxed)),
        // memcached's `-M` turns evictions off; here the storage mode decides.
        line("evictions", if gw.store.in_memory() { "on" } else { "off" }),
        line(
            "murakumo_storage",
            if gw.store.in_memory() {
                "memory"
            } else {
                "persistent"
            },
        ),
        line("cas_enabled", "yes"),
        line("auth_enabled_sasl", yes_no(c.sasl_users.is_some())),
        line("item_size_max", c.limits.max_value_len),
        line("key_max_length", c.limits.max_key_len),
        line("max_line_length", c.limits.max_line_len),
        line("idle_timeout", c.idle_timeout.map_or(0, |d| d.as_secs())),
        line("binding_protocol", "auto-negotiate"),
        line(
            "stat_key_prefix",
            char::from(crate::prefix_stats::PREFIX_DELIMITER),
        ),
        line("detail_enabled", yes_no(gw.prefix_stats.enabled())),
        // The background sweep is murakumo's crawler (`lru_crawler` drives it).
        line("lru_crawler", yes_no(gw.store.sweep_enabled())),
        line("lru_crawler_sleep", gw.store.sweep_pause().as_micros()),
        line("lru_crawler_tocrawl", gw.store.sweep_limit()),
        line("murakumo_sync", &c.sync_description),
        line("murakumo_output_buffer_max", c.max_output_buffer),
    ]
}

fn items(gw: &Gateway) -> Vec<(String, String)> {
    let store = gw.store.stats();
    if store.curr_items == 0 {
        // Like memcached, which lists only slab classes that hold items.
        return Vec::new();
    }
    let class = |field: &str| format!("items:{ITEM_CLASS}:{field}");
    vec![
        line(&class("number"), store.curr_items),
        line(&class("evicted"), 0),
        line(&class("outofmemory"), 0),
        line(&class("reclaimed"), store.reclaimed),
        line(&class("mem_requested"), store.bytes),
    ]
}

/// `stats slabs`: there are no slab pages or chunks, so only the per-class command
/// counters (all of them belong to the one class) and the totals are reported. Tools
/// read the fields they know and skip a class without pages.
fn slabs(gw: &Gateway) -> Vec<(String, String)> {
    let s = &gw.stats;
    let store = gw.store.stats();
    let mut lines = Vec::new();
    if store.curr_items > 0 {
        let class = |field: &str| format!("{ITEM_CLASS}:{field}");
        for (field, counter) in [
            ("get_hits", &s.get_hits),
            ("cmd_set", &s.cmd_set),
            ("delete_hits", &s.delete_hits),
            ("incr_hits", &s.incr_hits),
            ("decr_hits", &s.decr_hits),
            ("cas_hits", &s.cas_hits),
            ("cas_badval", &s.cas_badval),
            ("touch_hits", &s.touch_hits),
        ] {
            lines.push(line(&class(field), counter.get()));
        }
    }
    lines.push(line("active_slabs", u8::from(store.curr_items > 0)));
    lines.push(line("total_malloced", store.cached_bytes));
    lines
}

/// `stats engine`: whether the storage engine's flushes and compactions keep up (see
/// `EngineMetrics`). A group of its own, not general `stats`, because it describes the
/// node's disk rather than the cache memcached clients and their monitoring know.
fn engine(gw: &Gateway) -> Vec<(String, String)> {
    let m = gw.store.engine_metrics();
    vec![
        line("engine_write_buffer_bytes", m.write_buffer_bytes),
        line("engine_write_buffer_limit", m.write_buffer_limit),
        line("engine_sealed_memtables", m.sealed_memtables),
        line("engine_flushes_pending", m.flushes_pending),
        line("engine_compactions_running", m.compactions_running),
        line("engine_compactions_done", m.compactions_done),
        line("engine_compaction_us", m.compaction_micros),
        line("engine_journal_files", m.journal_files),
        line("engine_tables", m.tables),
        line("engine_level0_tables", m.level0_tables),
        line("engine_blob_files", m.blob_files),
        line("engine_block_cache_bytes", m.block_cache_bytes),
        line("engine_block_cache_limit", m.block_cache_limit),
        line("engine_disk_bytes", gw.store.stats().disk_bytes),
    ]
}

/// Kai-style cluster fields; a single node is its own whole cluster.
fn cluster(gw: &Gateway) -> Vec<(String, String)> {
    vec![
        line("murakumo_node", &gw.config.node_name),
        line("murakumo_replicas", 1),
        line("murakumo_epoch", 0),
        line("murakumo_servers", 1),
        line("murakumo_servers_down", 0),
        line("murakumo_partitions_under_replicated", 0),
    ]
}

/// User and system CPU time as memcached prints them (`seconds.microseconds`), from
/// /proc/self/stat (clock ticks of 1/100 s on Linux); zeros where that is unavailable.
fn cpu_times() -> (String, String) {
    let parse = || -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let mut fields = rest.split(' ').skip(11);
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    };
    let (user, system) = parse().unwrap_or((0, 0));
    let fmt = |ticks: u64| format!("{}.{:06}", ticks / 100, (ticks % 100) * 10_000);
    (fmt(user), fmt(system))
}
