//! The fjall engine passes the shared engine conformance suite, and keeps what it wrote
//! across a reopen.

use murakumo_engine::{Engine, Table, WriteBatch};
use murakumo_engine_fjall::{FjallEngine, FjallOptions};

#[test]
fn fjall_engine_conforms() {
    let dirs = std::cell::RefCell::new(Vec::new());
    murakumo_engine::conformance::run_all(|| {
        let dir = tempfile::tempdir().unwrap();
        let engine = FjallEngine::open(dir.path(), FjallOptions::default()).unwrap();
        dirs.borrow_mut().push(dir);
        engine
    });
}

#[test]
fn writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = FjallEngine::open(dir.path(), FjallOptions::default()).unwrap();
        let mut batch = WriteBatch::new();
        batch.put(Table::Items, &b"kept"[..], &b"value"[..]);
        batch.put(Table::Meta, &b"seq"[..], &b"7"[..]);
        engine.write(batch).unwrap();
        engine.sync().unwrap();
    }
    let engine = FjallEngine::open(dir.path(), FjallOptions::default()).unwrap();
    assert_eq!(
        engine.get(Table::Items, b"kept").unwrap().as_deref(),
        Some(&b"value"[..])
    );
    assert_eq!(
        engine.get(Table::Meta, b"seq").unwrap().as_deref(),
        Some(&b"7"[..])
    );
}

/// A second open of a directory in use says so in words an operator can act on, instead
/// of fjall's bare "Locked".
#[test]
fn a_directory_in_use_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = FjallEngine::open(dir.path(), FjallOptions::default()).unwrap();
    let Err(err) = FjallEngine::open(dir.path(), FjallOptions::default()) else {
        panic!("a second engine opened a directory that is in use");
    };
    let message = err.to_string();
    assert!(
        message.contains("in use by another process") && message.contains("another data directory"),
        "{message}"
    );
}

/// `sync` fsyncs the journal it finds as the highest-numbered `<id>.jnl` in the database
/// folder, through its own handle. This guards that assumption about fjall's layout: the
/// file found there is the one commits are appended to.
#[test]
fn journal_file_layout() {
    let dir = tempfile::tempdir().unwrap();
    let engine = FjallEngine::open(dir.path(), FjallOptions::default()).unwrap();
    let marker = b"journal-layout-marker-5f3a9c1e7b2d";
    let mut batch = WriteBatch::new();
    batch.put(Table::Items, &b"k"[..], &marker[..]);
    engine.write(batch).unwrap();
    let active = murakumo_engine_fjall::active_journal(dir.path())
        .unwrap()
        .expect("a journal in the database folder");
    let journal = std::fs::read(&active).unwrap();
    assert!(
        journal.windows(marker.len()).any(|w| w == marker),
        "the committed batch is not in {}",
        active.display()
    );
    engine.sync().unwrap();
}

#[test]
fn the_active_journal_is_the_highest_id_by_number() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["9.jnl", "10.jnl", "2.jnl", "11.jnl.tmp", "version", "x.jnl"] {
        std::fs::write(dir.path().join(name), b"").unwrap();
    }
    assert_eq!(
        murakumo_engine_fjall::active_journal(dir.path()).unwrap(),
        Some(dir.path().join("10.jnl"))
    );
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        murakumo_engine_fjall::active_journal(empty.path()).unwrap(),
        None
    );
}

#[test]
fn memory_budget_split() {
    const MIB: u64 = 1024 * 1024;
    let default = FjallOptions::default();
    assert_eq!(
        (default.memtable_bytes, default.cache_bytes),
        (32 * MIB, 128 * MIB)
    );
    // The write buffer (the memtable being filled and the one being flushed) is counted
    // against the budget, so the block cache has what the two leave.
    assert_eq!(
        default.write_buffer_limit() + default.cache_bytes,
        192 * MIB
    );
    // A tiny budget still gets a workable write buffer; a large one caps it at fjall's
    // default and gives the rest to the block cache.
    let tiny = FjallOptions::within(MIB);
    assert_eq!((tiny.memtable_bytes, tiny.cache_bytes), (4 * MIB, 0));
    let large = FjallOptions::within(4096 * MIB);
    assert_eq!(
        (large.memtable_bytes, large.cache_bytes),
        (64 * MIB, 3968 * MIB)
    );
}

#[test]
fn a_tiny_budget_serves_more_than_its_write_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let engine = FjallEngine::open(dir.path(), FjallOptions::within(0)).unwrap();
    // 8 MiB of values through a 4 MiB write buffer, all of them readable afterwards.
    let value = vec![7u8; 64 * 1024];
    for i in 0..128u32 {
        let mut batch = WriteBatch::new();
        batch.put(Table::Items, i.to_be_bytes().to_vec(), value.clone());
        engine.write(batch).unwrap();
    }
    engine.sync().unwrap();
    for i in 0..128u32 {
        assert_eq!(
            engine
                .get(Table::Items, &i.to_be_bytes())
                .unwrap()
                .as_deref(),
            Some(&value[..])
        );
    }
}

/// Large records live in blob files, small ones in the tree; both come back exact from
/// the memtable, from flushed files, and after a reopen, and a head scan and `value_len`
/// report each one's length without confusing the two layouts. Deleted ones are absent
/// to both `get` and `value_len` (a length for a deleted record would make the next
/// `set` of its key count a record that is not there).
#[test]
fn records_on_both_sides_of_the_blob_threshold_read_back_exact() {
    let dir = tempfile::tempdir().unwrap();
    // Sizes just under, at and well over the separation threshold (4 KiB), each value
    // distinct so that a mix-up shows; enough of them to force several flushes of the
    // 4 MiB memtable a tiny budget gets.
    let sizes = [100, 4095, 4096, 4097, 100 * 1024];
    let value_of = |i: u32| {
        let len = sizes[i as usize % sizes.len()];
        let mut value = vec![u8::try_from(i % 251).unwrap(); len];
        value[..4].copy_from_slice(&i.to_be_bytes());
        value
    };
    let count = 400u32;
    // Every seventh key is deleted after all were written, so that its tombstone and the
    // value it hides may end up in different files.
    let deleted = |i: u32| i % 7 == 3;
    let check = |engine: &FjallEngine| {
        for i in 0..count {
            let got = engine.get(Table::Items, &i.to_be_bytes()).unwrap();
            let len = engine.value_len(Table::Items, &i.to_be_bytes()).unwrap();
            if deleted(i) {
                assert_eq!((got, len), (None, None), "deleted key {i}");
                continue;
            }
            assert!(got.as_deref() == Some(&value_of(i)[..]), "key {i}");
            assert_eq!(len, Some(value_of(i).len()), "length of key {i}");
        }
        let heads = engine
            .scan_heads(Table::Items, &[], &[], count as usize, 8)
            .unwrap();
        assert_eq!(heads.len(), (0..count).filter(|&i| !deleted(i)).count());
        for head in heads {
            let i = u32::from_be_bytes(head.key[..].try_into().unwrap());
            let value = value_of(i);
            assert_eq!((&head.head[..], head.value_len), (&value[..8], value.len()));
        }
    };
    {
        let engine = FjallEngine::open(dir.path(), FjallOptions::within(0)).unwrap();
        for i in 0..count {
            let mut batch = WriteBatch::new();
            batch.put(Table::Items, i.to_be_bytes().to_vec(), value_of(i));
            engine.write(batch).unwrap();
        }
        let mut batch = WriteBatch::new();
        for i in (0..count).filter(|&i| deleted(i)) {
            batch.delete(Table::Items, i.to_be_bytes().to_vec());
        }
        engine.write(batch).unwrap();
        // The others written again, to push the deletions on into flushed tables.
        for i in (0..count).filter(|&i| !deleted(i)) {
            let mut batch = WriteBatch::new();
            batch.put(Table::Items, i.to_be_bytes().to_vec(), value_of(i));
            engine.write(batch).unwrap();
        }
        engine.sync().unwrap();
        check(&engine);
    }
    let engine = FjallEngine::open(dir.path(), FjallOptions::within(0)).unwrap();
    check(&engine);
    assert!(
        blob_files(dir.path()) > 0,
        "the large records were flushed, so some must be in blob files"
    );
}

/// Files in fjall's blob folders under `dir`.
fn blob_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .expect("the data directory is readable")
        .map(|entry| entry.expect("a readable entry").path())
        .filter(|path| path.is_dir())
        .map(|path| {
            if path.file_name() == Some("blobs".as_ref()) {
                std::fs::read_dir(&path).expect("a readable folder").count()
            } else {
                blob_files(&path)
            }
        })
        .sum()
}

/// `stats engine` reads these, so they must follow the engine's background work: a write
/// fills the write buffer and the journal; flushes turn memtables into level-0 tables
/// (large values into blob files) and empty the buffer; compaction merges the tables. A
/// figure stuck at zero would tell an operator all is well when it is not.
#[test]
fn metrics_follow_writes_flushes_and_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let options = FjallOptions::within(0);
    let engine = FjallEngine::open(dir.path(), options).unwrap();
    let fresh = engine.metrics();
    assert_eq!(fresh.write_buffer_bytes, 0, "{fresh:?}");
    assert_eq!(
        (fresh.tables, fresh.level0_tables, fresh.blob_files),
        (0, 0, 0)
    );
    assert_eq!(fresh.write_buffer_limit, options.write_buffer_limit());
    assert_eq!(fresh.block_cache_limit, options.cache_bytes);

    let mut batch = WriteBatch::new();
    batch.put(Table::Items, &b"first"[..], vec![1u8; 1000]);
    engine.write(batch).unwrap();
    let written = engine.metrics();
    assert!(written.write_buffer_bytes >= 1000, "{written:?}");
    assert!(written.journal_files >= 1, "{written:?}");

    // Six 4 MiB memtables' worth of 1 KiB records over a few thousand keys, each batch
    // with one record large enough for a blob file: enough level-0 tables to compact.
    for round in 0..24_u32 {
        for chunk in 0..8_u32 {
            let mut batch = WriteBatch::new();
            for i in 0..128_u32 {
                let key = (chunk * 128 + i).to_be_bytes().to_vec();
                batch.put(Table::Items, key, vec![round as u8; 1024]);
            }
            batch.put(Table::Items, &b"large"[..], vec![round as u8; 8192]);
            engine.write(batch).unwrap();
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let settled = loop {
        let m = engine.metrics();
        if m.compactions_done > 0 && m.sealed_memtables == 0 && m.flushes_pending == 0 {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no compaction within a minute: {m:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        settled.tables >= 1 && settled.blob_files >= 1,
        "{settled:?}"
    );
    assert!(settled.level0_tables <= settled.tables, "{settled:?}");
    assert!(settled.compaction_micros > 0, "{settled:?}");
    assert!(
        settled.write_buffer_bytes < written.write_buffer_bytes + 4 * 1024 * 1024,
        "flushes did not empty the write buffer: {settled:?}"
    );
}
