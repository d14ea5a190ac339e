//! Rate limits: one token bucket per key (a client IP or a viewer token id) and per kind of
//! request (session creation, a new offer on a session, ICE configuration, candidate post); each
//! kind has its own buckets, the first three at the session rate. A bucket holds up to `per_minute` requests and
//! refills at `per_minute` per minute. Time is passed in; the number of buckets is bounded.
//! No HTTP here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most buckets kept; past this, full (idle) buckets are dropped first, then the table is reset
/// rather than grown (a flood of addresses must not eat the host's memory).
pub const MAX_BUCKETS: usize = 100_000;

/// What a limited request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    CreateSession,
    /// A new offer on a live session (ICE restart): at the session rate.
    Offer,
    /// `GET /api/webrtc/config` (it mints TURN credentials): at the session rate.
    Config,
    Candidate,
}

impl Kind {
    fn per_minute(self, sessions: u32, candidates: u32) -> u32 {
        match self {
            Kind::CreateSession | Kind::Offer | Kind::Config => sessions,
            Kind::Candidate => candidates,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The limits and their buckets. `per_minute == 0` turns a kind off.
#[derive(Debug)]
pub struct RateLimiter {
    sessions_per_minute: u32,
    candidates_per_minute: u32,
    buckets: HashMap<(Kind, String), Bucket>,
}

impl RateLimiter {
    pub fn new(sessions_per_minute: u32, candidates_per_minute: u32) -> Self {
        Self {
            sessions_per_minute,
            candidates_per_minute,
            buckets: HashMap::new(),
        }
    }

    fn rate(&self, kind: Kind) -> u32 {
        kind.per_minute(self.sessions_per_minute, self.candidates_per_minute)
    }

    /// Takes one request of `kind` from every bucket of `keys`, or none if any is empty; then
    /// returns how long until it would be allowed.
    pub fn check(&mut self, kind: Kind, keys: &[&str], now: Instant) -> Result<(), Duration> {
        let per_minute = self.rate(kind);
        if per_minute == 0 {
            return Ok(());
        }
        let cap = f64::from(per_minute);
        let per_sec = cap / 60.0;
        if self.buckets.len() + keys.len() > MAX_BUCKETS {
            self.prune(now);
            if self.buckets.len() + keys.len() > MAX_BUCKETS {
                self.buckets.clear();
            }
        }
        let mut wait = Duration::ZERO;
        for key in keys {
            let b = self.bucket(kind, key, cap, per_sec, now);
            if b.tokens < 1.0 {
                wait = wait.max(Duration::from_secs_f64((1.0 - b.tokens) / per_sec));
            }
        }
        if wait > Duration::ZERO {
            return Err(wait);
        }
        for key in keys {
            if let Some(b) = self.buckets.get_mut(&(kind, (*key).to_owned())) {
                b.tokens -= 1.0;
            }
        }
        Ok(())
    }

    fn bucket(&mut self, kind: Kind, key: &str, cap: f64, per_sec: f64, now: Instant) -> Bucket {
        let b = self
            .buckets
            .entry((kind, key.to_owned()))
            .or_insert(Bucket {
                tokens: cap,
                at: now,
            });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(cap);
        b.at = now;
        *b
    }

    /// Drops the buckets that have refilled completely (they behave exactly like absent ones).
    pub fn prune(&mut self, now: Instant) {
        let (s, c) = (self.sessions_per_minute, self.candidates_per_minute);
        self.buckets.retain(|(kind, _), b| {
            let per_minute = f64::from(kind.per_minute(s, c));
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + elapsed * per_minute / 60.0 < per_minute
        });
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let mut r = RateLimiter::new(6, 0);
        let t0 = Instant::now();
        for _ in 0..6 {
            assert_eq!(r.check(Kind::CreateSession, &["ip:a"], t0), Ok(()));
        }
        let wait = r.check(Kind::CreateSession, &["ip:a"], t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        // Another key and another kind are not affected.
        assert_eq!(r.check(Kind::CreateSession, &["ip:b"], t0), Ok(()));
        assert_eq!(r.check(Kind::Candidate, &["ip:a"], t0), Ok(()), "off");
        // One request per 10 s comes back.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(r.check(Kind::CreateSession, &["ip:a"], t1), Ok(()));
        assert!(r.check(Kind::CreateSession, &["ip:a"], t1).is_err());
    }

    #[test]
    fn all_keys_must_allow_and_a_refusal_costs_nothing() {
        let mut r = RateLimiter::new(1, 0);
        let t0 = Instant::now();
        assert_eq!(
            r.check(Kind::CreateSession, &["ip:a", "token:x"], t0),
            Ok(())
        );
        // Same token from another address: the token's bucket is empty.
        assert!(r
            .check(Kind::CreateSession, &["ip:b", "token:x"], t0)
            .is_err());
        // ip:b was not charged for the refused request.
        assert_eq!(
            r.check(Kind::CreateSession, &["ip:b", "token:y"], t0),
            Ok(())
        );
    }

    #[test]
    fn idle_buckets_are_pruned() {
        let mut r = RateLimiter::new(60, 0);
        let t0 = Instant::now();
        r.check(Kind::CreateSession, &["ip:a"], t0).unwrap();
        r.prune(t0);
        assert_eq!(r.len(), 1);
        r.prune(t0 + Duration::from_secs(2));
        assert!(r.is_empty());
    }
}
