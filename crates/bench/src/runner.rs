//! A run from start to end: connect, prefill, timed load, report.
//!
//! One tokio task drives each connection, and only shares a few relaxed atomics (for the
//! progress bar and the `--max-ops` budget) plus a stop flag. Counting and histograms stay
//! task-local until the phase ends, so the bench itself adds as little contention as
//! possible to what it measures.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::check::Outcome;
use crate::conn::Conn;
use crate::progress::{Goal, Progress};
use crate::report::{HistogramError, PhaseReport, Report, Tally};
use crate::workload::{KeySpace, Op, Ratio, Rng};
use crate::{BenchArgs, BenchError};

/// Prefill pipelines at least this deep, whatever `--pipeline` says.
pub(crate) const PREFILL_MIN_DEPTH: u32 = 32;

/// How many error descriptions a report keeps; the count covers the rest.
const MAX_ERROR_SAMPLES: usize = 10;

/// How often the progress bar is refreshed.
const PROGRESS_TICK: Duration = Duration::from_millis(200);

/// Runs the bench described by `args`, printing a progress bar on stderr (unless quiet) and
/// the report on stdout (a table, or one JSON object with `--json`).
///
/// Returns the report, whose [`Report::errors`] counts failed verifications. Returns
/// [`BenchError::Aborted`] (after printing the partial report) when a connection failed
/// mid-run, and other errors when the run could not start.
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    args.validate()?;
    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    let shared = Arc::new(Shared::default());
    let keys = args.key_space();
    let value_size = args.value_size as usize;
    let server: Arc<str> = Arc::from(args.server.as_str());
    let mut conns = connect_all(&args).await?;
    let mut report = Report {
        settings: args.settings(),
        prefill: None,
        load: None,
        error_samples: Vec::new(),
        aborted: None,
    };

    if args.prefill {
        let ctx = PhaseCtx {
            shared: Arc::clone(&shared),
            counters: Counters::default(),
            server: Arc::clone(&server),
            keys: keys.clone(),
            value_size,
            depth: args.batch_depth(),
            stride: u64::from(args.connections),
            ratio: args.ratio,
            deadline: None,
            budget: None,
            interval: None,
        };
        let sources = (0..args.connections)
            .map(|i| Source::Prefill { next: u64::from(i) })
            .collect();
        let progress = Progress::new(show_progress, "prefill", Goal::Ops(keys.count()));
        let (returned, phase) = run_phase(conns, sources, ctx, progress).await?;
        conns = returned;
        report.prefill = Some(phase);
    }

    let duration = Duration::from_secs(args.duration);
    let timed = !duration.is_zero();
    if (timed || args.max_ops.is_some()) && !shared.stopped() {
        let goal = match args.max_ops {
            Some(n) if !timed => Goal::Ops(n),
            _ => Goal::Time(duration),
        };
        let ctx = PhaseCtx {
            shared: Arc::clone(&shared),
            counters: Counters::default(),
            server: Arc::clone(&server),
            keys,
            value_size,
            depth: args.pipeline,
            stride: 1,
            ratio: args.ratio,
            deadline: timed.then(|| Instant::now() + duration),
            budget: args.max_ops.map(AtomicU64::new),
            interval: args.batch_interval(),
        };
        let sources = (0..args.connections)
            .map(|i| Source::Load {
                rng: Rng::for_connection(args.seed, i),
            })
            .collect();
        let progress = Progress::new(show_progress, "load", goal);
        let (_, phase) = run_phase(conns, sources, ctx, progress).await?;
        report.load = Some(phase);
    }

    report.error_samples = shared.take_samples();
    report.aborted = shared.take_fatal();
    let text = if args.json {
        report.to_json()
    } else {
        report.to_string()
    };
    // A closed stdout must not turn into a panic; the caller still gets the report.
    let _ = writeln!(std::io::stdout().lock(), "{text}");

    match report.aborted.clone() {
        Some(reason) => Err(BenchError::Aborted {
            reason,
            report: Box::new(report),
        }),
        None => Ok(report),
    }
}

/// Opens every connection concurrently, in connection order.
async fn connect_all(args: &BenchArgs) -> Result<Vec<Conn>, BenchError> {
    let mut tasks = JoinSet::new();
    for id in 0..args.connections {
        let server = args.server.clone();
        let timeout = args.timeout();
        let value_size = args.value_size as usize;
        let protocol = args.protocol;
        let ttl = args.ttl;
        tasks.spawn(async move {
            (
                id,
                Conn::connect(&server, timeout, value_size, protocol, ttl).await,
            )
        });
    }
    let mut slots: Vec<Option<Conn>> = (0..args.connections).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (id, result) = joined.map_err(|e| BenchError::Internal(e.to_string()))?;
        // Returning drops the JoinSet, which aborts the connects still under way.
        let conn = result?;
        if let Some(slot) = slots.get_mut(id as usize) {
            *slot = Some(conn);
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

/// State every task of a run can see.
#[derive(Default)]
struct Shared {
    /// Set when a connection failed: every task stops after its current batch.
    stop: AtomicBool,
    /// The first connection failure.
    fatal: Mutex<Option<String>>,
    /// The first few errors, in the order seen.
    samples: Mutex<Vec<String>>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn abort(&self, reason: String) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut fatal) = self.fatal.lock() {
            fatal.get_or_insert(reason);
        }
    }

    fn sample(&self, text: impl FnOnce() -> String) {
        if let Ok(mut samples) = self.samples.lock()
            && samples.len() < MAX_ERROR_SAMPLES
        {
            samples.push(text());
        }
    }

    fn take_samples(&self) -> Vec<String> {
        self.samples
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }

    fn take_fatal(&self) -> Option<String> {
        self.fatal.lock().ok().and_then(|mut f| f.take())
    }
}

/// Running totals of one phase, read by the progress bar.
#[derive(Default)]
struct Counters {
    answered: AtomicU64,
    errors: AtomicU64,
}

/// What the tasks of one phase share.
struct PhaseCtx {
    shared: Arc<Shared>,
    counters: Counters,
    server: Arc<str>,
    keys: KeySpace,
    value_size: usize,
    /// Requests per batch.
    depth: u32,
    /// Prefill: connection `i` sets keys `i`, `i + stride`, `i + 2 × stride`, …
    stride: u64,
    ratio: Ratio,
    /// Load: no batch starts after this.
    deadline: Option<Instant>,
    /// Load: requests not yet claimed by any task, for `--max-ops`.
    budget: Option<AtomicU64>,
    /// Load with `--rate`: time between the starts of one connection's batches.
    interval: Option<Duration>,
}

impl PhaseCtx {
    /// Takes up to `want` requests from the `--max-ops` budget.
    fn claim(&self, want: u64) -> u64 {
        let Some(budget) = &self.budget else {
            return want;
        };
        budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                (left > 0).then(|| left - left.min(want))
            })
            .map_or(0, |left| left.min(want))
    }
}

/// Where one task's requests come from.
enum Source {
    /// Every `stride`-th key from `next` on, each set once.
    Prefill { next: u64 },
    /// Random operations on random keys until the deadline or the budget ends.
    Load { rng: Rng },
}

impl Source {
    /// Queues the next batch on `conn`; queues nothing when this task is done.
    fn fill(&mut self, conn: &mut Conn, ctx: &PhaseCtx) {
        match self {
            Self::Prefill { next } => {
                for _ in 0..ctx.depth {
                    if *next >= ctx.keys.count() {
                        break;
                    }
                    conn.queue_set(ctx.keys.key(*next), ctx.value_size);
                    *next = next.saturating_add(ctx.stride);
                }
            }
            Self::Load { rng } => {
                if ctx.deadline.is_some_and(|d| Instant::now() >= d) {
                    return;
                }
                for _ in 0..ctx.claim(u64::from(ctx.depth)) {
                    let key = ctx.keys.random_key(rng);
                    match ctx.ratio.pick(rng) {
                        Op::Get => conn.queue_get(key),
                        Op::Set => conn.queue_set(key, ctx.value_size),
                    }
                }
            }
        }
    }
}

/// Runs one phase on every connection and merges what the tasks counted.
async fn run_phase(
    conns: Vec<Conn>,
    sources: Vec<Source>,
    ctx: PhaseCtx,
    progress: Progress,
) -> Result<(Vec<Conn>, PhaseReport), BenchError> {
    let ctx = Arc::new(ctx);
    let progress = Arc::new(progress);
    let started = Instant::now();
    let ticker = tokio::spawn({
        let ctx = Arc::clone(&ctx);
        let progress = Arc::clone(&progress);
        async move {
            let mut interval = tokio::time::interval(PROGRESS_TICK);
            loop {
                interval.tick().await;
                progress.update(
                    ctx.counters.answered.load(Ordering::Relaxed),
                    ctx.counters.errors.load(Ordering::Relaxed),
                    started.elapsed(),
                );
            }
        }
    });

    let connections = conns.len();
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(sources)
        .zip(0u32..)
        .map(|((conn, source), id)| {
            let pacer = ctx.interval.map(|interval| {
                let start = tokio::time::Instant::from_std(started);
                Pacer::new(interval, start, id, connections, ctx.deadline)
            });
            tokio::spawn(drive(id, conn, source, pacer, Arc::clone(&ctx)))
        })
        .collect();

    let merged = async {
        let mut total = Tally::new()?;
        let mut conns = Vec::with_capacity(tasks.len());
        for task in tasks {
            let (conn, tally) = task
                .await
                .map_err(|e| BenchError::Internal(format!("connection task failed: {e}")))??;
            total.merge(&tally)?;
            conns.push(conn);
        }
        Ok::<_, BenchError>((conns, total))
    }
    .await;
    let elapsed = started.elapsed();
    ticker.abort();
    progress.update(
        ctx.counters.answered.load(Ordering::Relaxed),
        ctx.counters.errors.load(Ordering::Relaxed),
        elapsed,
    );
    progress.finish();

    match merged {
        Ok((conns, total)) => Ok((conns, total.summarize(elapsed)?)),
        Err(e) => {
            // Tasks not awaited yet must not go on loading the server.
            ctx.shared.abort(e.to_string());
            Err(e)
        }
    }
}

/// Sends one connection's batches on a fixed schedule, for `--rate`.
///
/// Latency is timed from when a batch was due only when the previous reply held it back
/// (the server's doing, which a closed loop would hide by sending less), and from when
/// it went out otherwise: the timer wakes us up to a millisecond late, and that is the
/// bench's lateness, not the server's.
#[derive(Debug)]
struct Pacer {
    interval: Duration,
    /// When the next batch is due; `None` once that is beyond what the clock can hold.
    due: Option<tokio::time::Instant>,
    /// When the previous batch went out.
    last_sent: Option<tokio::time::Instant>,
    /// No batch is due after this.
    deadline: Option<tokio::time::Instant>,
}

impl Pacer {
    /// Connection `id` of `connections` starts `id / connections` of an interval after
    /// `start`, so that the connections' batches are spread evenly over time.
    fn new(
        interval: Duration,
        start: tokio::time::Instant,
        id: u32,
        connections: usize,
        deadline: Option<Instant>,
    ) -> Self {
        let connections = u32::try_from(connections.max(1)).unwrap_or(u32::MAX);
        let offset = interval
            .checked_mul(id)
            .map_or(Duration::MAX, |spread| spread / connections);
        Self {
            interval,
            due: start.checked_add(offset),
            last_sent: None,
            deadline: deadline.map(tokio::time::Instant::from_std),
        }
    }

    /// Waits until the next batch is due; returns the instant its latency counts from,
    /// or `None` when the next batch would be due after the deadline.
    async fn next(&mut self) -> Option<Instant> {
        let due = self.due?;
        if self.deadline.is_some_and(|deadline| due >= deadline) {
            return None;
        }
        let now = tokio::time::Instant::now();
        let (sent, origin) = if now < due {
            tokio::time::sleep_until(due).await;
            let sent = tokio::time::Instant::now();
            (sent, sent)
        } else {
            // Late: the previous reply (or this task waiting for a CPU) held the batch
            // back. Time it from when it was due, but not from before the previous batch
            // went out: a batch cannot overtake the one before it on a connection.
            let origin = self.last_sent.map_or(due, |last| last.max(due));
            (now, origin)
        };
        self.last_sent = Some(sent);
        self.due = due.checked_add(self.interval);
        Some(origin.into_std())
    }
}

/// One connection's task: fill a batch, exchange it, count, until the phase ends.
async fn drive(
    id: u32,
    mut conn: Conn,
    mut source: Source,
    mut pacer: Option<Pacer>,
    ctx: Arc<PhaseCtx>,
) -> Result<(Conn, Tally), HistogramError> {
    let mut tally = Tally::new()?;
    while !ctx.shared.stopped() {
        let origin = match &mut pacer {
            Some(pacer) => match pacer.next().await {
                Some(origin) => origin,
                None => break,
            },
            None => Instant::now(),
        };
        source.fill(&mut conn, &ctx);
        let queued = conn.queued() as u64;
        if queued == 0 {
            break;
        }
        let mut answered = 0;
        let mut errors = 0;
        let result = conn
            .exchange(origin, |op, outcome, latency| {
                answered += 1;
                if let Outcome::Error(text) = &outcome {
                    errors += 1;
                    ctx.shared.sample(|| format!("connection {id}: {text}"));
                }
                tally.record(op, &outcome, latency);
            })
            .await;
        if let Err(reason) = &result {
            let lost = queued - answered;
            tally.record_lost(lost);
            errors += lost;
            let reason = format!("connection {id} to {}: {reason}", ctx.server);
            ctx.shared.sample(|| reason.clone());
            ctx.shared.abort(reason);
        }
        ctx.counters.answered.fetch_add(answered, Ordering::Relaxed);
        ctx.counters.errors.fetch_add(errors, Ordering::Relaxed);
        if result.is_err() {
            break;
        }
    }
    Ok((conn, tally))
}

impl From<HistogramError> for BenchError {
    fn from(e: HistogramError) -> Self {
        Self::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_with_budget(budget: Option<u64>) -> PhaseCtx {
        PhaseCtx {
            shared: Arc::default(),
            counters: Counters::default(),
            server: Arc::from("x"),
            keys: KeySpace::new("k", 10),
            value_size: 1,
            depth: 4,
            stride: 1,
            ratio: Ratio::default(),
            deadline: None,
            budget: budget.map(AtomicU64::new),
            interval: None,
        }
    }

    #[test]
    fn budget_is_handed_out_exactly_once() {
        let ctx = ctx_with_budget(Some(10));
        assert_eq!(ctx.claim(4), 4);
        assert_eq!(ctx.claim(4), 4);
        assert_eq!(ctx.claim(4), 2);
        assert_eq!(ctx.claim(4), 0);
        assert_eq!(ctx.claim(1), 0);
        assert_eq!(ctx_with_budget(None).claim(4), 4);
        assert_eq!(ctx_with_budget(Some(0)).claim(4), 0);
    }

    /// With time paused, the clock only moves when every task waits on a timer, so the
    /// schedule can be checked exactly. (Whole milliseconds: tokio's timer has that
    /// resolution, which is why a batch that waited for its turn is timed from when the
    /// timer woke us.)
    #[tokio::test(start_paused = true)]
    async fn a_paced_connection_keeps_its_schedule_and_times_late_batches_from_when_they_were_due()
    {
        let at = |start: tokio::time::Instant, ms| (start + Duration::from_millis(ms)).into_std();
        let start = tokio::time::Instant::now();
        // Connection 1 of 4 starts a quarter of an interval in.
        let mut pacer = Pacer::new(Duration::from_millis(8), start, 1, 4, Some(at(start, 100)));
        assert_eq!(pacer.next().await, Some(at(start, 2)));
        assert_eq!(
            tokio::time::Instant::now(),
            start + Duration::from_millis(2)
        );

        // The reply came back at once: the next batch waits for its turn.
        assert_eq!(pacer.next().await, Some(at(start, 10)));

        // A reply that took 21 ms holds back the next two batches: each is timed from when
        // it was due, or from when the one before it went out if that was later.
        tokio::time::advance(Duration::from_millis(21)).await;
        assert_eq!(pacer.next().await, Some(at(start, 18)));
        assert_eq!(
            pacer.next().await,
            Some(at(start, 31)),
            "due at 26 ms, but the batch before it went out at 31 ms"
        );
        assert_eq!(
            tokio::time::Instant::now(),
            start + Duration::from_millis(31),
            "late batches do not wait"
        );

        // Back on schedule, and nothing is due at or after the deadline.
        let mut origins = Vec::new();
        while let Some(origin) = pacer.next().await {
            origins.push(origin);
        }
        let expected: Vec<_> = [34, 42, 50, 58, 66, 74, 82, 90, 98]
            .into_iter()
            .map(|ms| at(start, ms))
            .collect();
        assert_eq!(origins, expected);
    }

    #[test]
    fn rate_is_spread_over_connections_and_pipeline() {
        let args = |rate, connections, pipeline| BenchArgs {
            connections,
            pipeline,
            rate,
            ..crate::tests::defaults()
        };
        assert_eq!(args(None, 50, 1).batch_interval(), None);
        // 50 connections of 1 request each at 1000/s: every connection every 50 ms.
        assert_eq!(
            args(Some(1000), 50, 1).batch_interval(),
            Some(Duration::from_millis(50))
        );
        // Batches of 16 at 16 000/s over 10 connections: each every 10 ms.
        assert_eq!(
            args(Some(16_000), 10, 16).batch_interval(),
            Some(Duration::from_millis(10))
        );
        // One request a second over the most connections and the deepest pipeline: an
        // interval far beyond any run, without overflowing.
        let slowest = args(Some(1), u32::MAX, crate::MAX_PIPELINE).batch_interval();
        assert_eq!(slowest, Some(Duration::from_nanos(u64::MAX)));
        // A start offset past what the clock can hold means nothing is ever due, rather
        // than a panic.
        let start = tokio::time::Instant::now();
        let mut last = Pacer::new(
            slowest.unwrap(),
            start,
            u32::MAX - 1,
            u32::MAX as usize,
            None,
        );
        assert_eq!(futures_now(last.next()), None);
        let first = Pacer::new(slowest.unwrap(), start, 0, u32::MAX as usize, None);
        assert_eq!(first.due, Some(start));
    }

    /// Runs a future that must not wait.
    fn futures_now<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn samples_keep_only_the_first_few() {
        let shared = Shared::default();
        for i in 0..25 {
            shared.sample(|| format!("e{i}"));
        }
        let samples = shared.take_samples();
        assert_eq!(samples.len(), MAX_ERROR_SAMPLES);
        assert_eq!(samples[0], "e0");
        shared.abort("first".into());
        shared.abort("second".into());
        assert!(shared.stopped());
        assert_eq!(shared.take_fatal().as_deref(), Some("first"));
    }
}
