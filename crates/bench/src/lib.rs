//! `murakumo bench`: a load generator for any memcached endpoint.
//!
//! DESIGN.md states every performance target as a ratio against memcached measured side by
//! side, so we need one tool that loads murakumo and memcached the same way and reports the
//! same numbers. It speaks the memcached text protocol through `murakumo-protocol`, keeps a
//! configurable number of requests in flight on each connection, and, unlike most load
//! generators, checks every reply: values are a pure function of their key, so a wrong byte
//! from the server is counted as an error and fails the run.
//!
//! The `murakumo` binary calls [`run`] with [`BenchArgs`] parsed by clap.

mod check;
mod conn;
mod json;
mod progress;
mod report;
mod runner;
mod workload;

use std::io;
use std::time::Duration;

pub use report::{LatencySummary, PhaseReport, Report, Settings};
pub use runner::run;
pub use workload::{Ratio, RatioError};

/// Longest key memcached accepts; every generated key must fit.
const MAX_KEY_LEN: usize = 250;

/// Largest `--value-size`: well above memcached's 1 MiB default item size (so the bench can
/// probe a server started with a larger `-I`), but bounded so a typo cannot allocate
/// gigabytes per request.
const MAX_VALUE_SIZE: u32 = 128 * 1024 * 1024;
/// The longest `--ttl`: memcached reads an `exptime` over 30 days as a Unix time.
const MAX_TTL: u32 = 60 * 60 * 24 * 30;

/// Deepest `--pipeline` accepted.
const MAX_PIPELINE: u32 = 10_000;

/// Upper bound on the bytes one batch of requests may occupy in a connection's write buffer,
/// so that pipeline depth × value size stays within memory.
const MAX_BATCH_BYTES: u64 = 256 * 1024 * 1024;

/// The memcached commands a bench run sends.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// `get` and `set`.
    #[default]
    Text,
    /// `mg` and `ms`, as modern clients send them.
    Meta,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Meta => "meta",
        })
    }
}

/// Command-line flags of `murakumo bench`.
///
/// The flag names are stable: scripts such as `scripts/bench-compare` use them.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct BenchArgs {
    /// memcached endpoint to load.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:11211")]
    pub server: String,

    /// Connections, each driven by its own task.
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,

    /// Requests in flight per connection: each connection writes this many requests, then
    /// reads their replies in order.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PIPELINE)))]
    pub pipeline: u32,

    /// Operation mix, as sets:gets.
    #[arg(long, value_name = "SET:GET", default_value = "1:10")]
    pub ratio: Ratio,

    /// Which requests to send: the classic text commands (`get`, `set`) or the meta
    /// commands (`mg <key> k f v`, `ms <key> <len> F0`).
    #[arg(long, value_enum, default_value_t = Protocol::Text)]
    pub protocol: Protocol,

    /// Number of distinct keys, chosen uniformly.
    #[arg(long, value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,

    /// Prefix of every key (the key is the prefix followed by a decimal index).
    #[arg(long, value_name = "STR", default_value = "bench:")]
    pub key_prefix: String,

    /// Length of every stored value.
    #[arg(long, value_name = "BYTES", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_VALUE_SIZE)))]
    pub value_size: u32,

    /// Expiry of every stored item, in seconds (the `exptime` of `set`, `T` of `ms`); 0
    /// means the items never expire. A get of an item that has expired is a miss, not an
    /// error. At most 30 days: memcached reads a larger `exptime` as a Unix time.
    #[arg(long, value_name = "SECS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_TTL)))]
    pub ttl: u32,

    /// Length of the timed load phase; 0 means no timed phase.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub duration: u64,

    /// Stop the load phase after this many requests, even before the duration ends.
    #[arg(long, value_name = "N")]
    pub max_ops: Option<u64>,

    /// Offer the load phase at this many requests per second in all, instead of as fast as
    /// the server answers. Each connection sends its batches on a fixed schedule, and a
    /// request that a slow reply held back is timed from when it was due, so a stall
    /// shows in the percentiles instead of hiding in fewer samples.
    #[arg(long, value_name = "OPS_PER_SEC",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,

    /// Set every key once, pipelined, before the timed phase (also how to load N items for
    /// a memory measurement: --prefill --duration 0).
    #[arg(long)]
    pub prefill: bool,

    /// Print the report as one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,

    /// No progress bar (also the case when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,

    /// Seed of the per-connection generators that pick operations and keys.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,

    /// How long to wait for a connection, and for each reply, before the run is aborted.
    #[arg(long, value_name = "MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
}

impl BenchArgs {
    /// Checks what clap cannot (and everything, for callers that build `BenchArgs` in code).
    fn validate(&self) -> Result<(), BenchError> {
        let invalid = |why: String| Err(BenchError::InvalidArgs(why));
        if self.connections == 0
            || self.pipeline == 0
            || self.keys == 0
            || self.timeout_ms == 0
            || self.rate == Some(0)
        {
            return invalid(
                "--connections, --pipeline, --keys, --timeout-ms and --rate must be at least 1"
                    .into(),
            );
        }
        if self.pipeline > MAX_PIPELINE {
            return invalid(format!("--pipeline is at most {MAX_PIPELINE}"));
        }
        if self.ttl > MAX_TTL {
            return invalid(format!(
                "--ttl is at most {MAX_TTL} seconds (30 days): memcached reads a larger \
                 exptime as a Unix time"
            ));
        }
        if self.value_size > MAX_VALUE_SIZE {
            return invalid(format!("--value-size is at most {MAX_VALUE_SIZE}"));
        }
        if let Some(bad) = self
            .key_prefix
            .bytes()
            .find(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return invalid(format!(
                "--key-prefix must not contain spaces or control characters (found byte {bad:#04x})"
            ));
        }
        let longest = self.key_space().longest_key_len();
        if longest > MAX_KEY_LEN {
            return invalid(format!(
                "keys would be up to {longest} bytes; memcached allows {MAX_KEY_LEN}"
            ));
        }
        // Room for the command line and the reply framing around each value.
        let batch_bytes = u64::from(self.batch_depth()) * (u64::from(self.value_size) + 512);
        if batch_bytes > MAX_BATCH_BYTES {
            return invalid(format!(
                "--pipeline × --value-size would buffer {batch_bytes} bytes per connection; \
                 the limit is {MAX_BATCH_BYTES}"
            ));
        }
        Ok(())
    }

    fn key_space(&self) -> workload::KeySpace {
        workload::KeySpace::new(&self.key_prefix, self.keys)
    }

    /// The deepest batch any phase sends: prefill pipelines at least this deep so that
    /// loading a million items takes seconds, not minutes, even with `--pipeline 1`.
    fn batch_depth(&self) -> u32 {
        self.pipeline.max(runner::PREFILL_MIN_DEPTH)
    }

    /// With `--rate`: how long each connection waits between the starts of its batches,
    /// so that all of them together offer that rate.
    fn batch_interval(&self) -> Option<Duration> {
        let rate = u128::from(self.rate?.max(1));
        let requests_per_round =
            u128::from(self.connections.max(1)) * u128::from(self.pipeline.max(1));
        let nanos = 1_000_000_000 * requests_per_round / rate;
        Some(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    fn settings(&self) -> Settings {
        Settings {
            server: self.server.clone(),
            connections: self.connections,
            pipeline: self.pipeline,
            ratio: self.ratio,
            protocol: self.protocol,
            keys: self.keys,
            key_prefix: self.key_prefix.clone(),
            value_size: self.value_size as usize,
            ttl: self.ttl,
            duration: Duration::from_secs(self.duration),
            max_ops: self.max_ops,
            rate: self.rate,
            seed: self.seed,
        }
    }
}

/// Why a bench run did not produce a clean report.
///
/// Errors in replies are not here: they are counted in [`Report::errors`]. This is for runs
/// that could not start, or that had to stop because a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The arguments describe a run that cannot be done.
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// A connection could not be opened.
    #[error("cannot connect to {server}")]
    Connect {
        /// The endpoint.
        server: String,
        /// What the operating system said; the error's source, so it is not repeated in
        /// the message (anyhow prints it as the cause).
        source: io::Error,
    },
    /// The server did not accept a connection in time.
    #[error("cannot connect to {server}: no answer within {timeout:?}")]
    ConnectTimeout {
        /// The endpoint.
        server: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// A connection failed during the run (closed, reset, timed out, or sent bytes that are
    /// not memcached replies), so the run stopped. The partial report has been printed and
    /// is kept here.
    #[error("run aborted: {reason}")]
    Aborted {
        /// The first failure, naming the connection.
        reason: String,
        /// What was measured until then.
        report: Box<Report>,
    },
    /// A bug in the bench itself (a worker task panicked, or histograms could not merge).
    #[error("internal error in the bench: {0}")]
    Internal(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(flags: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(flags.iter().copied())).map(|c| c.args)
    }

    /// The arguments with every flag at its default.
    pub(crate) fn defaults() -> BenchArgs {
        parse(&[]).unwrap()
    }

    #[test]
    fn defaults_match_the_brief() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.server, "127.0.0.1:11211");
        assert_eq!(args.connections, 50);
        assert_eq!(args.pipeline, 1);
        assert_eq!(args.ratio, Ratio { sets: 1, gets: 10 });
        assert_eq!(args.keys, 100_000);
        assert_eq!(args.value_size, 100);
        assert_eq!(args.duration, 10);
        assert_eq!(args.max_ops, None);
        assert_eq!(args.rate, None);
        assert!(!args.prefill && !args.json && !args.quiet);
        assert!(args.validate().is_ok());
    }

    #[test]
    fn every_flag_parses() {
        let args = parse(&[
            "--server",
            "10.0.0.1:2",
            "--connections",
            "3",
            "--pipeline",
            "16",
            "--ratio",
            "0:1",
            "--keys",
            "1000000",
            "--key-prefix",
            "x:",
            "--value-size",
            "0",
            "--duration",
            "0",
            "--max-ops",
            "7",
            "--rate",
            "5000",
            "--prefill",
            "--json",
            "--quiet",
            "--seed",
            "9",
            "--timeout-ms",
            "10",
        ])
        .unwrap();
        assert_eq!(args.server, "10.0.0.1:2");
        assert_eq!((args.connections, args.pipeline), (3, 16));
        assert_eq!(args.ratio, Ratio { sets: 0, gets: 1 });
        assert_eq!(
            (args.keys, args.value_size, args.duration),
            (1_000_000, 0, 0)
        );
        assert_eq!(args.max_ops, Some(7));
        assert_eq!(args.rate, Some(5000));
        assert!(args.prefill && args.json && args.quiet);
        assert_eq!((args.seed, args.timeout_ms), (9, 10));
        assert_eq!(args.key_prefix, "x:");
    }

    #[test]
    fn clap_rejects_out_of_range_values() {
        for flags in [
            &["--connections", "0"][..],
            &["--pipeline", "0"],
            &["--pipeline", "10001"],
            &["--keys", "0"],
            &["--ratio", "0:0"],
            &["--ratio", "1-10"],
            &["--value-size", "134217729"],
            &["--timeout-ms", "0"],
            &["--rate", "0"],
        ] {
            assert!(parse(flags).is_err(), "{flags:?} should be refused");
        }
    }

    #[test]
    fn validate_rejects_bad_keys_and_huge_batches() {
        let ok = parse(&[]).unwrap();
        let with = |f: &dyn Fn(&mut BenchArgs)| {
            let mut a = ok.clone();
            f(&mut a);
            a.validate()
        };
        assert!(matches!(
            with(&|a| a.key_prefix = "a b".into()),
            Err(BenchError::InvalidArgs(_))
        ));
        assert!(matches!(
            with(&|a| a.key_prefix = "a\n".into()),
            Err(BenchError::InvalidArgs(_))
        ));
        // 245 + "99999" = 250 bytes is the longest key allowed.
        assert!(with(&|a| a.key_prefix = "k".repeat(245)).is_ok());
        assert!(matches!(
            with(&|a| a.key_prefix = "k".repeat(246)),
            Err(BenchError::InvalidArgs(_))
        ));
        assert!(matches!(
            with(&|a| {
                a.pipeline = 10_000;
                a.value_size = 1024 * 1024;
            }),
            Err(BenchError::InvalidArgs(_))
        ));
        assert!(matches!(
            with(&|a| a.connections = 0),
            Err(BenchError::InvalidArgs(_))
        ));
    }
}
