//! A session ends by itself when its link expires (`SessionGrant::expires_at`), even if the
//! controller that should have ended it is gone: a timer per session that calls back once at
//! that time, unless it is dropped first (the session ended some other way).

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::warn;

/// Longer than this is "never" (and keeps `Instant` arithmetic far from overflowing).
const NEVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How long from `now` until `expires_at` (both Unix milliseconds): zero if it has passed,
/// `None` if there is no expiry or it is further away than anyone will wait.
pub fn remaining(expires_at: Option<u64>, now_ms: u64) -> Option<Duration> {
    let left = Duration::from_millis(expires_at?.saturating_sub(now_ms));
    (left < NEVER).then_some(left)
}

/// Now, in Unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The timer; dropping it cancels it (and waits for its thread, which wakes at once).
#[derive(Debug)]
pub struct ExpiryTimer {
    cancel: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ExpiryTimer {
    /// Calls `on_expiry` at `expires_at` (Unix ms) unless dropped first; `None` when there is
    /// nothing to wait for (no expiry, or too far away). An expiry already past calls at once.
    pub fn start(
        name: &str,
        expires_at: Option<u64>,
        on_expiry: impl FnOnce() + Send + 'static,
    ) -> Option<ExpiryTimer> {
        let wait = remaining(expires_at, now_ms())?;
        let (cancel, cancelled) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name(format!("expiry-{name}"))
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(wait) {
                    on_expiry();
                }
            });
        match spawned {
            Ok(thread) => Some(ExpiryTimer {
                cancel: Some(cancel),
                thread: Some(thread),
            }),
            Err(e) => {
                warn!("no expiry timer for session {name} (the controller still ends it): {e}");
                None
            }
        }
    }
}

impl Drop for ExpiryTimer {
    fn drop(&mut self) {
        drop(self.cancel.take());
        if let Some(t) = self.thread.take() {
            // The expiry callback may be what is dropping us (through the session's end): never
            // wait for our own thread.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn remaining_time_is_checked_arithmetic() {
        assert_eq!(remaining(None, 5), None);
        assert_eq!(
            remaining(Some(1_500), 1_000),
            Some(Duration::from_millis(500))
        );
        assert_eq!(remaining(Some(1_000), 2_000), Some(Duration::ZERO));
        assert_eq!(remaining(Some(u64::MAX), 0), None);
        assert_eq!(remaining(Some(0), u64::MAX), Some(Duration::ZERO));
    }

    #[test]
    fn fires_at_the_expiry_and_not_after_being_dropped() {
        let fired = Arc::new(AtomicBool::new(false));
        let f = fired.clone();
        let t0 = Instant::now();
        let timer = ExpiryTimer::start("t", Some(now_ms() + 300), move || {
            f.store(true, Ordering::SeqCst)
        })
        .unwrap();
        while !fired.load(Ordering::SeqCst) {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "the timer did not fire"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(t0.elapsed() >= Duration::from_millis(250));
        drop(timer);

        let fired = Arc::new(AtomicBool::new(false));
        let f = fired.clone();
        let timer = ExpiryTimer::start("t", Some(now_ms() + 200), move || {
            f.store(true, Ordering::SeqCst)
        });
        drop(timer);
        std::thread::sleep(Duration::from_millis(400));
        assert!(!fired.load(Ordering::SeqCst), "a dropped timer fired");
        assert!(ExpiryTimer::start("t", None, || {}).is_none());
    }
}
