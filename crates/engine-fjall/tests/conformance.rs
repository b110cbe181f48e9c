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
