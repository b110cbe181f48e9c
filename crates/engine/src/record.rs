//! The stored form of an item: a versioned fixed-size header followed by the value bytes.
//!
//! ```text
//! offset size field
//!      0    1 format version (currently 1)
//!      1    1 state bits (see ItemState)
//!      2    4 client flags        (u32, big-endian)
//!      6    4 expiry, Unix seconds (u32, big-endian; 0 = never expires)
//!     10    8 CAS                 (u64, big-endian)
//!     18    8 sequence number     (u64, big-endian; position in its partition's history)
//!     26    4 written at, Unix seconds (u32, big-endian; time of the last write)
//!     30    - value
//! ```
//!
//! The format is ours, not the engine's: replication ships these bytes between servers and
//! backups store them, so they must stay readable across releases. Any change bumps the
//! version byte, old versions stay decodable, and `tests/record_fixtures.rs` pins the exact
//! bytes of every version.

use bytes::{BufMut, Bytes, BytesMut};

/// The version this build writes.
pub const CURRENT_VERSION: u8 = 1;

/// Size of the version-1 header.
pub const HEADER_LEN: usize = 30;

/// State bits of an item, beyond its value.
///
/// They are stored (not kept in memory) because they must survive restarts and, later,
/// travel to replicas with the item: a tombstone must reach every replica, and a stale item
/// handed to one client as a "win" must not be handed out again by another server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ItemState(u8);

impl ItemState {
    /// The item was deleted; the record remains so replicas can learn of the delete.
    pub const TOMBSTONE: u8 = 0b0000_0001;
    /// Meta-protocol invalidation (`md ... I`, `ms ... I`): the value is served marked stale.
    pub const STALE: u8 = 0b0000_0010;
    /// A meta-protocol "win" token was handed out for this item; others get "Z".
    pub const WIN_SENT: u8 = 0b0000_0100;
    /// Every bit this version knows; others are rejected as corruption.
    const KNOWN: u8 = Self::TOMBSTONE | Self::STALE | Self::WIN_SENT;

    /// The raw bits.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Builds a state from raw bits, rejecting unknown ones.
    pub fn from_bits(bits: u8) -> Option<Self> {
        (bits & !Self::KNOWN == 0).then_some(Self(bits))
    }

    /// Whether `bit` (one of the constants) is set.
    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// Returns the state with `bit` set or cleared.
    #[must_use]
    pub fn with(self, bit: u8, on: bool) -> Self {
        if on {
            Self(self.0 | bit)
        } else {
            Self(self.0 & !bit)
        }
    }
}

/// The fixed part of an item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ItemHeader {
    /// State bits.
    pub state: ItemState,
    /// Opaque 32-bit client flags (memcached's `flags`).
    pub client_flags: u32,
    /// Absolute expiry in Unix seconds; 0 means never.
    pub expires_at: u32,
    /// Compare-and-swap token.
    pub cas: u64,
    /// Sequence number of the write that produced this record, within its partition.
    pub seq: u64,
    /// When the record was written (Unix seconds): the item's age for `stats` and the
    /// meta protocol's "last access" of an item nobody has fetched since.
    pub written_at: u32,
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than its header.
    #[error("record of {0} bytes is shorter than its header")]
    Truncated(usize),
    /// A version this build does not know (written by a newer release?).
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    /// State bits this version does not define.
    #[error("unknown item state bits {0:#04x}")]
    UnknownState(u8),
}

/// An item as stored: header plus value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The fixed part.
    pub header: ItemHeader,
    /// The client's value.
    pub value: Bytes,
}

impl Record {
    /// Encodes in the current version.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + self.value.len());
        out.put_u8(CURRENT_VERSION);
        out.put_u8(self.header.state.bits());
        out.put_u32(self.header.client_flags);
        out.put_u32(self.header.expires_at);
        out.put_u64(self.header.cas);
        out.put_u64(self.header.seq);
        out.put_u32(self.header.written_at);
        out.put_slice(&self.value);
        out.freeze()
    }

    /// Decodes any supported version. The value shares `encoded`'s buffer (no copy).
    pub fn decode(encoded: &Bytes) -> Result<Self, RecordError> {
        let header = decode_header(encoded)?;
        Ok(Self {
            header,
            value: encoded.slice(HEADER_LEN..),
        })
    }
}

/// Decodes only the header, for callers that do not need the value.
pub fn decode_header(encoded: &[u8]) -> Result<ItemHeader, RecordError> {
    let Some(&version) = encoded.first() else {
        return Err(RecordError::Truncated(0));
    };
    if version != CURRENT_VERSION {
        return Err(RecordError::UnknownVersion(version));
    }
    let Some(h) = encoded.get(..HEADER_LEN) else {
        return Err(RecordError::Truncated(encoded.len()));
    };
    let state = ItemState::from_bits(h[1]).ok_or(RecordError::UnknownState(h[1]))?;
    let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
    Ok(ItemHeader {
        state,
        client_flags: u32_at(2),
        expires_at: u32_at(6),
        cas: u64_at(10),
        seq: u64_at(18),
        written_at: u32_at(26),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(bits in 0u8..8, client_flags: u32, expires_at: u32, cas: u64, seq: u64, written_at: u32,
                      value in proptest::collection::vec(any::<u8>(), 0..512)) {
            let record = Record {
                header: ItemHeader {
                    state: ItemState::from_bits(bits).unwrap(),
                    client_flags, expires_at, cas, seq, written_at,
                },
                value: Bytes::from(value),
            };
            let encoded = record.encode();
            prop_assert_eq!(encoded.len(), HEADER_LEN + record.value.len());
            prop_assert_eq!(Record::decode(&encoded), Ok(record));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Record::decode(&Bytes::from(bytes));
        }
    }

    #[test]
    fn rejects_unknown_versions_and_bits_and_short_records() {
        let good = Record {
            header: ItemHeader::default(),
            value: Bytes::new(),
        }
        .encode();
        let mut v2 = good.to_vec();
        v2[0] = 2;
        assert_eq!(
            Record::decode(&v2.into()),
            Err(RecordError::UnknownVersion(2))
        );
        let mut bad_bits = good.to_vec();
        bad_bits[1] = 0x80;
        assert_eq!(
            Record::decode(&bad_bits.into()),
            Err(RecordError::UnknownState(0x80))
        );
        assert_eq!(
            Record::decode(&good.slice(..10)),
            Err(RecordError::Truncated(10))
        );
        assert_eq!(
            Record::decode(&Bytes::new()),
            Err(RecordError::Truncated(0))
        );
    }
}
