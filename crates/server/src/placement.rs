//! Which partition a key belongs to.

use murakumo_engine::keys::{NamespaceId, PartitionId};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Partitions per namespace. Fixed at cluster creation (DESIGN.md §3); the single node
/// uses the same number so its data directory needs no reshaping when it joins a cluster.
pub const PARTITIONS: u16 = 1024;

/// The partition of `key` in `namespace`: xxh3-64 of the key, seeded by the namespace, so
/// the same key lands in unrelated partitions in different namespaces.
pub fn partition_of(namespace: NamespaceId, key: &[u8]) -> PartitionId {
    (xxh3_64_with_seed(key, u64::from(namespace)) % u64::from(PARTITIONS)) as PartitionId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_keys_over_all_partitions() {
        let mut counts = vec![0u32; usize::from(PARTITIONS)];
        for i in 0..200_000u32 {
            counts[usize::from(partition_of(0, format!("key:{i}").as_bytes()))] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        // ~195 per partition; a sound hash stays well within these bounds.
        assert!(*min > 120 && *max < 280, "min {min} max {max}");
    }

    #[test]
    fn namespace_changes_placement() {
        let moved = (0..1000u32)
            .filter(|i| {
                let k = format!("k{i}");
                partition_of(0, k.as_bytes()) != partition_of(1, k.as_bytes())
            })
            .count();
        assert!(moved > 900);
    }
}
