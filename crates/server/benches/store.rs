//! What a set and a get cost inside one node, below the network: the store over fjall
//! (the product) beside the store over the memory engine.
//!
//! Why: the pipeline-1 comparison with memcached (`scripts/bench-compare`) is decided by
//! how much more a persistent set costs than a cached get. Measured here without the
//! kernel's TCP work, the difference between the two engines is what persistence adds to
//! a set (the journal write and the memtable insert, on the caller's thread), and a get
//! should not depend on the engine at all while the item is cached. Run with `cargo bench
//! -p murakumo-server`.
//!
//! Sets cycle through [`KEYS`] keys, so fjall's memtable fills and is flushed in the
//! background as in a real load; the flushes and compactions run on fjall's threads and
//! are not in these figures.

#![allow(missing_docs, clippy::unwrap_used)] // criterion's macros; a failed setup is a failed bench.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use murakumo_engine::Engine;
use murakumo_engine::MemoryEngine;
use murakumo_engine::keys::DEFAULT_NAMESPACE as NS;
use murakumo_engine_fjall::{FjallEngine, FjallOptions};
use murakumo_server::ops::{StoreOutcome, StoreRequest};
use murakumo_server::{Clock, Store, StoreConfig};

/// The allocator the `murakumo` binary uses, so that allocation costs what it costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Distinct keys, as in `murakumo bench`'s default load.
const KEYS: usize = 100_000;

/// A store on each engine, loaded with every key, with the item cache on or off.
struct Bench {
    runtime: tokio::runtime::Runtime,
    store: Store,
    keys: Vec<Bytes>,
    value: Bytes,
    /// Keeps fjall's folder until the store is gone.
    _dir: Option<tempfile::TempDir>,
}

impl Bench {
    fn new(engine: &str, item_cache_bytes: usize) -> Self {
        let (engine, dir): (Arc<dyn Engine>, _) = match engine {
            "fjall" => {
                let dir = tempfile::tempdir().unwrap();
                let engine = FjallEngine::open(dir.path(), FjallOptions::default()).unwrap();
                (Arc::new(engine), Some(dir))
            }
            _ => (Arc::new(MemoryEngine::new()), None),
        };
        let config = StoreConfig {
            item_cache_bytes,
            ..StoreConfig::default()
        };
        // The store's writer commits on the thread that submits, as a connection thread
        // of the server does: a current-thread runtime is the same setting.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = runtime.block_on(async { Store::open(engine, config, Clock::System) });
        let bench = Self {
            runtime,
            store: store.unwrap(),
            keys: (0..KEYS)
                .map(|i| Bytes::from(format!("bench:{i}")))
                .collect(),
            value: Bytes::from(vec![b'x'; 100]),
            _dir: dir,
        };
        for key in &bench.keys {
            bench.set(key.clone());
            // Reading each key once fills the cache, as the gets of a real load do.
            bench.store.get(NS, key).unwrap();
        }
        bench
    }

    fn set(&self, key: Bytes) {
        let request = StoreRequest::set(key, self.value.clone());
        let outcome = self
            .runtime
            .block_on(self.store.store(NS, request))
            .unwrap();
        assert!(matches!(outcome, StoreOutcome::Stored { .. }));
    }

    fn get(&self, key: &[u8]) {
        let item = self.store.get(NS, key).unwrap();
        assert_eq!(item.map(|item| item.value.len()), Some(100));
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.runtime.block_on(self.store.shutdown());
    }
}

fn store(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    for engine in ["memory", "fjall"] {
        let bench = Bench::new(engine, StoreConfig::default().item_cache_bytes);
        let mut next = 0;
        group.bench_function(BenchmarkId::new("set 100 B", engine), |b| {
            b.iter(|| {
                next = (next + 1) % KEYS;
                bench.set(black_box(bench.keys[next].clone()));
            });
        });
        group.bench_function(BenchmarkId::new("get 100 B, cached", engine), |b| {
            b.iter(|| {
                next = (next + 7919) % KEYS;
                bench.get(black_box(&bench.keys[next]));
            });
        });
        drop(bench);

        let uncached = Bench::new(engine, 0);
        group.bench_function(BenchmarkId::new("get 100 B, not cached", engine), |b| {
            b.iter(|| {
                next = (next + 7919) % KEYS;
                uncached.get(black_box(&uncached.keys[next]));
            });
        });
    }
    group.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
