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
