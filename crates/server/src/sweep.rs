//! The sweep: finds records that can no longer be seen (expired, flushed) and has the
//! writer remove them, reading a partition only when enough in it has lapsed to pay for
//! the read.

use std::sync::atomic::Ordering;

use crossbeam_channel::Sender;
use murakumo_engine::Table;
use murakumo_engine::keys::{NamespaceId, PartitionId, partition_prefix, successor};
use murakumo_engine::record::{HEADER_LEN, decode_header};

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
/// taking a steady stream of such items would have read its whole disk continuously. Each
/// process scans everything once after it starts, since that knowledge is not persisted.
pub(crate) fn run_sweeper(shared: &Shared, jobs: &Sender<Job>, config: SweepConfig) {
    let chunk = config.chunk.max(1);
    let mut namespaces: Vec<(NamespaceId, Vec<PartitionSweep>)> = shared
        .flushed
        .keys()
        .map(|&ns| {
            let partitions = (0..PARTITIONS).map(|_| PartitionSweep::default()).collect();
            (ns, partitions)
        })
        .collect();
    loop {
        let forced = shared.sweep_forced.swap(false, Ordering::AcqRel);
        'pass: for (namespace, sweeps) in &mut namespaces {
            let namespace = *namespace;
            for (partition, sweep) in (0..PARTITIONS).zip(sweeps.iter_mut()) {
                if shared.stopping() || shared.failure().is_some() {
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
                if let Some(clean) = &sweep.clean
                    && clean.flushed == flushed
                {
                    let left_due = if forced {
                        clean.first_due
                    } else {
                        clean.rescan_at
                    };
                    let written =
                        Some(written_due.load(Ordering::Acquire)).filter(|&d| d != NEVER_DUE);
                    if earlier(left_due, written).is_none_or(|due| shared.clock.now() < due) {
                        continue;
                    }
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
                        left: LeftBehind::default(),
                    }
                });
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
                match stopped_at {
                    Some(next) => {
                        sweep.clean = None;
                        sweep.resume = Some(Resume {
                            next: Some(next),
                            flushed: resume.flushed,
                            left,
                        });
                    }
                    None => sweep.clean = Some(left.into_clean(resume.flushed)),
                }
                let pause = shared.sweep_pause();
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
        }
        // Sleep until the next pass, or until a flush asks for one sooner.
        shared.sweep_wake.wait(config.pass_interval);
        if shared.stopping() {
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
}

/// When the records a whole scan left behind can be reclaimed.
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
    left: LeftBehind,
}

/// What the parts of one scan have left behind so far: the expiries of the records that
/// can still lapse, and how many records stay in all.
#[derive(Default)]
struct LeftBehind {
    lapsing: Vec<u32>,
    records: u64,
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
/// out of service) or the writer is gone.
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
        let want = chunk.min(budget);
        let entries =
            match shared
                .engine
                .scan_heads(Table::Items, &prefix, &start, want, HEADER_LEN)
            {
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
