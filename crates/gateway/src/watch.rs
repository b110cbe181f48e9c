//! `watch`: connections that are sent a log line for every event of the kinds they asked
//! for (keys fetched, storage commands and their outcomes, connections opened and closed),
//! in memcached's format, so that the tools and habits operators have for memcached's
//! `watch` (finding a hot key, seeing who writes what) work on a node too.
//!
//! Why it is built this way:
//! - Serving requests must not pay for a feature nobody is using: the kinds some watcher
//!   wants are one atomic byte, read (relaxed) before anything is formatted.
//! - A watcher that reads slowly must cost neither memory nor the clients' time: each
//!   watcher has a bounded buffer; what does not fit is counted and dropped, and the
//!   watcher is told how many lines it missed (`skipped=N`) before the next one it gets,
//!   as memcached does. A line is formatted once, under no lock, and copied into each
//!   watcher's buffer under that watcher's own short lock.
//! - At most [`MAX_WATCHERS`] at once, memcached's limit.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use murakumo_protocol::ascii::{WatchKinds, uri_encode};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Most watchers at once (memcached's `WATCHER_LIMIT`).
pub(crate) const MAX_WATCHERS: usize = 20;

/// Bytes of log lines a watcher may have waiting; beyond them lines are skipped.
/// memcached's default (`watcher_logbuf_size`) is 256 KiB.
const WATCHER_BUFFER: usize = 256 * 1024;

/// The reply to a `watch` beyond [`MAX_WATCHERS`], in memcached's words.
pub(crate) const TOO_MANY: &[u8] = b"WATCHER_TOO_MANY log watcher limit reached\r\n";

/// Every watcher of one gateway, and the kinds of events any of them wants.
#[derive(Default)]
pub(crate) struct Watchers {
    /// The union of the watchers' kinds, as [`WatchKinds::bits`].
    wanted: AtomicU8,
    /// Numbers the log lines in the order they were made (memcached's `gid`), so that a
    /// reader can put lines from different watchers or threads back in order.
    next_line: AtomicU64,
    /// Lines queued for a watcher, and lines a watcher missed (memcached's
    /// `log_watcher_sent` and `log_watcher_skipped`).
    sent: AtomicU64,
    skipped: AtomicU64,
    list: Mutex<Vec<Arc<Watcher>>>,
}

/// The `stats` figures of the log, with memcached's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WatchStats {
    /// Log lines made (`log_worker_written`).
    pub(crate) written: u64,
    /// Lines queued for watchers, one per watcher (`log_watcher_sent`).
    pub(crate) sent: u64,
    /// Lines a watcher missed because its buffer was full (`log_watcher_skipped`).
    pub(crate) skipped: u64,
    /// Watchers now (`log_watchers`).
    pub(crate) watchers: u64,
}

/// One watching connection's side of the log: what it asked for and what waits for it.
pub(crate) struct Watcher {
    kinds: WatchKinds,
    pending: Mutex<Pending>,
    /// Signalled when lines arrive.
    arrived: Notify,
}

#[derive(Default)]
struct Pending {
    lines: BytesMut,
    /// Lines dropped since the last one that fitted.
    skipped: u64,
}

/// The outcome of a storage command, in memcached's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreStatus {
    Stored,
    NotStored,
    Exists,
    NotFound,
    TooLarge,
}

impl StoreStatus {
    fn name(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::NotStored => "not_stored",
            Self::Exists => "exists",
            Self::NotFound => "not_found",
            Self::TooLarge => "too_large",
        }
    }
}

/// Why a connection closed, in memcached's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed it or sent `quit`.
    Normal,
    /// A protocol or I/O error ended it.
    Error,
    /// It was idle longer than `--idle-timeout`.
    IdleTimeout,
    /// The node is stopping.
    Shutdown,
}

impl CloseReason {
    fn name(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Error => "error",
            Self::IdleTimeout => "idle_timeout",
            Self::Shutdown => "shutdown",
        }
    }
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchers")
            .field("watching", &self.list.lock().len())
            .finish_non_exhaustive()
    }
}

impl Watchers {
    /// Whether some watcher wants events of `kind`: the check every request makes first.
    #[inline]
    pub(crate) fn want(&self, kind: WatchKinds) -> bool {
        self.wanted.load(Ordering::Relaxed) & kind.bits() != 0
    }

    /// Adds a watcher of `kinds`; `None` when [`MAX_WATCHERS`] are watching already.
    pub(crate) fn add(&self, kinds: WatchKinds) -> Option<Arc<Watcher>> {
        let mut list = self.list.lock();
        if list.len() >= MAX_WATCHERS {
            return None;
        }
        let watcher = Arc::new(Watcher {
            kinds,
            pending: Mutex::default(),
            arrived: Notify::new(),
        });
        list.push(Arc::clone(&watcher));
        self.publish_wanted(&list);
        Some(watcher)
    }

    /// Counters for `stats`.
    pub(crate) fn stats(&self) -> WatchStats {
        WatchStats {
            written: self.next_line.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            watchers: self.list.lock().len() as u64,
        }
    }

    /// Removes a watcher whose connection has ended.
    pub(crate) fn remove(&self, watcher: &Arc<Watcher>) {
        let mut list = self.list.lock();
        list.retain(|other| !Arc::ptr_eq(other, watcher));
        self.publish_wanted(&list);
    }

    fn publish_wanted(&self, list: &[Arc<Watcher>]) {
        let wanted = list
            .iter()
            .fold(WatchKinds::default(), |all, w| all.union(w.kinds));
        self.wanted.store(wanted.bits(), Ordering::Relaxed);
    }

    /// A client fetched `key` (any protocol's get, gat, touch or meta get): `size` is
    /// the value's length if it was found.
    pub(crate) fn fetched(&self, key: &[u8], size: Option<usize>, fd: i32) {
        self.log(WatchKinds::FETCHERS, |line| {
            let status = if size.is_some() { "found" } else { "not_found" };
            // Items have one class (see `stats items`); a miss has none, as in memcached.
            let class = u8::from(size.is_some());
            line.extend_from_slice(b"type=item_get key=");
            uri_encode(key, line);
            let _ = write!(
                line,
                " status={status} clsid={class} cfd={fd} size={}",
                size.unwrap_or(0)
            );
        });
    }

    /// A storage command `command` (`set`, `add`, `cas`, …) for `key` ended in `status`;
    /// `ttl` is the expiry it asked for, in seconds from now (0: none).
    pub(crate) fn stored(
        &self,
        key: &[u8],
        command: &str,
        status: StoreStatus,
        ttl: u32,
        size: usize,
        fd: i32,
    ) {
        self.log(WatchKinds::MUTATIONS, |line| {
            line.extend_from_slice(b"type=item_store key=");
            uri_encode(key, line);
            let _ = write!(
                line,
                " status={} cmd={command} ttl={ttl} clsid=1 cfd={fd} size={size}",
                status.name()
            );
        });
    }

    /// A client connected from `peer`.
    pub(crate) fn connected(&self, peer: SocketAddr, fd: i32) {
        self.log(WatchKinds::CONNEVENTS, |line| {
            let _ = write!(
                line,
                "type=conn_new rip={} rport={} transport=tcp cfd={fd}",
                peer.ip(),
                peer.port()
            );
        });
    }

    /// The connection from `peer` closed.
    pub(crate) fn closed(&self, peer: SocketAddr, reason: CloseReason, fd: i32) {
        self.log(WatchKinds::CONNEVENTS, |line| {
            let _ = write!(
                line,
                "type=conn_close rip={} rport={} transport=tcp reason={} cfd={fd}",
                peer.ip(),
                peer.port(),
                reason.name()
            );
        });
    }

    /// Formats one line of `kind` (memcached's `ts=SECONDS.MICROS gid=N ` prefix, then
    /// what `body` writes) and hands it to every watcher of that kind; nothing at all
    /// (not even the clock read) when nobody watches that kind.
    fn log(&self, kind: WatchKinds, body: impl FnOnce(&mut BytesMut)) {
        if !self.want(kind) {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let number = self.next_line.fetch_add(1, Ordering::Relaxed) + 1;
        let mut line = BytesMut::with_capacity(160);
        // Microseconds unpadded, as memcached prints them.
        let _ = write!(
            line,
            "ts={}.{} gid={number} ",
            now.as_secs(),
            now.subsec_micros()
        );
        body(&mut line);
        line.extend_from_slice(b"\n");
        for watcher in self.list.lock().iter() {
            if watcher.kinds.intersects(kind) {
                let counter = if watcher.push(&line) {
                    &self.sent
                } else {
                    &self.skipped
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Watcher {
    /// Queues `line`; `false` if it did not fit and was skipped.
    fn push(&self, line: &[u8]) -> bool {
        {
            let mut pending = self.pending.lock();
            let notice = (pending.skipped > 0).then(|| format!("skipped={}\n", pending.skipped));
            let needed = line.len() + notice.as_ref().map_or(0, String::len);
            if pending.lines.len() + needed > WATCHER_BUFFER {
                pending.skipped += 1;
                return false;
            }
            if let Some(notice) = notice {
                pending.lines.extend_from_slice(notice.as_bytes());
                pending.skipped = 0;
            }
            pending.lines.extend_from_slice(line);
        }
        self.arrived.notify_one();
        true
    }

    /// Everything waiting for the watcher, emptying its buffer.
    pub(crate) fn take(&self) -> Bytes {
        self.pending.lock().lines.split().freeze()
    }

    /// Resolves once lines may have arrived since the last [`take`](Self::take).
    pub(crate) async fn arrival(&self) {
        self.arrived.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(watcher: &Watcher) -> Vec<String> {
        String::from_utf8(watcher.take().to_vec())
            .expect("log lines are text")
            .lines()
            .map(|line| {
                // Drop the timestamp, which changes from run to run.
                line.split_once(' ')
                    .map_or(line, |(_, rest)| rest)
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn each_watcher_gets_the_kinds_it_asked_for() {
        let watchers = Watchers::default();
        assert!(!watchers.want(WatchKinds::FETCHERS));
        let fetches = watchers.add(WatchKinds::FETCHERS).expect("room");
        let writes = watchers.add(WatchKinds::MUTATIONS).expect("room");
        assert!(watchers.want(WatchKinds::FETCHERS) && watchers.want(WatchKinds::MUTATIONS));
        assert!(!watchers.want(WatchKinds::CONNEVENTS));
        watchers.fetched(b"user:1", Some(3), 7);
        watchers.stored(b"a b", "set", StoreStatus::NotStored, 100, 5, 7);
        watchers.fetched(b"nope", None, 8);
        assert_eq!(
            lines(&fetches),
            [
                "gid=1 type=item_get key=user%3A1 status=found clsid=1 cfd=7 size=3",
                "gid=3 type=item_get key=nope status=not_found clsid=0 cfd=8 size=0",
            ]
        );
        assert_eq!(
            lines(&writes),
            [
                "gid=2 type=item_store key=a%20b status=not_stored cmd=set ttl=100 clsid=1 cfd=7 size=5"
            ]
        );
        watchers.remove(&fetches);
        assert!(!watchers.want(WatchKinds::FETCHERS));
        watchers.remove(&writes);
        assert!(!watchers.want(WatchKinds::MUTATIONS));
    }

    #[test]
    fn a_slow_watcher_is_told_what_it_missed() {
        let watchers = Watchers::default();
        let watcher = watchers.add(WatchKinds::FETCHERS).expect("room");
        let key = [b'k'; 200];
        let mut logged = 0;
        while watcher.pending.lock().skipped < 5 {
            watchers.fetched(&key, Some(1), 3);
            logged += 1;
        }
        let first = lines(&watcher);
        assert_eq!(first.len(), logged - 5);
        assert!(first.iter().map(String::len).sum::<usize>() <= WATCHER_BUFFER);
        watchers.fetched(b"after", None, 3);
        let next = String::from_utf8(watcher.take().to_vec()).expect("text");
        let mut next = next.lines();
        assert_eq!(next.next(), Some("skipped=5"));
        assert!(next.next().is_some_and(|l| l.contains("key=after")));
        let stats = watchers.stats();
        assert_eq!((stats.skipped, stats.watchers), (5, 1));
        assert_eq!(stats.sent + stats.skipped, stats.written);
    }

    #[test]
    fn no_more_than_memcacheds_limit_of_watchers() {
        let watchers = Watchers::default();
        let all: Vec<_> = (0..MAX_WATCHERS)
            .map(|_| watchers.add(WatchKinds::FETCHERS).expect("room"))
            .collect();
        assert!(watchers.add(WatchKinds::FETCHERS).is_none());
        watchers.remove(&all[0]);
        assert!(watchers.add(WatchKinds::FETCHERS).is_some());
    }
}
