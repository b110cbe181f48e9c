//! Walks over whole partitions (the expiry sweep, key listings) hold record headers, never
//! values: with large items, a chunk of values would cost the chunk length times the value
//! size in memory.

#![allow(clippy::unwrap_used)] // Test helpers fail the test by panicking.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use murakumo_engine::Engine;
use murakumo_engine::keys::DEFAULT_NAMESPACE as NS;
use murakumo_server::ops::{ItemCursor, StoreRequest};
use murakumo_server::{Clock, Exptime, Store};

mod support;
use support::{MeasuringEngine, keys_in_one_partition, sweeping_every};

const VALUE_LEN: usize = 64 * 1024;

async fn store_with_large_items(expiring: bool) -> (Store, Arc<MeasuringEngine>, Clock) {
    let engine = Arc::new(MeasuringEngine::default());
    let clock = Clock::manual(1_700_000_000);
    let config = sweeping_every(Duration::from_millis(10), 512);
    let store = Store::open(
        Arc::clone(&engine) as Arc<dyn Engine>,
        config,
        clock.clone(),
    )
    .unwrap();
    // All in one partition, so that a chunk of the walk is full of them.
    for key in keys_in_one_partition("big:", 100) {
        let mut request = StoreRequest::set(key, vec![7u8; VALUE_LEN]);
        if expiring {
            request.exptime = Exptime(5);
        }
        store.store(NS, request).await.unwrap();
    }
    (store, engine, clock)
}

#[tokio::test]
async fn the_sweep_reads_headers_not_values() {
    let (store, engine, clock) = store_with_large_items(true).await;
    clock.advance(10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.stats().reclaimed < 100 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        store.stats().reclaimed,
        100,
        "the sweep reclaimed every item"
    );
    let largest = engine.largest_item_scan.load(Ordering::Relaxed);
    assert!(
        largest < VALUE_LEN,
        "a sweep scan returned {largest} bytes: values, not just headers"
    );
    store.shutdown().await;
}

#[tokio::test]
async fn an_item_walk_reads_headers_not_values() {
    let (store, engine, _) = store_with_large_items(false).await;
    let mut cursor = ItemCursor::new();
    let mut listed = 0;
    while !cursor.is_done() {
        listed += store.scan_items(NS, &mut cursor, 256).unwrap().len();
    }
    assert_eq!(listed, 100);
    let largest = engine.largest_item_scan.load(Ordering::Relaxed);
    assert!(
        largest < VALUE_LEN,
        "a walk's scan returned {largest} bytes: values, not just headers"
    );
    store.shutdown().await;
}
