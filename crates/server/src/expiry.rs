//! memcached's expiry rules.

/// memcached treats an expiry up to this many seconds as relative to now, and anything
/// larger as an absolute Unix time (30 days).
pub const MAX_RELATIVE_EXPIRY: i64 = 60 * 60 * 24 * 30;

/// An expiry exactly as a client sent it (text, meta or binary protocol), before it is
/// resolved against the clock.
///
/// It stays in the client's form until the store's writer resolves it, so that every
/// replica and every retry resolves it against the same "now" rather than each protocol
/// handler doing its own arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Exptime(pub i64);

impl Exptime {
    /// Never expires.
    pub const NEVER: Self = Self(0);

    /// Resolves to an absolute expiry (Unix seconds; 0 = never) as memcached does:
    /// 0 never expires, a negative value has already expired, up to 30 days is relative,
    /// and anything beyond is an absolute time (which may be in the past).
    pub fn resolve(self, now: u32) -> u32 {
        match self.0 {
            0 => 0,
            // Any nonzero time not after `now` is "already expired"; 1 is the earliest.
            t if t < 0 => 1,
            t if t <= MAX_RELATIVE_EXPIRY => u32::try_from(i64::from(now) + t).unwrap_or(u32::MAX),
            t => u32::try_from(t).unwrap_or(u32::MAX),
        }
    }
}

/// Whether an item with absolute expiry `expires_at` is expired at `now`.
pub fn is_expired(expires_at: u32, now: u32) -> bool {
    expires_at != 0 && expires_at <= now
}

/// Seconds an item has left, or -1 when it never expires (the meta protocol's `t`).
pub fn remaining_ttl(expires_at: u32, now: u32) -> i64 {
    if expires_at == 0 {
        -1
    } else {
        i64::from(expires_at.saturating_sub(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcached_rules() {
        let now = 1_000_000_000;
        assert_eq!(Exptime(0).resolve(now), 0);
        assert_eq!(Exptime(-1).resolve(now), 1);
        assert_eq!(Exptime(10).resolve(now), now + 10);
        assert_eq!(Exptime(MAX_RELATIVE_EXPIRY).resolve(now), now + 2_592_000);
        assert_eq!(Exptime(MAX_RELATIVE_EXPIRY + 1).resolve(now), 2_592_001);
        assert_eq!(Exptime(i64::MAX).resolve(now), u32::MAX);
        assert!(is_expired(1, now));
        assert!(is_expired(now, now));
        assert!(!is_expired(now + 1, now));
        assert!(!is_expired(0, now));
        assert_eq!(remaining_ttl(0, now), -1);
        assert_eq!(remaining_ttl(now + 5, now), 5);
        assert_eq!(remaining_ttl(now - 5, now), 0);
    }
}
