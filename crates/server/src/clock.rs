//! Wall-clock time in the unit memcached uses: whole Unix seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The store's source of "now".
///
/// Expiry is decided against this clock, never against `SystemTime` directly, so tests
/// (and later deterministic simulations) can move time forward instead of sleeping.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A clock that only moves when told to.
    Manual(Arc<AtomicU32>),
}

impl Clock {
    /// A manual clock starting at `now`.
    pub fn manual(now: u32) -> Self {
        Self::Manual(Arc::new(AtomicU32::new(now)))
    }

    /// Current Unix time in seconds.
    pub fn now(&self) -> u32 {
        match self {
            Self::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
            Self::Manual(now) => now.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward; does nothing to the system clock.
    pub fn advance(&self, secs: u32) {
        if let Self::Manual(now) = self {
            now.fetch_add(secs, Ordering::Relaxed);
        }
    }
}
