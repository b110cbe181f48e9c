//! Commit latency of the fjall engine while another thread fsyncs it every 5 ms, as the
//! store's syncer does with `--sync periodic`.
//!
//! A commit that has to wait for an fsync stalls a whole connection thread, because the
//! store commits on the connection threads. Run with
//! `cargo run --release -p murakumo-engine-fjall --example fsync_stall`; the data goes to
//! a temporary folder under `/tmp`. Measured on the 2-core CI-class VM: with fjall's own
//! `persist`, the commit that met an fsync took ~250 µs (p99 237–244 µs, max 16.5 ms);
//! with the engine's fsync of the journal through its own handle, p99 8–10 µs, max
//! ~140 µs.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use murakumo_engine::{Engine, Table, WriteBatch};
use murakumo_engine_fjall::{FjallEngine, FjallOptions};

const RUN: Duration = Duration::from_secs(5);
const SYNC_EVERY: Duration = Duration::from_millis(5);
const KEYS: u64 = 100_000;

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir_in("/tmp")?;
    let engine = Arc::new(FjallEngine::open(dir.path(), FjallOptions::default())?);
    let stop = Arc::new(AtomicBool::new(false));
    let syncer = {
        let (engine, stop) = (Arc::clone(&engine), Arc::clone(&stop));
        std::thread::spawn(move || -> Result<u64, String> {
            let mut syncs = 0;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(SYNC_EVERY);
                engine.sync().map_err(|e| e.to_string())?;
                syncs += 1;
            }
            Ok(syncs)
        })
    };
    let mut micros = Vec::new();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < RUN {
        let mut batch = WriteBatch::new();
        batch.put(
            Table::Items,
            format!("key:{}", i % KEYS).into_bytes(),
            vec![b'x'; 130],
        );
        let commit = Instant::now();
        engine.write(batch)?;
        micros.push(u64::try_from(commit.elapsed().as_micros())?);
        i += 1;
        std::thread::sleep(Duration::from_micros(50));
    }
    stop.store(true, Ordering::Relaxed);
    let syncs = syncer.join().map_err(|_| "the syncer panicked")??;
    micros.sort_unstable();
    let at = |q: f64| {
        let last = micros.len().saturating_sub(1);
        // An index into the sorted samples; the float only picks the rank.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = (last as f64 * q) as usize;
        micros.get(rank).copied().unwrap_or_default()
    };
    println!(
        "commits {} fsyncs {syncs}: p50 {} p99 {} p99.9 {} max {} us",
        micros.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    );
    Ok(())
}
