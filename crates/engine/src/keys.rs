//! The engine key layout.
//!
//! An item's engine key is `namespace (u32 BE) | partition (u16 BE) | user key`. Big-endian
//! fixed-width prefixes make every partition of every namespace one contiguous, ordered key
//! range, so that copying or dropping a partition (rebalancing, catch-up, backup) is a prefix
//! scan, and so that the expiry sweep can walk one partition at a time.

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

/// Numeric id of a namespace; the cluster map assigns them, `default` is 0.
pub type NamespaceId = u32;

/// Index of a partition within a namespace (the cluster uses P = 1024 partitions).
pub type PartitionId = u16;

/// Length of the `namespace | partition` prefix.
pub const PARTITION_PREFIX_LEN: usize = 6;

/// The namespace every cluster has.
pub const DEFAULT_NAMESPACE: NamespaceId = 0;

/// An item key, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ItemKey {
    /// The namespace (tenant) the item belongs to.
    pub namespace: NamespaceId,
    /// The partition the item hashes to.
    pub partition: PartitionId,
    /// The key as the client sent it.
    pub user_key: Bytes,
}

impl ItemKey {
    /// Encodes the key as stored in the engine.
    pub fn encode(&self) -> Bytes {
        let mut key = BytesMut::with_capacity(PARTITION_PREFIX_LEN + self.user_key.len());
        key.extend_from_slice(&partition_prefix(self.namespace, self.partition));
        key.extend_from_slice(&self.user_key);
        key.freeze()
    }

    /// Decodes an engine key; `None` if it is too short to carry the prefix.
    pub fn decode(encoded: &Bytes) -> Option<Self> {
        let (namespace, partition) = place_of(encoded)?;
        Some(Self {
            namespace,
            partition,
            user_key: encoded.slice(PARTITION_PREFIX_LEN..),
        })
    }
}

/// An engine key built for a lookup. Keys of typical length stay on the stack.
pub type LookupKey = SmallVec<[u8; 64]>;

/// The engine key of `user_key`, built straight from borrowed parts: the read path needs
/// it only for the length of one lookup, so it should not cost an allocation or reference
/// counting.
pub fn item_key(namespace: NamespaceId, partition: PartitionId, user_key: &[u8]) -> LookupKey {
    let len = PARTITION_PREFIX_LEN + user_key.len();
    let prefix = partition_prefix(namespace, partition);
    let mut inline = [0u8; 64];
    if let Some(rest) = inline.get_mut(PARTITION_PREFIX_LEN..len) {
        // Filled in place: SmallVec's generic extend was most of this function's cost.
        rest.copy_from_slice(user_key);
        inline[..PARTITION_PREFIX_LEN].copy_from_slice(&prefix);
        return LookupKey::from_buf_and_len(inline, len);
    }
    let mut key = Vec::with_capacity(len);
    key.extend_from_slice(&prefix);
    key.extend_from_slice(user_key);
    LookupKey::from_vec(key)
}

/// The namespace and partition an engine key belongs to, read from its prefix without
/// copying the key; `None` if it is too short to carry the prefix.
pub fn place_of(key: &[u8]) -> Option<(NamespaceId, PartitionId)> {
    let ([n0, n1, n2, n3, p0, p1], _) = key.split_first_chunk::<PARTITION_PREFIX_LEN>()?;
    Some((
        NamespaceId::from_be_bytes([*n0, *n1, *n2, *n3]),
        PartitionId::from_be_bytes([*p0, *p1]),
    ))
}

/// The prefix shared by every key of one partition.
pub fn partition_prefix(
    namespace: NamespaceId,
    partition: PartitionId,
) -> [u8; PARTITION_PREFIX_LEN] {
    let ns = namespace.to_be_bytes();
    let p = partition.to_be_bytes();
    [ns[0], ns[1], ns[2], ns[3], p[0], p[1]]
}

/// The smallest key strictly greater than `key`: where a chunked scan resumes.
pub fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lookup_keys_match_the_stored_layout_inline_or_not() {
        for len in [0, 1, 57, 58, 59, 64, 250, 1000] {
            let user_key = vec![b'k'; len];
            let stored = ItemKey {
                namespace: 7,
                partition: 1023,
                user_key: Bytes::from(user_key.clone()),
            }
            .encode();
            assert_eq!(
                &item_key(7, 1023, &user_key)[..],
                &stored[..],
                "length {len}"
            );
        }
    }

    #[test]
    fn layout_is_namespace_then_partition_big_endian() {
        let key = ItemKey {
            namespace: 0x0102_0304,
            partition: 0x0506,
            user_key: Bytes::from_static(b"k"),
        };
        assert_eq!(&key.encode()[..], &[1, 2, 3, 4, 5, 6, b'k']);
    }

    proptest! {
        #[test]
        fn round_trip(namespace: u32, partition: u16, user_key in proptest::collection::vec(any::<u8>(), 0..300)) {
            let key = ItemKey { namespace, partition, user_key: Bytes::from(user_key) };
            prop_assert_eq!(ItemKey::decode(&key.encode()), Some(key));
        }

        #[test]
        fn partitions_are_contiguous_ranges(a: (u32, u16), b: (u32, u16), ka: Vec<u8>, kb: Vec<u8>) {
            let ea = ItemKey { namespace: a.0, partition: a.1, user_key: ka.into() }.encode();
            let eb = ItemKey { namespace: b.0, partition: b.1, user_key: kb.into() }.encode();
            if a != b {
                // Keys of different partitions order exactly as their partitions do.
                prop_assert_eq!(ea.cmp(&eb), a.cmp(&b));
            }
        }

        #[test]
        fn successor_is_the_next_key(key: Vec<u8>, other: Vec<u8>) {
            let next = successor(&key);
            prop_assert!(next.as_slice() > key.as_slice());
            if other.as_slice() > key.as_slice() {
                prop_assert!(other >= next);
            }
        }
    }
}
