//! Guards the exact on-disk bytes of item records.
//!
//! If one of these fails, a change altered a format that existing data directories, replicas
//! and backups depend on. Do not update the fixture to make it pass: add a new version
//! instead, and keep decoding the old one.

use bytes::Bytes;
use murakumo_engine::keys::ItemKey;
use murakumo_engine::record::{ItemHeader, ItemState, Record};

/// A version-1 record: stale, flags 0xDEADBEEF, expiry 1_700_000_000, CAS 42, seq 7,
/// written at 1_600_000_000, value "hi".
const RECORD_V1: &[u8] = &[
    0x01, // version
    0x02, // state: STALE
    0xDE, 0xAD, 0xBE, 0xEF, // client flags
    0x65, 0x53, 0xF1, 0x00, // expires at 1_700_000_000
    0, 0, 0, 0, 0, 0, 0, 42, // cas
    0, 0, 0, 0, 0, 0, 0, 7, // seq
    0x5F, 0x5E, 0x10, 0x00, // written at 1_600_000_000
    b'h', b'i',
];

fn sample() -> Record {
    Record {
        header: ItemHeader {
            state: ItemState::default().with(ItemState::STALE, true),
            client_flags: 0xDEAD_BEEF,
            expires_at: 1_700_000_000,
            cas: 42,
            seq: 7,
            written_at: 1_600_000_000,
        },
        value: Bytes::from_static(b"hi"),
    }
}

#[test]
fn version_1_record_bytes_are_stable() {
    assert_eq!(&sample().encode()[..], RECORD_V1);
}

#[test]
fn version_1_record_decodes() {
    assert_eq!(
        Record::decode(&Bytes::from_static(RECORD_V1)).unwrap(),
        sample()
    );
}

#[test]
fn item_key_bytes_are_stable() {
    let key = ItemKey {
        namespace: 0,
        partition: 1023,
        user_key: Bytes::from_static(b"user:1"),
    };
    assert_eq!(&key.encode()[..], b"\x00\x00\x00\x00\x03\xffuser:1");
}
