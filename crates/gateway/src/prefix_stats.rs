//! Per-prefix counters: `stats detail on|off|dump`, as memcached keeps them.
//!
//! An operator turns them on to find which kind of key (`user:…`, `session:…`) takes the
//! load or misses, then turns them off again. What counts follows memcached 1.6.18, checked
//! against it: text get/gets/gat/gats count a get per key (and a hit when found), text
//! storage commands and every binary store count a set whatever their outcome, delete
//! counts whether or not the key existed, binary touch counts as a get (text touch does
//! not), and neither incr/decr nor the meta commands count at all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// The byte that ends a key's prefix (memcached's `-D`, whose default this is).
pub(crate) const PREFIX_DELIMITER: u8 = b':';

/// Distinct prefixes tracked at most. memcached grows its table without limit; a client
/// whose keys have a distinct prefix each would make that the server's memory, so past
/// this many, keys with a new prefix go uncounted (`stats` says how many operations were:
/// `murakumo_prefix_untracked`; the dump keeps memcached's format).
const MAX_PREFIXES: usize = 10_000;

/// The counters behind `stats detail`; off until `stats detail on`.
#[derive(Debug, Default)]
pub(crate) struct PrefixStats {
    /// Read on every get, set and delete, so that counting costs one load while off.
    enabled: AtomicBool,
    table: Mutex<PrefixTable>,
}

#[derive(Debug, Default)]
struct PrefixTable {
    counts: HashMap<Box<[u8]>, Counts>,
    /// Recorded operations whose prefix found no room (see [`MAX_PREFIXES`]).
    untracked: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    gets: u64,
    hits: u64,
    sets: u64,
    deletes: u64,
}

/// The part of `key` before the delimiter; `None` for a key without one, which memcached
/// does not count. Like memcached, a NUL byte also ends the prefix.
fn prefix_of(key: &[u8]) -> Option<&[u8]> {
    let end = key
        .iter()
        .position(|&byte| byte == PREFIX_DELIMITER || byte == 0)?;
    Some(&key[..end])
}

impl PrefixStats {
    /// `stats detail on` / `off`. Turning it off keeps what was counted, for a later dump.
    pub(crate) fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// For `stats settings` (`detail_enabled`).
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// A get of `key`, and whether it found the item.
    pub(crate) fn record_get(&self, key: &[u8], hit: bool) {
        self.record(key, |counts| {
            counts.gets += 1;
            counts.hits += u64::from(hit);
        });
    }

    /// A storage command on `key`, whatever its outcome.
    pub(crate) fn record_set(&self, key: &[u8]) {
        self.record(key, |counts| counts.sets += 1);
    }

    /// A delete of `key`, whether or not it existed.
    pub(crate) fn record_delete(&self, key: &[u8]) {
        self.record(key, |counts| counts.deletes += 1);
    }

    fn record(&self, key: &[u8], count: impl FnOnce(&mut Counts)) {
        if !self.enabled() {
            return;
        }
        let Some(prefix) = prefix_of(key) else {
            return;
        };
        let mut table = self.table.lock();
        if let Some(counts) = table.counts.get_mut(prefix) {
            count(counts);
        } else if table.counts.len() < MAX_PREFIXES {
            count(table.counts.entry(prefix.into()).or_default());
        } else {
            table.untracked += 1;
        }
    }

    /// `stats reset`.
    pub(crate) fn clear(&self) {
        let mut table = self.table.lock();
        table.counts.clear();
        table.untracked = 0;
    }

    /// `stats detail dump`: a `PREFIX <prefix> get <n> hit <n> set <n> del <n>` line per
    /// prefix, in byte order (memcached's follows its hash table), then `END`.
    pub(crate) fn dump(&self) -> Vec<u8> {
        let table = self.table.lock();
        let mut prefixes: Vec<(&[u8], &Counts)> = table
            .counts
            .iter()
            .map(|(prefix, counts)| (&prefix[..], counts))
            .collect();
        prefixes.sort_unstable_by_key(|(prefix, _)| *prefix);
        let mut out = Vec::with_capacity(64 * (prefixes.len() + 1));
        for (prefix, counts) in prefixes {
            out.extend_from_slice(b"PREFIX ");
            out.extend_from_slice(prefix);
            out.extend_from_slice(
                format!(
                    " get {} hit {} set {} del {}\r\n",
                    counts.gets, counts.hits, counts.sets, counts.deletes
                )
                .as_bytes(),
            );
        }
        out.extend_from_slice(b"END\r\n");
        out
    }

    /// Operations not counted because [`MAX_PREFIXES`] prefixes were already tracked.
    pub(crate) fn untracked(&self) -> u64 {
        self.table.lock().untracked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(stats: &PrefixStats) -> String {
        String::from_utf8(stats.dump()).unwrap()
    }

    #[test]
    fn counts_by_prefix_only_while_enabled() {
        let stats = PrefixStats::default();
        stats.record_set(b"a:1");
        assert_eq!(dump(&stats), "END\r\n", "nothing is counted until enabled");
        stats.set_enabled(true);
        stats.record_set(b"a:1");
        stats.record_get(b"a:1", true);
        stats.record_get(b"a:2", false);
        stats.record_delete(b"a:9");
        stats.record_get(b"b:1", false);
        stats.record_set(b":x");
        stats.record_set(b"e::x");
        stats.record_get(b"nodelimiter", true);
        stats.set_enabled(false);
        stats.record_get(b"a:1", true);
        assert_eq!(
            dump(&stats),
            "PREFIX  get 0 hit 0 set 1 del 0\r\n\
             PREFIX a get 2 hit 1 set 1 del 1\r\n\
             PREFIX b get 1 hit 0 set 0 del 0\r\n\
             PREFIX e get 0 hit 0 set 1 del 0\r\n\
             END\r\n"
        );
        stats.clear();
        assert_eq!(dump(&stats), "END\r\n");
    }

    #[test]
    fn a_nul_ends_the_prefix_as_in_memcached() {
        assert_eq!(prefix_of(b"ab\0c:d"), Some(&b"ab"[..]));
        assert_eq!(prefix_of(b"abc"), None);
    }

    #[test]
    fn distinct_prefixes_are_bounded() {
        let stats = PrefixStats::default();
        stats.set_enabled(true);
        for i in 0..MAX_PREFIXES + 5 {
            stats.record_set(format!("p{i}:k").as_bytes());
        }
        // Prefixes already tracked go on counting.
        stats.record_set(b"p0:k");
        let text = dump(&stats);
        assert_eq!(text.matches("PREFIX p").count(), MAX_PREFIXES);
        assert!(text.contains("PREFIX p0 get 0 hit 0 set 2 del 0\r\n"));
        assert_eq!(stats.untracked(), 5);
    }
}
