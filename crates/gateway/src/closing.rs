//! The signal that tells a thread's connections to finish up and close.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

/// Raised once, at shutdown; every [`Closing`] made from it then resolves.
///
/// Why not a `watch` channel: a connection waits for this between every two requests, and
/// a channel's waiter takes a lock and re-registers each time it is polled. Here a
/// connection registers its waker once and afterwards a poll is one atomic load, because
/// a connection task's waker does not change.
#[derive(Debug, Default)]
pub(crate) struct CloseSignal {
    closed: AtomicBool,
    waiters: Mutex<Waiters>,
}

#[derive(Debug, Default)]
struct Waiters {
    next_id: u64,
    wakers: HashMap<u64, Waker>,
}

impl CloseSignal {
    /// Raises the signal and wakes every waiting connection.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut self.waiters.lock().wakers);
        for waker in wakers.into_values() {
            waker.wake();
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Resolves once its [`CloseSignal`] is raised. Poll it again and again: that is what it
/// is built for.
#[derive(Debug)]
pub(crate) struct Closing {
    signal: Arc<CloseSignal>,
    /// Our entry among the signal's waiters, and the waker stored there.
    registered: Option<(u64, Waker)>,
}

impl Closing {
    pub(crate) fn new(signal: Arc<CloseSignal>) -> Self {
        Self {
            signal,
            registered: None,
        }
    }

    /// Whether the signal has been raised.
    pub(crate) fn is_closed(&self) -> bool {
        self.signal.is_closed()
    }
}

impl Future for Closing {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_closed() {
            return Poll::Ready(());
        }
        if matches!(&self.registered, Some((_, waker)) if waker.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        let signal = Arc::clone(&self.signal);
        let mut waiters = signal.waiters.lock();
        let id = if let Some((id, _)) = &self.registered {
            *id
        } else {
            waiters.next_id += 1;
            waiters.next_id
        };
        waiters.wakers.insert(id, cx.waker().clone());
        drop(waiters);
        self.registered = Some((id, cx.waker().clone()));
        // `close` may have run between the first check and the registration, and taken
        // the waiters before ours was in: look again.
        if signal.is_closed() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some((id, _)) = self.registered.take() {
            self.signal.waiters.lock().wakers.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_connections_wake_when_the_signal_is_raised() {
        let signal = Arc::new(CloseSignal::default());
        let mut waiters = Vec::new();
        for _ in 0..3 {
            let closing = Closing::new(Arc::clone(&signal));
            waiters.push(tokio::spawn(closing));
        }
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        signal.close();
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .expect("a waiting connection was not woken")
                .expect("the waiter task failed");
        }
        // Raised once, raised for good: a late waiter resolves at once.
        Closing::new(signal).await;
    }

    #[test]
    fn a_dropped_waiter_leaves_nothing_behind() {
        let signal = Arc::new(CloseSignal::default());
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut closing = Box::pin(Closing::new(Arc::clone(&signal)));
        assert!(closing.as_mut().poll(&mut cx).is_pending());
        assert!(closing.as_mut().poll(&mut cx).is_pending());
        assert_eq!(signal.waiters.lock().wakers.len(), 1);
        drop(closing);
        assert!(signal.waiters.lock().wakers.is_empty());
    }
}
