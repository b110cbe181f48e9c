//! A storage failure takes the store out of service instead of serving data that may be
//! lost.

#![allow(clippy::unwrap_used)] // Test helpers fail the test by panicking.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use murakumo_engine::keys::DEFAULT_NAMESPACE as NS;
use murakumo_engine::{Engine, EngineError, KeyHead, KeyValue, MemoryEngine, Table, WriteBatch};
use murakumo_server::ops::{StoreOutcome, StoreRequest};
use murakumo_server::{Clock, Store, StoreConfig, StoreError, SyncPolicy};

/// The memory engine, with a switch that makes writes or syncs fail like a bad disk.
#[derive(Default)]
struct FlakyEngine {
    inner: MemoryEngine,
    fail_writes: AtomicBool,
    fail_syncs: AtomicBool,
}

impl Engine for FlakyEngine {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>, EngineError> {
        self.inner.get(table, key)
    }
    fn write(&self, batch: WriteBatch) -> Result<(), EngineError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(EngineError::Storage("injected write failure".into()));
        }
        self.inner.write(batch)
    }
    fn sync(&self) -> Result<(), EngineError> {
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(EngineError::Storage("injected fsync failure".into()));
        }
        self.inner.sync()
    }
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        self.inner.scan(table, prefix, start, limit)
    }
    fn scan_heads(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
        head_len: usize,
    ) -> Result<Vec<KeyHead>, EngineError> {
        self.inner.scan_heads(table, prefix, start, limit, head_len)
    }
    fn disk_space(&self) -> u64 {
        0
    }
}

fn open(engine: &Arc<FlakyEngine>, sync: SyncPolicy) -> Store {
    let config = StoreConfig {
        sync,
        ..StoreConfig::default()
    };
    Store::open(Arc::clone(engine) as Arc<dyn Engine>, config, Clock::System).unwrap()
}

#[tokio::test]
async fn a_failed_write_is_not_acknowledged_and_stops_all_service() {
    let engine = Arc::new(FlakyEngine::default());
    let store = open(&engine, SyncPolicy::Always);
    assert!(matches!(
        store
            .store(NS, StoreRequest::set("before", "v"))
            .await
            .unwrap(),
        StoreOutcome::Stored { .. }
    ));
    engine.fail_writes.store(true, Ordering::SeqCst);
    let failed = store.store(NS, StoreRequest::set("lost", "v")).await;
    assert!(
        matches!(failed, Err(StoreError::Unavailable(ref why)) if why.contains("injected write failure")),
        "{failed:?}"
    );
    // Even with the disk healthy again, the node stays out of service: it can no longer
    // vouch for what it acknowledged.
    engine.fail_writes.store(false, Ordering::SeqCst);
    assert!(matches!(
        store.get(NS, b"before"),
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.store(NS, StoreRequest::set("after", "v")).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(store.failure().unwrap().contains("injected write failure"));
}

#[tokio::test]
async fn a_failed_fsync_under_sync_always_is_not_acknowledged() {
    let engine = Arc::new(FlakyEngine::default());
    let store = open(&engine, SyncPolicy::Always);
    engine.fail_syncs.store(true, Ordering::SeqCst);
    let failed = store.store(NS, StoreRequest::set("k", "v")).await;
    assert!(
        matches!(failed, Err(StoreError::Unavailable(ref why)) if why.contains("injected fsync failure")),
        "{failed:?}"
    );
    assert!(matches!(
        store.get(NS, b"k"),
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_failed_background_fsync_takes_the_store_out_of_service() {
    let engine = Arc::new(FlakyEngine::default());
    let store = open(
        &engine,
        SyncPolicy::Periodic(std::time::Duration::from_millis(2)),
    );
    engine.fail_syncs.store(true, Ordering::SeqCst);
    store.store(NS, StoreRequest::set("k", "v")).await.unwrap();
    let mut waited = 0;
    while store.failure().is_none() && waited < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    assert!(store.failure().unwrap().contains("injected fsync failure"));
    assert!(matches!(
        store.get(NS, b"k"),
        Err(StoreError::Unavailable(_))
    ));
}
