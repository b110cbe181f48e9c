//! The store in memory mode (`Store::open_in_memory`): the semantics every mode shares
//! (`semantics`), then what memory mode adds: a byte bound kept by evicting items.

#![allow(clippy::unwrap_used)] // Test helpers fail the test by panicking.

use bytes::Bytes;
use murakumo_engine::keys::DEFAULT_NAMESPACE as NS;
use murakumo_server::ops::{DeleteRequest, StoreOutcome, StoreRequest};
use murakumo_server::{Clock, Store, StoreConfig};

mod semantics;
mod support;
use semantics::T0;

/// Room for everything the shared semantics store.
const ROOMY: usize = 64 * 1024 * 1024;

fn open_store(config: StoreConfig, clock: Clock) -> Store {
    Store::open_in_memory(ROOMY, config, clock).unwrap()
}

/// A request to set `key` to `len` bytes of `fill`.
fn set(key: &str, len: usize, fill: u8) -> StoreRequest {
    StoreRequest::set(
        Bytes::copy_from_slice(key.as_bytes()),
        Bytes::from(vec![fill; len]),
    )
}

/// Which of `count` keys `key00000..` (all of one length) the store still holds, checking that each holds the
/// value it was given.
fn held(store: &Store, count: usize, len: usize) -> Vec<usize> {
    (0..count)
        .filter(|i| {
            store
                .get(NS, format!("key{i:05}").as_bytes())
                .unwrap()
                .is_some_and(|item| {
                    assert_eq!(item.value.len(), len, "key{i:05}");
                    true
                })
        })
        .collect()
}

#[tokio::test]
async fn the_limit_holds_and_evictions_keep_the_counters_true() {
    let limit = 1024 * 1024;
    let store = Store::open_in_memory(limit, StoreConfig::default(), Clock::manual(T0)).unwrap();
    let (count, len) = (20_000, 200);
    for i in 0..count {
        let outcome = store
            .store(NS, set(&format!("key{i:05}"), len, 7))
            .await
            .unwrap();
        assert!(matches!(outcome, StoreOutcome::Stored { .. }));
        assert!(store.stats().cached_bytes <= limit as u64);
    }
    let stats = store.stats();
    let held = held(&store, count, len);
    // About 4 MiB were written into 1 MiB: most were evicted, the rest are all there.
    assert!(held.len() > count / 8, "only {} items held", held.len());
    assert!(held.len() < count / 2, "{} items held", held.len());
    assert_eq!(stats.curr_items, held.len() as u64);
    assert_eq!(stats.evictions, (count - held.len()) as u64);
    assert_eq!(stats.total_items, count as u64);
    // `bytes` counts exactly the items held, as it does in the persistent mode.
    let one = store.stats().bytes / stats.curr_items;
    assert_eq!(stats.bytes, one * held.len() as u64);
    store.shutdown().await;
}

#[tokio::test]
async fn a_value_of_half_the_limit_always_fits() {
    // memcached refuses an item size above half of `-m`; within that, a store full of
    // small items makes room for a large one.
    let limit = 2 * 1024 * 1024 + 64 * 1024;
    let config = StoreConfig {
        max_value_len: 1024 * 1024,
        ..StoreConfig::default()
    };
    let store = Store::open_in_memory(limit, config, Clock::manual(T0)).unwrap();
    for i in 0..30_000 {
        store
            .store(NS, set(&format!("key{i:05}"), 100, 1))
            .await
            .unwrap();
    }
    for round in 0..3u8 {
        let large = format!("large{round}");
        store
            .store(NS, set(&large, 1024 * 1024, round))
            .await
            .unwrap();
        let item = store.get(NS, large.as_bytes()).unwrap().unwrap();
        assert_eq!(item.value.len(), 1024 * 1024);
        assert!(item.value.iter().all(|&byte| byte == round));
        assert!(store.stats().cached_bytes <= limit as u64);
    }
    store.shutdown().await;
}

#[tokio::test]
async fn deletes_and_overwrites_free_their_room() {
    let limit = 1024 * 1024;
    let store = Store::open_in_memory(limit, StoreConfig::default(), Clock::manual(T0)).unwrap();
    // Rewriting and deleting the same keys many times over never needs an eviction.
    for round in 0..20u8 {
        for i in 0..1000 {
            store
                .store(NS, set(&format!("key{i:05}"), 200, round))
                .await
                .unwrap();
        }
        for i in (0..1000).step_by(2) {
            store
                .delete(NS, DeleteRequest::new(format!("key{i:05}")))
                .await
                .unwrap();
        }
    }
    let stats = store.stats();
    assert_eq!(stats.evictions, 0);
    assert_eq!(stats.curr_items, 500);
    assert_eq!(held(&store, 1000, 200).len(), 500);
    store.shutdown().await;
}

#[tokio::test]
async fn items_in_use_outlive_the_rest() {
    let limit = 1024 * 1024;
    let store = Store::open_in_memory(limit, StoreConfig::default(), Clock::manual(T0)).unwrap();
    let (old, hot, len) = (2_000, 200, 200);
    for i in 0..old {
        store
            .store(NS, set(&format!("key{i:05}"), len, 1))
            .await
            .unwrap();
    }
    // Twice the limit of new items, while the first `hot` keys keep being read.
    for i in 0..10_000 {
        store
            .store(NS, set(&format!("new{i:05}"), len, 2))
            .await
            .unwrap();
        if i % 100 == 0 {
            assert_eq!(
                held(&store, hot, len).len(),
                hot,
                "a key in use was evicted"
            );
        }
    }
    let held = held(&store, old, len);
    let outlived: Vec<usize> = held.into_iter().filter(|&i| i >= hot).collect();
    assert!(
        outlived.is_empty(),
        "unused old keys outlived: {outlived:?}"
    );
    store.shutdown().await;
}

#[tokio::test]
async fn a_lowered_limit_is_reached_a_few_evictions_per_write() {
    let config = StoreConfig {
        max_value_len: 64 * 1024,
        ..StoreConfig::default()
    };
    let store = Store::open_in_memory(4 << 20, config, Clock::manual(T0)).unwrap();
    for i in 0..12_000 {
        store
            .store(NS, set(&format!("key{i:05}"), 200, 1))
            .await
            .unwrap();
    }
    let full = store.stats().cached_bytes;
    assert!(full > 3 << 20, "{full}");
    assert!(
        !store.set_memory_limit(64 * 1024),
        "below twice the largest value"
    );
    assert!(store.set_memory_limit(1 << 20));
    assert_eq!(store.memory_limit(), Some(1 << 20));
    // One write does not pay for all of it...
    store.store(NS, set("next", 200, 2)).await.unwrap();
    let evicted = store.stats().evictions;
    assert!(
        (1..=20).contains(&evicted),
        "{evicted} evictions in one write"
    );
    // ... but the writes that follow get there.
    for i in 0..1_000 {
        store
            .store(NS, set(&format!("next{i:04}"), 200, 2))
            .await
            .unwrap();
    }
    assert!(store.stats().cached_bytes <= 1 << 20);
    let stats = store.stats();
    assert_eq!(stats.curr_items, 12_000 + 1_001 - stats.evictions);
    store.shutdown().await;
}
