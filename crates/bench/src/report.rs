//! Counting while the run goes, and the report at the end.
//!
//! Each connection task keeps its own [`Tally`] (plain counters and histograms, no sharing on
//! the hot path); the tallies are merged once a phase ends and turned into a [`PhaseReport`]
//! of rates and percentiles.

use std::fmt::{self, Write as _};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::Protocol;
use crate::check::Outcome;
use crate::json;
use crate::workload::{Op, Ratio};

/// Highest latency the histograms resolve, in microseconds (one hour). Anything slower is
/// recorded as this value; the per-reply timeout ends a run long before it matters.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Significant decimal digits kept by the histograms: 0.1% relative error per value.
const SIGNIFICANT_DIGITS: u8 = 3;

/// Why a histogram could not be built or merged. It only happens if the fixed bounds above
/// are wrong, so it is reported, not hidden behind a panic.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HistogramError {
    #[error("cannot create a latency histogram: {0}")]
    Create(#[from] hdrhistogram::CreationError),
    #[error("cannot merge latency histograms: {0}")]
    Merge(#[from] hdrhistogram::AdditionError),
}

fn new_histogram() -> Result<Histogram<u64>, HistogramError> {
    Ok(Histogram::new_with_bounds(
        1,
        MAX_LATENCY_US,
        SIGNIFICANT_DIGITS,
    )?)
}

/// Counters and latency histograms of one connection (or, merged, of one phase).
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    pub(crate) gets: u64,
    pub(crate) sets: u64,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) errors: u64,
    get_latency: Histogram<u64>,
    set_latency: Histogram<u64>,
}

impl Tally {
    pub(crate) fn new() -> Result<Self, HistogramError> {
        Ok(Self {
            gets: 0,
            sets: 0,
            hits: 0,
            misses: 0,
            errors: 0,
            get_latency: new_histogram()?,
            set_latency: new_histogram()?,
        })
    }

    /// Counts one answered request and its latency.
    pub(crate) fn record(&mut self, op: Op, outcome: &Outcome, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        match op {
            Op::Get => {
                self.gets += 1;
                self.get_latency.saturating_record(micros);
            }
            Op::Set => {
                self.sets += 1;
                self.set_latency.saturating_record(micros);
            }
        }
        match outcome {
            Outcome::Hit => self.hits += 1,
            Outcome::Miss => self.misses += 1,
            Outcome::Error(_) => self.errors += 1,
            Outcome::Stored => {}
        }
    }

    /// Counts requests that never got an answer (the connection failed). They have no
    /// latency, so they only add to the error count.
    pub(crate) fn record_lost(&mut self, count: u64) {
        self.errors += count;
    }

    pub(crate) fn merge(&mut self, other: &Tally) -> Result<(), HistogramError> {
        self.gets += other.gets;
        self.sets += other.sets;
        self.hits += other.hits;
        self.misses += other.misses;
        self.errors += other.errors;
        self.get_latency.add(&other.get_latency)?;
        self.set_latency.add(&other.set_latency)?;
        Ok(())
    }

    /// Turns the raw counts of a phase that lasted `elapsed` into its report.
    pub(crate) fn summarize(&self, elapsed: Duration) -> Result<PhaseReport, HistogramError> {
        let mut all = self.get_latency.clone();
        all.add(&self.set_latency)?;
        Ok(PhaseReport {
            elapsed,
            gets: self.gets,
            sets: self.sets,
            hits: self.hits,
            misses: self.misses,
            errors: self.errors,
            get: LatencySummary::of(&self.get_latency),
            set: LatencySummary::of(&self.set_latency),
            all: LatencySummary::of(&all),
        })
    }
}

/// Latency percentiles of one kind of request, in microseconds.
///
/// p99 and p99.9 are what DESIGN.md's targets are written in; the mean is kept only because
/// it is the number other tools print first.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencySummary {
    /// Requests measured.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest request.
    pub max_us: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
}

impl LatencySummary {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
            mean_us: histogram.mean(),
        }
    }

    fn to_json(self, ops_per_sec: f64) -> json::Object {
        json::Object::new()
            .u64("ops", self.count)
            .f64("ops_per_sec", ops_per_sec)
            .u64("p50_us", self.p50_us)
            .u64("p99_us", self.p99_us)
            .u64("p999_us", self.p999_us)
            .u64("max_us", self.max_us)
            .f64("mean_us", self.mean_us)
    }
}

/// What happened in one phase of a run (prefill, or the timed load).
///
/// Phases are reported apart because prefill is all sets at full pipeline depth: mixing it
/// into the load numbers would skew both the ratio and the latencies.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseReport {
    /// Wall time from the phase's first request to its last reply.
    pub elapsed: Duration,
    /// Gets answered (hits, misses and errors).
    pub gets: u64,
    /// Sets answered.
    pub sets: u64,
    /// Gets that returned the key's value.
    pub hits: u64,
    /// Gets that returned nothing; not an error, the key may not have been set yet.
    pub misses: u64,
    /// Requests that failed verification or got no reply.
    pub errors: u64,
    /// Get latency.
    pub get: LatencySummary,
    /// Set latency.
    pub set: LatencySummary,
    /// Latency over both kinds.
    pub all: LatencySummary,
}

impl PhaseReport {
    /// Requests answered.
    pub fn ops(&self) -> u64 {
        self.gets + self.sets
    }

    /// Answered requests per second of wall time.
    pub fn ops_per_sec(&self) -> f64 {
        self.rate(self.ops())
    }

    /// Answered gets per second.
    pub fn get_ops_per_sec(&self) -> f64 {
        self.rate(self.gets)
    }

    /// Answered sets per second.
    pub fn set_ops_per_sec(&self) -> f64 {
        self.rate(self.sets)
    }

    #[allow(clippy::cast_precision_loss)] // counts far below 2^53 in any real run
    fn rate(&self, count: u64) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { count as f64 / secs } else { 0.0 }
    }

    fn to_json(&self) -> json::Object {
        json::Object::new()
            .f64("elapsed_secs", self.elapsed.as_secs_f64())
            .u64("ops", self.ops())
            .f64("ops_per_sec", self.ops_per_sec())
            .u64("hits", self.hits)
            .u64("misses", self.misses)
            .u64("errors", self.errors)
            .object("get", self.get.to_json(self.get_ops_per_sec()))
            .object("set", self.set.to_json(self.set_ops_per_sec()))
            .object("all", self.all.to_json(self.ops_per_sec()))
    }
}

/// The settings a run used, repeated in its report so a saved report explains itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The endpoint.
    pub server: String,
    /// Connections.
    pub connections: u32,
    /// Requests in flight per connection.
    pub pipeline: u32,
    /// Set:get mix.
    pub ratio: Ratio,
    /// Which commands were sent.
    pub protocol: Protocol,
    /// Key space size.
    pub keys: u64,
    /// Key prefix.
    pub key_prefix: String,
    /// Value length in bytes.
    pub value_size: usize,
    /// Expiry of stored items in seconds; 0 for never.
    pub ttl: u32,
    /// Length of the timed phase; zero when there was none.
    pub duration: Duration,
    /// Cap on load requests, if any.
    pub max_ops: Option<u64>,
    /// Offered load in requests per second, if paced (`--rate`).
    pub rate: Option<u64>,
    /// Seed of the per-connection generators.
    pub seed: u64,
}

/// Everything `murakumo bench` measured.
///
/// The cli prints it (run() already has) and exits non-zero when [`Report::errors`] is above
/// zero, so a wrong value from the server fails a script that runs the bench.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// What was asked for.
    pub settings: Settings,
    /// The prefill phase, when `--prefill` was given.
    pub prefill: Option<PhaseReport>,
    /// The timed load phase, unless there was none (`--duration 0` without `--max-ops`).
    pub load: Option<PhaseReport>,
    /// The first few errors, described, in the order they were seen.
    pub error_samples: Vec<String>,
    /// Why the run stopped early, if it did (a connection failed).
    pub aborted: Option<String>,
}

impl Report {
    /// Errors over all phases: failed verifications and requests that got no reply.
    pub fn errors(&self) -> u64 {
        self.prefill.as_ref().map_or(0, |p| p.errors) + self.load.as_ref().map_or(0, |p| p.errors)
    }

    /// The report as one JSON object (what `--json` prints).
    ///
    /// Shape: `{"settings":{..},"prefill":PHASE|null,"load":PHASE|null,"errors":N,
    /// "error_samples":[..],"aborted":STRING|null}` where PHASE is
    /// `{"elapsed_secs","ops","ops_per_sec","hits","misses","errors","get":LAT,"set":LAT,"all":LAT}`
    /// and LAT is `{"ops","ops_per_sec","p50_us","p99_us","p999_us","max_us","mean_us"}`.
    pub fn to_json(&self) -> String {
        let s = &self.settings;
        let settings = json::Object::new()
            .str("server", &s.server)
            .u64("connections", u64::from(s.connections))
            .u64("pipeline", u64::from(s.pipeline))
            .str("ratio", &s.ratio.to_string())
            .str("protocol", &s.protocol.to_string())
            .u64("keys", s.keys)
            .str("key_prefix", &s.key_prefix)
            .u64("value_size", s.value_size as u64)
            .u64("ttl_secs", u64::from(s.ttl))
            .f64("duration_secs", s.duration.as_secs_f64())
            .opt_u64("max_ops", s.max_ops)
            .opt_u64("rate", s.rate)
            .u64("seed", s.seed);
        json::Object::new()
            .object("settings", settings)
            .opt_object("prefill", self.prefill.as_ref().map(PhaseReport::to_json))
            .opt_object("load", self.load.as_ref().map(PhaseReport::to_json))
            .u64("errors", self.errors())
            .strings("error_samples", &self.error_samples)
            .opt_str("aborted", self.aborted.as_deref())
            .finish()
    }
}

/// The human table (what the bench prints without `--json`).
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        writeln!(
            f,
            "murakumo bench → {}: {} connections, pipeline {}, set:get {} ({} protocol), {} keys, {}-byte values, seed {}",
            s.server, s.connections, s.pipeline, s.ratio, s.protocol, s.keys, s.value_size, s.seed
        )?;
        if s.ttl > 0 {
            writeln!(
                f,
                "items expire {} s after each set; a get of an expired item is a miss",
                s.ttl
            )?;
        }
        if let Some(rate) = s.rate {
            writeln!(
                f,
                "offered at {rate} ops/s; a request held back by a slow reply is timed from when it was due"
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<8} {:>9} {:>11} {:>11} {:>10} {:>10} {:>8}",
            "phase", "secs", "ops", "ops/s", "hits", "misses", "errors"
        )?;
        for (name, phase) in [("prefill", &self.prefill), ("load", &self.load)] {
            if let Some(p) = phase {
                writeln!(
                    f,
                    "{:<8} {:>9.2} {:>11} {:>11.0} {:>10} {:>10} {:>8}",
                    name,
                    p.elapsed.as_secs_f64(),
                    p.ops(),
                    p.ops_per_sec(),
                    p.hits,
                    p.misses,
                    p.errors
                )?;
            }
        }
        if let Some(p) = &self.load {
            writeln!(f)?;
            writeln!(
                f,
                "{:<8} {:>11} {:>11} {:>9} {:>9} {:>9} {:>9}",
                "latency", "ops", "ops/s", "p50 µs", "p99 µs", "p99.9 µs", "max µs"
            )?;
            for (name, lat, rate) in [
                ("get", p.get, p.get_ops_per_sec()),
                ("set", p.set, p.set_ops_per_sec()),
                ("all", p.all, p.ops_per_sec()),
            ] {
                writeln!(
                    f,
                    "{:<8} {:>11} {:>11.0} {:>9} {:>9} {:>9} {:>9}",
                    name, lat.count, rate, lat.p50_us, lat.p99_us, lat.p999_us, lat.max_us
                )?;
            }
        }
        writeln!(f)?;
        write!(f, "errors: {}", self.errors())?;
        if let Some(reason) = &self.aborted {
            write!(f, "\naborted: {reason}")?;
        }
        if !self.error_samples.is_empty() {
            let mut samples = String::new();
            for sample in &self.error_samples {
                let _ = write!(samples, "\n  {sample}");
            }
            write!(f, "\nfirst errors:{samples}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn tally_counts_outcomes_and_latencies() {
        let mut t = Tally::new().unwrap();
        t.record(Op::Get, &Outcome::Hit, Duration::from_micros(100));
        t.record(Op::Get, &Outcome::Miss, Duration::from_micros(200));
        t.record(
            Op::Get,
            &Outcome::Error("x".into()),
            Duration::from_micros(300),
        );
        t.record(Op::Set, &Outcome::Stored, Duration::from_millis(1));
        t.record_lost(2);
        assert_eq!(
            (t.gets, t.sets, t.hits, t.misses, t.errors),
            (3, 1, 1, 1, 3)
        );

        let p = t.summarize(ms(2000)).unwrap();
        assert_eq!(p.ops(), 4);
        assert!((p.ops_per_sec() - 2.0).abs() < 1e-9);
        assert!((p.get_ops_per_sec() - 1.5).abs() < 1e-9);
        assert!((p.set_ops_per_sec() - 0.5).abs() < 1e-9);
        assert_eq!(p.get.count, 3);
        assert_eq!(p.get.p50_us, 200);
        assert_eq!(p.get.max_us, 300);
        assert!((p.get.mean_us - 200.0).abs() < 1.0);
        assert_eq!(p.set.count, 1);
        assert_eq!(p.set.p99_us, 1000);
        assert_eq!(p.all.count, 4);
        assert_eq!(p.all.max_us, 1000);
    }

    #[test]
    fn percentiles_follow_the_distribution() {
        let mut t = Tally::new().unwrap();
        // 1..=10_000 µs, one of each: p50 ≈ 5000, p99 ≈ 9900, p99.9 ≈ 9990.
        for us in 1..=10_000 {
            t.record(Op::Get, &Outcome::Hit, Duration::from_micros(us));
        }
        let lat = t.summarize(ms(1)).unwrap().get;
        let near = |got: u64, want: u64| got.abs_diff(want) <= want / 500;
        assert!(near(lat.p50_us, 5000), "{lat:?}");
        assert!(near(lat.p99_us, 9900), "{lat:?}");
        assert!(near(lat.p999_us, 9990), "{lat:?}");
        assert!(near(lat.max_us, 10_000), "{lat:?}");
    }

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut a = Tally::new().unwrap();
        let mut b = Tally::new().unwrap();
        a.record(Op::Get, &Outcome::Hit, Duration::from_micros(10));
        b.record(Op::Get, &Outcome::Miss, Duration::from_millis(5));
        b.record(Op::Set, &Outcome::Stored, Duration::from_micros(20));
        a.merge(&b).unwrap();
        let p = a.summarize(ms(1000)).unwrap();
        assert_eq!((p.gets, p.sets, p.hits, p.misses), (2, 1, 1, 1));
        assert_eq!(p.get.count, 2);
        assert!(p.get.max_us >= 4995);
        assert_eq!(p.all.count, 3);
    }

    #[test]
    fn latency_saturates_instead_of_failing() {
        let mut t = Tally::new().unwrap();
        t.record(
            Op::Set,
            &Outcome::Stored,
            Duration::from_micros(10 * MAX_LATENCY_US),
        );
        t.record(Op::Set, &Outcome::Stored, Duration::ZERO);
        let p = t.summarize(ms(1)).unwrap();
        assert_eq!(p.set.count, 2);
        assert!(p.set.max_us >= MAX_LATENCY_US - MAX_LATENCY_US / 1000);
    }

    #[test]
    fn empty_phase_has_zero_rates() {
        let p = Tally::new().unwrap().summarize(Duration::ZERO).unwrap();
        assert!(p.ops_per_sec().abs() < f64::EPSILON);
        assert_eq!(p.all, LatencySummary::default());
    }

    fn sample_report() -> Report {
        let mut t = Tally::new().unwrap();
        t.record(Op::Get, &Outcome::Hit, Duration::from_micros(100));
        t.record(
            Op::Get,
            &Outcome::Error("bad".into()),
            Duration::from_micros(100),
        );
        let mut pre = Tally::new().unwrap();
        pre.record(Op::Set, &Outcome::Stored, Duration::from_micros(50));
        pre.record_lost(1);
        Report {
            settings: Settings {
                server: "127.0.0.1:11211".into(),
                connections: 2,
                pipeline: 4,
                ratio: Ratio::default(),
                protocol: Protocol::Text,
                keys: 10,
                key_prefix: "bench:".into(),
                value_size: 100,
                ttl: 0,
                duration: ms(1500),
                max_ops: None,
                rate: None,
                seed: 1,
            },
            prefill: Some(pre.summarize(ms(500)).unwrap()),
            load: Some(t.summarize(ms(1000)).unwrap()),
            error_samples: vec!["get \"bench:1\": wrong value".into()],
            aborted: None,
        }
    }

    #[test]
    fn errors_sum_over_phases() {
        let mut r = sample_report();
        assert_eq!(r.errors(), 2);
        r.prefill = None;
        assert_eq!(r.errors(), 1);
        r.load = None;
        assert_eq!(r.errors(), 0);
    }

    #[test]
    fn json_has_the_documented_shape() {
        let text = sample_report().to_json();
        assert!(text.starts_with(r#"{"settings":{"server":"127.0.0.1:11211","connections":2,"pipeline":4,"ratio":"1:10","protocol":"text","keys":10,"key_prefix":"bench:","value_size":100,"ttl_secs":0,"duration_secs":1.500,"max_ops":null,"rate":null,"seed":1},"prefill":{"elapsed_secs":0.500,"ops":1,"ops_per_sec":2.000,"hits":0,"misses":0,"errors":1,"#), "{text}");
        assert!(text.contains(r#""load":{"elapsed_secs":1.000,"ops":2,"ops_per_sec":2.000,"hits":1,"misses":0,"errors":1,"get":{"ops":2,"ops_per_sec":2.000,"p50_us":100,"p99_us":100,"p999_us":100,"max_us":100,"mean_us":100.000},"set":{"ops":0,"#), "{text}");
        assert!(
            text.ends_with(
                r#""errors":2,"error_samples":["get \"bench:1\": wrong value"],"aborted":null}"#
            ),
            "{text}"
        );
    }

    #[test]
    fn table_shows_phases_latency_and_errors() {
        let mut report = sample_report();
        report.aborted = Some("connection 1 closed".into());
        let text = report.to_string();
        assert!(text.contains("pipeline 4, set:get 1:10"), "{text}");
        assert!(
            text.contains("\nprefill ") && text.contains("\nload "),
            "{text}"
        );
        assert!(text.contains("\nget "), "{text}");
        assert!(
            text.contains("errors: 2\naborted: connection 1 closed\nfirst errors:\n  get"),
            "{text}"
        );
    }
}
