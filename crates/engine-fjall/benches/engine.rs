//! What one write and one point read cost in fjall, through our [`Engine`] trait, beside
//! the memory engine.
//!
//! Why: every persistent set the store acknowledges is one engine batch (rarely more than
//! one record at pipeline 1), written to fjall's journal (a `write()` to the operating
//! system) and inserted into its memtable on the caller's thread. This is that cost alone,
//! without the store's bookkeeping around it (see `cargo bench -p murakumo-server`).
//! `sync` (the fsync the store's syncer issues every few milliseconds) is measured on its
//! own. Run with `cargo bench -p murakumo-engine-fjall`.

#![allow(missing_docs, clippy::unwrap_used)] // criterion's macros; a failed setup is a failed bench.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use murakumo_engine::MemoryEngine;
use murakumo_engine::{Engine, Table, WriteBatch};
use murakumo_engine_fjall::{FjallEngine, FjallOptions};

/// The allocator the `murakumo` binary uses, so that allocation costs what it costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Distinct keys, as in `murakumo bench`'s default load.
const KEYS: usize = 100_000;

fn keys() -> Vec<Bytes> {
    (0..KEYS)
        .map(|i| Bytes::from(format!("\0\0\0\0bench:{i}")))
        .collect()
}

/// A record of about the size the store writes for a 100-byte value.
fn record() -> Bytes {
    Bytes::from(vec![b'r'; 130])
}

fn write_one(engine: &dyn Engine, key: &Bytes, record: &Bytes) {
    let mut batch = WriteBatch::new();
    batch.put(Table::Items, key.clone(), record.clone());
    engine.write(batch).unwrap();
}

fn engine(c: &mut Criterion) {
    let keys = keys();
    let record = record();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    let dir = tempfile::tempdir().unwrap();
    let engines: [(&str, Box<dyn Engine>); 2] = [
        ("memory", Box::new(MemoryEngine::new())),
        (
            "fjall",
            Box::new(FjallEngine::open(dir.path(), FjallOptions::default()).unwrap()),
        ),
    ];
    for (name, engine) in &engines {
        for key in &keys {
            write_one(engine.as_ref(), key, &record);
        }
        let mut next = 0;
        group.bench_function(BenchmarkId::new("write 1 record", name), |b| {
            b.iter(|| {
                next = (next + 1) % KEYS;
                write_one(engine.as_ref(), black_box(&keys[next]), &record);
            });
        });
        group.bench_function(BenchmarkId::new("get", name), |b| {
            b.iter(|| {
                next = (next + 7919) % KEYS;
                let found = engine.get(Table::Items, black_box(&keys[next])).unwrap();
                assert_eq!(found.map(|r| r.len()), Some(record.len()));
            });
        });
    }
    // One record, then the fsync that makes it durable: what the strict policy waits for
    // (shared by every write in the group), and what the syncer spends every few ms.
    let fjall = &engines[1].1;
    let mut next = 0;
    group.bench_function("fjall write 1 record + sync", |b| {
        b.iter(|| {
            next = (next + 1) % KEYS;
            write_one(fjall.as_ref(), &keys[next], &record);
            fjall.sync().unwrap();
        });
    });
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
