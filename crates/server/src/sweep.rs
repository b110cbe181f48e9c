//! The sweep: finds records that can no longer be seen (expired, flushed) and has the
//! writer remove them, reading a partition only when enough in it has lapsed to pay for
//! the read.

use std::sync::atomic::Ordering;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use crossbeam_channel::Sender;
use murakumo_engine::keys::{NamespaceId, PartitionId, partition_prefix, successor};
use murakumo_engine::record::decode_header;
use murakumo_engine::{Engine, EngineError, Table};

use crate::IdMap;
use crate::partition::{
    PartitionState, SWEEP_SUMMARY_PREFIX, parse_sweep_summary_key, sweep_summary_key,
};
use crate::placement::PARTITIONS;
use crate::store::{NEVER_DUE, Shared, SweepConfig, is_visible, lapses_at};
use crate::writer::Job;

/// When something in a partition can next be reclaimed (the clock's seconds), or `None`
/// for never.
type NextDue = Option<u32>;

/// The earlier of two due times (`None` is never).
fn earlier(a: NextDue, b: NextDue) -> NextDue {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (due, None) | (None, due) => due,
    }
}

/// A regular pass reads a partition again once this share (one in ten) of the records its
/// last scan left behind has lapsed: reading a whole partition to reclaim one record in a
/// thousand is how a scan-based sweep ends up reading the disk all day.
const RECLAIM_ONE_IN: u64 = 10;

/// ... or once the first of them has waited this long (seconds), however few they are:
/// lapsed records are invisible at once, so this bounds only how long their space stays
/// taken.
const MAX_RECLAIM_LAG: u32 = 600;

/// How long (seconds) a regular pass first holds back a partition whose last scan, read
/// because something in it fell due, found nothing to reclaim; it doubles with each such
/// scan, up to [`MAX_RECLAIM_LAG`] past the first due record.
///
/// Why: the due times the sweeper knows are those of the versions it saw or was told of.
/// A cache that rewrites its keys before they expire (a TTL of 30 s, refreshed every
/// 10 s) keeps replacing versions that were about to lapse, so each partition fell due
/// every TTL, was read whole, and held nothing to reclaim: 20,000 such keys of 1 KiB had
/// the sweep read 102 MB and scan all 1,024 partitions every minute, reclaiming nothing.
/// A scan that finds nothing is the sign of that; backing off bounds the waste without
/// tracking every overwritten version, and a scan that reclaims anything ends it.
const FIRST_IDLE_BACKOFF: u32 = 30;

/// Walks the partitions, finds records that are no longer visible (expired, flushed), and
/// asks the writer to remove them. The writer re-checks each one, so a key rewritten
/// between the scan and the removal is never lost.
///
/// A scan reads every record of its partition from the engine (values included, though
/// it keeps only their headers), so the sweeper reads a partition only when that pays:
/// - after a scan it knows when the records it left behind lapse, and the writer reports
///   when each record written since can lapse; a partition whose records never lapse is
///   not read again until something that can is written to it, or it is flushed;
/// - a regular pass reads it again once a tenth of its records has lapsed, or the first
///   lapsed record has waited [`MAX_RECLAIM_LAG`]; `lru_crawler crawl` forces a pass that
///   reads every partition with anything lapsed at all.
///
/// Before this, a partition holding anything that expires was read on every 30 s pass: an
/// idle node with 500 MB of items due in an hour read all of it every pass, and a node
/// taking a steady stream of such items would have read its whole disk continuously.
///
/// It starts from `known`, what a clean shutdown left (see [`SweepKnowledge`]), and
/// returns what it knows when it stops, for the shutdown to leave for the next start.
pub(crate) fn run_sweeper(
    shared: &Shared,
    jobs: &Sender<Job>,
    config: &SweepConfig,
    mut known: SweepKnowledge,
) -> SweepKnowledge {
    let mut namespaces: Vec<(NamespaceId, Vec<PartitionSweep>)> = shared
        .flushed
        .keys()
        .map(|&ns| {
            let mut cleans = known.namespaces.remove(&ns).unwrap_or_default().into_iter();
            let partitions = (0..PARTITIONS)
                .map(|_| PartitionSweep {
                    clean: cleans.next().flatten(),
                    resume: None,
                    idle_backoff: 0,
                })
                .collect();
            (ns, partitions)
        })
        .collect();
    sweep_until_stopped(shared, jobs, config, &mut namespaces);
    SweepKnowledge {
        namespaces: namespaces
            .into_iter()
            .map(|(ns, sweeps)| (ns, sweeps.into_iter().map(|s| s.clean).collect()))
            .collect(),
    }
}

/// The sweeper's passes, until the store stops, the sweeper is told to, or the store
/// fails.
fn sweep_until_stopped(
    shared: &Shared,
    jobs: &Sender<Job>,
    config: &SweepConfig,
    namespaces: &mut [(NamespaceId, Vec<PartitionSweep>)],
) {
    let chunk = config.chunk.max(1);
    loop {
        let forced = shared.sweep_forced.swap(false, Ordering::AcqRel);
        'pass: for (namespace, sweeps) in namespaces.iter_mut() {
            let namespace = *namespace;
            for (partition, sweep) in (0..PARTITIONS).zip(sweeps.iter_mut()) {
                if shared.sweep_should_stop() || shared.failure().is_some() {
                    return;
                }
                if !shared.sweep_enabled.load(Ordering::Acquire) {
                    break 'pass;
                }
                let Some(written_due) = shared.written_due(namespace, partition) else {
                    continue;
                };
                let flushed = shared
                    .flushed_seq(namespace, partition)
                    .load(Ordering::Acquire);
                let mut fell_due = false;
                if let Some(clean) = &sweep.clean
                    && clean.flushed == flushed
                {
                    let written =
                        Some(written_due.load(Ordering::Acquire)).filter(|&d| d != NEVER_DUE);
                    let due = if forced {
                        earlier(clean.first_due, written)
                    } else {
                        sweep.regular_due(clean, written)
                    };
                    if due.is_none_or(|due| shared.clock.now() < due) {
                        continue;
                    }
                    fell_due = !forced;
                }
                let limit = match shared.sweep_limit.load(Ordering::Relaxed) {
                    0 => usize::MAX,
                    records => records as usize,
                };
                // A partition scanned over several passes is judged as a whole, from what
                // its parts found, against the flush sequence from before its first part.
                // What writers reported is taken when a scan begins: those records are
                // in the engine already, so the scan sees them, and whatever is written
                // from then on is reported anew.
                let resume = sweep.resume.take().unwrap_or_else(|| {
                    written_due.store(NEVER_DUE, Ordering::Release);
                    Resume {
                        next: None,
                        flushed,
                        fell_due,
                        left: LeftBehind::default(),
                    }
                });
                // From here until the scan ends, what the last scan left behind is not
                // the whole story: the reports it took are in this scan.
                sweep.clean = None;
                let scan = PartitionScan {
                    namespace,
                    partition,
                    start: resume.next,
                    limit,
                    chunk,
                };
                let mut left = resume.left;
                let Ok(stopped_at) = sweep_partition(shared, jobs, scan, &mut left) else {
                    return;
                };
                shared.stats.sweep_scans.fetch_add(1, Ordering::Relaxed);
                if let Some(next) = stopped_at {
                    sweep.resume = Some(Resume {
                        next: Some(next),
                        flushed: resume.flushed,
                        fell_due: resume.fell_due,
                        left,
                    });
                } else {
                    if resume.fell_due {
                        sweep.judge_due_scan(left.reclaimable);
                    }
                    sweep.clean = Some(left.into_clean(resume.flushed));
                }
                let pause = shared.sweep_pause();
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
        }
        // Sleep until the next pass, or until a flush (or a shutdown) asks sooner.
        shared.sweep_wake.wait(config.pass_interval);
        if shared.sweep_should_stop() {
            return;
        }
    }
}

/// What the sweeper remembers of one partition between passes.
#[derive(Default)]
struct PartitionSweep {
    /// What the last whole scan left behind; `None` before the first one (or while one is
    /// under way), which means "read it".
    clean: Option<Clean>,
    /// Where the next scan goes on, when a pass limited by `lru_crawler tocrawl` stopped
    /// part-way.
    resume: Option<Resume>,
    /// Seconds a regular pass adds to the due time, while scans that fell due find nothing
    /// to reclaim (see [`FIRST_IDLE_BACKOFF`]). Not kept across restarts: the first idle
    /// scan after a start sets it going again.
    idle_backoff: u32,
}

impl PartitionSweep {
    /// When a regular pass reads the partition again: when enough of what the last scan
    /// left has lapsed, or the first record written since, put off by the idle backoff
    /// but never past [`MAX_RECLAIM_LAG`] after the first lapse it knows of.
    fn regular_due(&self, clean: &Clean, written: NextDue) -> NextDue {
        let due = earlier(clean.rescan_at, written)?;
        let bound = earlier(clean.first_due, written)
            .map_or(u32::MAX, |first| first.saturating_add(MAX_RECLAIM_LAG));
        Some(due.saturating_add(self.idle_backoff).min(bound))
    }

    /// After a whole scan that a regular pass started because something fell due: one that
    /// found nothing to reclaim doubles the backoff (from [`FIRST_IDLE_BACKOFF`]), one that
    /// found anything ends it.
    fn judge_due_scan(&mut self, reclaimable: u64) {
        self.idle_backoff = if reclaimable == 0 {
            self.idle_backoff
                .saturating_mul(2)
                .clamp(FIRST_IDLE_BACKOFF, MAX_RECLAIM_LAG)
        } else {
            0
        };
    }
}

/// When the records a whole scan left behind can be reclaimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Clean {
    /// The partition's flush sequence when the scan began; a flush makes everything
    /// before it reclaimable.
    flushed: u64,
    /// When the first of them lapses (for a forced pass).
    first_due: NextDue,
    /// When a regular pass should read the partition again.
    rescan_at: NextDue,
}

/// A scan in progress over several passes.
struct Resume {
    next: Option<Vec<u8>>,
    flushed: u64,
    /// Whether a regular pass started it because something fell due (rather than for a
    /// first look, a flush or `lru_crawler crawl`): only such a scan moves the backoff.
    fell_due: bool,
    left: LeftBehind,
}

/// What the parts of one scan have left behind so far: the expiries of the records that
/// can still lapse, and how many records stay in all; and how many it found to reclaim.
#[derive(Default)]
struct LeftBehind {
    lapsing: Vec<u32>,
    records: u64,
    reclaimable: u64,
}

impl LeftBehind {
    fn into_clean(mut self, flushed: u64) -> Clean {
        let first_due = self.lapsing.iter().copied().min();
        // The expiry by which a tenth of the records left will have lapsed (the first one's,
        // in a partition of fewer than ten), unless fewer than that can lapse at all.
        let rank = usize::try_from(self.records / RECLAIM_ONE_IN)
            .unwrap_or(usize::MAX)
            .max(1);
        let by_share =
            (rank <= self.lapsing.len()).then(|| *self.lapsing.select_nth_unstable(rank - 1).1);
        let rescan_at = first_due.map(|first| {
            let by_lag = first.saturating_add(MAX_RECLAIM_LAG);
            by_share.map_or(by_lag, |due| due.min(by_lag))
        });
        Clean {
            flushed,
            first_due,
            rescan_at,
        }
    }
}

/// One partition's scan within a pass of the sweep.
struct PartitionScan {
    namespace: NamespaceId,
    partition: PartitionId,
    /// Where to begin; the start of the partition if `None`.
    start: Option<Vec<u8>>,
    /// Most records to read.
    limit: usize,
    /// Records read from the engine at a time.
    chunk: usize,
}

/// Scans (part of) one partition, hands its invisible records to the writer for removal,
/// and adds what it leaves behind to `left`. `Ok(stopped_at)`: where to go on if the limit
/// stopped it before the partition's end. `Err` if the engine failed (the store is then
/// out of service), the writer is gone, or the sweeper was told to stop.
fn sweep_partition(
    shared: &Shared,
    jobs: &Sender<Job>,
    scan: PartitionScan,
    left: &mut LeftBehind,
) -> Result<Option<Vec<u8>>, ()> {
    let PartitionScan {
        namespace,
        partition,
        start,
        limit,
        chunk,
    } = scan;
    let prefix = partition_prefix(namespace, partition);
    let mut start = start.unwrap_or_else(|| prefix.to_vec());
    let mut budget = limit;
    loop {
        if shared.sweep_should_stop() {
            return Err(());
        }
        let want = chunk.min(budget);
        let entries = match shared.scan_item_heads(&prefix, &start, want) {
            Ok(entries) => entries,
            Err(err) => {
                shared.fail(&err);
                return Err(());
            }
        };
        let now = shared.clock.now();
        let flushed = shared
            .flushed_seq(namespace, partition)
            .load(Ordering::Acquire);
        let mut candidates = Vec::new();
        shared
            .stats
            .sweep_records
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        for entry in &entries {
            let Ok(header) = decode_header(&entry.head) else {
                continue;
            };
            if !is_visible(&header, now, flushed) {
                candidates.push((entry.key.slice(prefix.len()..), header.seq));
                continue;
            }
            left.records += 1;
            if let Some(due) = lapses_at(&header) {
                left.lapsing.push(due);
            }
        }
        left.reclaimable += candidates.len() as u64;
        if !candidates.is_empty()
            && jobs
                .send(Job::Reap {
                    namespace,
                    partition,
                    candidates,
                })
                .is_err()
        {
            return Err(());
        }
        budget -= entries.len();
        match entries.last() {
            Some(last) if entries.len() == want => {
                start = successor(&last.key);
                if budget == 0 {
                    return Ok(Some(start));
                }
            }
            _ => return Ok(None),
        }
    }
}

/// What the sweeper knows of every partition: what the last whole scan of each left behind
/// (`None`: nothing known, so the next pass reads it).
///
/// Why it outlives the process: without it, every start read the whole dataset once,
/// values included (fjall returns blob values to a scan), even where nothing can ever
/// expire. A node holding 1,000 items of 512 KiB read 509 MB in the 40 s after each
/// restart. A clean shutdown now leaves this in the meta table, and the next start reads
/// only the partitions it does not vouch for.
///
/// Each partition's entry is stamped with its sequence ceiling, and a start trusts an entry
/// only if the ceiling is still the persisted one. A restarted writer numbers from the
/// ceiling, so the first write to a partition after any start raises it, in the same
/// atomic batch as the write itself. An entry therefore stays true across a crash, or a
/// start by a build that knows nothing of it, for exactly the partitions nobody wrote to
/// since; the others are read again. Records only ever leave a partition without a write
/// (the sweep's removals, deletes), which can make an entry pessimistic, never wrong.
#[derive(Debug, Default)]
pub(crate) struct SweepKnowledge {
    namespaces: IdMap<NamespaceId, Vec<Option<Clean>>>,
}

/// Version of a persisted sweep summary (the layout in [`encode_summary`]).
const SUMMARY_VERSION: u8 = 1;
/// Bytes of one partition's entry in a summary.
const SUMMARY_ENTRY_LEN: usize = 1 + 8 + 8 + 4 + 4;

/// One partition's entry in a persisted summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SummaryEntry {
    /// The partition's sequence ceiling when the summary was written.
    ceiling: u64,
    clean: Clean,
}

/// A namespace's summary: `version u8 | partitions u16 | per partition: known u8 |
/// ceiling u64 | flushed u64 | first_due u32 | rescan_at u32`, big-endian, with
/// [`NEVER_DUE`] for "never" and zeros after `known = 0`. Pinned by a fixture test.
fn encode_summary(entries: &[Option<SummaryEntry>]) -> Bytes {
    let count = u16::try_from(entries.len()).unwrap_or(u16::MAX);
    let mut out = BytesMut::with_capacity(3 + entries.len() * SUMMARY_ENTRY_LEN);
    out.put_u8(SUMMARY_VERSION);
    out.put_u16(count);
    for entry in entries.iter().take(usize::from(count)) {
        match entry {
            Some(SummaryEntry { ceiling, clean }) => {
                out.put_u8(1);
                out.put_u64(*ceiling);
                out.put_u64(clean.flushed);
                out.put_u32(clean.first_due.unwrap_or(NEVER_DUE));
                out.put_u32(clean.rescan_at.unwrap_or(NEVER_DUE));
            }
            None => out.put_bytes(0, SUMMARY_ENTRY_LEN),
        }
    }
    out.freeze()
}

/// Parses [`encode_summary`]'s layout; `None` if it is not that (another version, or
/// damaged).
fn decode_summary(mut raw: &[u8]) -> Option<Vec<Option<SummaryEntry>>> {
    if raw.len() < 3 || raw.get_u8() != SUMMARY_VERSION {
        return None;
    }
    let count = usize::from(raw.get_u16());
    if raw.len() != count * SUMMARY_ENTRY_LEN {
        return None;
    }
    let due = |raw: u32| Some(raw).filter(|&d| d != NEVER_DUE);
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let known = raw.get_u8();
        let ceiling = raw.get_u64();
        let flushed = raw.get_u64();
        let first_due = due(raw.get_u32());
        let rescan_at = due(raw.get_u32());
        entries.push(match known {
            0 => None,
            1 => Some(SummaryEntry {
                ceiling,
                clean: Clean {
                    flushed,
                    first_due,
                    rescan_at,
                },
            }),
            _ => return None,
        });
    }
    Some(entries)
}

impl SweepKnowledge {
    /// The summaries a clean shutdown persists, as meta-table records: what the sweeper
    /// knows, plus what the writer reported since each partition's scan (`written_due`,
    /// and `pending`: the reports of the group being committed, not yet published), each
    /// stamped with its partition's sequence ceiling.
    pub(crate) fn summaries(
        self,
        shared: &Shared,
        partitions: &IdMap<NamespaceId, Vec<PartitionState>>,
        pending: &[(NamespaceId, PartitionId, u32)],
    ) -> Vec<(Bytes, Bytes)> {
        let mut records = Vec::with_capacity(self.namespaces.len());
        for (namespace, cleans) in self.namespaces {
            let Some(states) = partitions.get(&namespace) else {
                continue;
            };
            let entries: Vec<Option<SummaryEntry>> = (0..PARTITIONS)
                .zip(states)
                .map(|(partition, state)| {
                    let clean = (*cleans.get(usize::from(partition))?)?;
                    let reported = shared
                        .written_due(namespace, partition)
                        .map(|due| due.load(Ordering::Acquire))
                        .filter(|&due| due != NEVER_DUE);
                    let written = pending
                        .iter()
                        .filter(|(ns, p, _)| (*ns, *p) == (namespace, partition))
                        .map(|(_, _, due)| Some(*due))
                        .fold(reported, earlier);
                    Some(SummaryEntry {
                        ceiling: state.seq_ceiling,
                        clean: Clean {
                            flushed: clean.flushed,
                            first_due: earlier(clean.first_due, written),
                            rescan_at: earlier(clean.rescan_at, written),
                        },
                    })
                })
                .collect();
            records.push((sweep_summary_key(namespace), encode_summary(&entries)));
        }
        records
    }

    /// What the last clean shutdown left, for the partitions nobody has written to since
    /// (see the type's documentation). A summary this build cannot read is ignored, with a
    /// warning: it only saves reads, and without it every partition is read once.
    pub(crate) fn load(
        engine: &dyn Engine,
        partitions: &IdMap<NamespaceId, Vec<PartitionState>>,
    ) -> Result<Self, EngineError> {
        let mut namespaces = IdMap::default();
        for (key, value) in engine.scan(Table::Meta, SWEEP_SUMMARY_PREFIX, b"", usize::MAX)? {
            let Some(namespace) = parse_sweep_summary_key(&key) else {
                continue;
            };
            let Some(states) = partitions.get(&namespace) else {
                continue;
            };
            let Some(entries) = decode_summary(&value) else {
                tracing::warn!(
                    namespace,
                    "the sweep summary left by the last shutdown is unreadable; every \
                     partition of this namespace is read once to find expired items"
                );
                continue;
            };
            let cleans = states
                .iter()
                .zip(entries.into_iter().chain(std::iter::repeat(None)))
                .map(|(state, entry)| {
                    entry
                        .filter(|e| e.ceiling == state.seq_ceiling)
                        .map(|e| e.clean)
                })
                .collect();
            namespaces.insert(namespace, cleans);
        }
        Ok(Self { namespaces })
    }

    /// How many partitions it vouches for.
    pub(crate) fn known_partitions(&self) -> usize {
        self.namespaces
            .values()
            .map(|cleans| cleans.iter().flatten().count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ceiling: u64, flushed: u64, first_due: NextDue, rescan_at: NextDue) -> SummaryEntry {
        SummaryEntry {
            ceiling,
            clean: Clean {
                flushed,
                first_due,
                rescan_at,
            },
        }
    }

    /// The idle backoff puts a regular pass off, but never past ten minutes after the
    /// first lapse the sweeper knows of, which is all a lapsed record's space may wait.
    #[test]
    fn the_idle_backoff_keeps_the_ten_minute_bound() {
        let clean = Clean {
            flushed: 0,
            first_due: Some(100),
            rescan_at: Some(400),
        };
        let mut sweep = PartitionSweep::default();
        assert_eq!(sweep.regular_due(&clean, None), Some(400));
        sweep.idle_backoff = FIRST_IDLE_BACKOFF;
        assert_eq!(sweep.regular_due(&clean, None), Some(430));
        assert_eq!(sweep.regular_due(&clean, Some(200)), Some(230));
        sweep.idle_backoff = MAX_RECLAIM_LAG;
        assert_eq!(sweep.regular_due(&clean, None), Some(700));
        assert_eq!(sweep.regular_due(&clean, Some(50)), Some(650));
        let nothing_lapses = Clean {
            first_due: None,
            rescan_at: None,
            ..clean
        };
        assert_eq!(sweep.regular_due(&nothing_lapses, None), None);
        assert_eq!(sweep.regular_due(&nothing_lapses, Some(80)), Some(680));
    }

    /// The bytes a clean shutdown leaves are read by the next build: they may not change
    /// without a new [`SUMMARY_VERSION`].
    #[test]
    fn a_summary_keeps_its_layout() {
        let entries = [
            Some(entry(4096, 7, Some(1_700_000_100), Some(1_700_000_700))),
            None,
            Some(entry(0, 0, None, None)),
        ];
        let encoded = encode_summary(&entries);
        let expected: &[u8] = &[
            1, 0, 3, // version, partitions
            1, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 7, // known, ceiling, flushed
            0x65, 0x53, 0xf1, 0x64, 0x65, 0x53, 0xf3, 0xbc, // first_due, rescan_at
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, // unknown
            1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // known, ceiling, flushed
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // never, never
        ];
        assert_eq!(&encoded[..], expected);
        assert_eq!(decode_summary(&encoded), Some(entries.to_vec()));
    }

    #[test]
    fn a_summary_that_is_not_this_layout_is_refused() {
        let encoded = encode_summary(&[Some(entry(1, 2, Some(3), Some(4)))]);
        assert!(decode_summary(&encoded).is_some());
        let mut other_version = encoded.to_vec();
        other_version[0] = 2;
        assert_eq!(decode_summary(&other_version), None);
        assert_eq!(decode_summary(&encoded[..encoded.len() - 1]), None);
        let mut bad_flag = encoded.to_vec();
        bad_flag[3] = 2;
        assert_eq!(decode_summary(&bad_flag), None);
        assert_eq!(decode_summary(&[]), None);
        assert_eq!(decode_summary(&[1, 0]), None);
    }
}
