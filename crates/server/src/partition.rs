//! Per-partition bookkeeping, and how it is kept in the engine's meta table.

use bytes::{BufMut, Bytes, BytesMut};
use murakumo_engine::keys::{NamespaceId, PartitionId};

/// Meta-table key prefix of partition states.
pub(crate) const PARTITION_STATE_PREFIX: &[u8] = b"P";
/// Meta-table key prefix of pending delayed flushes.
pub(crate) const PENDING_FLUSH_PREFIX: &[u8] = b"F";
/// Meta-table key prefix of the sweep summaries a clean shutdown leaves (see
/// `sweep::SweepKnowledge`).
pub(crate) const SWEEP_SUMMARY_PREFIX: &[u8] = b"S";
/// Meta-table key of the store format marker.
pub(crate) const FORMAT_KEY: &[u8] = b"format";
/// The store format this build writes and reads.
pub(crate) const FORMAT_VERSION: u8 = 1;

/// What the writer tracks for one partition.
///
/// Sequence numbers must never go backwards across a restart or a crash: replication,
/// catch-up and CAS uniqueness all rely on a partition's history only growing. Persisting
/// the exact sequence number with every write would double the writes (and fill the meta
/// table's memtable with versions of the same few keys), so the writer reserves them in
/// blocks instead: the persisted value is a ceiling at or above every number in use, raised
/// in the same atomic batch as the write that first needs a number above it. A restarted
/// node continues from the ceiling; the skipped numbers are simply never used.
///
/// `items` and `bytes` are statistics. They are persisted with ceiling raises, flushes,
/// a checkpoint every second (spread over the commits that follow it), and at shutdown,
/// so after a crash they can be short of the changes since the last checkpoint reached
/// their partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PartitionState {
    /// Sequence number of the last write.
    pub seq: u64,
    /// Every sequence number in use is at or below this; it is what is persisted.
    pub seq_ceiling: u64,
    /// Records stored (including expired ones not yet swept), for `curr_items`.
    pub items: u64,
    /// Bytes of those records (key + header + value), for `bytes`.
    pub bytes: u64,
    /// Records with a sequence number at or below this were flushed (`flush_all`).
    pub flushed_seq: u64,
}

impl PartitionState {
    pub(crate) const ENCODED_LEN: usize = 32;

    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(Self::ENCODED_LEN);
        out.put_u64(self.seq_ceiling);
        out.put_u64(self.items);
        out.put_u64(self.bytes);
        out.put_u64(self.flushed_seq);
        out.freeze()
    }

    pub(crate) fn decode(raw: &[u8]) -> Option<Self> {
        let raw: &[u8; Self::ENCODED_LEN] = raw.try_into().ok()?;
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[i * 8..i * 8 + 8]);
            u64::from_be_bytes(b)
        };
        // A restarted writer continues from the ceiling.
        Some(Self {
            seq: word(0),
            seq_ceiling: word(0),
            items: word(1),
            bytes: word(2),
            flushed_seq: word(3),
        })
    }
}

/// Meta key of a partition's state: `P | namespace | partition`.
pub(crate) fn state_key(namespace: NamespaceId, partition: PartitionId) -> Bytes {
    let mut key = BytesMut::with_capacity(7);
    key.put_slice(PARTITION_STATE_PREFIX);
    key.put_u32(namespace);
    key.put_u16(partition);
    key.freeze()
}

/// Parses a meta key written by [`state_key`].
pub(crate) fn parse_state_key(key: &[u8]) -> Option<(NamespaceId, PartitionId)> {
    let rest = key.strip_prefix(PARTITION_STATE_PREFIX)?;
    let rest: &[u8; 6] = rest.try_into().ok()?;
    Some((
        u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
        u16::from_be_bytes([rest[4], rest[5]]),
    ))
}

/// Meta key of a namespace's pending delayed flush.
pub(crate) fn pending_flush_key(namespace: NamespaceId) -> Bytes {
    let mut key = BytesMut::with_capacity(5);
    key.put_slice(PENDING_FLUSH_PREFIX);
    key.put_u32(namespace);
    key.freeze()
}

/// Meta key of a namespace's sweep summary: `S | namespace`.
pub(crate) fn sweep_summary_key(namespace: NamespaceId) -> Bytes {
    let mut key = BytesMut::with_capacity(5);
    key.put_slice(SWEEP_SUMMARY_PREFIX);
    key.put_u32(namespace);
    key.freeze()
}

/// Parses a meta key written by [`sweep_summary_key`].
pub(crate) fn parse_sweep_summary_key(key: &[u8]) -> Option<NamespaceId> {
    let rest: &[u8; 4] = key.strip_prefix(SWEEP_SUMMARY_PREFIX)?.try_into().ok()?;
    Some(u32::from_be_bytes(*rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let state = PartitionState {
            seq: 1,
            seq_ceiling: 9,
            items: 2,
            bytes: 3,
            flushed_seq: 4,
        };
        // What persists is the ceiling; a restarted writer continues from it.
        let restarted = PartitionState { seq: 9, ..state };
        assert_eq!(PartitionState::decode(&state.encode()), Some(restarted));
        assert_eq!(PartitionState::decode(&[0; 5]), None);
        assert_eq!(parse_state_key(&state_key(7, 1023)), Some((7, 1023)));
        assert_eq!(parse_state_key(b"Pxx"), None);
        assert_eq!(parse_sweep_summary_key(&sweep_summary_key(7)), Some(7));
        assert_eq!(parse_sweep_summary_key(&state_key(7, 1)), None);
    }
}
