//! A budget for retransmissions: under congestion the viewer NACKs whole keyframes again every
//! round trip, and answering every request sent several times the encoder's rate into a link
//! already full (transport-cc windows read 13 Mbit/s sent into a 1 Mbit/s cap), which kept it
//! full and froze the picture for seconds. `RtxBudget` is a token bucket of packets that refills
//! at `RTX_SHARE` of the encoder's target; requests beyond it are dropped (the viewer asks again
//! or, in the end, for a keyframe). Pure arithmetic with time passed in; `stats.rs` puts it on
//! `webrtcbin`'s `rtprtxsend` (GStreamer 1.22's has no `max-kbps`).

use std::time::Duration;

/// Share of the encoder's target that retransmissions may use.
pub const RTX_SHARE: f64 = 0.25;
/// Size assumed for one retransmitted packet, bytes (the payloaders' MTU is 1200).
pub const PACKET_BYTES: f64 = 1200.0;
/// The bucket holds this much time's worth of refill (a burst after a quiet spell).
pub const BURST: Duration = Duration::from_millis(500);
/// The least refill, packets per second, however low the target.
pub const MIN_PACKETS_PER_SECOND: f64 = 20.0;

#[derive(Debug, Clone)]
pub struct RtxBudget {
    tokens: f64,
    last: Option<Duration>,
}

impl Default for RtxBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl RtxBudget {
    pub fn new() -> Self {
        Self {
            tokens: 0.0,
            last: None,
        }
    }

    /// Packets per second the budget refills at for an encoder target of `target_kbps`.
    pub fn rate(target_kbps: u32) -> f64 {
        (f64::from(target_kbps) * 1000.0 * RTX_SHARE / (8.0 * PACKET_BYTES))
            .max(MIN_PACKETS_PER_SECOND)
    }

    /// Whether a request for `packets` retransmissions at `now` fits; takes them if so.
    pub fn take(&mut self, packets: u32, target_kbps: u32, now: Duration) -> bool {
        let rate = Self::rate(target_kbps);
        let cap = rate * BURST.as_secs_f64();
        let elapsed = self
            .last
            .map(|t| now.saturating_sub(t))
            .unwrap_or(BURST)
            .as_secs_f64();
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed * rate).min(cap);
        let want = f64::from(packets);
        if self.tokens >= want {
            self.tokens -= want;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn refills_at_a_share_of_the_target() {
        // 1920 kbit/s x 25% / 9600 bit = 50 packets/s; 25 in the bucket at most.
        assert_eq!(RtxBudget::rate(1920), 50.0);
        let mut b = RtxBudget::new();
        let granted = (0..100).filter(|_| b.take(1, 1920, at(0))).count();
        assert_eq!(granted, 25, "a burst of half a second's worth");
        assert!(!b.take(1, 1920, at(10)));
        assert!(b.take(1, 1920, at(30)), "one packet every 20 ms");
        // Over a long flood, about 50 a second get through.
        let mut granted = 0;
        for ms in (1000..11_000).step_by(2) {
            granted += u32::from(b.take(1, 1920, at(ms)));
        }
        assert!((490..=530).contains(&granted), "{granted}");
    }

    #[test]
    fn a_low_target_still_allows_some_retransmissions() {
        assert_eq!(RtxBudget::rate(100), MIN_PACKETS_PER_SECOND);
        let mut b = RtxBudget::new();
        assert!(b.take(10, 100, at(0)));
        assert!(!b.take(1, 100, at(0)));
    }

    #[test]
    fn time_going_backwards_does_not_refill() {
        let mut b = RtxBudget::new();
        while b.take(1, 1920, at(5000)) {}
        assert!(!b.take(1, 1920, at(1000)));
    }
}
