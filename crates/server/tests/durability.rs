//! The store on fjall: what was acknowledged survives a reopen, sequence numbers continue,
//! and concurrent writers share commit groups.

#![allow(clippy::unwrap_used)] // Test helpers fail the test by panicking.

use std::sync::Arc;
use std::time::Duration;

use murakumo_engine::keys::DEFAULT_NAMESPACE as NS;
use murakumo_engine_fjall::{FjallEngine, FjallOptions};
use murakumo_server::ops::{StoreOutcome, StoreRequest};
use murakumo_server::{Clock, Store, StoreConfig, SyncPolicy};

mod support;
use support::sweeping_every;

fn open(dir: &std::path::Path, sync: SyncPolicy) -> Store {
    let engine = FjallEngine::open(dir, FjallOptions::default()).unwrap();
    Store::open(
        Arc::new(engine),
        StoreConfig {
            sync,
            ..StoreConfig::default()
        },
        Clock::System,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_items_counters_and_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let first_cas;
    {
        let store = open(dir.path(), SyncPolicy::Always);
        let StoreOutcome::Stored { cas } =
            store.store(NS, StoreRequest::set("k", "v1")).await.unwrap()
        else {
            panic!()
        };
        first_cas = cas;
        store
            .store(NS, StoreRequest::set("gone", "x"))
            .await
            .unwrap();
        store.flush_all(NS, 0).await.unwrap();
        store.store(NS, StoreRequest::set("k", "v2")).await.unwrap();
        store.shutdown().await;
    }
    let store = open(dir.path(), SyncPolicy::Always);
    let item = store.get(NS, b"k").unwrap().unwrap();
    assert_eq!(&item.value[..], b"v2");
    assert!(item.cas > first_cas);
    assert_eq!(
        store.get(NS, b"gone").unwrap(),
        None,
        "a flush survives restarts"
    );
    // Counters were recovered (the flushed record is still counted until swept).
    assert_eq!(store.stats().curr_items, 2);
    let StoreOutcome::Stored { cas } = store.store(NS, StoreRequest::set("k", "v3")).await.unwrap()
    else {
        panic!()
    };
    assert!(
        cas > item.cas,
        "sequence numbers continue after a restart: {cas} > {}",
        item.cas
    );
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_commit_groups() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Always);
    let mut tasks = Vec::new();
    for writer in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let key = format!("w{writer}-{i}");
                store
                    .store(NS, StoreRequest::set(key.clone(), key))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.total_items, 640);
    // With 32 writers waiting on fsyncs, groups must hold more than one write each.
    assert!(
        stats.commit_groups < 640,
        "{} groups for 640 writes",
        stats.commit_groups
    );
    store.shutdown().await;
    // The engine (and fjall's directory lock) goes when the last handle does.
    drop(store);
    let store = open(dir.path(), SyncPolicy::Periodic(Duration::from_millis(5)));
    for writer in 0..32 {
        for i in 0..20 {
            let key = format!("w{writer}-{i}");
            assert_eq!(
                store.get(NS, key.as_bytes()).unwrap().unwrap().value,
                key.as_bytes()
            );
        }
    }
    store.shutdown().await;
}

/// With periodic sync the submitting tasks commit. Writes from the tasks that are ready
/// in one turn of a busy runtime (a connection thread serving many connections) wait for
/// the end of the turn and share one commit; on a runtime with only a couple of tasks a
/// write commits at once, since nobody would join it.
#[tokio::test(flavor = "current_thread")]
async fn writes_ready_in_one_turn_share_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Periodic(Duration::from_millis(5)));
    let groups_for = |writers: usize, round: usize| {
        let store = store.clone();
        async move {
            let before = store.stats().commit_groups;
            // Spawned tasks first run when this one awaits: all of them in one turn.
            let tasks: Vec<_> = (0..writers)
                .map(|writer| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let key = format!("r{round}-w{writer}");
                        store.store(NS, StoreRequest::set(key.clone(), key)).await
                    })
                })
                .collect();
            for task in tasks {
                assert!(matches!(
                    task.await.unwrap(),
                    Ok(StoreOutcome::Stored { .. })
                ));
            }
            store.stats().commit_groups - before
        }
    };
    // The background writer's tick may commit some of them first, hence "at most 2".
    let busy = groups_for(16, 0).await;
    assert!(busy <= 2, "16 writes ready in one turn took {busy} commits");
    let quiet = groups_for(2, 1).await;
    assert_eq!(quiet, 2, "a write on a quiet runtime commits at once");
    for round in 0..2 {
        let writers = [16, 2][round];
        for writer in 0..writers {
            let key = format!("r{round}-w{writer}");
            assert_eq!(
                store.get(NS, key.as_bytes()).unwrap().unwrap().value,
                key.as_bytes()
            );
        }
    }
    store.shutdown().await;
}

#[test]
fn shutdown_does_not_wait_for_the_sync_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (finished, shut_down) = std::sync::mpsc::channel();
    // On a thread of its own, so that a shutdown stuck behind the syncer fails the test
    // at the deadline instead of hanging it (whatever waits on that thread would hang).
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // An hour between fsyncs: a shutdown that slept through it would miss the
            // deadline below by far.
            let store = open(&path, SyncPolicy::Periodic(Duration::from_secs(3600)));
            store.store(NS, StoreRequest::set("k", "v")).await.unwrap();
            store.shutdown().await;
        });
        let _ = finished.send(());
    });
    shut_down
        .recv_timeout(Duration::from_secs(30))
        .expect("shutdown waited for the syncer's next tick");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = open(dir.path(), SyncPolicy::Always);
        assert_eq!(&store.get(NS, b"k").unwrap().unwrap().value[..], b"v");
        store.shutdown().await;
    });
}

/// A write load that outruns fjall's flushes must wait for them rather than grow the
/// write buffer to fjall's journal limit (64 MiB and more) whatever the node's memory
/// budget. Large values make the difference plain: 100 MiB of 512 KiB values written as
/// fast as 8 writers can, through a budget that allows an 8 MiB write buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_for_a_full_write_buffer_to_flush() {
    const WRITERS: usize = 8;
    const WRITES_EACH: usize = 25;
    const VALUE_LEN: usize = 512 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let options = FjallOptions::within(24 * 1024 * 1024);
    let limit = options.write_buffer_limit();
    let engine = Arc::new(FjallEngine::open(dir.path(), options).unwrap());
    let store = Store::open(
        engine.clone(),
        StoreConfig {
            sync: SyncPolicy::Periodic(Duration::from_millis(5)),
            item_cache_bytes: 1024 * 1024,
            ..StoreConfig::default()
        },
        Clock::System,
    )
    .unwrap();

    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (engine, sampling) = (engine.clone(), sampling.clone());
        std::thread::spawn(move || {
            let mut largest = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                largest = largest.max(engine.write_buffer_bytes());
                std::thread::sleep(Duration::from_micros(200));
            }
            largest
        })
    };
    let value_of = |writer: usize, i: usize| {
        let mut value = vec![u8::try_from(writer).unwrap(); VALUE_LEN];
        value[..8].copy_from_slice(&u64::try_from(i).unwrap().to_be_bytes());
        value
    };
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..WRITES_EACH {
                // Ten keys per writer, overwritten, so the disk holds little at the end.
                let request =
                    StoreRequest::set(format!("w{writer}-{}", i % 10), value_of(writer, i));
                store.store(NS, request).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let largest = sampler.join().unwrap();

    // The bound is the budget plus what can be in flight past the check (one value per
    // writer) and the memtable that was filling when the buffer went over, which fjall
    // seals in the background and so may take a little past its size.
    let allowed = limit + (WRITERS * VALUE_LEN) as u64 + 2 * options.memtable_bytes;
    assert!(
        largest <= allowed,
        "the write buffer reached {} MiB; allowed {} MiB",
        largest >> 20,
        allowed >> 20
    );
    assert!(
        store.stats().write_stalls > 0,
        "100 MiB through an 8 MiB write buffer should have waited for a flush"
    );
    // Waiting loses nothing: every key holds its last value.
    for writer in 0..WRITERS {
        for key_index in 0..10 {
            let last = (0..WRITES_EACH)
                .filter(|i| i % 10 == key_index)
                .max()
                .unwrap();
            let item = store
                .get(NS, format!("w{writer}-{key_index}").as_bytes())
                .unwrap()
                .unwrap();
            assert!(
                item.value[..] == value_of(writer, last)[..],
                "w{writer}-{key_index}"
            );
        }
    }
    store.shutdown().await;
}

/// What the sweeper knew survives a clean restart on fjall: the next start reads no
/// partition (before, every start read the whole dataset once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_reads_no_partition_again() {
    let dir = tempfile::tempdir().unwrap();
    let open_sweeping = || {
        let engine = FjallEngine::open(dir.path(), FjallOptions::default()).unwrap();
        let config = sweeping_every(Duration::from_millis(10), 64);
        Store::open(Arc::new(engine), config, Clock::System).unwrap()
    };
    let partitions = u64::from(murakumo_server::placement::PARTITIONS);
    {
        let store = open_sweeping();
        for i in 0..200 {
            store
                .store(NS, StoreRequest::set(format!("k{i}"), "v"))
                .await
                .unwrap();
        }
        for _ in 0..1000 {
            if store.stats().sweep_scans >= partitions {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(store.stats().sweep_scans >= partitions);
        store.shutdown().await;
    }
    let store = open_sweeping();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.stats().sweep_scans, 0);
    assert_eq!(store.stats().curr_items, 200);
    store.shutdown().await;
}
