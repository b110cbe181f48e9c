//! memcached semantics that every storage mode of the store has, on a manual clock. Each
//! test file that includes this module says how it opens a store (`super::open_store`):
//! `store_semantics.rs` on an engine (the persistent mode's code paths, over the memory
//! engine), `store_memory.rs` in memory mode.

use std::time::Duration;

use bytes::Bytes;
use murakumo_engine::keys::DEFAULT_NAMESPACE as NS;
use murakumo_server::ops::{
    ArithOutcome, ArithRequest, DeleteOutcome, DeleteRequest, FetchOutcome, FetchRequest,
    ItemCursor, StoreMode, StoreOutcome, StoreRequest,
};
use murakumo_server::{Clock, Exptime, Store, StoreConfig, StoreError};

use super::open_store;
use super::support::{keys_in_one_partition, sweeping_every};

pub const T0: u32 = 1_700_000_000;

/// A store with the default configuration, at `T0` on a manual clock.
pub fn open() -> (Store, Clock) {
    let clock = Clock::manual(T0);
    (open_store(StoreConfig::default(), clock.clone()), clock)
}

/// A store whose sweep passes come every `pass_interval` (see [`sweeping_every`]).
pub fn open_sweeping_every(pass_interval: Duration, chunk: usize) -> (Store, Clock) {
    let clock = Clock::manual(T0);
    let store = open_store(sweeping_every(pass_interval, chunk), clock.clone());
    (store, clock)
}

pub fn req(key: &str, value: &str, mode: StoreMode) -> StoreRequest {
    StoreRequest {
        mode,
        ..StoreRequest::set(
            Bytes::copy_from_slice(key.as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
        )
    }
}

pub fn value_of(store: &Store, key: &str) -> Option<String> {
    store
        .get(NS, key.as_bytes())
        .unwrap()
        .map(|item| String::from_utf8(item.value.to_vec()).unwrap())
}

/// Polls `done` every 10 ms for up to 10 s; whether it came true.
pub async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test]
async fn set_get_and_conditional_stores() {
    let (store, _) = open();
    assert_eq!(value_of(&store, "k"), None);
    assert!(matches!(
        store
            .store(NS, req("k", "v1", StoreMode::Set))
            .await
            .unwrap(),
        StoreOutcome::Stored { .. }
    ));
    assert_eq!(value_of(&store, "k").as_deref(), Some("v1"));
    assert_eq!(
        store
            .store(NS, req("k", "x", StoreMode::Add))
            .await
            .unwrap(),
        StoreOutcome::NotStored
    );
    assert_eq!(
        store
            .store(NS, req("missing", "x", StoreMode::Replace))
            .await
            .unwrap(),
        StoreOutcome::NotStored
    );
    assert!(matches!(
        store
            .store(NS, req("k", "v2", StoreMode::Replace))
            .await
            .unwrap(),
        StoreOutcome::Stored { .. }
    ));
    assert!(matches!(
        store
            .store(NS, req("new", "n", StoreMode::Add))
            .await
            .unwrap(),
        StoreOutcome::Stored { .. }
    ));
    assert_eq!(value_of(&store, "k").as_deref(), Some("v2"));
    assert_eq!(value_of(&store, "new").as_deref(), Some("n"));
}

#[tokio::test]
async fn append_and_prepend_keep_flags_and_expiry() {
    let (store, _) = open();
    let mut first = req("k", "mid", StoreMode::Set);
    first.client_flags = 42;
    first.exptime = Exptime(100);
    store.store(NS, first).await.unwrap();
    let mut tail = req("k", "-end", StoreMode::Append);
    tail.client_flags = 7;
    tail.exptime = Exptime(5);
    store.store(NS, tail).await.unwrap();
    store
        .store(NS, req("k", "start-", StoreMode::Prepend))
        .await
        .unwrap();
    let item = store.get(NS, b"k").unwrap().unwrap();
    assert_eq!(&item.value[..], b"start-mid-end");
    assert_eq!(item.client_flags, 42);
    assert_eq!(item.expires_at, T0 + 100);
    assert_eq!(
        store
            .store(NS, req("nope", "x", StoreMode::Append))
            .await
            .unwrap(),
        StoreOutcome::NotStored
    );
}

#[tokio::test]
async fn append_beyond_the_size_limit_is_refused() {
    let clock = Clock::manual(T0);
    let config = StoreConfig {
        max_value_len: 10,
        ..StoreConfig::default()
    };
    let store = open_store(config, clock);
    store
        .store(NS, req("k", "123456", StoreMode::Set))
        .await
        .unwrap();
    assert_eq!(
        store
            .store(NS, req("k", "78901", StoreMode::Append))
            .await
            .unwrap(),
        StoreOutcome::TooLarge
    );
    assert_eq!(value_of(&store, "k").as_deref(), Some("123456"));
}

#[tokio::test]
async fn cas_rules() {
    let (store, _) = open();
    let mut missing = req("k", "x", StoreMode::Set);
    missing.compare_cas = Some(1);
    assert_eq!(
        store.store(NS, missing).await.unwrap(),
        StoreOutcome::NotFound
    );
    let StoreOutcome::Stored { cas } = store
        .store(NS, req("k", "v1", StoreMode::Set))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(store.get(NS, b"k").unwrap().unwrap().cas, cas);
    let mut wrong = req("k", "v2", StoreMode::Set);
    wrong.compare_cas = Some(cas + 1);
    assert_eq!(store.store(NS, wrong).await.unwrap(), StoreOutcome::Exists);
    let mut right = req("k", "v2", StoreMode::Set);
    right.compare_cas = Some(cas);
    let StoreOutcome::Stored { cas: next } = store.store(NS, right).await.unwrap() else {
        panic!()
    };
    assert_ne!(next, cas);
    // The CAS that just succeeded is spent.
    let mut again = req("k", "v3", StoreMode::Set);
    again.compare_cas = Some(cas);
    assert_eq!(store.store(NS, again).await.unwrap(), StoreOutcome::Exists);
    // An explicit new CAS (meta E) is used as given.
    let mut explicit = req("k", "v4", StoreMode::Set);
    explicit.new_cas = Some(999);
    assert_eq!(
        store.store(NS, explicit).await.unwrap(),
        StoreOutcome::Stored { cas: 999 }
    );
    assert_eq!(store.get(NS, b"k").unwrap().unwrap().cas, 999);
}

#[tokio::test]
async fn counters_wrap_floor_and_reject_non_numbers() {
    let (store, _) = open();
    assert_eq!(
        store
            .arith(NS, ArithRequest::new("n", true, 1))
            .await
            .unwrap(),
        ArithOutcome::NotFound
    );
    store
        .store(NS, req("n", "18446744073709551614", StoreMode::Set))
        .await
        .unwrap();
    let ArithOutcome::Updated { value, .. } = store
        .arith(NS, ArithRequest::new("n", true, 1))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(value, u64::MAX);
    let ArithOutcome::Updated { value, .. } = store
        .arith(NS, ArithRequest::new("n", true, 2))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(value, 1, "incr wraps at 2^64");
    let ArithOutcome::Updated { value, .. } = store
        .arith(NS, ArithRequest::new("n", false, 5))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(value, 0, "decr stops at 0");
    assert_eq!(value_of(&store, "n").as_deref(), Some("0"));
    store
        .store(NS, req("s", "abc", StoreMode::Set))
        .await
        .unwrap();
    assert_eq!(
        store
            .arith(NS, ArithRequest::new("s", true, 1))
            .await
            .unwrap(),
        ArithOutcome::NonNumeric
    );
    // Vivify: the initial value is stored as is, without the delta.
    let mut seeded = ArithRequest::new("v", true, 5);
    seeded.vivify = Some((13, Exptime::NEVER));
    let ArithOutcome::Updated { value, .. } = store.arith(NS, seeded.clone()).await.unwrap() else {
        panic!()
    };
    assert_eq!(value, 13);
    let ArithOutcome::Updated { value, .. } = store.arith(NS, seeded).await.unwrap() else {
        panic!()
    };
    assert_eq!(value, 18);
}

#[tokio::test]
async fn expiry_relative_absolute_negative_and_touch() {
    let (store, clock) = open();
    let mut relative = req("r", "v", StoreMode::Set);
    relative.exptime = Exptime(10);
    store.store(NS, relative).await.unwrap();
    let mut absolute = req("a", "v", StoreMode::Set);
    absolute.exptime = Exptime(i64::from(T0) + 20);
    store.store(NS, absolute).await.unwrap();
    let mut negative = req("n", "v", StoreMode::Set);
    negative.exptime = Exptime(-1);
    assert!(matches!(
        store.store(NS, negative).await.unwrap(),
        StoreOutcome::Stored { .. }
    ));
    assert_eq!(
        value_of(&store, "n"),
        None,
        "negative expiry is expired at once"
    );
    clock.advance(9);
    assert!(value_of(&store, "r").is_some());
    clock.advance(1);
    assert_eq!(value_of(&store, "r"), None, "expired exactly at its time");
    assert!(value_of(&store, "a").is_some());
    // touch extends; add succeeds over an expired item.
    let FetchOutcome::Hit { item, .. } = store
        .fetch(NS, FetchRequest::touch("a", Exptime(100)))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(item.expires_at, T0 + 10 + 100);
    clock.advance(50);
    assert!(value_of(&store, "a").is_some());
    assert!(matches!(
        store
            .store(NS, req("r", "again", StoreMode::Add))
            .await
            .unwrap(),
        StoreOutcome::Stored { .. }
    ));
    assert_eq!(
        store
            .fetch(NS, FetchRequest::touch("gone", Exptime(1)))
            .await
            .unwrap(),
        FetchOutcome::Miss
    );
}

#[tokio::test]
async fn delete_with_and_without_cas() {
    let (store, _) = open();
    assert_eq!(
        store.delete(NS, DeleteRequest::new("k")).await.unwrap(),
        DeleteOutcome::NotFound
    );
    let StoreOutcome::Stored { cas } = store
        .store(NS, req("k", "v", StoreMode::Set))
        .await
        .unwrap()
    else {
        panic!()
    };
    let mut wrong = DeleteRequest::new("k");
    wrong.compare_cas = Some(cas + 10);
    assert_eq!(
        store.delete(NS, wrong).await.unwrap(),
        DeleteOutcome::Exists
    );
    let mut right = DeleteRequest::new("k");
    right.compare_cas = Some(cas);
    assert_eq!(
        store.delete(NS, right).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(value_of(&store, "k"), None);
    assert_eq!(store.stats().curr_items, 0);
}

#[tokio::test]
async fn flush_all_now_and_later() {
    let (store, clock) = open();
    for key in ["a", "b", "c"] {
        store
            .store(NS, req(key, "v", StoreMode::Set))
            .await
            .unwrap();
    }
    store.flush_all(NS, 0).await.unwrap();
    assert_eq!(value_of(&store, "a"), None);
    store
        .store(NS, req("after", "v", StoreMode::Set))
        .await
        .unwrap();
    assert!(
        value_of(&store, "after").is_some(),
        "writes after a flush are visible"
    );
    store.flush_all(NS, 2).await.unwrap();
    assert!(
        value_of(&store, "after").is_some(),
        "delayed flush has not happened yet"
    );
    clock.advance(2);
    // The writer checks pending flushes at least every second.
    let mut waited = 0;
    while value_of(&store, "after").is_some() && waited < 50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!(value_of(&store, "after"), None);
}

#[tokio::test]
async fn meta_invalidate_then_one_winner() {
    let (store, _) = open();
    store
        .store(NS, req("k", "moo", StoreMode::Set))
        .await
        .unwrap();
    let mut invalidate = DeleteRequest::new("k");
    invalidate.invalidate = true;
    invalidate.exptime = Some(Exptime(30));
    assert_eq!(
        store.delete(NS, invalidate).await.unwrap(),
        DeleteOutcome::Deleted
    );
    let fetch = FetchRequest {
        touch: None,
        ..FetchRequest::touch("k", Exptime(0))
    };
    let FetchOutcome::Hit { item, won, .. } = store.fetch(NS, fetch.clone()).await.unwrap() else {
        panic!()
    };
    assert!(won && item.stale);
    assert_eq!(&item.value[..], b"moo");
    let FetchOutcome::Hit { item, won, .. } = store.fetch(NS, fetch.clone()).await.unwrap() else {
        panic!()
    };
    assert!(!won && item.stale && item.win_sent, "second client sees Z");
    // A late writer with an older CAS stores but stays stale with the old expiry.
    let mut late = req("k", "f", StoreMode::Set);
    late.compare_cas = Some(1);
    late.invalidate = true;
    late.exptime = Exptime(90);
    assert!(matches!(
        store.store(NS, late).await.unwrap(),
        StoreOutcome::Stored { .. }
    ));
    let still = store.get(NS, b"k").unwrap().unwrap();
    assert!(still.stale && still.win_sent);
    assert_eq!(still.expires_at, item.expires_at);
    // The winner's CAS store clears the state.
    let mut winner = req("k", "g", StoreMode::Set);
    winner.compare_cas = Some(still.cas);
    store.store(NS, winner).await.unwrap();
    let fresh = store.get(NS, b"k").unwrap().unwrap();
    assert!(!fresh.stale && !fresh.win_sent);
}

#[tokio::test]
async fn vivify_and_recache() {
    let (store, _) = open();
    let vivify = FetchRequest {
        touch: None,
        vivify: Some(Exptime(30)),
        ..FetchRequest::touch("k", Exptime(0))
    };
    let FetchOutcome::Hit {
        item,
        won,
        vivified,
        ..
    } = store.fetch(NS, vivify.clone()).await.unwrap()
    else {
        panic!()
    };
    assert!(won && vivified && item.value.is_empty());
    let FetchOutcome::Hit {
        won,
        vivified,
        item,
        ..
    } = store.fetch(NS, vivify).await.unwrap()
    else {
        panic!()
    };
    assert!(!won && !vivified && item.win_sent);
    let mut real = req("k", "data", StoreMode::Set);
    real.compare_cas = Some(item.cas);
    real.exptime = Exptime(120);
    store.store(NS, real).await.unwrap();
    let recache = FetchRequest {
        touch: None,
        recache_below: Some(130),
        ..FetchRequest::touch("k", Exptime(0))
    };
    let FetchOutcome::Hit { won, .. } = store.fetch(NS, recache.clone()).await.unwrap() else {
        panic!()
    };
    assert!(won, "ttl 120 < 130 wins the recache");
    let FetchOutcome::Hit { won, item, .. } = store.fetch(NS, recache).await.unwrap() else {
        panic!()
    };
    assert!(!won && item.win_sent);
}

#[tokio::test]
async fn sweep_reclaims_expired_records() {
    let (store, clock) = open_sweeping_every(Duration::from_millis(20), 3);
    for i in 0..50 {
        let mut r = req(&format!("k{i}"), "v", StoreMode::Set);
        r.exptime = Exptime(if i % 2 == 0 { 5 } else { 0 });
        store.store(NS, r).await.unwrap();
    }
    assert_eq!(store.stats().curr_items, 50);
    clock.advance(5);
    let mut waited = 0;
    while store.stats().curr_items > 25 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    assert_eq!(store.stats().curr_items, 25);
    assert_eq!(store.stats().reclaimed, 25);
    assert!(value_of(&store, "k1").is_some());
    store.shutdown().await;
}

#[tokio::test]
async fn sweep_scans_only_partitions_that_can_hold_something_to_reclaim() {
    let (store, clock) = open_sweeping_every(Duration::from_millis(10), 4);
    let partitions = u64::from(murakumo_server::placement::PARTITIONS);
    for i in 0..50 {
        store
            .store(NS, req(&format!("k{i}"), "v", StoreMode::Set))
            .await
            .unwrap();
    }
    // The first pass scans everything; with nothing that can lapse, later passes scan
    // nothing.
    assert!(eventually(|| store.stats().sweep_scans >= partitions).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.stats().sweep_scans, partitions);

    // The writer reports when a record with an expiry lapses, so its partition is not read
    // again until then; then it is scanned and the record reclaimed.
    let mut lapsing = req("lapsing", "v", StoreMode::Set);
    lapsing.exptime = Exptime(5);
    store.store(NS, lapsing).await.unwrap();
    clock.advance(4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.stats().sweep_scans,
        partitions,
        "a partition was read before anything in it was due"
    );
    assert_eq!(store.stats().reclaimed, 0);
    clock.advance(1);
    assert!(eventually(|| store.stats().reclaimed == 1).await);
    let after_reclaim = store.stats().sweep_scans;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.stats().sweep_scans, after_reclaim);
    assert_eq!(store.stats().curr_items, 50);

    // A flush brings back the partitions it emptied, and the sweep reclaims them.
    store.flush_all(NS, 0).await.unwrap();
    assert!(eventually(|| store.stats().curr_items == 0).await);
    assert_eq!(store.stats().reclaimed, 51);
    store.shutdown().await;
}

#[tokio::test]
async fn a_partition_is_read_again_once_a_tenth_of_it_has_lapsed_or_a_crawl_asks() {
    let (store, clock) = open_sweeping_every(Duration::from_millis(10), 16);
    let partitions = u64::from(murakumo_server::placement::PARTITIONS);
    assert!(eventually(|| store.stats().sweep_scans >= partitions).await);
    // 100 records in one partition, lapsing at +10 s, +20 s, ... +1000 s.
    for (key, lapse) in keys_in_one_partition("same", 100)
        .iter()
        .zip((10..).step_by(10))
    {
        let mut r = req(key, "v", StoreMode::Set);
        r.exptime = Exptime(lapse);
        store.store(NS, r).await.unwrap();
    }
    // The first lapses at +10 s: the writer reported it, so the partition is read then.
    // That scan leaves 99 records; a tenth of them (9) have lapsed by +100 s.
    clock.advance(10);
    assert!(eventually(|| store.stats().reclaimed == 1).await);
    assert!(eventually(|| store.stats().sweep_scans == partitions + 1).await);
    let scans = store.stats().sweep_scans;
    // At +50 s four more have lapsed, too few for a regular pass to read it again...
    clock.advance(40);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.stats().sweep_scans,
        scans,
        "read again for a twentieth of it"
    );
    assert_eq!(store.stats().reclaimed, 1);
    // ... but `lru_crawler crawl` reads every partition with anything lapsed.
    store.sweep_now();
    assert!(eventually(|| store.stats().reclaimed == 5).await);
    assert!(eventually(|| store.stats().sweep_scans == scans + 1).await);
    // 95 left, lapsing from +60 s: a tenth of them (9) have lapsed at +140 s, not before.
    clock.advance(89);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.stats().reclaimed, 5);
    clock.advance(1);
    assert!(eventually(|| store.stats().reclaimed == 14).await);
    assert_eq!(store.stats().curr_items, 86);
    store.shutdown().await;
}

#[tokio::test]
async fn a_few_lapsed_records_wait_at_most_ten_minutes_for_their_space() {
    let (store, clock) = open_sweeping_every(Duration::from_millis(10), 16);
    let keys = keys_in_one_partition("same", 30);
    // One record of 30 lapses, at +10 s: the writer reported it, so the partition is read
    // and the record reclaimed when it lapses.
    for (i, key) in keys.iter().enumerate() {
        let mut r = req(key, "v", StoreMode::Set);
        r.exptime = Exptime(if i == 0 { 10 } else { 0 });
        store.store(NS, r).await.unwrap();
    }
    clock.advance(10);
    assert!(eventually(|| store.stats().reclaimed == 1).await);
    // Two more: one lapses at +20 s (reported, so read and reclaimed then) and one at
    // +30 s. After that scan the partition holds 29 records of which only that one can
    // lapse, never a tenth of them, so it waits for the lag bound: ten minutes after it
    // lapses.
    let mut late = req(&keys[0], "v", StoreMode::Set);
    late.exptime = Exptime(10);
    store.store(NS, late).await.unwrap();
    let mut other = req(&keys[1], "v", StoreMode::Set);
    other.exptime = Exptime(20);
    store.store(NS, other).await.unwrap();
    clock.advance(10);
    assert!(
        eventually(|| store.stats().reclaimed == 2).await,
        "reported, so read when due"
    );
    clock.advance(10 + 599);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.stats().reclaimed, 2, "read before the lag bound");
    clock.advance(1);
    assert!(eventually(|| store.stats().reclaimed == 3).await);
    store.shutdown().await;
}

#[tokio::test]
async fn keys_rewritten_before_they_lapse_are_read_less_and_less_often() {
    let (store, clock) = open_sweeping_every(Duration::from_millis(10), 16);
    let partitions = u64::from(murakumo_server::placement::PARTITIONS);
    assert!(eventually(|| store.stats().sweep_scans >= partitions).await);
    // A cache refreshing its keys: a TTL of 30 s, every key rewritten every 20 s. Each
    // version would lapse 10 s after the next one replaces it, so whenever the partition
    // falls due there is nothing in it to reclaim.
    let keys = keys_in_one_partition("churn", 10);
    let rewrite_all = || async {
        for key in &keys {
            let mut r = req(key, "v", StoreMode::Set);
            r.exptime = Exptime(30);
            store.store(NS, r).await.unwrap();
        }
    };
    let before = store.stats().sweep_scans;
    // 600 s of it. The versions replaced each round fall due in every round after the
    // first: read every time, that is 29 scans; backing off from 30 s, doubling up to the
    // ten-minute bound, it is a handful.
    for _ in 0..30 {
        rewrite_all().await;
        clock.advance(20);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let scans = store.stats().sweep_scans - before;
    assert!(scans >= 1, "the partition fell due and was never read");
    assert!(
        scans <= 6,
        "{scans} scans of a partition that held nothing to reclaim"
    );
    assert_eq!(store.stats().reclaimed, 0);
    // The refreshing stops. The last versions lapse 30 s after the last rewrite, 10 s ago,
    // and wait no longer than the usual bound for their space.
    clock.advance(20 + 600);
    assert!(eventually(|| store.stats().reclaimed == 10).await);
    assert_eq!(store.stats().curr_items, 0);
    // A scan that reclaimed something ends the backoff: a record written now and lapsing
    // in 5 s is reclaimed when it lapses.
    let mut lapsing = req(&keys[0], "v", StoreMode::Set);
    lapsing.exptime = Exptime(5);
    store.store(NS, lapsing).await.unwrap();
    clock.advance(5);
    assert!(eventually(|| store.stats().reclaimed == 11).await);
    store.shutdown().await;
}

#[tokio::test]
async fn a_disabled_sweep_reclaims_nothing_until_enabled() {
    let (store, clock) = open_sweeping_every(Duration::from_millis(10), 3);
    store.disable_sweep();
    assert!(!store.sweep_enabled());
    for i in 0..20 {
        let mut r = req(&format!("k{i}"), "v", StoreMode::Set);
        r.exptime = Exptime(5);
        store.store(NS, r).await.unwrap();
    }
    clock.advance(5);
    store.sweep_now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.stats().reclaimed, 0, "a disabled sweep reclaimed");
    assert_eq!(
        value_of(&store, "k1"),
        None,
        "lapsed items are invisible regardless"
    );
    assert!(store.enable_sweep(), "it was off");
    assert!(!store.enable_sweep(), "it is on already");
    assert!(eventually(|| store.stats().reclaimed == 20).await);
    assert_eq!(store.stats().curr_items, 0);
    store.shutdown().await;
}

#[tokio::test]
async fn a_limited_sweep_goes_on_where_it_stopped() {
    let (store, clock) = open_sweeping_every(Duration::from_millis(10), 3);
    // One record per partition per pass. Each partition's keys are read in key order, so
    // the "a" keys, which never lapse, come first: a pass that began again at the start
    // of its partition would never reach the "z" keys behind them.
    store.set_sweep_limit(1);
    assert_eq!(store.sweep_limit(), 1);
    for i in 0..2000 {
        store
            .store(NS, req(&format!("a{i}"), "v", StoreMode::Set))
            .await
            .unwrap();
        let mut lapsing = req(&format!("z{i}"), "v", StoreMode::Set);
        lapsing.exptime = Exptime(5);
        store.store(NS, lapsing).await.unwrap();
    }
    clock.advance(5);
    assert!(
        eventually(|| store.stats().reclaimed == 2000).await,
        "reclaimed {} of 2000",
        store.stats().reclaimed
    );
    assert_eq!(store.stats().curr_items, 2000);
    store.shutdown().await;
}

#[tokio::test]
async fn shutdown_refuses_later_writes() {
    let (store, _) = open();
    store
        .store(NS, req("k", "v", StoreMode::Set))
        .await
        .unwrap();
    store.shutdown().await;
    assert_eq!(
        store.store(NS, req("k", "v", StoreMode::Set)).await,
        Err(StoreError::ShuttingDown)
    );
}

#[tokio::test]
async fn unknown_namespace_is_an_error() {
    let (store, _) = open();
    assert_eq!(store.get(77, b"k"), Err(StoreError::UnknownNamespace(77)));
    assert_eq!(
        store.store(77, req("k", "v", StoreMode::Set)).await,
        Err(StoreError::UnknownNamespace(77))
    );
}

#[tokio::test]
async fn an_item_walk_lists_every_visible_item_once_in_bounded_steps() {
    let (store, clock) = open();
    let mut cas_of = std::collections::HashMap::new();
    for i in 0..300 {
        let mut request = req(&format!("k{i}"), "value", StoreMode::Set);
        request.client_flags = i;
        request.exptime = Exptime(if i.is_multiple_of(2) { 0 } else { 100 });
        let StoreOutcome::Stored { cas } = store.store(NS, request).await.unwrap() else {
            panic!("set refused");
        };
        cas_of.insert(format!("k{i}"), cas);
    }
    let mut expired = req("expired", "v", StoreMode::Set);
    expired.exptime = Exptime(5);
    store.store(NS, expired).await.unwrap();
    store
        .store(NS, req("deleted", "v", StoreMode::Set))
        .await
        .unwrap();
    store
        .delete(NS, DeleteRequest::new("deleted"))
        .await
        .unwrap();
    let walk = |limit| {
        let mut cursor = ItemCursor::new();
        let mut items = Vec::new();
        while !cursor.is_done() {
            items.extend(store.scan_items(NS, &mut cursor, limit).unwrap());
        }
        items
    };
    let sizes: u64 = walk(1000).iter().map(|item| item.stored_size).sum();
    assert_eq!(sizes, store.stats().bytes, "sizes add up to the bytes stat");
    clock.advance(10);
    store.get(NS, b"k7").unwrap();

    let mut cursor = ItemCursor::new();
    let mut seen = std::collections::HashMap::new();
    let mut calls = 0;
    while !cursor.is_done() {
        let chunk = store.scan_items(NS, &mut cursor, 7).unwrap();
        assert!(chunk.len() <= 7, "a call examines at most its limit");
        calls += 1;
        for item in chunk {
            let key = String::from_utf8(item.key.to_vec()).unwrap();
            assert!(seen.insert(key, item).is_none(), "an item listed twice");
        }
    }
    assert!(calls >= 300 / 7, "the walk took {calls} calls");
    assert_eq!(
        seen.len(),
        300,
        "every live item, and nothing expired or deleted"
    );
    for (key, item) in &seen {
        let i: u32 = key[1..].parse().unwrap();
        assert_eq!(item.client_flags, i);
        assert_eq!(item.cas, cas_of[key]);
        assert_eq!(item.value_len, 5);
        let expected_expiry = if i.is_multiple_of(2) { 0 } else { T0 + 100 };
        assert_eq!(item.expires_at, expected_expiry);
        assert_eq!(item.access.fetched_before, key == "k7", "{key}");
    }
    assert_eq!(seen["k7"].access.last_access, T0 + 10);
    assert_eq!(
        seen["k8"].access.last_access, T0,
        "never fetched: the write's time"
    );
    // The walks counted as no fetch.
    assert!(
        !store
            .get_observed(NS, b"k8", true)
            .unwrap()
            .unwrap()
            .1
            .fetched_before
    );
    assert_eq!(walk(1).len(), 300);
}

#[tokio::test]
async fn generated_cas_is_unique_across_keys_and_never_small() {
    let (store, _) = open();
    let mut seen = std::collections::HashSet::new();
    for i in 0..2000 {
        let StoreOutcome::Stored { cas } = store
            .store(NS, req(&format!("key{i}"), "v", StoreMode::Set))
            .await
            .unwrap()
        else {
            panic!()
        };
        assert!(
            cas >= 1024,
            "clients treat small CAS values as never issued: {cas}"
        );
        assert!(seen.insert(cas), "CAS {cas} issued twice");
    }
}

/// The item cache never serves a value older than an acknowledged write: writers read back
/// what they wrote while readers keep filling the cache from the engine concurrently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_see_an_acknowledged_write_undone() {
    let (store, _) = open();
    let keys = 16;
    let mut tasks = Vec::new();
    for writer in 0..keys {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("hot{writer}");
            for version in 0..300u32 {
                store
                    .store(NS, req(&key, &version.to_string(), StoreMode::Set))
                    .await
                    .unwrap();
                let read = store.get(NS, key.as_bytes()).unwrap().unwrap();
                assert_eq!(
                    read.value,
                    version.to_string().as_bytes(),
                    "{key} read back stale"
                );
            }
        }));
    }
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20_000u32 {
                let _ = store
                    .get(NS, format!("hot{}", i % keys).as_bytes())
                    .unwrap();
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for writer in 0..keys {
        assert_eq!(
            value_of(&store, &format!("hot{writer}")).as_deref(),
            Some("299")
        );
    }
}
