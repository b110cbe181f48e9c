//! Test support shared by the store's integration tests.

// Each test file is its own crate and uses part of this module.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use murakumo_engine::keys::DEFAULT_NAMESPACE;
use murakumo_engine::{Engine, EngineError, KeyHead, KeyValue, MemoryEngine, Table, WriteBatch};
use murakumo_server::placement::partition_of;
use murakumo_server::{StoreConfig, SweepConfig};

/// `count` keys of the default namespace, `prefix` followed by a number, that all fall in
/// one partition (that of `prefix0`, the first of them).
pub fn keys_in_one_partition(prefix: &str, count: usize) -> Vec<String> {
    let target = partition_of(DEFAULT_NAMESPACE, format!("{prefix}0").as_bytes());
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|key| partition_of(DEFAULT_NAMESPACE, key.as_bytes()) == target)
        .take(count)
        .collect()
}

/// A store configuration whose sweep passes come every `pass_interval`, without pauses
/// between partitions, reading `chunk` records at a time (small, so that a pass takes
/// several scans).
pub fn sweeping_every(pass_interval: Duration, chunk: usize) -> StoreConfig {
    StoreConfig {
        sweep: SweepConfig {
            pass_interval,
            partition_pause: Duration::ZERO,
            chunk,
        },
        ..StoreConfig::default()
    }
}

/// The memory engine, noting the most item bytes any one scan of the items table
/// returned and the most records any one batch carried.
#[derive(Default)]
pub struct MeasuringEngine {
    inner: MemoryEngine,
    pub largest_item_scan: AtomicUsize,
    pub largest_batch: AtomicUsize,
}

impl MeasuringEngine {
    fn note_scan(&self, table: Table, bytes: usize) {
        if table == Table::Items {
            self.largest_item_scan.fetch_max(bytes, Ordering::Relaxed);
        }
    }
}

impl Engine for MeasuringEngine {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>, EngineError> {
        self.inner.get(table, key)
    }
    fn write(&self, batch: WriteBatch) -> Result<(), EngineError> {
        self.largest_batch.fetch_max(batch.len(), Ordering::Relaxed);
        self.inner.write(batch)
    }
    fn sync(&self) -> Result<(), EngineError> {
        self.inner.sync()
    }
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        let found = self.inner.scan(table, prefix, start, limit)?;
        self.note_scan(table, found.iter().map(|(k, v)| k.len() + v.len()).sum());
        Ok(found)
    }
    fn scan_heads(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
        head_len: usize,
    ) -> Result<Vec<KeyHead>, EngineError> {
        let found = self
            .inner
            .scan_heads(table, prefix, start, limit, head_len)?;
        self.note_scan(
            table,
            found.iter().map(|e| e.key.len() + e.head.len()).sum(),
        );
        Ok(found)
    }
    fn disk_space(&self) -> u64 {
        0
    }
}
