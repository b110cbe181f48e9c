//! Wall-clock time in the unit memcached uses: whole Unix seconds.

use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The store's source of "now".
///
/// Expiry is decided against this clock, never against `SystemTime` directly, so tests
/// (and later deterministic simulations) can move time forward instead of sleeping.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock, at memcached's resolution: whole seconds, kept by a background
    /// thread that wakes at each second boundary (memcached's clock event does the same).
    /// Every read and write asks for the time, and a relaxed load is much cheaper than
    /// asking the kernel each time.
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
            Self::System => coarse_now(),
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

/// The second the clock thread last saw.
static COARSE_NOW: AtomicU32 = AtomicU32::new(0);
/// Set if the clock thread could not be started; every read then asks the system.
static COARSE_UNAVAILABLE: AtomicBool = AtomicBool::new(false);
static CLOCK_THREAD: Once = Once::new();

fn system_now() -> (u32, Duration) {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or((0, Duration::ZERO), |d| {
            let secs = u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
            (
                secs,
                Duration::from_nanos(u64::from(1_000_000_000 - d.subsec_nanos())),
            )
        })
}

fn coarse_now() -> u32 {
    CLOCK_THREAD.call_once(|| {
        COARSE_NOW.store(system_now().0, Ordering::Relaxed);
        let started = std::thread::Builder::new()
            .name("murakumo-clock".into())
            .spawn(|| {
                loop {
                    let (now, to_next_second) = system_now();
                    COARSE_NOW.store(now, Ordering::Relaxed);
                    // Just past the boundary, so the next reading is the new second.
                    std::thread::sleep(to_next_second + Duration::from_micros(200));
                }
            });
        if started.is_err() {
            COARSE_UNAVAILABLE.store(true, Ordering::Relaxed);
        }
    });
    if COARSE_UNAVAILABLE.load(Ordering::Relaxed) {
        return system_now().0;
    }
    COARSE_NOW.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_follows_the_system_time() {
        let before = system_now().0;
        let coarse = Clock::System.now();
        let after = system_now().0;
        // The clock thread may not have ticked into a second that just began.
        assert!(
            coarse + 1 >= before && coarse <= after,
            "{before} {coarse} {after}"
        );
        // It moves on by itself; how soon depends on the machine's load, so wait generously.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while Clock::System.now() <= coarse {
            assert!(
                std::time::Instant::now() < deadline,
                "the clock never ticked"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
