//! The operations a storage node performs, independent of any wire protocol.
//!
//! The text, meta and binary protocols (and later the REST API and inter-node RPC) all
//! reduce to these. Keeping one vocabulary means each memcached rule (CAS checks, append
//! keeping the old flags, the meta protocol's stale/win dance) is implemented once, in the
//! writer, and every protocol gets identical semantics.

use std::fmt;

use bytes::Bytes;
use murakumo_engine::record::{HEADER_LEN, ItemHeader, ItemState, Record};

use crate::cache::CachedRecord;
use crate::expiry::Exptime;
use crate::store::item_from_record;

/// An item as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The value.
    pub value: Bytes,
    /// Client flags.
    pub client_flags: u32,
    /// CAS token.
    pub cas: u64,
    /// Absolute expiry, Unix seconds; 0 = never.
    pub expires_at: u32,
    /// When the item was last written (Unix seconds).
    pub written_at: u32,
    /// Position of the write in its partition's history.
    pub seq: u64,
    /// Marked stale by a meta invalidation; served with `X`.
    pub stale: bool,
    /// A meta "win" token has already been handed out for it; served with `Z`.
    pub win_sent: bool,
}

/// An item as a reader sees it, still in the bytes it was read from.
///
/// A text `get` hit only copies the value into its reply. Building an [`Item`] for that
/// would wrap the cached record in a `Bytes`, which costs an allocation on every hit, so
/// [`Store::get_ref`](crate::Store::get_ref) returns this instead.
pub struct ItemRef {
    pub(crate) raw: RawRecord,
    pub(crate) header: ItemHeader,
}

/// Where an [`ItemRef`]'s record bytes live.
pub(crate) enum RawRecord {
    /// In the item cache's block for the key.
    Cached(CachedRecord),
    /// As the engine returned it (a cache miss).
    Loaded(Bytes),
}

impl RawRecord {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Cached(record) => record.as_bytes(),
            Self::Loaded(record) => record,
        }
    }

    /// The record as `Bytes`, sharing its memory.
    fn to_bytes(&self) -> Bytes {
        match self {
            Self::Cached(record) => record.to_bytes(),
            Self::Loaded(record) => record.clone(),
        }
    }
}

impl ItemRef {
    /// The value.
    pub fn value(&self) -> &[u8] {
        // The header decoded, so the record is at least a header long.
        self.raw.as_bytes().get(HEADER_LEN..).unwrap_or_default()
    }

    /// The value as `Bytes` sharing the stored record, for a reply that sends it from
    /// there. Free for a record read from the engine or cached as a large one; a small
    /// cached record costs an allocation.
    pub fn value_bytes(&self) -> Bytes {
        let record = self.raw.to_bytes();
        record.slice(HEADER_LEN.min(record.len())..)
    }

    /// Client flags.
    pub fn client_flags(&self) -> u32 {
        self.header.client_flags
    }

    /// CAS token.
    pub fn cas(&self) -> u64 {
        self.header.cas
    }

    /// Absolute expiry, Unix seconds; 0 = never.
    pub fn expires_at(&self) -> u32 {
        self.header.expires_at
    }

    /// Marked stale by a meta invalidation.
    pub fn stale(&self) -> bool {
        self.header.state.has(ItemState::STALE)
    }

    /// A meta "win" token has already been handed out for it.
    pub fn win_sent(&self) -> bool {
        self.header.state.has(ItemState::WIN_SENT)
    }

    /// The item with its value as `Bytes`, for callers that keep it.
    pub fn into_item(self) -> Item {
        item_from_record(Record {
            value: self.value_bytes(),
            header: self.header,
        })
    }
}

impl fmt::Debug for ItemRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ItemRef")
            .field("header", &self.header)
            .field("value_len", &self.value().len())
            .finish_non_exhaustive()
    }
}

/// How a store combines the new value with an existing item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreMode {
    /// Store unconditionally.
    Set,
    /// Store only if no live item exists.
    Add,
    /// Store only if a live item exists.
    Replace,
    /// Append to an existing item's value (keeps its flags and expiry).
    Append,
    /// Prepend to an existing item's value (keeps its flags and expiry).
    Prepend,
}

/// A write of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRequest {
    /// The key.
    pub key: Bytes,
    /// The value (or the part to append/prepend).
    pub value: Bytes,
    /// Client flags (ignored by append/prepend, which keep the item's).
    pub client_flags: u32,
    /// Expiry (ignored by append/prepend, which keep the item's).
    pub exptime: Exptime,
    /// How to combine with an existing item.
    pub mode: StoreMode,
    /// Store only if the item's CAS equals this (`cas`, meta `C`, binary CAS field).
    pub compare_cas: Option<u64>,
    /// Use this as the new CAS instead of generating one (meta `E`).
    pub new_cas: Option<u64>,
    /// Meta `I`: when `compare_cas` is lower than the item's CAS, store anyway but keep
    /// the old expiry and mark the item stale (a late writer must not un-stale it).
    pub invalidate: bool,
    /// Meta `N` with append/prepend: create the item with this expiry if it is missing.
    pub vivify: Option<Exptime>,
}

impl StoreRequest {
    /// A plain `set`.
    pub fn set(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            client_flags: 0,
            exptime: Exptime::NEVER,
            mode: StoreMode::Set,
            compare_cas: None,
            new_cas: None,
            invalidate: false,
            vivify: None,
        }
    }
}

/// Result of a [`StoreRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Written; the item's new CAS.
    Stored {
        /// New CAS.
        cas: u64,
    },
    /// The mode's condition failed (add on existing, replace/append on missing).
    NotStored,
    /// CAS mismatch.
    Exists,
    /// CAS given but the item does not exist.
    NotFound,
    /// The resulting value would exceed the item size limit (append/prepend).
    TooLarge,
}

/// A delete (or a meta invalidation, which marks stale instead of removing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    /// The key.
    pub key: Bytes,
    /// Delete only if the item's CAS equals this.
    pub compare_cas: Option<u64>,
    /// Meta `I`: keep the item but mark it stale (and give it a new CAS).
    pub invalidate: bool,
    /// Meta `T` with `I`: the stale item's new expiry.
    pub exptime: Option<Exptime>,
    /// Meta `E`: the new CAS when invalidating.
    pub new_cas: Option<u64>,
    /// Meta `x`: drop the value but keep the item (flags, expiry) in place.
    pub remove_value: bool,
}

impl DeleteRequest {
    /// A plain `delete`.
    pub fn new(key: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            compare_cas: None,
            invalidate: false,
            exptime: None,
            new_cas: None,
            remove_value: false,
        }
    }
}

/// Result of a [`DeleteRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Removed (or invalidated).
    Deleted,
    /// No live item.
    NotFound,
    /// CAS mismatch.
    Exists,
}

/// An increment or decrement of a decimal value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArithRequest {
    /// The key.
    pub key: Bytes,
    /// Increment (wrapping at 2^64) or decrement (stopping at 0).
    pub incr: bool,
    /// Amount.
    pub delta: u64,
    /// Create the item with this initial value and expiry if it is missing (binary
    /// protocol's initial/expiration, meta `N`/`J`). The initial value is stored as is,
    /// without applying the delta, as memcached does.
    pub vivify: Option<(u64, Exptime)>,
    /// Apply only if the item's CAS equals this.
    pub compare_cas: Option<u64>,
    /// Meta `E`.
    pub new_cas: Option<u64>,
    /// Meta `T`: also set a new expiry.
    pub exptime: Option<Exptime>,
}

impl ArithRequest {
    /// A plain `incr` or `decr`.
    pub fn new(key: impl Into<Bytes>, incr: bool, delta: u64) -> Self {
        Self {
            key: key.into(),
            incr,
            delta,
            vivify: None,
            compare_cas: None,
            new_cas: None,
            exptime: None,
        }
    }
}

/// Result of an [`ArithRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArithOutcome {
    /// The new value and the item after the change.
    Updated {
        /// The number now stored.
        value: u64,
        /// The item as stored.
        item: Item,
    },
    /// No live item (and no vivify).
    NotFound,
    /// The stored value is not a decimal number that fits in 64 bits.
    NonNumeric,
    /// CAS mismatch.
    Exists,
}

/// A read that may change the item: `touch`, `gat`, and `mg` with `T`, `N`, `R` or `E`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The key.
    pub key: Bytes,
    /// Set a new expiry on a hit (`touch`, `gat`, meta `T`).
    pub touch: Option<Exptime>,
    /// On a miss, create an empty item with this expiry and hand this client the win
    /// (meta `N`).
    pub vivify: Option<Exptime>,
    /// If the item has fewer seconds left than this, hand out the win once (meta `R`).
    pub recache_below: Option<u32>,
    /// Meta `E`: CAS to give the item if this fetch modifies it.
    pub new_cas: Option<u64>,
}

impl FetchRequest {
    /// A `touch`/`gat` of one key.
    pub fn touch(key: impl Into<Bytes>, exptime: Exptime) -> Self {
        Self {
            key: key.into(),
            touch: Some(exptime),
            vivify: None,
            recache_below: None,
            new_cas: None,
        }
    }
}

/// Result of a [`FetchRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// No live item.
    Miss,
    /// The item (after any touch), and the meta protocol's lease flags.
    Hit {
        /// The item.
        item: Item,
        /// This client won the right to recompute the value (`W`).
        won: bool,
        /// The item was created by this request's vivify.
        vivified: bool,
        /// The expiry before this request's touch (meta `t` written before `T` reports it).
        expires_before: u32,
    },
}

/// An item as a key dump lists it (memcached's `lru_crawler metadump` and
/// `stats cachedump`): its metadata, without the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemSummary {
    /// The client's key.
    pub key: Bytes,
    /// Length of the value.
    pub value_len: usize,
    /// What the item costs in the `bytes` stat: key, header and value as stored.
    pub stored_size: u64,
    /// Client flags.
    pub client_flags: u32,
    /// CAS token.
    pub cas: u64,
    /// Absolute expiry, Unix seconds; 0 = never.
    pub expires_at: u32,
    /// Earlier fetches, as a meta `h`/`l` would report them (without counting as a fetch).
    pub access: crate::AccessInfo,
}

/// Where a walk over a namespace's items stands; see
/// [`Store::scan_items`](crate::Store::scan_items).
///
/// It is a position, not a snapshot: items written behind it are not seen, items written
/// ahead of it are, which is what memcached's crawler gives too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemCursor {
    /// The partition being walked; `PARTITIONS` once the walk is over.
    pub(crate) partition: u16,
    /// The first engine key of that partition not yet examined (`None`: its beginning).
    pub(crate) start: Option<Vec<u8>>,
}

impl ItemCursor {
    /// A walk from the first item.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether every partition has been walked.
    pub fn is_done(&self) -> bool {
        self.partition >= crate::placement::PARTITIONS
    }
}
