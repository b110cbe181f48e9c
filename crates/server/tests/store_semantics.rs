//! The store on an engine (the persistent mode), on the memory engine with a manual
//! clock: the semantics every mode shares (`semantics`), then restarts, crashes and
//! the item cache in front of the engine.

#![allow(clippy::unwrap_used)] // Test helpers fail the test by panicking.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use murakumo_engine::MemoryEngine;
use murakumo_engine::keys::DEFAULT_NAMESPACE as NS;
use murakumo_server::ops::{StoreMode, StoreOutcome};
use murakumo_server::placement::partition_of;
use murakumo_server::{Clock, Exptime, Store, StoreConfig};

mod semantics;
mod support;
use semantics::{T0, eventually, req, value_of};
use support::{MeasuringEngine, sweeping_every};

/// The persistent mode's code paths (engine reads, the item cache in front of them),
/// over the memory engine so that the tests need no disk.
fn open_store(config: StoreConfig, clock: Clock) -> Store {
    Store::open(Arc::new(MemoryEngine::new()), config, clock).unwrap()
}

/// A store on `engine` whose sweep passes come every 10 ms, as in the sweep tests of
/// `semantics`.
fn reopen_sweeping(engine: &Arc<dyn murakumo_engine::Engine>, clock: &Clock) -> Store {
    let config = sweeping_every(Duration::from_millis(10), 16);
    Store::open(Arc::clone(engine), config, clock.clone()).unwrap()
}

#[tokio::test]
async fn a_clean_restart_reads_only_what_falls_due() {
    let engine: Arc<dyn murakumo_engine::Engine> = Arc::new(MemoryEngine::new());
    let clock = Clock::manual(T0);
    let partitions = u64::from(murakumo_server::placement::PARTITIONS);
    let first = reopen_sweeping(&engine, &clock);
    for i in 0..50 {
        first
            .store(NS, req(&format!("k{i}"), "v", StoreMode::Set))
            .await
            .unwrap();
    }
    assert!(eventually(|| first.stats().sweep_scans >= partitions).await);
    // Written after the partition's last scan, so only the writer's report knows it
    // lapses; the shutdown must carry that report over.
    let mut lapsing = req("lapsing", "v", StoreMode::Set);
    lapsing.exptime = Exptime(100);
    first.store(NS, lapsing).await.unwrap();
    first.shutdown().await;

    let second = reopen_sweeping(&engine, &clock);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        second.stats().sweep_scans,
        0,
        "a clean restart read partitions the shutdown vouched for"
    );
    assert_eq!(second.stats().curr_items, 51);
    clock.advance(100);
    assert!(eventually(|| second.stats().reclaimed == 1).await);
    assert_eq!(second.stats().sweep_scans, 1);
    // A flush (persisted, and pending across the restart) makes every partition due.
    second.flush_all(NS, 5).await.unwrap();
    second.shutdown().await;

    let third = reopen_sweeping(&engine, &clock);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(third.stats().sweep_scans, 0);
    clock.advance(5);
    assert!(eventually(|| third.stats().curr_items == 0).await);
    assert_eq!(third.stats().reclaimed, 50);
    third.shutdown().await;
}

#[tokio::test]
async fn after_a_crash_the_partitions_written_since_the_clean_start_are_read_again() {
    let engine: Arc<dyn murakumo_engine::Engine> = Arc::new(MemoryEngine::new());
    let clock = Clock::manual(T0);
    let partitions = u64::from(murakumo_server::placement::PARTITIONS);
    let first = reopen_sweeping(&engine, &clock);
    assert!(eventually(|| first.stats().sweep_scans >= partitions).await);
    first.shutdown().await;

    // A clean start, then writes to two partitions (one record lapses, one never does),
    // then a crash: nothing is persisted about those records but the records themselves.
    let crashed = reopen_sweeping(&engine, &clock);
    let mut lapsing = req("lapsing", "v", StoreMode::Set);
    lapsing.exptime = Exptime(30);
    crashed.store(NS, lapsing).await.unwrap();
    crashed
        .store(NS, req("forever", "v", StoreMode::Set))
        .await
        .unwrap();
    assert_ne!(partition_of(NS, b"lapsing"), partition_of(NS, b"forever"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(crashed.stats().sweep_scans, 0);
    // The crashed store's threads live on in this process; a dead one sweeps nothing.
    crashed.disable_sweep();

    // Their writes raised those partitions' sequence ceilings, so the summary no longer
    // vouches for them: the next start reads them, and only them, and so learns when the
    // lapsing record is due.
    let restarted = reopen_sweeping(&engine, &clock);
    assert!(eventually(|| restarted.stats().sweep_scans == 2).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(restarted.stats().sweep_scans, 2);
    clock.advance(30);
    assert!(eventually(|| restarted.stats().reclaimed == 1).await);
    assert_eq!(restarted.stats().curr_items, 1);
    restarted.shutdown().await;
}

/// A crash (here: a second store opened on the engine without the first shutting down)
/// never reuses a sequence number, even though the exact number is not persisted on
/// every write: the persisted ceiling is.
#[tokio::test]
async fn sequence_numbers_survive_a_crash_without_checkpoint() {
    let engine: Arc<dyn murakumo_engine::Engine> = Arc::new(MemoryEngine::new());
    let clock = Clock::manual(T0);
    let crashed = Store::open(Arc::clone(&engine), StoreConfig::default(), clock.clone()).unwrap();
    let mut last = 0;
    for i in 0..50 {
        let StoreOutcome::Stored { cas } = crashed
            .store(NS, req("k", &i.to_string(), StoreMode::Set))
            .await
            .unwrap()
        else {
            panic!()
        };
        last = cas;
    }
    // No shutdown: whatever was not persisted with the writes themselves is lost.
    let restarted = Store::open(engine, StoreConfig::default(), clock).unwrap();
    let item = restarted.get(NS, b"k").unwrap().unwrap();
    assert_eq!(&item.value[..], b"49");
    assert_eq!(item.cas, last);
    let StoreOutcome::Stored { cas } = restarted
        .store(NS, req("k", "after", StoreMode::Set))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(
        cas > last,
        "a sequence number was reused after a crash: {cas} <= {last}"
    );
}

/// The counters checkpoint is spread over commits: with nearly every partition changed,
/// no commit carries more than a slice of their states (one commit carrying all of them
/// stalled its connection thread for milliseconds), and once the slices have gone
/// through, a crash loses none of the counts from before the checkpoint.
#[tokio::test]
async fn a_checkpoint_is_spread_over_commits_and_persists_every_count() {
    let engine = Arc::new(MeasuringEngine::default());
    let shared: Arc<dyn murakumo_engine::Engine> = engine.clone();
    let clock = Clock::manual(T0);
    let store = Store::open(Arc::clone(&shared), StoreConfig::default(), clock.clone()).unwrap();
    // 3,000 keys reach nearly all 1,024 partitions, most of them more than once; only
    // the first write of each persists its partition's state with it.
    for i in 0..3000 {
        store
            .store(NS, req(&format!("before{i}"), "v", StoreMode::Set))
            .await
            .unwrap();
    }
    engine.largest_batch.store(0, Ordering::Relaxed);
    // The checkpoint interval is real time.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..100 {
        store
            .store(NS, req(&format!("after{i}"), "v", StoreMode::Set))
            .await
            .unwrap();
    }
    let largest = engine.largest_batch.load(Ordering::Relaxed);
    // A write, its partition's state if it raised the sequence ceiling, and a slice.
    assert!(
        largest <= 2 + 32,
        "one commit carried {largest} records: the checkpoint was not spread"
    );
    // No shutdown: a second store on the same engine sees what a crash would leave.
    let restarted = Store::open(shared, StoreConfig::default(), clock).unwrap();
    let counted = restarted.stats().curr_items;
    assert!(
        (3000..=3100).contains(&counted),
        "{counted} items counted after the crash; the checkpoint lost counts"
    );
}

/// A value too large for the item cache must still be what a read returns: the cache may
/// not keep serving the record it replaced.
#[tokio::test]
async fn a_value_larger_than_the_item_cache_replaces_the_cached_one() {
    let store = Store::open(
        Arc::new(MemoryEngine::new()),
        StoreConfig {
            item_cache_bytes: 64 * 1024,
            ..StoreConfig::default()
        },
        Clock::manual(T0),
    )
    .unwrap();
    store
        .store(NS, req("k", "small", StoreMode::Set))
        .await
        .unwrap();
    assert_eq!(value_of(&store, "k").as_deref(), Some("small"));
    let large = "x".repeat(8 * 1024);
    store
        .store(NS, req("k", &large, StoreMode::Set))
        .await
        .unwrap();
    let read = value_of(&store, "k");
    assert!(
        read.as_deref() == Some(large.as_str()),
        "read back {:?} bytes instead of the 8 KiB value",
        read.map(|v| v.len())
    );
}
