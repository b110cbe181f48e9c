//! Waking a background thread that otherwise sleeps for an interval.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

/// A wake-up call for the syncer and the sweeper, which sleep for their interval unless
/// someone (a `flush_all`, `lru_crawler crawl`, shutdown) wants them sooner.
///
/// Why not a channel's `recv_timeout`, which this replaces: crossbeam's spins and then
/// calls `sched_yield` several times before it sleeps. The syncer then waited every 5 ms
/// by default, so under load it gave its CPU away about 750 times a second (measured with
/// `perf trace` on a pipeline-1 load: 2,256 `sched_yield`s in 3 s, against 337 fsyncs),
/// and each of those is a trip through the scheduler on cores the event loops need. A
/// condition variable sleeps at once.
#[derive(Debug, Default)]
pub(crate) struct Wakeup {
    /// A wake-up that has been asked for and not yet consumed by a wait.
    pending: Mutex<bool>,
    signal: Condvar,
}

impl Wakeup {
    /// Ends the current (or the next) [`wait`](Self::wait) early.
    pub(crate) fn wake(&self) {
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.signal.notify_one();
    }

    /// Sleeps until woken or until `timeout` has passed; whether it was woken. A wake-up
    /// that came while nobody waited ends the next wait at once, so none is lost.
    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut pending, _) = self
            .signal
            .wait_timeout_while(pending, timeout, |pending| !*pending)
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *pending)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_wait_without_a_wake_up_lasts_its_timeout() {
        let wakeup = Wakeup::default();
        let started = Instant::now();
        assert!(!wakeup.wait(Duration::from_millis(20)));
        assert!(started.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn a_wake_up_before_the_wait_is_kept_for_it_and_used_once() {
        let wakeup = Wakeup::default();
        wakeup.wake();
        assert!(wakeup.wait(Duration::from_secs(3600)));
        assert!(!wakeup.wait(Duration::ZERO));
    }

    #[test]
    fn a_wake_up_ends_a_long_wait() {
        let wakeup = Arc::new(Wakeup::default());
        let waiter = {
            let wakeup = Arc::clone(&wakeup);
            std::thread::spawn(move || wakeup.wait(Duration::from_secs(3600)))
        };
        // Whether the wake-up lands before or during the wait, the wait returns.
        wakeup.wake();
        assert!(waiter.join().expect("waiter"));
    }
}
