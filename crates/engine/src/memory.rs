//! An engine that keeps everything in ordered maps in memory.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::{Engine, EngineError, KeyHead, KeyValue, Table, WriteBatch, WriteOp};

/// An in-memory engine.
///
/// It exists for two reasons: deterministic simulation tests, where disk I/O would make
/// runs slow and unrepeatable, and the bookkeeping (partition sequence numbers) of a store
/// in memory mode, whose items live in the store's own item table rather than in any
/// engine (`murakumo_server::Store::open_in_memory` says why). It is not a stand-in for
/// fjall in the product's persistent paths. `sync` is a no-op because there is nothing to
/// make durable.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    items: RwLock<BTreeMap<Bytes, Bytes>>,
    meta: RwLock<BTreeMap<Bytes, Bytes>>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self, table: Table) -> &RwLock<BTreeMap<Bytes, Bytes>> {
        match table {
            Table::Items => &self.items,
            Table::Meta => &self.meta,
        }
    }

    /// Up to `limit` entries of `table` with keys starting with `prefix`, from `start` on
    /// (clamped to the prefix), each made into what a scan returns by `entry`.
    fn walk<T>(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
        entry: impl FnMut((&Bytes, &Bytes)) -> T,
    ) -> Vec<T> {
        let from = if start > prefix { start } else { prefix };
        let map = self.table(table).read();
        map.range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(entry)
            .collect()
    }
}

impl Engine for MemoryEngine {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>, EngineError> {
        Ok(self.table(table).read().get(key).cloned())
    }

    fn write(&self, batch: WriteBatch) -> Result<(), EngineError> {
        // Take both write locks for the whole batch so no reader sees half of it.
        let mut items = self.items.write();
        let mut meta = self.meta.write();
        for op in batch.into_ops() {
            match op {
                WriteOp::Put { table, key, value } => {
                    let map = if table == Table::Items {
                        &mut items
                    } else {
                        &mut meta
                    };
                    map.insert(key, value);
                }
                WriteOp::Delete { table, key } => {
                    let map = if table == Table::Items {
                        &mut items
                    } else {
                        &mut meta
                    };
                    map.remove(&key);
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        Ok(self.walk(table, prefix, start, limit, |(key, value)| {
            (key.clone(), value.clone())
        }))
    }

    fn scan_heads(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
        head_len: usize,
    ) -> Result<Vec<KeyHead>, EngineError> {
        Ok(self.walk(table, prefix, start, limit, |(key, value)| {
            KeyHead::of(key.clone(), value, head_len)
        }))
    }

    fn disk_space(&self) -> u64 {
        0
    }
}
