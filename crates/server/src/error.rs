//! Store errors.

use murakumo_engine::keys::NamespaceId;

/// Why the store could not perform an operation.
///
/// There is deliberately no "retry" variant: an engine failure takes the store out of
/// service for good (until an operator restarts it), because after a failed write or fsync
/// we can no longer promise that what we acknowledged is on disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store hit a storage failure earlier and no longer serves anything.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The namespace does not exist on this node.
    #[error("unknown namespace {0}")]
    UnknownNamespace(NamespaceId),
    /// The store is shutting down.
    #[error("store is shutting down")]
    ShuttingDown,
}
