//! A behavioural test suite every [`Engine`] implementation must pass.
//!
//! It is library code rather than a test module so that
//! each engine crate runs the very same checks against its own engine; two engines that
//! pass it are interchangeable as far as the store can tell.

// Test support: a failed check is meant to panic, like an assertion.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;

use crate::{Engine, KeyHead, Table, WriteBatch};

/// Runs every check against engines produced by `fresh`. Panics (test failure) on the
/// first violation.
pub fn run_all<E: Engine>(fresh: impl Fn() -> E) {
    get_sees_written_batches(&fresh());
    later_ops_in_a_batch_win(&fresh());
    tables_are_separate(&fresh());
    scans_respect_prefix_start_and_limit(&fresh());
    scan_resumes_with_successor(&fresh());
    head_scans_keep_only_the_start_of_each_value(&fresh());
    value_len_agrees_with_get(&fresh());
}

fn value_len_agrees_with_get<E: Engine>(engine: &E) {
    let large = vec![7u8; 100 * 1024];
    let mut batch = WriteBatch::new();
    batch.put(Table::Items, &b"small"[..], &b"123"[..]);
    batch.put(Table::Items, &b"large"[..], large.clone());
    batch.put(Table::Items, &b"empty"[..], Bytes::new());
    batch.put(Table::Items, &b"gone"[..], &b"x"[..]);
    engine.write(batch).unwrap();
    let mut batch = WriteBatch::new();
    batch.delete(Table::Items, &b"gone"[..]);
    batch.put(Table::Items, &b"small"[..], large);
    batch.put(Table::Items, &b"large"[..], &b"12"[..]);
    engine.write(batch).unwrap();
    for (key, len) in [
        (&b"small"[..], Some(100 * 1024)),
        (b"large", Some(2)),
        (b"empty", Some(0)),
        (b"gone", None),
        (b"never", None),
    ] {
        assert_eq!(engine.value_len(Table::Items, key).unwrap(), len, "{key:?}");
        assert_eq!(
            engine.get(Table::Items, key).unwrap().map(|v| v.len()),
            len,
            "{key:?}"
        );
    }
    assert_eq!(engine.value_len(Table::Meta, b"small").unwrap(), None);
}

fn get_sees_written_batches<E: Engine>(engine: &E) {
    assert_eq!(engine.get(Table::Items, b"a").unwrap(), None);
    let mut batch = WriteBatch::new();
    batch.put(Table::Items, &b"a"[..], &b"1"[..]);
    batch.put(Table::Items, &b"b"[..], &b"2"[..]);
    engine.write(batch).unwrap();
    engine.sync().unwrap();
    assert_eq!(
        engine.get(Table::Items, b"a").unwrap(),
        Some(Bytes::from_static(b"1"))
    );
    let mut batch = WriteBatch::new();
    batch.delete(Table::Items, &b"a"[..]);
    batch.delete(Table::Items, &b"never-written"[..]);
    engine.write(batch).unwrap();
    assert_eq!(engine.get(Table::Items, b"a").unwrap(), None);
    assert_eq!(
        engine.get(Table::Items, b"b").unwrap(),
        Some(Bytes::from_static(b"2"))
    );
}

fn later_ops_in_a_batch_win<E: Engine>(engine: &E) {
    let mut batch = WriteBatch::new();
    batch.put(Table::Items, &b"k"[..], &b"first"[..]);
    batch.put(Table::Items, &b"k"[..], &b"second"[..]);
    batch.put(Table::Items, &b"gone"[..], &b"x"[..]);
    batch.delete(Table::Items, &b"gone"[..]);
    engine.write(batch).unwrap();
    assert_eq!(
        engine.get(Table::Items, b"k").unwrap(),
        Some(Bytes::from_static(b"second"))
    );
    assert_eq!(engine.get(Table::Items, b"gone").unwrap(), None);
}

fn tables_are_separate<E: Engine>(engine: &E) {
    let mut batch = WriteBatch::new();
    batch.put(Table::Meta, &b"k"[..], &b"meta"[..]);
    batch.put(Table::Items, &b"k"[..], &b"item"[..]);
    engine.write(batch).unwrap();
    assert_eq!(
        engine.get(Table::Meta, b"k").unwrap(),
        Some(Bytes::from_static(b"meta"))
    );
    assert_eq!(
        engine.get(Table::Items, b"k").unwrap(),
        Some(Bytes::from_static(b"item"))
    );
    let scanned = engine.scan(Table::Meta, b"", b"", 10).unwrap();
    assert_eq!(
        scanned,
        vec![(Bytes::from_static(b"k"), Bytes::from_static(b"meta"))]
    );
}

fn scans_respect_prefix_start_and_limit<E: Engine>(engine: &E) {
    let mut batch = WriteBatch::new();
    for key in [&b"p/1"[..], b"p/2", b"p/3", b"p0", b"o/9", b"q/1"] {
        batch.put(Table::Items, key.to_vec(), key.to_vec());
    }
    engine.write(batch).unwrap();
    let keys = |v: Vec<(Bytes, Bytes)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(engine.scan(Table::Items, b"p/", b"", 100).unwrap()),
        vec![&b"p/1"[..], b"p/2", b"p/3"]
    );
    assert_eq!(
        keys(engine.scan(Table::Items, b"p/", b"p/2", 100).unwrap()),
        vec![&b"p/2"[..], b"p/3"]
    );
    assert_eq!(
        keys(engine.scan(Table::Items, b"p/", b"", 2).unwrap()),
        vec![&b"p/1"[..], b"p/2"]
    );
    // A start below the prefix is clamped to the prefix.
    assert_eq!(
        keys(engine.scan(Table::Items, b"p/", b"a", 1).unwrap()),
        vec![&b"p/1"[..]]
    );
}

fn scan_resumes_with_successor<E: Engine>(engine: &E) {
    let mut batch = WriteBatch::new();
    for i in 0u16..100 {
        batch.put(
            Table::Items,
            [b"s".as_slice(), &i.to_be_bytes()].concat(),
            vec![0; 3],
        );
    }
    engine.write(batch).unwrap();
    let mut start = Vec::new();
    let mut seen = 0;
    loop {
        let chunk = engine.scan(Table::Items, b"s", &start, 7).unwrap();
        let Some((last, _)) = chunk.last() else { break };
        start = crate::keys::successor(last);
        seen += chunk.len();
    }
    assert_eq!(seen, 100);
}

fn head_scans_keep_only_the_start_of_each_value<E: Engine>(engine: &E) {
    let mut batch = WriteBatch::new();
    batch.put(Table::Items, &b"h/long"[..], vec![7u8; 100_000]);
    batch.put(Table::Items, &b"h/short"[..], &b"abc"[..]);
    batch.put(Table::Items, &b"i/other"[..], &b"xyz"[..]);
    batch.put(Table::Meta, &b"h/meta"[..], &b"m"[..]);
    engine.write(batch).unwrap();
    let head = |key: &'static [u8], head: &'static [u8], value_len| KeyHead {
        key: Bytes::from_static(key),
        head: Bytes::from_static(head),
        value_len,
    };
    assert_eq!(
        engine.scan_heads(Table::Items, b"h/", b"", 10, 4).unwrap(),
        vec![
            head(b"h/long", &[7; 4], 100_000),
            head(b"h/short", b"abc", 3)
        ]
    );
    assert_eq!(
        engine
            .scan_heads(Table::Items, b"h/", b"h/s", 10, 4)
            .unwrap(),
        vec![head(b"h/short", b"abc", 3)]
    );
    assert_eq!(
        engine.scan_heads(Table::Items, b"h/", b"", 1, 0).unwrap(),
        vec![head(b"h/long", b"", 100_000)]
    );
}
